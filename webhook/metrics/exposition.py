"""Exposition: ``/metrics`` in the format the scraper asks for, on the serving port and its own."""

from __future__ import annotations

import os

from aiohttp import web
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.exposition import choose_encoder

from webhook.metrics.definitions import MULTIPROC_ENV, REGISTRY
from webhook.metrics.tally import flush_tallies


def exposition(accept: str | None = None) -> tuple[bytes, str]:
    """The registry in the format the scraper asked for (OpenMetrics or text 0.0.4), with its content type.

    Under ``--workers N`` every worker writes its values to PROMETHEUS_MULTIPROC_DIR and any worker
    answering a scrape reads them all, so counters are the sum over workers, whichever one answers.
    """
    encoder, content_type = choose_encoder(accept or "")
    if os.environ.get(MULTIPROC_ENV):
        flush_tallies()  # this worker's counts into its files; REGISTRY flushes itself when read (_FlushFirst)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return encoder(merged), content_type
    return encoder(REGISTRY), content_type


def worker_exited(pid: int) -> None:
    """Drop a dead worker's live gauges from the shared multiprocess directory."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


async def metrics_handler(request: web.BaseRequest) -> web.Response:
    body, content_type = exposition(request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})


async def start_metrics_server(host: str, port: int, reuse_port: bool = False) -> web.AppRunner:
    """Serve ``/metrics`` over plain HTTP on its own port; the caller owns ``runner.cleanup()``.

    With port 0 the bound port is in ``runner.addresses``. With ``--workers`` every worker binds
    the port (``reuse_port``) and a scrape reaches one of them: counters are per process.
    """
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
    return runner
