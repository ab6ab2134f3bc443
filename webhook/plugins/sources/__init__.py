"""Plugin sources feed complete snapshots (name -> Lua source) to the plugin registry."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any, Protocol

log = logging.getLogger("workload_tagger.sources")


class PluginSink(Protocol):
    """What a source needs of the registry: take a complete desired set, compile, swap atomically."""

    def apply(self, sources: Mapping[str, str], *, origin: str) -> Any: ...


class SourceObserver(Protocol):
    """Where sources report syncs and watch restarts; metrics.py implements it."""

    def synced(self, source: str, ok: bool) -> None: ...

    def watch_restarted(self, source: str, reason: str) -> None: ...


class NullSourceObserver:
    def synced(self, source: str, ok: bool) -> None:
        pass

    def watch_restarted(self, source: str, reason: str) -> None:
        pass


class PluginSource(Protocol):
    """A running feed. ``start`` returns at once (work happens in a thread); ``synced`` turns true
    after the first complete sync and stays true; ``stop`` returns once the thread is gone."""

    def start(self) -> None: ...

    def synced(self) -> bool: ...

    def stop(self) -> None: ...


class ThreadedSource:
    """What every source shares: its thread, the synced flag, and handing over only changed snapshots.

    Subclasses implement ``_run`` (loop until ``_stopping``) and ``stop`` (cut what blocks, then join).
    """

    thread_name = "plugins-source"

    def __init__(self, sink: PluginSink, observer: SourceObserver | None) -> None:
        self._sink = sink
        self._observer: SourceObserver = observer or NullSourceObserver()
        self._stopping = threading.Event()
        self._synced = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: dict[str, str] | None = None  # the snapshot last handed to the sink

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("source already started")
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def synced(self) -> bool:
        return self._synced.is_set()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def _run(self) -> None:
        raise NotImplementedError

    def _hand_over(self, snapshot: dict[str, str], origin: str, **context: Any) -> bool:
        """Apply ``snapshot`` unless it equals the last one (replayed events are harmless)."""
        if snapshot == self._last:
            return False
        self._sink.apply(snapshot, origin=origin)
        self._last = snapshot
        log.info("plugin snapshot applied", extra={**context, "plugins": sorted(snapshot)})
        return True
