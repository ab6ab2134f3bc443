"""Counting in bulk: per-review and per-plugin-call numbers kept as plain ints and added to
Prometheus in one go, before every read of the registry and every :data:`FLUSH_SECONDS`.

The only module that touches prometheus_client's internals (a histogram's per-bucket values and
sum: prometheus_client has no public bulk API); tests/test_metrics.py pins the result against a
histogram fed by ``observe``, so a prometheus_client that changes its layout fails the suite.
Invariant: nothing reads :data:`definitions.REGISTRY` without the tallies being flushed first
(the registry's before-read hook, :func:`flush_tallies` before a multiprocess merge).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from prometheus_client import Counter, Histogram

from webhook.metrics.definitions import (
    ADMISSION_BUCKETS,
    ADMISSION_LATENCY,
    ADMISSION_OUTCOMES,
    ADMISSION_REQUESTS,
    BEFORE_READ,
    HTTP_REFUSED,
    NONE,
    OPERATIONS,
    OTHER,
    PLUGIN_BUCKETS,
    PLUGIN_EVALUATIONS,
    PLUGIN_LATENCY,
    PLUGIN_OUTCOMES,
    PODS_SEEN,
    REFUSAL_REASONS,
    RESOLUTION_SOURCES,
    RESOLUTIONS,
    UNKNOWN_OPERATION,
)
from webhook.outcomes import PluginOutcome, ReviewOutcome
from webhook.resolution.model import Resolution, canonical_type

_Child = TypeVar("_Child", Counter, Histogram)


class ChildCache(Generic[_Child]):
    """Bound label children by label values: ``metric.labels(...)`` validates, locks and probes a
    dict on every call, and the hot path calls it several times per review and per plugin evaluation.

    Every label set cached here is bounded (fixed enums, configured platforms, loaded plugin
    names). A child whose series is removed from its metric must be dropped here too (:meth:`clear`),
    or increments would go to a series no scrape can see.
    """

    def __init__(self, metric: _Child) -> None:
        self.metric: _Child = metric
        self._children: dict[tuple[str, ...], _Child] = {}

    def get(self, *labels: str) -> _Child:
        try:
            return self._children[labels]
        except KeyError:
            child: _Child = self.metric.labels(*labels)
            self._children[labels] = child
            return child

    def clear(self) -> None:
        self._children = {}


_ADMISSION_REQUESTS = ChildCache(ADMISSION_REQUESTS)
_RESOLUTIONS = ChildCache(RESOLUTIONS)
_PODS_SEEN = ChildCache(PODS_SEEN)
_PLUGIN_EVALUATIONS = ChildCache(PLUGIN_EVALUATIONS)
_PLUGIN_LATENCY = ChildCache(PLUGIN_LATENCY)


_HTTP_REFUSED = {reason: HTTP_REFUSED.labels(reason) for reason in REFUSAL_REASONS}


def observe_refused(reason: str) -> None:
    """Count one request or connection the transport refused; ``reason`` is one of REFUSAL_REASONS."""
    _HTTP_REFUSED[reason].inc()


def observe_admission(operation: str, outcome: str, seconds: float | None, count: int = 1) -> None:
    """Count answered reviews; ``seconds`` is None for reviews rejected before timing made sense."""
    op = (operation if operation in OPERATIONS else OTHER) if operation else UNKNOWN_OPERATION
    _ADMISSION_REQUESTS.get(op, outcome if outcome in ADMISSION_OUTCOMES else OTHER).inc(count)
    if seconds is not None:
        ADMISSION_LATENCY.observe(seconds)


def resolution_source(resolved_by: str) -> str:
    """``builtin``, ``config`` or ``plugin`` from a ``resolved-by`` value such as ``plugin:kruise``.

    The label is the kind of source, not the rule or plugin name: rule names would add a dozen
    series per type for little insight, and per-plugin detail is already in the plugin metrics.
    """
    kind = resolved_by.partition(":")[0]
    return kind if kind in RESOLUTION_SOURCES else OTHER


def observe_resolution(resolution: Resolution | None, count: int = 1) -> None:
    """Count examined Pods by who resolved them; None (nobody claimed it) counts as ``none``/``none``.

    Types outside :data:`KNOWN_TYPES` (possible with allowCustomTypes) fold into ``other``.
    """
    if resolution is None:
        _RESOLUTIONS.get(NONE, NONE).inc(count)
        return
    wtype = canonical_type(resolution.workload_type) or OTHER
    _RESOLUTIONS.get(resolution_source(resolution.resolved_by), wtype).inc(count)


def observe_platform(platform: str | None, count: int = 1) -> None:
    """Count examined Pods by platform; rule platforms are a configured, bounded set."""
    _PODS_SEEN.get(platform or NONE).inc(count)


# Reviews whose resolution is counted (the others were not looked at, or failed).
EXAMINED = frozenset({ReviewOutcome.MUTATED, ReviewOutcome.UNCHANGED, ReviewOutcome.UNPATCHABLE})
# operation, outcome, and resolved-by, type, platform of the resolution (None: unresolved).
_ReviewKey = tuple[str, str, str | None, str | None, str | None]


class LatencyTally:
    """Latencies kept per histogram bucket, added to a histogram (or a labelled child) in bulk.

    A bucket is Prometheus' ``le``: the first bound not below the value. The counts go into the
    histogram's own per-bucket and sum values (``_buckets``, ``_sum``: prometheus_client has no
    public bulk API), so the exposition, multiprocess files included, is exactly what one
    ``observe`` per value would have produced; tests/test_metrics.py pins that against a histogram
    fed by ``observe``, so a prometheus_client that changes the layout fails the suite, not
    production. Not locked: its owner's lock covers it.
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def add(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def add_to(self, histogram: Histogram) -> None:
        buckets = histogram._buckets
        if len(buckets) != len(self.counts):
            raise ValueError("histogram buckets do not match the tally's bounds")
        for value, count in zip(buckets, self.counts, strict=True):
            if count:
                value.inc(count)
        histogram._sum.inc(self.total)


def finite_bounds(buckets: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(float(b) for b in buckets if b != float("inf"))


class ReviewTally:
    """The per-review counters and latencies, kept as plain numbers and added to Prometheus in bulk.

    Why: three ``Counter.inc`` calls and a ``Histogram.observe`` per review (each a method chain
    and a lock) were a large share of an everyday review's CPU (``make bench`` shows the review
    cost); a dict increment and a bisect cost a fraction of that. Counts reach
    Prometheus on every scrape of this process (:func:`exposition` and the registry flush before
    reading) and, for the other workers of a ``--workers`` replica, within :data:`FLUSH_SECONDS`
    (the server runs :func:`flush_periodically`). Latencies: see :class:`LatencyTally`.
    """

    def __init__(self, histogram: Histogram = ADMISSION_LATENCY, bounds: tuple[float, ...] = ADMISSION_BUCKETS) -> None:
        self._lock = threading.Lock()
        self._pending: dict[_ReviewKey, int] = {}
        self._histogram = histogram
        self._bounds = finite_bounds(bounds)
        self._latency = LatencyTally(self._bounds)

    def add(self, operation: str, outcome: str, resolution: Resolution | None, seconds: float) -> None:
        # Keyed without the workload name, so a flush window holds a handful of keys, not one per Pod.
        if resolution is None:
            key: _ReviewKey = (operation, outcome, None, None, None)
        else:
            key = (operation, outcome, resolution.resolved_by, resolution.workload_type, resolution.platform)
        with self._lock:
            self._pending[key] = self._pending.get(key, 0) + 1
            self._latency.add(seconds)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            latency, self._latency = self._latency, LatencyTally(self._bounds)
        for (operation, outcome, resolved_by, wtype, platform), count in pending.items():
            observe_admission(operation, outcome, None, count)
            if outcome in EXAMINED:
                resolved = None if resolved_by is None else Resolution(wtype or "", "", platform, resolved_by)
                observe_resolution(resolved, count)
                observe_platform(platform, count)
        if pending:
            latency.add_to(self._histogram)


class PluginTally:
    """Plugin calls counted and timed like reviews (see :class:`ReviewTally`): a worst-case Pod runs
    every plugin, and a counter increment plus a histogram observe per call would add a noticeable
    share of a plugin call's own cost."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bounds = finite_bounds(PLUGIN_BUCKETS)
        self._counts: dict[tuple[str, str], int] = {}
        self._latency: dict[str, LatencyTally] = {}

    def add(self, plugin: str, outcome: str, seconds: float) -> None:
        key = (plugin, outcome)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            latency = self._latency.get(plugin)
            if latency is None:
                latency = self._latency[plugin] = LatencyTally(self._bounds)
            latency.add(seconds)

    def flush(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, {}
            latencies, self._latency = self._latency, {}
        for (plugin, outcome), count in counts.items():
            _PLUGIN_EVALUATIONS.get(plugin, outcome if outcome in PLUGIN_OUTCOMES else PluginOutcome.ERROR).inc(count)
        for plugin, latency in latencies.items():
            latency.add_to(_PLUGIN_LATENCY.get(plugin))


REVIEWS = ReviewTally()
PLUGIN_CALLS = PluginTally()
FLUSH_SECONDS = 1.0


BULK_SOURCES: dict[str, Callable[[], None]] = {}
"""Other parts' own bulk counts, flushed with the tallies (by name: a later registration replaces an earlier one)."""


def flush_tallies() -> None:
    """Everything counted in bulk into the Prometheus metrics: before any read, and periodically."""
    REVIEWS.flush()
    PLUGIN_CALLS.flush()
    for flush in list(BULK_SOURCES.values()):
        flush()


def observe_review(operation: str, outcome: str, resolution: Resolution | None, seconds: float) -> None:
    """One answered review, counted and timed in :data:`REVIEWS`."""
    REVIEWS.add(operation, outcome, resolution, seconds)


async def flush_periodically(stop: asyncio.Event) -> None:
    """Flush :data:`REVIEWS` every :data:`FLUSH_SECONDS` until ``stop``, and once more at the end."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), FLUSH_SECONDS)
        flush_tallies()


BEFORE_READ.append(flush_tallies)
