"""What the HTTPS server does against clients that misbehave: timeouts, a connection cap, a body budget.

Any Pod in a cluster can reach the webhook's Service, so every resource a client can make the
server hold is bounded here:

* **Connections**: at most ``max_connections`` established at once. At the cap a new connection
  closes the longest-open one that sits between requests; if every connection is inside a
  request, the new one is closed instead. TLS handshakes must finish within ``header_timeout_s``.
* **Time**: a request's head (from a connection's first byte, or from the first byte of a next
  request on a kept-alive connection) must arrive within ``header_timeout_s``, its body within
  ``body_timeout_s`` (408 and close past it: covers bodies sent a byte at a time and a
  Content-Length larger than the body sent). A connection idle between requests is closed after
  ``idle_timeout_s``, which must stay longer than the API server's own idle reuse: client-go's
  transports keep idle connections for 90 s (``http.DefaultTransport``'s ``IdleConnTimeout``,
  applied by apimachinery's ``SetTransportDefaults``), so the API server always closes first and
  never sends a review on a connection we are closing.
* **Memory**: bytes of request bodies held across all connections are counted against
  ``body_memory_bytes``; a body that would go past it is answered 503 with ``Retry-After``, and
  what is left of it is only read and dropped (aiohttp's lingering close, bounded in time), never held. A quarter of the budget is kept for bodies up to :data:`SMALL_BODY` bytes (the
  API server's everyday reviews are a few KiB), so big uploads held open cannot starve them.
  Headers are bounded by aiohttp's line and field limits and our ``max_headers``.

Only what a client controls is refused here; the handler behind it is untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from webhook import metrics
from webhook.config import Config

log = logging.getLogger("workload_tagger.server")

Route = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
SMALL_BODY = 1024 * 1024
MAX_HEADERS = 64  # the API server sends a handful; aiohttp's default lets a client park far more


@dataclass(frozen=True)
class Limits:
    """The bounds above; their settings and defaults are declared in webhook/config.py (see :meth:`of`)."""

    idle_timeout_s: float
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    body_memory_bytes: int

    @classmethod
    def of(cls, config: Config | None = None) -> Limits:
        """The limits a config sets; the defaults without one."""
        c = config or Config()
        return cls(c.idle_timeout_s, c.header_timeout_s, c.body_timeout_s, c.max_connections,
                   c.body_memory_mb * 1024 * 1024)


class RateLimitedLog:
    """One warning line per ``key`` per ``period_s`` at most, saying how many were left out since."""

    def __init__(self, logger: logging.Logger, period_s: float = 10.0) -> None:
        self._log = logger
        self._period = period_s
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def warning(self, key: str, message: str, **fields: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -self._period) < self._period:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return
        self._last[key] = now
        skipped = self._skipped.pop(key, 0)
        self._log.warning(message, extra={**fields, "similar_not_logged": skipped} if skipped else fields)


LIMITED = RateLimitedLog(log)


def refused(reason: str, message: str | None = None, **fields: Any) -> None:
    """Count a refusal (metrics.REFUSAL_REASONS) and, if ``message``, warn about it, rate-limited per reason."""
    metrics.observe_refused(reason)
    if message is not None:
        LIMITED.warning(reason, message, **fields)


class BodyBudget:
    """Bytes of request bodies held in memory, across all connections of this process.

    Invariant: ``used`` is the sum of what callers took and have not given back, and never exceeds
    ``total``; bodies larger than :data:`SMALL_BODY` never take it past ``large_cap``.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.large_cap = total - total // 4
        self.used = 0

    def take(self, n: int, body_size: int) -> bool:
        """Take ``n`` more bytes for a body that will then be ``body_size`` bytes; False when they do not fit."""
        cap = self.total if body_size <= SMALL_BODY else self.large_cap
        if self.used + n > cap:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n


