"""Plugins evaluated in plugin hosts: the registry and plugin sets every door uses.

* :class:`HostedRegistry` (``serve``): a source's thread hands it the complete desired set; each
  changed plugin is compiled first in a *loader* host (a :class:`BlockingHost` started for that
  apply), so a plugin whose top level hangs, overruns its load limit or kills the process is
  reported by name and keeps its last good version, while every other plugin loads. The accepted
  set is published as one :class:`HostedPluginSet` (an immutable snapshot, swapped by one
  reference assignment: a review is evaluated entirely against the set it picked up).
* :class:`HostedPluginSet`: awaited by the server's slow path. One round trip per review carries
  the input once; the host calls the set's plugins in name order and stops at the first match.
  The server keeps the bookkeeping (quarantine breakers, metrics, log lines) because only it sees
  the timeouts and crashes: each plugin version has a server-assigned id, and a host compiles the
  ids it is asked for that it does not hold yet (``sync``) before evaluating them.
* :class:`BlockingPluginSet`: the same for the offline doors, synchronously, over one host that
  is replaced whenever a plugin kills it; `audit` and `backfill` carry on with the next Pod.

Pod creators cannot disable plugins: an input above ``max_input_bytes`` is not sent to any plugin
(counted), so nobody can make every plugin run out of budget, and into quarantine, by creating a
few Pods with huge labels or annotations.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from webhook.outcomes import PluginOutcome
from webhook.plugins import NullObserver, PluginAnswer, PluginObserver
from webhook.plugins.client import LATE, BlockingHost, Died, HostSettings
from webhook.plugins.pool import AsyncHost, HostPool
from webhook.plugins.quarantine import Breaker, QuarantinePolicy
from webhook.plugins.registry import (
    DEFAULT_SAMPLE_META,
    Accounts,
    ApplyReport,
    PluginLimits,
    PluginLoadError,
    sha256_of,
)
from webhook.plugins.runtime import NO_MATCH_RESULT, CallResult

log = logging.getLogger("workload_tagger.plugins")

_IDS = itertools.count(1)  # one id per compiled version of a plugin, unique in this process


@dataclass(frozen=True, slots=True)
class HostedEntry:
    """One version of one plugin: what a host needs to compile it, and its breaker."""

    name: str
    ident: int
    sha256: str
    source: str
    breaker: Breaker


def result_of(row: list[Any]) -> CallResult:
    """A host's answer row (see webhook/plugins/host.py) as a CallResult."""
    outcome = row[0]
    if outcome == PluginOutcome.MATCH:
        return CallResult(PluginOutcome.MATCH, row[2], row[3])
    if row[4] is None:
        return NO_MATCH_RESULT
    return CallResult(outcome, error=row[4], line=row[5])


def died_result(died: Died, limit: float) -> CallResult:
    if died.kind == PluginOutcome.TIMEOUT:
        return CallResult(PluginOutcome.TIMEOUT, error=f"killed after {limit:g} s: the plugin passed its wall-clock limit")
    return CallResult(PluginOutcome.CRASH, error="the plugin host died during the call")


def _too_large(observer: PluginObserver, size: int, limit: int) -> bool:
    if size <= limit:
        return False
    observer.oversized()
    return True


def _allowed(entries: tuple[HostedEntry, ...], observer: PluginObserver) -> list[HostedEntry]:
    """The entries whose breaker lets a call through, in order; each quarantined one is counted as skipped."""
    allowed: list[HostedEntry] = []
    for entry in entries:
        if entry.breaker.allows():
            allowed.append(entry)
        else:
            observer.skipped(entry.name)
    return allowed


