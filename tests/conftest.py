"""Shared fixtures: dev certificates and the real HTTPS server on loopback."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from webhook.admission import server
from webhook.admission.handler import PodMutator
from webhook.certs import generate as certs
from webhook.plugins import EMPTY
from webhook.resolution.resolver import Resolver


@dataclass
class TLSFiles:
    dir: Path
    ca: Path
    cert: Path
    key: Path


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    out = tmp_path_factory.mktemp("certs")
    paths = certs.generate_files(out, "workload-tagger", "workload-tagger", ["localhost", "127.0.0.1"])
    return TLSFiles(out, paths["ca.crt"], paths["tls.crt"], paths["tls.key"])


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


@pytest.fixture
async def start_server(tls_files: TLSFiles) -> AsyncIterator[ServerFactory]:
    """Start the real app over TLS on 127.0.0.1 with an ephemeral port; torn down after the test."""
    runners: list[web.ServerRunner] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(
        mutator: PodMutator | None = None, max_body_bytes: int = 7 * 1024 * 1024, synced: bool = True
    ) -> RunningServer:
        readiness = server.Readiness(plugins_synced=lambda: synced)
        app = server.build_app(mutator or PodMutator(Resolver(), lambda: EMPTY), readiness, max_body_bytes)
        runner = app.runner()
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server.tls_context(str(tls_files.cert), str(tls_files.key)))
        await site.start()
        readiness.certs_loaded = True
        runners.append(runner)
        port = runner.addresses[0][1]
        session = aiohttp.ClientSession()
        sessions.append(session)
        return RunningServer(f"https://localhost:{port}", port, session, readiness, client_context(tls_files.ca), app)

    yield start
    for s in sessions:
        await s.close()
    for r in runners:
        await r.cleanup()
    await asyncio.sleep(0)