@dataclass
class BodyRefused(Exception):
    """The body cannot be taken; ``response`` says why (4xx, or 503 when the budget is spent)."""

    response: web.Response
    close: bool

    async def answer(self, request: web.BaseRequest) -> web.Response:
        """The response to return; when ``close``, it is sent here and the connection closed after it,
        since the rest of the body is not worth waiting for (otherwise aiohttp reads and drops the rest
        of the body for a while, the connection then stays usable)."""
        if self.close:
            with contextlib.suppress(ConnectionError):  # the client may be gone already: nothing to tell it
                await self.response.prepare(request)
                await self.response.write_eof()
            request.protocol.force_close()  # the transport flushes the answer, then closes
        return self.response


def _refusal(status: int, message: str, close: bool, retry_after: int | None = None) -> BodyRefused:
    response = web.Response(status=status, body=orjson.dumps({"error": message}), content_type="application/json")
    if retry_after is not None:
        response.headers[hdrs.RETRY_AFTER] = str(retry_after)
    if close:
        response.force_close()
    return BodyRefused(response, close)


@dataclass
class BodyReader:
    """Reads one request body within the size limit, the body budget and the body timeout."""

    budget: BodyBudget
    max_bytes: int
    timeout_s: float

    async def read(self, request: web.BaseRequest) -> tuple[bytes, int]:
        """The body and the bytes of budget it holds, to hand to :meth:`release` once the body is dropped.

        Raises BodyRefused. An everyday review arrives whole with its head: it is taken at once,
        without arming a timer.
        """
        encoding = request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
        if encoding != "identity":
            refused("content-encoding")
            raise _refusal(415, f"Content-Encoding {encoding!r} not supported: send the AdmissionReview as is", False)
        declared = request.content_length
        if declared is not None and declared > self.max_bytes:
            refused("body-too-large")
            raise _refusal(413, f"body of {declared} bytes is over the limit of {self.max_bytes}", False)
        content = request.content
        if content.is_eof() and content.exception() is None:
            body = content.read_nowait()
            self._take(len(body), len(body))
            return body, len(body)
        chunks: list[bytes] = []
        held = 0
        try:
            async with asyncio.timeout(self.timeout_s):
                while chunk := await content.readany():
                    self._take(len(chunk), held + len(chunk))
                    held += len(chunk)
                    chunks.append(chunk)
        except TimeoutError:
            self.release(held)
            refused("body-timeout", "request body not received in time; connection closed",
                    timeout_s=self.timeout_s, received_bytes=held)
            raise _refusal(408, f"request body not received within {self.timeout_s:g} s", True) from None
        except HttpProcessingError as exc:  # broken chunked encoding and the like
            self.release(held)
            raise _refusal(400, f"malformed request body: {exc.message}", True) from None
        except ConnectionError:  # the client left mid-body: answered (to no one) without an error log
            self.release(held)
            raise _refusal(400, "connection closed before the body was complete", False) from None
        except BaseException:
            self.release(held)
            raise
        return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), held

    def release(self, held: int) -> None:
        self.budget.give(held)

    def _take(self, n: int, body_size: int) -> None:
        if body_size > self.max_bytes:
            refused("body-too-large")
            raise _refusal(413, f"body is over the limit of {self.max_bytes} bytes", False)
        if not self.budget.take(n, body_size):
            refused("body-budget", "request body refused: body memory budget spent",
                    budget_bytes=self.budget.total, in_use_bytes=self.budget.used)
            raise _refusal(503, "server busy with other request bodies; retry", False, retry_after=1)