class HostedPluginSet:
    """An immutable snapshot of plugins held by the pool's hosts (see the module docstring)."""

    def __init__(self, entries: Mapping[str, HostedEntry], pool: HostPool | None, observer: PluginObserver,
                 max_input_bytes: int, call_timeout_s: float) -> None:
        self._entries = tuple(entries[name] for name in sorted(entries))
        self.names: tuple[str, ...] = tuple(e.name for e in self._entries)
        self._keep = [e.ident for e in self._entries]
        self._pool = pool
        self._observer = observer
        self._accounts = Accounts(observer)
        self._max_input = max_input_bytes
        self._limit = call_timeout_s

    @property
    def plugins(self) -> Mapping[str, HostedEntry]:
        return {e.name: e for e in self._entries}

    def warm(self) -> list[tuple[int, str, str]]:
        """What a new host compiles before it takes requests: the plugins not in quarantine."""
        return [(e.ident, e.name, e.source) for e in self._entries if e.breaker.allows()]

    def _record(self, sent: list[HostedEntry], answer: list[Any] | None, died: Died | None) -> None:
        """Count and charge what one request did (runs when it ends, even if the review stopped waiting)."""
        record = self._accounts.record
        if answer is not None:
            for entry, row in zip(sent, answer, strict=False):
                record(entry.name, entry.breaker, result_of(row), row[1])
        elif died is not None and 0 <= died.index < len(sent):
            # The plugins before it in this request ran, but their answers died with the host.
            entry = sent[died.index]
            record(entry.name, entry.breaker, died_result(died, self._limit), died.seconds)

    async def first_answer(
        self, meta_json: str, deadline: float | None, accept: Callable[[str], str | None]
    ) -> tuple[PluginAnswer, str] | None:
        pool = self._pool
        if pool is None:
            return None
        pending = _allowed(self._entries, self._observer)
        if not pending:
            return None
        data = meta_json.encode()
        if _too_large(self._observer, len(data), self._max_input):
            return None
        dead: list[int] = []  # plugins whose load killed a host during this review
        for _ in range(len(self._entries) + 3):  # each round ends a plugin, or a host (bounded by the pool)
            if not pending or (deadline is not None and time.monotonic() > deadline):
                return None
            host = pool.take() or await pool.acquire(deadline)
            if host is None:
                return None
            if host.synced_for is not self:
                missing = [(e.ident, e.name, e.source) for e in pending if e.ident not in host.installed]
                if missing:
                    # Queued before the evaluation, so the host compiles first; runtimes that calls
                    # already queued there may still use are kept until the host is next idle.
                    keep = self._keep if not host.calls else sorted(host.installed.union(self._keep))
                    host.sync(missing, keep, functools.partial(self._synced, host, missing, dead))
                if len(pending) == len(self._entries):
                    host.synced_for = self
            sent = pending
            reply = await host.evaluate([e.ident for e in sent], data, deadline, functools.partial(self._record, sent))
            if reply is LATE:
                return None
            if isinstance(reply, Died):
                if reply.index >= 0:
                    pending = sent[reply.index + 1:]  # the one that killed the host was charged
                if dead:
                    pending = [e for e in pending if e.ident not in dead]
                continue
            if not reply or reply[-1][0] != PluginOutcome.MATCH:
                return None  # every plugin ran without a match, or the deadline stopped the host
            row = reply[-1]
            wtype = accept(row[2])
            if wtype is not None:
                return PluginAnswer(sent[len(reply) - 1].name, row[2], row[3]), wtype
            pending = sent[len(reply):]  # a type the resolver does not take: ask the next plugins
        return None

    def _synced(self, host: AsyncHost, missing: list[tuple[int, str, str]], dead: list[int],
                answer: list[Any] | None, died: Died | None) -> None:
        """A host compiled (or died compiling) plugins a review asked for."""
        if answer is not None:
            for (ident, _, _), row in zip(missing, answer, strict=False):
                if not row[0]:  # it loaded in the loader host; a plugin that does not load twice is rare
                    host.installed.discard(ident)
                    host.synced_for = None
        elif died is not None and 0 <= died.index < len(missing):
            ident = missing[died.index][0]
            dead.append(ident)
            for entry in self._entries:
                if entry.ident == ident:
                    self._accounts.record(entry.name, entry.breaker, died_result(died, self._limit), died.seconds)


