"""The server's side of the plugin hosts: start them, talk to them, kill them when a limit passes.

Two clients over the same host program (:mod:`webhook.plugins.host`) and wire format; this module
holds what they share and the blocking one, :mod:`webhook.plugins.pool` the other:

* :class:`~webhook.plugins.pool.AsyncHost` / :class:`~webhook.plugins.pool.HostPool` for `serve`: requests are written to the host's pipe and
  the answer arrives through the event loop (``connect_read_pipe``), so a review waiting for
  plugins never blocks the loop, and everyday reviews keep flowing meanwhile.
* :class:`BlockingHost` for the offline doors (`resolve --plugins`, `plugin test`, `audit`,
  `backfill`) and for the registry's loader, which runs in a source's thread: ``select`` on the
  pipe with the same watchdog.

The watchdog: while a request runs, the client checks the host's progress board (which plugin,
since when) at the moment that plugin's wall-clock limit would pass; if it is still the same
plugin, the host is SIGKILLed and the request ends with :class:`Died` naming the plugin's index,
so the caller charges that plugin (outcome ``timeout``). A host that dies by itself ends the
request the same way with ``crash``. One request per host at a time: a host is either idle in the
pool or owned by exactly one request.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from webhook.outcomes import PluginOutcome
from webhook.plugins.host import BOARD, BOARD_SIZE, EVAL, HEADER, NICENESS, SYNC, frame

log = logging.getLogger("workload_tagger.plugins.host")

START_TIMEOUT_S = 30.0  # a fresh interpreter importing lupa; only a broken install takes this long
MAX_BACKOFF_S = 10.0
FIRST_BACKOFF_S = 0.1

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder()


@dataclass(frozen=True)
class HostSettings:
    """What every host is started with, and the wall-clock limits its client enforces."""

    instructions: int
    memory_bytes: int
    call_timeout_s: float
    load_timeout_s: float
    niceness: int = NICENESS


@dataclass(frozen=True, slots=True)
class Died:
    """A request that ended with its host gone: ``kind`` is PluginOutcome.TIMEOUT (we killed it) or PluginOutcome.CRASH;
    ``index`` the position in the request of the plugin then running (-1: none had started)."""

    kind: str
    index: int
    seconds: float


# What a review gets when its deadline passes before the host answers (the host carries on).
LATE = "late"


class HostObserver(Protocol):
    """Where the hosts report; metrics.py implements it."""

    def host_exited(self, reason: str) -> None: ...

    def hosts_up(self, count: int) -> None: ...

    def no_host(self) -> None:
        """A review needed plugins while no host was up: answered without plugin answers."""
        ...


class NullHostObserver:
    def host_exited(self, reason: str) -> None:
        pass

    def hosts_up(self, count: int) -> None:
        pass

    def no_host(self) -> None:
        pass


def _memfd() -> int:
    fd = os.memfd_create("workload-tagger-host-board", os.MFD_CLOEXEC)
    os.ftruncate(fd, BOARD_SIZE)
    return fd


def spawn(settings: HostSettings) -> tuple[subprocess.Popen[bytes], Any]:
    """Start a host process and map its progress board; the caller waits for its hello frame."""
    import mmap

    fd = _memfd()
    try:
        board = mmap.mmap(fd, BOARD_SIZE)
        cmd = [sys.executable, "-m", "webhook.plugins.host", "--board-fd", str(fd), "--parent", str(os.getpid()),
               "--instructions", str(settings.instructions), "--memory-bytes", str(settings.memory_bytes),
               "--niceness", str(settings.niceness)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(fd,),
                                start_new_session=True)  # a terminal's Ctrl-C reaches the server only
    finally:
        os.close(fd)
    return proc, board


def sync_message(seq: int, new: list[tuple[int, str, str]], keep: list[int]) -> bytes:
    return frame(_ENCODER.encode([SYNC, seq, new, keep]))


def eval_message(seq: int, ids: list[int], data: bytes, deadline: float | None, want_output: bool = False) -> bytes:
    return frame(_ENCODER.encode([EVAL, seq, ids, data, deadline or 0.0, want_output]))


class _Board:
    """The client's view of a host's progress board, and the watchdog's arithmetic."""

    def __init__(self, board: Any) -> None:
        self.board = board

    def due(self, seq: int, sent_at: float, limit: float) -> tuple[float, int, float]:
        """(when the running plugin's limit passes, its index, when it started)."""
        bseq, index, started = BOARD.unpack_from(self.board, 0)
        if bseq != seq:  # no plugin of this request started yet: count from the send
            return sent_at + limit, -1, sent_at
        return started + limit, index, started


class BlockingHost:
    """One host driven synchronously (offline doors, the registry's loader thread)."""

    def __init__(self, settings: HostSettings) -> None:
        self.settings = settings
        self.proc, board = spawn(settings)
        self._board = _Board(board)
        self._buffer = bytearray()
        self._seq = -1  # never on the board (all zeros until the first request): the wait counts from now
        self.alive = True
        hello = self._exchange(None, START_TIMEOUT_S, None)
        if isinstance(hello, Died):
            raise RuntimeError("plugin host did not start")
        self._seq = 0

    def sync(self, new: list[tuple[int, str, str]], keep: list[int]) -> list[Any] | Died:
        self._seq += 1
        return self._exchange(sync_message(self._seq, new, keep), self.settings.load_timeout_s, None)

    def evaluate(self, ids: list[int], data: bytes, deadline: float | None, want_output: bool = False) -> list[Any] | Died:
        self._seq += 1
        return self._exchange(eval_message(self._seq, ids, data, deadline, want_output),
                              self.settings.call_timeout_s, deadline)

    def _exchange(self, message: bytes | None, limit: float, deadline: float | None) -> list[Any] | Died:
        if not self.alive:
            return Died(PluginOutcome.CRASH, -1, 0.0)
        sent_at = time.monotonic()
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        if message is not None:
            try:
                self.proc.stdin.write(message)  # type: ignore[union-attr]
                self.proc.stdin.flush()  # type: ignore[union-attr]
            except (BrokenPipeError, OSError):
                return self._died(PluginOutcome.CRASH, -1, sent_at)
        while True:
            answer = self._take_frame()
            if answer is not None:
                return answer[1]  # type: ignore[no-any-return]
            now = time.monotonic()
            due, index, started = self._board.due(self._seq, sent_at, limit)
            if now >= due:
                self._kill()
                return self._died(PluginOutcome.TIMEOUT, index, started)
            readable, _, _ = select.select([fd], [], [], due - now)
            if readable:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    _, index, started = self._board.due(self._seq, sent_at, limit)
                    return self._died(PluginOutcome.CRASH, index, started)
                self._buffer += chunk

    def _take_frame(self) -> Any:
        buffer = self._buffer
        if len(buffer) < HEADER.size:
            return None
        (size,) = HEADER.unpack_from(buffer, 0)
        if len(buffer) < HEADER.size + size:
            return None
        body = bytes(buffer[HEADER.size:HEADER.size + size])
        del buffer[:HEADER.size + size]
        return _DECODER.decode(body)

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)

    def _died(self, kind: str, index: int, started: float) -> Died:
        self.alive = False
        self._kill()
        self.proc.wait()
        self._close_pipes()
        return Died(kind, index, time.monotonic() - started)

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()

    def close(self) -> None:
        """Stop the host now (SIGKILL: nothing it holds needs a clean exit)."""
        if self.alive:
            self.alive = False
            self._kill()
            self.proc.wait()
            self._close_pipes()
