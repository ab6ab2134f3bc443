"""Recorders for the plugin sources' tests: what a source applied and reported, and waiting for it."""

from __future__ import annotations

import threading
from collections.abc import Mapping

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