def load_error(died: Died, settings: HostSettings) -> str:
    if died.kind == PluginOutcome.TIMEOUT:
        return f"loading took longer than {settings.load_timeout_s:g} s (the plugin host was killed)"
    return "the plugin host died while loading it"


class HostedRegistry:
    """Holds the set in force for `serve`; :meth:`apply` is called from source watch threads."""

    def __init__(self, limits: PluginLimits, settings: HostSettings, pool: HostPool | None,
                 observer: PluginObserver | None = None, max_input_bytes: int = 64 * 1024) -> None:
        self.limits = limits
        self.settings = settings
        self.pool = pool
        self.observer: PluginObserver = observer if observer is not None else NullObserver()
        self.max_input_bytes = max_input_bytes
        self._lock = threading.Lock()
        self._current = self._new_set({})

    def _new_set(self, entries: Mapping[str, HostedEntry]) -> HostedPluginSet:
        return HostedPluginSet(entries, self.pool, self.observer, self.max_input_bytes, self.settings.call_timeout_s)

    @property
    def current(self) -> HostedPluginSet:
        return self._current

    def warm(self) -> list[tuple[int, str, str]]:
        return self._current.warm()

    def apply(self, sources: Mapping[str, str], *, origin: str) -> ApplyReport:
        report = ApplyReport()
        loader: BlockingHost | None = None
        with self._lock:
            try:
                old = self._current.plugins
                new: dict[str, HostedEntry] = {}
                for name in sorted(sources):
                    source = sources[name]
                    previous = old.get(name)
                    sha = sha256_of(source)
                    if previous is not None and previous.sha256 == sha:
                        new[name] = previous
                        report.unchanged.append(name)
                        continue
                    ident = next(_IDS)
                    if loader is None or not loader.alive:
                        loader = self._loader()
                    failure = self._load(loader, ident, name, source)
                    if failure is not None:
                        report.failed[name] = str(failure)
                        log.error("%s (from %s); %s", failure, origin,
                                  "keeping the previous version" if previous else "not loaded",
                                  extra={"plugin": name, "line": failure.line})
                        self.observer.load_failed(name, str(failure))
                        if previous is not None:
                            new[name] = previous
                        continue
                    new[name] = HostedEntry(name, ident, sha, source, Breaker(self.limits.quarantine))
                    report.loaded.append(name)
                report.removed = sorted(set(old) - set(sources))
                self._current = self._new_set(new)
                self.observer.set_loaded({name: e.sha256 for name, e in sorted(new.items())})
            finally:
                if loader is not None:
                    loader.close()
        if report.loaded or report.removed:
            log.info("plugins from %s: loaded %s, removed %s, unchanged %d, failed %s", origin, report.loaded,
                     report.removed, len(report.unchanged), sorted(report.failed))
        return report

    def _loader(self) -> BlockingHost | None:
        try:
            return BlockingHost(self.settings)
        except (OSError, RuntimeError) as exc:
            log.error("plugin loader host did not start", extra={"error": str(exc)})
            return None

    def _load(self, loader: BlockingHost | None, ident: int, name: str, source: str) -> PluginLoadError | None:
        if loader is None:
            return PluginLoadError(name, "the plugin host did not start")
        answer = loader.sync([(ident, name, source)], [])
        if isinstance(answer, Died):
            return PluginLoadError(name, load_error(answer, self.settings))
        ok, error, line = answer[0]
        return None if ok else PluginLoadError(name, str(error), line)


