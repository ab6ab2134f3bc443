"""The HTTPS front door: aiohttp low-level server, TLS, health, graceful stop.

The hot path (`/mutate`) runs synchronously inside the handler: decode, resolve, patch,
encode are CPU-only and sub-millisecond, so handing them to a thread would cost more than
it saves. Nothing on it talks to the Kubernetes API. A review the rules cannot answer takes the
one asynchronous step, :meth:`PodMutator.finish`: it waits (bounded) for an owner the owner
caches have not seen yet, and its plugins run in a plugin host, while the event loop serves
everything else.

We serve through aiohttp's low-level ``web.Server`` with a four-entry route table of our own,
not ``web.Application``: its router resolution, match-info and handler wrapping are per-request
work we do not need (``make bench`` compares it with the bare ceiling, bench/ceiling.py, which
made the same switch). What the Application layer did for us
that clients can see (404, 405 with ``Allow``, HEAD on GET routes, ``Expect: 100-continue``, the
body limit) is done here explicitly and pinned by tests/test_server.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion11, RawRequestMessage
from aiohttp.streams import StreamReader

from webhook import metrics
from webhook.admission import review as admission
from webhook.admission.handler import Decision, PendingReview, PodMutator
from webhook.admission.review import AdmissionRequest
from webhook.admission.transport import BodyBudget, BodyReader, BodyRefused, GuardedServer, GuardedSite, Limits
from webhook.outcomes import ReviewOutcome

log = logging.getLogger("workload_tagger.server")

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


Route = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
RouteTable = Mapping[str, Mapping[str, Route]]


@dataclass(frozen=True)
class WebhookApp:
    """What the server serves: one low-level handler, its in-flight count, its body limit and the
    bounds on what clients can make it hold (:mod:`webhook.admission.transport`).

    One object for `serve_until_stopped`, the tests and the benchmarks to pass around, so none of
    them can serve the handler without the limits or shut down without the in-flight count.
    """

    handler: Route
    in_flight: InFlight
    max_body_bytes: int
    limits: Limits = field(default_factory=Limits.of)

    def make_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: web.RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        """aiohttp's request factory, with our body limit (the low-level default is 1 MiB)."""
        return web.BaseRequest(
            message, payload, protocol, writer, task, task.get_loop(), client_max_size=self.max_body_bytes
        )

    def runner(self, shutdown_timeout: float = 60.0) -> web.ServerRunner:
        """A runner for a low-level server of this app; call it inside the loop that will serve."""
        server = GuardedServer(self.handler, request_factory=self.make_request, access_log=None, limits=self.limits)
        return web.ServerRunner(server, shutdown_timeout=shutdown_timeout, handle_signals=False)


def route_table(post: Mapping[str, Route], get: Mapping[str, Route]) -> dict[str, dict[str, Route]]:
    """path → method → route; a GET route answers HEAD too (aiohttp drops the body), as ``add_get`` did."""
    table: dict[str, dict[str, Route]] = {path: {hdrs.METH_POST: route} for path, route in post.items()}
    for path, route in get.items():
        table.setdefault(path, {}).update({hdrs.METH_GET: route, hdrs.METH_HEAD: route})
    return table


def dispatcher(table: RouteTable) -> Route:
    """The whole router: two dict lookups on the exact path (query string aside) and method.

    404 for a path we do not serve, 405 naming the allowed methods in ``Allow`` otherwise; raised
    as aiohttp HTTP exceptions, which its protocol layer turns into those responses.
    """

    async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
        if request.headers.get(hdrs.EXPECT):
            await answer_expectation(request)
        methods = table.get(request.path)
        if methods is None:
            raise web.HTTPNotFound()
        route = methods.get(request.method)
        if route is None:
            raise web.HTTPMethodNotAllowed(request.method, methods)
        return await route(request)

    return dispatch


async def answer_expectation(request: web.BaseRequest) -> None:
    """``Expect: 100-continue`` gets its interim answer, any other expectation a 417.

    curl sends a large body only after "100 Continue" (or after waiting a second for it);
    web.Application answered it for every route, the low-level server does not on its own.
    """
    if request.version != HttpVersion11:
        return
    expect = request.headers[hdrs.EXPECT]
    if expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect}")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the interim answer is not part of the response's size


def _decode(body: bytes) -> AdmissionRequest:
    try:
        return admission.decode_for_mutation(body)
    except admission.AdmissionError as exc:
        metrics.observe_admission("", ReviewOutcome.INVALID, None)
        log.warning("malformed admission review", extra={"error": str(exc)})
        raise


