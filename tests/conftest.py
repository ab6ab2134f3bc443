"""Shared fixtures: dev certificates and the real HTTPS server on loopback."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web

from tests.support.servers import RunningServer, ServerFactory, TLSFiles, client_context
from tests.support.tools import INSTALL, in_ci, missing
from webhook import logs
from webhook.admission import server
from webhook.admission.handler import PodMutator
from webhook.certs import generate as certs
from webhook.plugins import EMPTY
from webhook.resolution.resolver import Resolver


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    out = tmp_path_factory.mktemp("certs")
    paths = certs.generate_files(out, "workload-tagger", "workload-tagger", ["localhost", "127.0.0.1"])
    return TLSFiles(out, paths["ca.crt"], paths["tls.crt"], paths["tls.key"])


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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``needs(tool, ...)`` skip with a reason where a tool is missing, except in CI."""
    if in_ci():
        return
    for item in items:
        for mark in item.iter_markers("needs"):
            absent = missing(tuple(mark.args))
            if absent:
                item.add_marker(pytest.mark.skip(reason=f"needs {', '.join(absent)}: {INSTALL}"))


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """The real ``logs.setup`` with its handler pointed at a buffer; the root logger is restored after."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("aiohttp.access").level)
    stream = io.StringIO()
    logs.setup("info")
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    yield stream
    root.handlers[:], root.level = saved[0], saved[1]
    logging.getLogger("aiohttp.access").setLevel(saved[2])
