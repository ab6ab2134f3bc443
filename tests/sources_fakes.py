"""Test doubles for the plugin sources and the plugin CLI.

``FakeConfigMapAPI`` is tests/fakeapi.py's FakeAPI holding ConfigMaps, for what kmock 0.8
cannot express: real resourceVersions (409 on a stale write), server-side watch timeouts with
bookmarks, dropped connections, slow answers and 403s, and a write by "somebody else" landing
between the client's read and its write.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from tests.fakeapi import GVR, FakeAPI, RequestLog, merge_patch

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


# --- the fake API server ------------------------------------------------------------------

CONFIGMAPS: GVR = ("", "v1", "configmaps")


class FakeConfigMapAPI(FakeAPI):
    """ConfigMaps with real resourceVersion semantics, plus knobs for failure modes."""

    def __init__(
        self,
        list_delay_s: float = 0.0,
        forbid: set[str] | None = None,  # verbs answered 403: get, list, watch, create, patch
        drop_watch_after_events: int | None = None,  # next watch: drop the connection after N events
        always_conflict: bool = False,
    ) -> None:
        super().__init__(first_rv=100)
        self.list_delay_s = list_delay_s
        self.forbid = set(forbid or ())
        self.drop_watch_after_events = drop_watch_after_events
        self.always_conflict = always_conflict
        # lands just before the next write, merged into the ConfigMap's data
        self.concurrent_write: tuple[str, str, dict[str, str]] | None = None
        self.before_write = self._concurrent_write

    def __enter__(self) -> FakeConfigMapAPI:
        super().__enter__()
        return self

    @property
    def seen(self) -> RequestLog:
        return self.log

    @property
    def objects(self) -> dict[tuple[str, str], dict[str, Any]]:
        return self.resource(CONFIGMAPS)

    def put(self, namespace: str, name: str, data: dict[str, str]) -> None:
        """Create or replace the ConfigMap's data (what ``kubectl apply`` of a whole ConfigMap does)."""
        obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace}}
        self.save(CONFIGMAPS, {**obj, "data": dict(data)})

    def remove(self, namespace: str, name: str) -> None:
        self.delete_object(CONFIGMAPS, namespace, name)

    def _concurrent_write(self, method: str, path: str) -> None:
        """Somebody else's write, landing between the client's read and its write."""
        if self.concurrent_write is not None:
            (namespace, name, data), self.concurrent_write = self.concurrent_write, None
            current = self.objects.get((namespace, name))
            self.put(namespace, name, merge_patch((current or {}).get("data") or {}, data))
