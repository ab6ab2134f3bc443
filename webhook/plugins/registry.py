"""Loaded plugins: compile, validate, and swap whole immutable sets.

Sources (directory watcher, ConfigMap watcher) hand :meth:`PluginRegistry.apply` the complete
desired set. A plugin whose source is unchanged keeps its compiled runtime; a bad new version
never replaces a good old one; the new :class:`LoadedPluginSet` is published by one reference
assignment, so a request that picked up ``registry.current`` is evaluated entirely against it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.outcomes import PluginOutcome
from webhook.plugins import NullObserver, PluginAnswer, PluginObserver
from webhook.plugins.dkjson import parse
from webhook.plugins.quarantine import ENTERED, Breaker, QuarantinePolicy
from webhook.plugins.runtime import CallResult, CompileError, PluginRuntime

log = logging.getLogger("workload_tagger.plugins")

# Pod metadata used to smoke-test a plugin before it is accepted by `plugin create`.
DEFAULT_SAMPLE_META = (
    '{"name":"sample-7d4b9c6f5-x2x9q","generateName":"sample-7d4b9c6f5-","namespace":"default",'
    '"uid":"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0","labels":{"app":"sample","pod-template-hash":"7d4b9c6f5"},'
    '"annotations":{"kubernetes.io/psp":"restricted"},'
    '"ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"sample-7d4b9c6f5",'
    '"uid":"1a2b3c4d-5e6f-7081-92a3-b4c5d6e7f809","controller":true,"blockOwnerDeletion":true}]}'
)

_MAX_LOGGED = 1024  # distinct (plugin, error) pairs logged per set; bounds memory if messages vary

_FAILED = frozenset({PluginOutcome.ERROR, PluginOutcome.BUDGET, PluginOutcome.MEMORY, PluginOutcome.INVALID,
                     PluginOutcome.TIMEOUT, PluginOutcome.CRASH})


@dataclass(frozen=True)
class PluginLimits:
    """Per-call bounds. The default instruction budget is meant as about ten milliseconds of plugin
    time (``make bench`` prints what it is on the machine at hand). ``quarantine``: when a plugin that keeps hitting those bounds is skipped for a while."""

    instructions: int = 5_000_000
    memory_bytes: int = 8 * 1024 * 1024
    quarantine: QuarantinePolicy = field(default_factory=QuarantinePolicy)


class PluginLoadError(ValueError):
    """A plugin was rejected at load; the message names the plugin and, when known, the line."""

    def __init__(self, plugin: str, message: str, line: int | None = None) -> None:
        self.plugin = plugin
        self.reason = message
        self.line = line
        where = f" (line {line})" if line is not None and f":{line}:" not in message else ""
        self.detail = f"{message}{where}"  # without the plugin prefix, for callers that add their own
        super().__init__(f"plugin {plugin!r} rejected: {self.detail}")


@dataclass(frozen=True)
class CompiledPlugin:
    """A plugin as loaded; its breaker lives as long as this version of its source."""

    name: str
    sha256: str
    runtime: PluginRuntime
    breaker: Breaker


def sha256_of(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def compile_plugin(name: str, source: str, limits: PluginLimits) -> CompiledPlugin:
    """Compile and run the plugin's top level once in its own sandboxed runtime."""
    try:
        runtime = PluginRuntime(name, source, limits.instructions, limits.memory_bytes)
    except CompileError as exc:
        raise PluginLoadError(name, str(exc), exc.line) from None
    return CompiledPlugin(name, sha256_of(source), runtime, Breaker(limits.quarantine))


def validate_plugin(name: str, source: str, limits: PluginLimits, sample_meta_json: str | None = None) -> None:
    """Reject a plugin that does not compile, lacks the function, or fails on a sample Pod."""
    plugin = compile_plugin(name, source, limits)
    result = plugin.runtime.call(sample_meta_json if sample_meta_json is not None else DEFAULT_SAMPLE_META)
    if result.outcome in _FAILED:
        raise PluginLoadError(name, f"{result.outcome} on the sample Pod: {result.error}", result.line)


