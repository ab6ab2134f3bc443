"""The plugin hosts of `serve`: :class:`AsyncHost` talks to one host through the event loop, and
:class:`HostPool` keeps a number of them up, hands requests to the least busy, runs the watchdog
(one tick for the whole pool) and replaces hosts that die or are killed (see :mod:`webhook.plugins.client`
for the protocol, the board and the watchdog's rule).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from webhook.outcomes import PluginOutcome
from webhook.plugins.client import (
    _DECODER,
    FIRST_BACKOFF_S,
    LATE,
    MAX_BACKOFF_S,
    START_TIMEOUT_S,
    Died,
    HostObserver,
    HostSettings,
    NullHostObserver,
    _Board,
    eval_message,
    spawn,
    sync_message,
)
from webhook.plugins.host import HEADER

log = logging.getLogger("workload_tagger.plugins.host")

Done = Callable[[list[Any] | None, Died | None], None]
"""Called with a request's answer, or how its host died, when the request ends."""


class _Call:
    __slots__ = ("deadline", "done", "future", "limit", "sent_at", "seq")

    def __init__(self, seq: int, limit: float, deadline: float | None, done: Done | None,
                 future: asyncio.Future[Any], sent_at: float) -> None:
        self.seq = seq
        self.limit = limit
        self.deadline = deadline
        self.done = done
        self.future = future
        self.sent_at = sent_at  # when the host could start it: sent, or the previous call answered


class AsyncHost(asyncio.Protocol):
    """One host driven from the event loop; owned by the :class:`HostPool`.

    Requests are pipelined: a host may have a few queued in its stdin while it works on the first
    (the pool spreads them, fewest queued first), so a busy server writes and reads in batches
    instead of parking each review on a waiter. The host answers in order. ``installed``: the
    plugin ids compiled in this host, or queued to be (a sync precedes the evaluations behind it).
    """

    def __init__(self, pool: HostPool, proc: subprocess.Popen[bytes], board: Any) -> None:
        self.pool = pool
        self.proc = proc
        self._board = _Board(board)
        self._loop = pool.loop
        self._buffer = bytearray()
        self._seq = 0
        self.calls: deque[_Call] = deque()
        self._writer: asyncio.WriteTransport | None = None
        self._reader: asyncio.ReadTransport | None = None
        self._hello: asyncio.Future[Any] = self._loop.create_future()
        self.exited: asyncio.Future[None] = self._loop.create_future()
        self.installed: set[int] = set()
        self.synced_for: object = None  # the plugin set whose every plugin is installed here
        self.alive = True

    async def connect(self) -> None:
        loop = self._loop
        self._reader, _ = await loop.connect_read_pipe(lambda: self, self.proc.stdout)  # type: ignore[arg-type]
        self._writer, _ = await loop.connect_write_pipe(asyncio.BaseProtocol, self.proc.stdin)  # type: ignore[arg-type]
        await asyncio.wait_for(asyncio.shield(self._hello), START_TIMEOUT_S)

    # --- requests -----------------------------------------------------------------------------

    def sync(self, new: list[tuple[int, str, str]], keep: list[int], done: Done | None = None) -> asyncio.Future[Any]:
        """Compile ``new`` (bounded by the load limit per plugin) and keep only ``keep`` besides."""
        self._seq += 1
        self.installed = self.installed.intersection(keep) | {entry[0] for entry in new}
        return self._send(sync_message(self._seq, new, keep), self.pool.settings.load_timeout_s, None, done)

    def evaluate(self, ids: list[int], data: bytes, deadline: float | None, done: Done | None) -> asyncio.Future[Any]:
        """Call plugins ``ids`` on ``data``, after whatever is queued before it on this host."""
        self._seq += 1
        return self._send(eval_message(self._seq, ids, data, deadline), self.pool.settings.call_timeout_s,
                          deadline, done)

    def _send(self, message: bytes, limit: float, deadline: float | None, done: Done | None) -> asyncio.Future[Any]:
        """Write one request; the future gets the answer, a :class:`Died`, or LATE past ``deadline``.

        ``done`` is called exactly once with the answer or the death, even when the caller has
        stopped waiting (so plugin outcomes are always counted and charged).
        """
        future: asyncio.Future[Any] = self._loop.create_future()
        call = _Call(self._seq, limit, deadline, done, future, time.monotonic())  # the board's clock
        if not self.alive or self._writer is None:
            _finish(call, None, Died(NOT_STARTED, -1, 0.0))
            return future
        self.calls.append(call)
        self._writer.write(message)
        self.pool.watch()
        return future

    def check(self, now: float) -> None:
        """The pool's watchdog tick: late reviews stop waiting; a plugin past its limit kills the host."""
        calls = self.calls
        if not calls:
            return
        for call in calls:
            if call.deadline is not None and now >= call.deadline and not call.future.done():
                call.future.set_result(LATE)
        head = calls[0]
        due, index, started = self._board.due(head.seq, head.sent_at, head.limit)
        if now >= due:
            self._died(PluginOutcome.TIMEOUT, index, now - started)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)

    # --- the pipe -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        if not buffer and len(data) >= HEADER.size:  # the common case: exactly one whole answer
            (size,) = HEADER.unpack_from(data, 0)
            if len(data) == HEADER.size + size:
                self._answer(_DECODER.decode(memoryview(data)[HEADER.size:]))
                return
        buffer += data
        while len(buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(buffer, 0)
            end = HEADER.size + size
            if len(buffer) < end:
                return
            message = _DECODER.decode(memoryview(buffer)[HEADER.size:end])
            del buffer[:end]
            self._answer(message)

    def _answer(self, message: list[Any]) -> None:
        if not self._hello.done():
            self._hello.set_result(None)
            return
        calls = self.calls
        if not calls or message[0] != calls[0].seq:
            return  # answers come in order; a stray one cannot happen
        call = calls.popleft()
        if calls:
            head = calls[0]
            head.sent_at = max(head.sent_at, time.monotonic())  # its limit counts from now at the earliest
        _finish(call, message[1], None)
        self.pool.answered(self)

    def connection_lost(self, exc: Exception | None) -> None:
        """The host's stdout closed: it exited (or we killed it)."""
        if self.alive:
            if self.calls:
                head = self.calls[0]
                _, index, started = self._board.due(head.seq, head.sent_at, head.limit)
                self._died(PluginOutcome.CRASH, index, time.monotonic() - started)
            else:
                self._died(PluginOutcome.CRASH, -1, 0.0)
        if not self._hello.done():
            self._hello.set_exception(RuntimeError("plugin host exited before it was ready"))
            self._hello.exception()  # connect() raises it; when nobody waits any more (closing), no warning
        self._close()

    def _died(self, kind: str, index: int, seconds: float) -> None:
        """End every queued call: the running one with ``kind`` and its plugin's index, the others
        NOT_STARTED (their callers send them again)."""
        if not self.alive:
            return
        self.alive = False
        calls, self.calls = self.calls, deque()
        for i, call in enumerate(calls):
            _finish(call, None, Died(kind, index, seconds) if i == 0 else Died(NOT_STARTED, -1, 0.0))
        self.pool.lost(self, kind)

    def kill(self) -> None:
        if self.alive:
            self.alive = False
            calls, self.calls = self.calls, deque()
            for call in calls:
                _finish(call, None, Died(NOT_STARTED, -1, 0.0))
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)

    def _close(self) -> None:
        for transport in (self._writer, self._reader):
            if transport is not None:
                transport.close()
        if not self.exited.done():
            # Reap without blocking the loop: the process is gone or going (its stdout closed).
            self._loop.run_in_executor(None, self.proc.wait).add_done_callback(lambda _: _settle(self.exited, None))


