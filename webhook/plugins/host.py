"""The plugin host: a child process that holds compiled plugin runtimes and evaluates them.

The server never runs Lua. It starts hosts (``python -m webhook.plugins.host``) and talks to
each over its stdin/stdout pipes, one request at a time (see :mod:`webhook.plugins.client`).
Why a process: the Lua count hook cannot stop time spent inside one C function (a backtracking
pattern in ``string.find``, a huge ``string.rep``), and a Lua panic aborts the process it runs
in. A separate process can be SIGKILLed from outside at any instant, whatever it is doing.

Wire format: the host first sends a hello frame ``[0, None]`` once it is ready; then each frame is a 4-byte little-endian length and a msgpack array.

* ``[SYNC, seq, [[id, name, source], ...], keep]``: compile these plugins (each in its own runtime,
  keyed by the server's id for that version of that plugin), then drop every runtime whose id is
  neither new nor in ``keep``. Answer: ``[seq, [[ok, error, line], ...]]``, one per new plugin.
* ``[EVAL, seq, ids, input, deadline, want_output]``: call the plugins ``ids`` in that order on the
  input (DeepFlow-shaped metadata JSON, UTF-8), stopping after the first match, and before any
  plugin that would start after ``deadline`` (a ``time.monotonic()`` value; 0: none).
  Answer: ``[seq, [[outcome, seconds, type, name, error, line, output], ...]]``, one per call made.

Progress board: before each compile or call the host writes (seq, index, start time) into a small
shared memory block the server maps (``--board-fd``). The server's watchdog reads it to tell which
plugin has been running for how long, and therefore which one to charge when it kills the host.
``time.monotonic()`` is CLOCK_MONOTONIC, the same clock in both processes.

The host also asks the kernel to SIGKILL it when its parent dies (no orphans after a server
crash), and runs at a lower CPU priority than the server, so that plugins busy on every core
cannot starve the server's everyday reviews.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import mmap
import os
import signal
import struct
import sys
import time
from typing import Any, BinaryIO

import msgspec

SYNC, EVAL = 1, 2
HEADER = struct.Struct("<I")
BOARD = struct.Struct("<qqd")  # seq, index of the plugin being compiled or called, its start time
BOARD_SIZE = BOARD.size
NICENESS = 10  # how much lower than the server the host runs (see the module docstring)
PR_SET_PDEATHSIG = 1


def read_frame(stream: BinaryIO) -> bytes | None:
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (size,) = HEADER.unpack(head)
    body = stream.read(size)
    return body if len(body) == size else None


def frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the server still kills its hosts on exit
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


class Host:
    """The host's state: runtimes by id, and the board it reports progress on."""

    def __init__(self, board: mmap.mmap, instructions: int, memory_bytes: int) -> None:
        self.board = board
        self.instructions = instructions
        self.memory_bytes = memory_bytes
        self.runtimes: dict[int, Any] = {}

    def progress(self, seq: int, index: int) -> None:
        BOARD.pack_into(self.board, 0, seq, index, time.monotonic())

    def sync(self, seq: int, new: list[list[Any]], keep: list[int]) -> list[Any]:
        from webhook.plugins.runtime import CompileError, PluginRuntime

        answers: list[Any] = []
        for index, (ident, name, source) in enumerate(new):
            self.progress(seq, index)
            try:
                self.runtimes[ident] = PluginRuntime(name, source, self.instructions, self.memory_bytes)
            except CompileError as exc:
                answers.append([False, str(exc), exc.line])
            else:
                answers.append([True, None, None])
        wanted = set(keep) | {entry[0] for entry in new}
        for ident in [i for i in self.runtimes if i not in wanted]:
            del self.runtimes[ident]
        return answers

    def evaluate(self, seq: int, ids: list[int], data: bytes, deadline: float, want_output: bool) -> list[Any]:
        from webhook.outcomes import PluginOutcome
        from webhook.plugins.dkjson import parse

        text = data.decode("utf-8", "replace")
        prepared = parse(text)
        results: list[Any] = []
        for index, ident in enumerate(ids):
            if deadline and time.monotonic() > deadline:
                break
            runtime = self.runtimes.get(ident)
            if runtime is None:  # the server syncs before it evaluates; a bug, not a plugin's fault
                results.append([PluginOutcome.ERROR, 0.0, "", "", "plugin not loaded in its host", None, ""])
                continue
            self.progress(seq, index)
            started = time.perf_counter()
            result = runtime.call(data, prepared)
            seconds = time.perf_counter() - started
            output = runtime.output() if want_output else ""
            results.append([result.outcome, seconds, result.workload_type, result.workload_name,
                            result.error, result.line, output])
            if result.outcome == PluginOutcome.MATCH:
                break
        return results


def serve(stdin: BinaryIO, out_fd: int, host: Host) -> None:
    decoder = msgspec.msgpack.Decoder()
    encoder = msgspec.msgpack.Encoder()
    _write(out_fd, frame(encoder.encode([0, None])))  # hello: imports done, ready for requests
    while True:
        body = read_frame(stdin)
        if body is None:
            return  # the server closed our stdin: it is done with us
        message = decoder.decode(body)
        kind, seq = message[0], message[1]
        if kind == SYNC:
            answer = host.sync(seq, message[2], message[3])
        elif kind == EVAL:
            answer = host.evaluate(seq, message[2], message[3], message[4], message[5])
        else:
            raise SystemExit(f"unknown request kind {kind!r}")
        _write(out_fd, frame(encoder.encode([seq, answer])))


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webhook.plugins.host")
    parser.add_argument("--board-fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--instructions", type=int, required=True)
    parser.add_argument("--memory-bytes", type=int, required=True)
    parser.add_argument("--niceness", type=int, default=NICENESS)
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the terminal is the server's to handle
    if args.niceness:
        with contextlib.suppress(OSError):
            os.nice(args.niceness)
    board = mmap.mmap(args.board_fd, BOARD_SIZE)
    # The protocol owns the real stdout; anything else that prints goes to stderr.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    serve(sys.stdin.buffer, out_fd, Host(board, args.instructions, args.memory_bytes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
