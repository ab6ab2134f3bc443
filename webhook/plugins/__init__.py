"""DeepFlow-compatible Lua plugins: the contract the resolver relies on.

The resolver only sees a :class:`PluginSet`: an immutable snapshot that is swapped whole
by the registry, so one admission request is evaluated entirely against one set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from webhook.outcomes import PluginOutcome


@dataclass(frozen=True, slots=True)
class PluginAnswer:
    """A plugin's non-empty, well-formed (type, name) answer, before type canonicalisation."""

    plugin: str
    workload_type: str
    workload_name: str


class PluginSet(Protocol):
    """An immutable snapshot of loaded plugins, evaluated in name order."""

    @property
    def names(self) -> tuple[str, ...]: ...

    def answers(self, meta_json: str, deadline: float | None = None) -> Iterator[PluginAnswer]:
        """Yield, lazily and in name order, each plugin's non-empty answer for this metadata.

        Errors, exceeded bounds and malformed returns are counted and logged inside and
        skipped, so the caller just takes the first answer it accepts. ``deadline`` is a
        ``time.monotonic()`` value after which no further plugin is started.
        """
        ...


class AsyncPluginSet(Protocol):
    """A plugin set evaluated outside the server's process (see webhook/plugins/hosted.py): the
    server awaits its answer instead of running Lua on the event loop."""

    @property
    def names(self) -> tuple[str, ...]: ...

    async def first_answer(
        self, meta_json: str, deadline: float | None, accept: Callable[[str], str | None]
    ) -> tuple[PluginAnswer, str] | None:
        """The first answer, in name order, whose type ``accept`` maps to a type to write, with that type."""
        ...


class EmptyPluginSet:
    """The set in force before any source has synced, or when plugins are disabled."""

    names: tuple[str, ...] = ()

    def answers(self, meta_json: str, deadline: float | None = None) -> Iterator[PluginAnswer]:
        return iter(())


EMPTY = EmptyPluginSet()


class PluginObserver(Protocol):
    """Where the plugin engine reports what happened; metrics.py implements it, tests record it."""

    def evaluated(self, plugin: str, outcome: PluginOutcome, seconds: float) -> None: ...

    def skipped(self, plugin: str) -> None:
        """A call not made because the plugin is quarantined."""
        ...

    def quarantine_changed(self, plugin: str, quarantined: bool) -> None: ...

    def oversized(self) -> None:
        """A Pod whose plugin input is above the size limit: no plugin was asked."""
        ...

    def load_failed(self, plugin: str, error: str) -> None: ...

    def set_loaded(self, plugins: Mapping[str, str]) -> None:
        """The set now in force, as name -> sha256 of its source."""
        ...


class NullObserver:
    def evaluated(self, plugin: str, outcome: PluginOutcome, seconds: float) -> None:
        pass

    def skipped(self, plugin: str) -> None:
        pass

    def quarantine_changed(self, plugin: str, quarantined: bool) -> None:
        pass

    def oversized(self) -> None:
        pass

    def load_failed(self, plugin: str, error: str) -> None:
        pass

    def set_loaded(self, plugins: Mapping[str, str]) -> None:
        pass