def _answer(request: AdmissionRequest, decision: Decision, started: float) -> bytes:
    if decision.outcome is ReviewOutcome.ERROR:
        log.error("resolution failed; allowed without patch", extra={"uid": request.uid, "error": decision.error})
    elif decision.outcome is ReviewOutcome.UNPATCHABLE:
        log.warning("patch would make the Pod invalid; allowed without patch", extra=pod_fields(request, decision))
    answer = admission.encode(decision.response)
    metrics.observe_review(request.operation, decision.outcome, decision.resolution, time.perf_counter() - started)
    return answer


def observed_review(handler: PodMutator, body: bytes, started: float) -> bytes | PendingReview:
    """The review entry: one AdmissionReview's bytes decoded and decided, and, when the handler
    answers at once (every review the rules resolve), encoded, timed, counted and logged — the one
    place the serving path reports a review. A :class:`PendingReview` goes to :func:`observed_finish`.

    Raises :class:`AdmissionError` for a body that is not a review we can answer; any other
    failure is the handler's, which answers "allowed, no patch" itself.
    """
    request = _decode(body)
    decided = handler.decide(request)
    if type(decided) is PendingReview:
        return decided
    return _answer(request, decided, started)  # type: ignore[arg-type]


async def observed_finish(handler: PodMutator, pending: PendingReview, started: float) -> bytes:
    """The awaited step of a review (a missing owner, the plugins in their host), reported like any other."""
    return _answer(pending.request, await handler.finish(pending), started)


def build_app(
    mutator: PodMutator, readiness: Readiness, max_body_bytes: int, limits: Limits | None = None
) -> WebhookApp:
    in_flight = InFlight()
    limits = limits or Limits.of()
    bodies = BodyReader(BodyBudget(limits.body_memory_bytes), max_body_bytes, limits.body_timeout_s)

    async def mutate(request: web.BaseRequest) -> web.Response:
        in_flight.enter()
        try:
            try:  # 413 past max_body_bytes, 503 past the body budget, 408 for a body that does not arrive
                body, held = await bodies.read(request)
            except BodyRefused as refused:
                return await refused.answer(request)
            try:
                started = time.perf_counter()
                try:
                    answer = observed_review(mutator, body, started)
                except admission.AdmissionError as exc:
                    raise web.HTTPBadRequest(text=orjson_error(str(exc)), content_type=JSON) from None
                if type(answer) is PendingReview:  # an owner or the plugins must be awaited: the one async step
                    answer = await observed_finish(mutator, answer, started)
                response = web.Response(body=answer, content_type=JSON)
            finally:
                bodies.release(held)
            if readiness.shutting_down:  # ask keep-alive clients to reconnect, i.e. to another replica
                response.force_close()
            return response
        finally:
            in_flight.leave()


    async def healthz(_: web.BaseRequest) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.BaseRequest) -> web.Response:
        reasons = readiness.reasons()
        if reasons:
            return web.Response(status=503, text="not ready: " + "; ".join(reasons) + "\n")
        return web.Response(text="ok\n")

    table = route_table(
        post={"/mutate": mutate},
        get={"/healthz": healthz, "/readyz": readyz, "/metrics": metrics.metrics_handler},
    )
    return WebhookApp(dispatcher(table), in_flight, max_body_bytes, limits)


def pod_fields(req: admission.AdmissionRequest, decision: Decision) -> dict[str, object]:
    """Log fields naming a Pod and why it got no patch (a Pod being created may have no name yet)."""
    obj = req.object
    meta = obj.meta if isinstance(obj, admission.PodObject) else None
    resolution = decision.resolution
    return {
        "uid": req.uid,
        "namespace": (meta.namespace if meta and isinstance(meta.namespace, str) else None) or req.namespace,
        "pod": meta.name if meta and isinstance(meta.name, str) and meta.name else None,
        "workload": f"{resolution.workload_type}/{resolution.workload_name}" if resolution else None,
        "reason": decision.refused,
    }


def orjson_error(message: str) -> str:
    import orjson

    return orjson.dumps({"error": message}).decode()


def event_loop_factory(choice: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when asked for or (``auto``) installed, else asyncio's own loop (None).

    uvloop serves the same aiohttp server with markedly less CPU per request (see bench/server_bench.py).
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
    app: WebhookApp,
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
    runner = app.runner(shutdown_timeout=close_s)
    await runner.setup()
    site = GuardedSite(runner, host, port, ssl_context=ctx, handshake_timeout_s=app.limits.header_timeout_s,
                       reuse_port=reuse_port or None)
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
    in_flight = app.in_flight
    left = max(0.0, grace_s - close_s - (loop.time() - signalled))
    log.info("stopped accepting; finishing in-flight reviews",
             extra={"in_flight": in_flight.count, "seconds_left": round(left, 3)})
    if not await in_flight.wait_idle(left):
        log.warning("grace period over: cancelling unfinished reviews", extra={"in_flight": in_flight.count})
    await runner.cleanup()
    log.info("stopped")
