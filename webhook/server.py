"""The HTTPS front door: aiohttp app, TLS, health, graceful stop.

The hot path (`/mutate`) runs synchronously inside the handler: decode, resolve, patch,
encode are CPU-only and sub-millisecond, so handing them to a thread would cost more than
it saves. Nothing on it talks to the Kubernetes API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from webhook import admission, metrics
from webhook.mutate import ERROR, MUTATED, UNCHANGED, PodMutator

log = logging.getLogger("workload_tagger.server")

INVALID = "invalid"


@dataclass
class Readiness:
    """`/readyz` is true once certificates are loaded and the plugin source synced once, until shutdown."""

    certs_loaded: bool = False
    plugins_synced: Callable[[], bool] = field(default=lambda: True)
    shutting_down: bool = False

    def reasons(self) -> list[str]:
        reasons = []
        if not self.certs_loaded:
            reasons.append("serving certificate not loaded")
        if not self.plugins_synced():
            reasons.append("plugin source not synced yet")
        if self.shutting_down:
            reasons.append("shutting down")
        return reasons


class TLSFileError(ValueError):
    """The serving certificate or key cannot be used; said once, before serving starts."""


def check_tls_files(cert_file: str, key_file: str) -> None:
    for path in (cert_file, key_file):
        if not os.path.isfile(path):
            raise TLSFileError(f"TLS file not found: {path} (run `make certs` or set --cert-file/--key-file)")
    try:
        tls_context(cert_file, key_file)
    except (ssl.SSLError, OSError) as exc:
        raise TLSFileError(f"cannot load TLS certificate {cert_file} / key {key_file}: {exc}") from None


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


JSON = "application/json"


class InFlight:
    """Reviews between "headers received" and "answer written", so shutdown can wait for them.

    aiohttp's own graceful stop is not enough: once it closes a connection it drops the bytes
    still arriving on it, so a review whose body was on the wire at that moment would never
    complete. Shutdown therefore waits here first, while connections still read.
    """

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


IN_FLIGHT = web.AppKey("in_flight", InFlight)


def build_app(mutator: PodMutator, readiness: Readiness, max_body_bytes: int) -> web.Application:
    in_flight = InFlight()

    async def mutate(request: web.Request) -> web.Response:
        in_flight.enter()
        try:
            body = await request.read()  # raises 413 past client_max_size
            response = web.Response(body=review(body), content_type=JSON)
            if readiness.shutting_down:  # ask keep-alive clients to reconnect, i.e. to another replica
                response.force_close()
            return response
        finally:
            in_flight.leave()

    def review(body: bytes) -> bytes:
        started = time.perf_counter()
        try:
            req = admission.decode_for_mutation(body)
        except admission.AdmissionError as exc:
            metrics.observe_admission("", INVALID, None)
            log.warning("malformed admission review", extra={"error": str(exc)})
            raise web.HTTPBadRequest(text=orjson_error(str(exc)), content_type=JSON) from None
        decision = mutator.handle(req)
        if decision.outcome == ERROR:
            log.error(
                "resolution failed; allowed without patch",
                extra={"uid": req.uid, "error": decision.error},
            )
        if decision.outcome in (MUTATED, UNCHANGED):
            metrics.observe_resolution(decision.resolution)
            metrics.observe_platform(decision.resolution.platform if decision.resolution else None)
        out = admission.encode(decision.response)
        metrics.observe_admission(req.operation, decision.outcome, time.perf_counter() - started)
        return out

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        reasons = readiness.reasons()
        if reasons:
            return web.Response(status=503, text="not ready: " + "; ".join(reasons) + "\n")
        return web.Response(text="ok\n")

    app = web.Application(client_max_size=max_body_bytes)
    app[IN_FLIGHT] = in_flight
    app.router.add_post("/mutate", mutate)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics.metrics_handler)
    return app


def orjson_error(message: str) -> str:
    import orjson

    return orjson.dumps({"error": message}).decode()


def event_loop_factory(choice: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when asked for or (``auto``) installed, else asyncio's own loop (None).

    uvloop serves the same aiohttp app with markedly less CPU per request (see bench/server_bench.py).
    """
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return None
    return uvloop.new_event_loop


async def serve_until_stopped(
    app: web.Application,
    host: str,
    port: int,
    ctx: ssl.SSLContext,
    readiness: Readiness,
    grace_s: float,
    stop: asyncio.Event | None = None,
    reuse_port: bool = False,
    drain_s: float = 0.0,
) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop``), then shut down without dropping a review.

    Order, all within ``grace_s`` of the signal: readiness turns false at once; for ``drain_s``
    the server keeps accepting and answering, so the endpoints controller and kube-proxy have
    time to stop sending here (a review sent to a closed port would fail the Pod creation under
    ``failurePolicy: Fail``); then the listening socket closes, idle keep-alive connections are
    closed, and the reviews in flight are finished for the rest of the grace period (see
    :class:`InFlight`); whatever is still running then is cancelled.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread (tests)
            loop.add_signal_handler(sig, stop.set)
    drain_s = max(0.0, min(drain_s, grace_s))
    close_s = min(1.0, grace_s / 4)  # aiohttp's last word: closing connections, cancelling leftovers
    runner = web.AppRunner(app, shutdown_timeout=close_s, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ctx, reuse_port=reuse_port or None)
    await site.start()
    readiness.certs_loaded = True
    log.info("serving", extra={"host": host, "port": port})
    await stop.wait()
    signalled = loop.time()
    readiness.shutting_down = True
    log.info("shutting down: readiness false, still serving", extra={"drain_seconds": drain_s,
                                                                     "grace_seconds": grace_s})
    if drain_s:
        await asyncio.sleep(drain_s)
    await site.stop()
    in_flight = app.get(IN_FLIGHT)
    left = max(0.0, grace_s - close_s - (loop.time() - signalled))
    log.info("stopped accepting; finishing in-flight reviews",
             extra={"in_flight": in_flight.count if in_flight else 0, "seconds_left": round(left, 3)})
    if in_flight is not None and not await in_flight.wait_idle(left):
        log.warning("grace period over: cancelling unfinished reviews", extra={"in_flight": in_flight.count})
    await runner.cleanup()
    log.info("stopped")
