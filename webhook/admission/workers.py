"""`serve --workers N`: N server processes sharing one port through SO_REUSEPORT.

The hot path is CPU-bound Python, so one process uses one core; a replica with more cores runs
more processes, and the kernel spreads new connections across them. The parent only forks,
forwards SIGTERM/SIGINT and waits: it serves nothing and restarts nothing. If a worker dies on its
own, the parent stops the others and exits non-zero, so the kubelet restarts the whole container
instead of a replica quietly running with less capacity than it advertises.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("workload_tagger.workers")

FORWARDED = (signal.SIGTERM, signal.SIGINT)


def _run_child(child: Callable[[], int]) -> None:
    """In a forked child: default signal handling, run, and never return into the parent's code."""
    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_DFL)
    code = 1
    try:
        code = child()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        log.exception("worker crashed")
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def exit_status(status: int) -> int:
    """A waitpid status as a shell-style exit code (128+signal for a killed child)."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def supervise(workers: int, child: Callable[[], int], on_exit: Callable[[int], None] | None = None) -> int:
    """Fork ``workers`` children running ``child()``; return 0 only if every one exited 0.

    ``on_exit(pid)`` runs in the parent after each child is reaped (metrics clean-up).

    Must be called before any event loop or thread exists (fork copies only the calling thread).
    """
    children: dict[int, int] = {}
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        for index in range(workers):
            pid = os.fork()
            if pid == 0:
                _run_child(child)
            children[pid] = index
        if stopping:  # a signal arrived while forking: make sure the late children hear it too
            forward(signal.SIGTERM, None)
        log.info("workers started", extra={"workers": workers, "pids": sorted(children)})
        failed = 0
        while children:
            pid, status = os.waitpid(-1, 0)
            if pid not in children:
                continue
            index = children.pop(pid)
            if on_exit is not None:
                on_exit(pid)
            code = exit_status(status)
            if code != 0 and not (stopping and code in (128 + signal.SIGTERM, 128 + signal.SIGINT)):
                failed += 1
                log.error("worker exited", extra={"worker": index, "pid": pid, "exit_code": code})
                if not stopping:
                    forward(signal.SIGTERM, None)
        return 1 if failed else 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
