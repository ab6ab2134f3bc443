"""Plugin sources feed complete snapshots (name -> Lua source) to the plugin registry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


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