class BlockingPluginSet:
    """Plugins in one host, driven synchronously, for the offline doors.

    Every plugin is compiled when the set is built (a plugin that does not load raises
    :class:`PluginLoadError`: an offline command says so and stops). A plugin that kills the host
    during a call is charged (``timeout``/``crash``), the host is replaced and the plugins are
    compiled again, and the call goes on with the next plugin.
    """

    def __init__(self, sources: Mapping[str, str], settings: HostSettings,
                 quarantine: QuarantinePolicy | None = None, observer: PluginObserver | None = None,
                 max_input_bytes: int = 64 * 1024) -> None:
        self.settings = settings
        self._observer: PluginObserver = observer if observer is not None else NullObserver()
        self._accounts = Accounts(self._observer)
        self._max_input = max_input_bytes
        policy = quarantine or QuarantinePolicy()
        self._entries = tuple(HostedEntry(name, next(_IDS), sha256_of(sources[name]), sources[name], Breaker(policy))
                              for name in sorted(sources))
        self.names: tuple[str, ...] = tuple(e.name for e in self._entries)
        self._host: BlockingHost | None = None
        if self._entries:
            self._ensure_host()

    def _ensure_host(self) -> BlockingHost:
        if self._host is not None and self._host.alive:
            return self._host
        host = BlockingHost(self.settings)
        for entry in self._entries:
            answer = host.sync([(entry.ident, entry.name, entry.source)], [e.ident for e in self._entries])
            if isinstance(answer, Died):
                host.close()
                raise PluginLoadError(entry.name, load_error(answer, self.settings))
            ok, error, line = answer[0]
            if not ok:
                host.close()
                raise PluginLoadError(entry.name, str(error), line)
        self._host = host
        return host

    def close(self) -> None:
        if self._host is not None:
            self._host.close()

    def __enter__(self) -> BlockingPluginSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, name: str, meta_json: str) -> tuple[CallResult, float, str]:
        """One plugin on one input, unbounded by quarantine (`plugin test`): result, seconds, printed output."""
        entry = next(e for e in self._entries if e.name == name)
        try:
            host = self._ensure_host()
        except PluginLoadError as exc:
            return CallResult(PluginOutcome.CRASH, error=exc.detail), 0.0, ""
        answer = host.evaluate([entry.ident], meta_json.encode(), None, want_output=True)
        if isinstance(answer, Died):
            return died_result(answer, self.settings.call_timeout_s), answer.seconds, ""
        row = answer[0]
        return result_of(row), row[1], str(row[6])

    def answers(self, meta_json: str, deadline: float | None = None) -> Iterator[PluginAnswer]:
        pending = _allowed(self._entries, self._observer)
        if not pending:
            return
        data = meta_json.encode()
        if _too_large(self._observer, len(data), self._max_input):
            return
        unstarted = 0  # hosts lost before any plugin of a request started: not a plugin's doing
        while pending and unstarted < 2:
            if deadline is not None and time.monotonic() > deadline:
                return
            try:
                host = self._ensure_host()
            except PluginLoadError as exc:
                log.error("plugins unavailable: %s", exc)
                return
            answer = host.evaluate([e.ident for e in pending], data, deadline)
            if isinstance(answer, Died):
                if answer.index < 0:
                    unstarted += 1
                    continue
                entry = pending[answer.index]
                self._accounts.record(entry.name, entry.breaker,
                                      died_result(answer, self.settings.call_timeout_s), answer.seconds)
                pending = pending[answer.index + 1:]
                continue
            for entry, row in zip(pending, answer, strict=False):
                self._accounts.record(entry.name, entry.breaker, result_of(row), row[1])
            if not answer or answer[-1][0] != PluginOutcome.MATCH:
                return
            row = answer[-1]
            yield PluginAnswer(pending[len(answer) - 1].name, row[2], row[3])
            pending = pending[len(answer):]


def validate_hosted(name: str, source: str, settings: HostSettings, sample_meta_json: str | None = None) -> None:
    """Reject a plugin that does not load, or fails on a sample Pod, in a plugin host (`plugin create`)."""
    with BlockingPluginSet({name: source}, settings) as plugins:
        result, _, _ = plugins.call(name, sample_meta_json if sample_meta_json is not None else DEFAULT_SAMPLE_META)
    if result.outcome not in (PluginOutcome.MATCH, PluginOutcome.NO_MATCH):
        raise PluginLoadError(name, f"{result.outcome} on the sample Pod: {result.error}", result.line)