class GuardedHandler(web.RequestHandler):
    """aiohttp's connection protocol, plus head timing, the connection cap and quiet malformed-request logs.

    ``head_since`` is when the head of the request now arriving started (the connection's opening,
    or the first byte after an answer); None while a request is handled or the connection idles.
    Its owner's sweep closes connections whose head is late: a timestamp per request instead of
    a timer per request keeps the everyday path free of timer bookkeeping.
    """

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = manager
        self.head_since: float | None = None
        self.awaiting_head = True  # between requests: no request is being handled on this connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.head_since = self._loop.time()  # a client that connects must send a request, not sit on the socket
        self._guard.admit(self)

    def data_received(self, data: bytes) -> None:
        if self.awaiting_head and self.head_since is None:
            self.head_since = self._loop.time()  # the first byte of a next request: its head is now on the clock
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._guard.release(self)
        super().connection_lost(exc)

    def request_started(self) -> None:
        self.awaiting_head = False
        self.head_since = None

    def request_finished(self) -> None:
        self.awaiting_head = True

    def head_late(self) -> None:
        self.head_since = None
        refused("head-timeout", "request head not received in time; connection closed",
                timeout_s=self._guard.limits.header_timeout_s)
        self.force_close()

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """A malformed request is the client's mistake: one rate-limited warning, no traceback."""
        exc = kw.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            refused("malformed-http", "malformed HTTP request; answered 400 and closed",
                    error=f"{type(exc).__name__}: {exc.message}"[:300])
            return
        super().log_exception(*args, **kw)


class GuardedServer(web.Server):
    """aiohttp's low-level server whose connections are :class:`GuardedHandler`, counted and capped."""

    def __init__(self, handler: Route, *, limits: Limits, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", limits.idle_timeout_s)
        kwargs.setdefault("max_headers", MAX_HEADERS)
        # Bodies are taken as sent (a Content-Encoding is refused with 415): inflating them would let
        # a few KiB of gzip become the memory the body budget is there to bound.
        kwargs.setdefault("auto_decompress", False)
        super().__init__(self._between_heads(handler), **kwargs)
        self.limits = limits
        self.open: dict[GuardedHandler, None] = {}  # insertion order: oldest first
        self._sweep_handle: asyncio.TimerHandle | None = None
        # Late heads are closed within the head timeout plus this period.
        self._sweep_period = min(1.0, limits.header_timeout_s / 4)

    @staticmethod
    def _between_heads(handler: Route) -> Route:
        """``handler``, telling the connection when a request's head is in and when it is answered."""

        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            protocol = request.protocol
            assert isinstance(protocol, GuardedHandler)
            protocol.request_started()
            try:
                return await handler(request)
            finally:
                protocol.request_finished()

        return handle

    def __call__(self) -> GuardedHandler:
        return GuardedHandler(self, loop=self._loop, **self._kwargs)

    def admit(self, handler: GuardedHandler) -> None:
        if len(self.open) >= self.limits.max_connections:
            victim = next((h for h in self.open if h.awaiting_head), None)
            refused("connection-cap", "connection limit reached; closed the oldest idle connection"
                    if victim else "connection limit reached and none idle; new connection closed",
                    max_connections=self.limits.max_connections)
            if victim is None:
                handler.force_close()
                return
            self.open.pop(victim, None)
            victim.force_close()
        self.open[handler] = None
        if self._sweep_handle is None:
            self._sweep_handle = asyncio.get_running_loop().call_later(self._sweep_period, self._sweep)

    def _sweep(self) -> None:
        """Close the connections whose request head is late; runs while any connection is open."""
        loop = asyncio.get_running_loop()
        late = loop.time() - self.limits.header_timeout_s
        for handler in [h for h in self.open if h.head_since is not None and h.head_since <= late]:
            handler.head_late()
        self._sweep_handle = loop.call_later(self._sweep_period, self._sweep) if self.open else None

    def release(self, handler: GuardedHandler) -> None:
        self.open.pop(handler, None)


class GuardedSite(web.TCPSite):
    """A TCP site whose TLS handshakes must finish within the head timeout (asyncio's default is 60 s)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, ssl_context: Any,
                 handshake_timeout_s: float, reuse_port: bool | None = None) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context, reuse_port=reuse_port)
        self._handshake_timeout = handshake_timeout_s

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            server, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port,
            ssl_handshake_timeout=self._handshake_timeout if self._ssl_context else None,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port
