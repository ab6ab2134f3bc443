"""Recorders for the plugin sources' tests: what a source applied and reported, and waiting for it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping

# --- recorders ----------------------------------------------------------------------------


class RecordingSink:
    """Records every snapshot a source applies (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.applied: list[tuple[dict[str, str], str]] = []

    def apply(self, sources: Mapping[str, str], *, origin: str) -> None:
        with self._lock:
            self.applied.append((dict(sources), origin))

    @property
    def snapshots(self) -> list[dict[str, str]]:
        with self._lock:
            return [snapshot for snapshot, _ in self.applied]

    @property
    def last(self) -> dict[str, str] | None:
        snapshots = self.snapshots
        return snapshots[-1] if snapshots else None


class RecordingObserver:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.syncs: list[tuple[str, bool]] = []
        self.restarts: list[tuple[str, str]] = []

    def synced(self, source: str, ok: bool) -> None:
        with self._lock:
            self.syncs.append((source, ok))

    def watch_restarted(self, source: str, reason: str) -> None:
        with self._lock:
            self.restarts.append((source, reason))


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Like :func:`wait_for` but yields to the event loop (kmock serves on it)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)