# Died.kind of a call queued behind the one that killed its host: it never ran; send it again.
NOT_STARTED = "not-started"
MAX_QUEUED = 4  # requests queued on one host before a review waits for the pool instead
TICK_S = 0.01  # the watchdog's period: a plugin is killed at most this long after its limit


def _finish(call: _Call, answer: list[Any] | None, died: Died | None) -> None:
    if call.done is not None:
        call.done(answer, died)
    if not call.future.done():
        call.future.set_result(died if died is not None else answer)


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


class HostPool:
    """``size`` hosts evaluating plugins; replaced when they die.

    A review goes to the ready host with the fewest queued requests (at most :data:`MAX_QUEUED`;
    past that it waits for one, up to its deadline). One watchdog tick, every :data:`TICK_S`
    while anything is queued, checks every host's running plugin against its limit and every
    queued review against its deadline: no timer per review. A host killed by the watchdog is
    replaced at once; hosts that die by themselves are replaced with doubling backoff (reset by
    any answered request), so a host that crashes on start cannot spin. ``warm`` gives the plugins
    a new host compiles before it takes requests.
    """

    def __init__(self, settings: HostSettings, size: int, observer: HostObserver | None = None,
                 warm: Callable[[], list[tuple[int, str, str]]] | None = None) -> None:
        self.settings = settings
        self.size = size
        self.observer: HostObserver = observer or NullHostObserver()
        self.warm = warm
        self.loop = asyncio.get_running_loop()
        self._ready: list[AsyncHost] = []  # hosts taking requests
        self._hosts: set[AsyncHost] = set()  # every live host, warming up included
        self._waiters: deque[tuple[float | None, asyncio.Future[AsyncHost | None]]] = deque()
        self._spawning = 0  # hosts being started right now (a waiting review may get one soon)
        self._failures = 0
        self._closed = False
        self._tick: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def up(self) -> int:
        return len(self._ready)

    async def start(self) -> None:
        """Start every host; returns when they are up (or have failed and are being retried)."""
        await asyncio.gather(*(self._replace(0.0) for _ in range(self.size)))

    async def close(self) -> None:
        """Kill every host (SIGKILL) and wait until they are reaped."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        if self._tick is not None:
            self._tick.cancel()
        hosts = list(self._hosts)
        for host in hosts:
            host.kill()
        for _, waiter in self._waiters:
            _settle(waiter, None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*(h.exited for h in hosts), return_exceptions=True), 5.0)

    def take(self) -> AsyncHost | None:
        """The ready host with the fewest queued requests, if one has room (no coroutine to create)."""
        best = None
        for host in self._ready:
            queued = len(host.calls)
            if not queued:
                return host
            if queued < MAX_QUEUED and (best is None or queued < len(best.calls)):
                best = host
        return best

    async def acquire(self, deadline: float | None) -> AsyncHost | None:
        """A host with room; None at once when none is up (being replaced), or when none has room
        before ``deadline``."""
        host = self.take()
        if host is not None:
            return host
        if not self._ready and not self._spawning:
            # None up, none starting (a backoff pause): answer without plugins now, not at the deadline.
            self.observer.no_host()
            return None
        waiter: asyncio.Future[AsyncHost | None] = self.loop.create_future()
        self._waiters.append((deadline, waiter))
        self.watch()
        return await waiter

    def answered(self, host: AsyncHost) -> None:
        """A host answered a request: it has room for a waiting review."""
        self._failures = 0
        self._hand(host)

    def _hand(self, host: AsyncHost) -> None:
        while self._waiters:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(host)
                return

    def watch(self) -> None:
        if self._tick is None and not self._closed:
            self._tick = self.loop.call_later(TICK_S, self._check)

    def _check(self) -> None:
        self._tick = None
        now = time.monotonic()
        busy = False
        for host in list(self._hosts):
            host.check(now)
            busy = busy or bool(host.calls)
        if self._waiters:
            kept = deque(w for w in self._waiters if not w[1].done())
            for deadline, waiter in kept:
                if deadline is not None and now >= deadline:
                    waiter.set_result(None)
            self._waiters = deque(w for w in kept if not w[1].done())
        if busy or self._waiters:
            self.watch()

    def lost(self, host: AsyncHost, reason: str) -> None:
        """A host died (killed by the watchdog: PluginOutcome.TIMEOUT; by itself: PluginOutcome.CRASH); start its replacement."""
        self._hosts.discard(host)
        if host in self._ready:
            self._ready.remove(host)
        if self._closed:
            return
        self.observer.host_exited(reason)
        self.observer.hosts_up(len(self._ready))
        # The first kill after an answered request is replaced at once (the watchdog did its job);
        # repeated deaths without an answer in between back off.
        delay = 0.0 if reason == PluginOutcome.TIMEOUT and not self._failures else min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** self._failures)
        self._failures += 1
        log.warning("plugin host %s; starting another%s", "killed: a plugin passed its time limit"
                    if reason == PluginOutcome.TIMEOUT else "exited unexpectedly", f" in {delay:g} s" if delay else "",
                    extra={"reason": reason, "pid": host.proc.pid, "hosts_up": len(self._ready)})
        if not delay:
            self._spawning += 1  # counted now: a review arriving before the task runs may wait for it
        task = self.loop.create_task(self._replace(delay, spawning_counted=not delay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self._ready:
            self._hand(self._ready[0])  # a waiter may go to a surviving host
        elif not self._spawning:
            # None up, and the next only after a backoff pause: waiting reviews go on without plugins.
            for _, waiter in self._waiters:
                _settle(waiter, None)
            self._waiters.clear()

    async def _replace(self, delay: float, spawning_counted: bool = False) -> None:
        while not self._closed:
            if delay:
                await asyncio.sleep(delay)
            if not spawning_counted:
                self._spawning += 1
            spawning_counted = False
            try:
                host = await self._start_one()
            except Exception as exc:
                delay = min(MAX_BACKOFF_S, max(FIRST_BACKOFF_S, delay * 2))
                log.error("plugin host failed to start; retrying", extra={"error": str(exc), "retry_in_s": delay})
                continue
            finally:
                self._spawning -= 1
            if host is None:
                return  # closed, or it died warming up and lost() started its replacement
            self._ready.append(host)
            self.observer.hosts_up(len(self._ready))
            self._hand(host)
            return

    async def _start_one(self) -> AsyncHost | None:
        proc, board = await self.loop.run_in_executor(None, spawn, self.settings)
        host = AsyncHost(self, proc, board)
        try:
            await host.connect()
        except BaseException:
            host.kill()
            raise
        if self._closed:
            host.kill()
            return None
        self._hosts.add(host)  # watched, and a death during the warm-up is seen by lost()
        plugins = self.warm() if self.warm is not None else []
        if plugins:
            answer = await host.sync(plugins, [p[0] for p in plugins])
            if isinstance(answer, Died):
                return None  # lost() already started a replacement
            host.installed.difference_update(p[0] for p, (ok, _, _) in zip(plugins, answer, strict=True) if not ok)
        return host
