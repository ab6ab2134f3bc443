"""The real HTTPS server as the tests drive it: its certificate files and a client bound to it."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from multidict import CIMultiDictProxy

from webhook.admission import server


@dataclass
class TLSFiles:
    dir: Path
    ca: Path
    cert: Path
    key: Path


@dataclass
class RunningServer:
    url: str
    port: int
    session: aiohttp.ClientSession
    readiness: server.Readiness
    client_ssl: ssl.SSLContext
    app: server.WebhookApp

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        async with self.session.post(self.url + path, data=body, ssl=self.client_ssl,
                                     headers={"Content-Type": "application/json"}) as resp:
            return resp.status, await resp.read()

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, CIMultiDictProxy[str], bytes]:
        """Any method on any path, with the answer's headers (for status, Allow, Connection checks)."""
        async with self.session.request(method, self.url + path, data=body, ssl=self.client_ssl) as resp:
            return resp.status, resp.headers, await resp.read()


def client_context(ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    return ctx


ServerFactory = Callable[..., Awaitable[RunningServer]]