class Accounts:
    """What every plugin set does with one call's result: count it, charge the plugin's breaker,
    and log each distinct failure once (and every quarantine change)."""

    def __init__(self, observer: PluginObserver) -> None:
        self._observer = observer
        self._logged: set[tuple[str, str]] = set()

    def record(self, name: str, breaker: Breaker, result: CallResult, seconds: float) -> None:
        self._observer.evaluated(name, result.outcome, seconds)
        change = breaker.record(result.outcome)
        if change is not None:
            self._quarantine_changed(name, breaker, change == ENTERED, result)
        if result.outcome in _FAILED:
            key = (name, f"{result.outcome}:{result.error}")
            if key not in self._logged and len(self._logged) < _MAX_LOGGED:
                self._logged.add(key)
                log.warning(
                    "plugin %s skipped (%s): %s",
                    name,
                    result.outcome,
                    result.error,
                    extra={"plugin": name, "outcome": result.outcome, "line": result.line},
                )

    def _quarantine_changed(self, name: str, breaker: Breaker, entered: bool, result: CallResult) -> None:
        self._observer.quarantine_changed(name, entered)
        if entered:
            log.warning(
                "plugin %s quarantined for %g s after %d consecutive calls that ran out of budget, memory "
                "or time (last: %s); Pods it would claim meanwhile are not tagged by it",
                name,
                breaker.length,
                breaker.failures,
                result.outcome,
                extra={"plugin": name, "quarantine_seconds": breaker.length},
            )
        else:
            log.info("plugin %s out of quarantine: its trial call succeeded", name, extra={"plugin": name})


class LoadedPluginSet:
    """An immutable snapshot of compiled plugins, evaluated in name order."""

    def __init__(self, plugins: Mapping[str, CompiledPlugin], observer: PluginObserver) -> None:
        self._plugins = tuple(plugins[name] for name in sorted(plugins))
        self.names: tuple[str, ...] = tuple(p.name for p in self._plugins)
        self._observer = observer
        self._accounts = Accounts(observer)

    @property
    def plugins(self) -> Mapping[str, CompiledPlugin]:
        return {p.name: p for p in self._plugins}

    def evaluate(
        self, plugin: CompiledPlugin, meta_json: bytes | str, prepared: tuple[Any, int] | None = None
    ) -> CallResult:
        """One call, counted and (once per distinct error) logged."""
        started = time.perf_counter()
        result = plugin.runtime.call(meta_json, prepared)
        self._accounts.record(plugin.name, plugin.breaker, result, time.perf_counter() - started)
        return result

    def answers(self, meta_json: str, deadline: float | None = None) -> Iterator[PluginAnswer]:
        if not self._plugins:
            return
        encoded = meta_json.encode()  # once per request, not once per plugin
        prepared = parse(meta_json)  # likewise the JSON parse; each plugin still gets its own tables
        for plugin in self._plugins:
            if deadline is not None and time.monotonic() > deadline:
                return
            if not plugin.breaker.allows():
                self._observer.skipped(plugin.name)
                continue
            result = self.evaluate(plugin, encoded, prepared)
            if result.outcome == PluginOutcome.MATCH:
                yield PluginAnswer(plugin.name, result.workload_type, result.workload_name)


@dataclass
class ApplyReport:
    loaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


class PluginRegistry:
    """Holds the set in force; :meth:`apply` is called from source watch threads."""

    def __init__(self, limits: PluginLimits, observer: PluginObserver | None = None) -> None:
        self.limits = limits
        self.observer: PluginObserver = observer if observer is not None else NullObserver()
        self._lock = threading.Lock()
        self._current = LoadedPluginSet({}, self.observer)

    @property
    def current(self) -> LoadedPluginSet:
        return self._current

    def apply(self, sources: Mapping[str, str], *, origin: str) -> ApplyReport:
        report = ApplyReport()
        with self._lock:
            old = self._current.plugins
            new: dict[str, CompiledPlugin] = {}
            for name in sorted(sources):
                source = sources[name]
                previous = old.get(name)
                if previous is not None and previous.sha256 == sha256_of(source):
                    new[name] = previous
                    report.unchanged.append(name)
                    continue
                try:
                    new[name] = compile_plugin(name, source, self.limits)
                except PluginLoadError as exc:
                    report.failed[name] = str(exc)
                    log.error(
                        "%s (from %s); %s",
                        exc,
                        origin,
                        "keeping the previous version" if previous else "not loaded",
                        extra={"plugin": name, "line": exc.line},
                    )
                    self.observer.load_failed(name, str(exc))
                    if previous is not None:
                        new[name] = previous
                    continue
                report.loaded.append(name)
            report.removed = sorted(set(old) - set(sources))
            self._current = LoadedPluginSet(new, self.observer)
            self.observer.set_loaded({name: p.sha256 for name, p in sorted(new.items())})
        if report.loaded or report.removed:
            log.info(
                "plugins from %s: loaded %s, removed %s, unchanged %d, failed %s",
                origin,
                report.loaded,
                report.removed,
                len(report.unchanged),
                sorted(report.failed),
            )
        return report
