"""The real HTTPS server as the tests drive it: its certificate files and a client bound to it."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from webhook import app
from webhook.admission import server
from webhook.config import Config


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


@contextlib.contextmanager
def serving(config: Config) -> Iterator[None]:
    """``app.serve(config)`` on its own thread and event loop, as `serve` runs it; on exit it is
    stopped as SIGTERM would stop it, and must end cleanly within 30 s."""
    holder: dict[str, Any] = {}
    errors: list[BaseException] = []

    def run() -> None:
        async def main() -> None:
            holder["stop"] = asyncio.Event()
            holder["loop"] = asyncio.get_running_loop()
            await app.serve(config, holder["stop"])

        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        if "loop" in holder:
            holder["loop"].call_soon_threadsafe(holder["stop"].set)
        thread.join(timeout=30)
    assert not thread.is_alive(), "serve did not stop within 30 s"
    assert errors == [], errors
