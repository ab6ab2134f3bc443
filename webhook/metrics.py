"""Every metric, defined once, and the observers that feed them.

Names follow the Prometheus conventions: one prefix (``workload_tagger_``), base units
(seconds, unix timestamps), ``_total`` on counters. Every label value comes from a small
fixed set or from something the operator configured (loaded plugins, rule platforms,
plugin sources) — never from a request (no Pod names, namespaces or uids) — so a hostile
or merely busy cluster cannot grow the series count. Values outside a fixed set are folded
into ``other`` rather than passed through.

The admission series are created at zero for every known operation/outcome pair at import,
so ``rate()`` sees the very first request (Prometheus cannot count an increase on a series
it has never seen at a lower value).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import platform as _platform
import threading
from collections.abc import Mapping
from typing import Generic, TypeVar

from aiohttp import web
from cryptography import x509
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, multiprocess
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

from webhook import __version__
from webhook.mutate import MUTATED, UNCHANGED
from webhook.plugins import BUDGET, CRASH, ERROR, INVALID, MATCH, MEMORY, NO_MATCH, QUARANTINED, TIMEOUT
from webhook.rules import BUILTIN_RULES
from webhook.types import KNOWN_TYPES, Resolution, canonical_type

# `_created` series double the series count and Prometheus 2.x does not use them.
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)


class _FlushFirst:
    """Registered first in :data:`REGISTRY`, so any read of it (a scrape, a test) sees every review."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> list[Metric]:
        flush_tallies()
        return []


REGISTRY.register(_FlushFirst())  # type: ignore[arg-type]  # before any metric: collected first


NS = "workload_tagger"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
OTHER = "other"
NONE = "none"

# --- bounded label vocabularies -------------------------------------------------------------

OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")
# "unknown" is the operation of a review too malformed to read one from.
UNKNOWN_OPERATION = "unknown"
ADMISSION_OUTCOMES = ("mutated", "unchanged", "skipped", "error", "timeout", "invalid")
RESOLUTION_SOURCES = ("builtin", "config", "plugin")
PLUGIN_OUTCOMES = (MATCH, NO_MATCH, ERROR, BUDGET, MEMORY, INVALID, TIMEOUT, CRASH, QUARANTINED)
HOST_EXIT_REASONS = (TIMEOUT, CRASH)
WATCH_RESTART_REASONS = ("gone", "error", "timeout", "closed")
PLATFORMS = tuple(sorted({r.platform for r in BUILTIN_RULES if r.platform}))

ADMISSION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    5.0,
)
"""Sub-millisecond to 1 s for the normal range; 2 s (the apiserver's webhook timeout we ship) and
5 s so that a p99 *above* 1 s is measurable — with 1 s as the last finite bucket,
``histogram_quantile`` could never report more than 1 s and the latency alert could never fire."""

PLUGIN_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)

# --- admission ------------------------------------------------------------------------------

ADMISSION_REQUESTS = Counter(
    "admission_requests",
    "Admission reviews answered, by operation and outcome (mutated, unchanged, skipped, error, invalid).",
    ["operation", "outcome"],
    namespace=NS,
    registry=REGISTRY,
)
ADMISSION_LATENCY = Histogram(
    "admission_duration_seconds",
    "Time to answer one admission review, from body read to response encoded.",
    namespace=NS,
    registry=REGISTRY,
    buckets=ADMISSION_BUCKETS,
)
RESOLUTIONS = Counter(
    "resolutions",
    "Pods examined, by what resolved them (builtin rule, config rule, plugin, or none) and workload type.",
    ["source", "workload_type"],
    namespace=NS,
    registry=REGISTRY,
)
PODS_SEEN = Counter(
    "pods_seen",
    "Pods examined, by platform (OpenShift, OpenKruise, ...; none when the rule names no platform).",
    ["platform"],
    namespace=NS,
    registry=REGISTRY,
)

# --- plugins --------------------------------------------------------------------------------

PLUGIN_EVALUATIONS = Counter(
    "plugin_evaluations",
    "Plugin calls, by plugin and outcome (match, no-match, error, budget, memory, invalid; timeout: "
    "killed at its wall-clock limit; crash: its host died; quarantined: skipped, not called).",
    ["plugin", "outcome"],
    namespace=NS,
    registry=REGISTRY,
)
PLUGIN_LATENCY = Histogram(
    "plugin_evaluation_duration_seconds",
    "Time of one plugin call, by plugin.",
    ["plugin"],
    namespace=NS,
    registry=REGISTRY,
    buckets=PLUGIN_BUCKETS,
)
PLUGIN_QUARANTINED = Gauge(
    "plugin_quarantined",
    "1 while a plugin is skipped because its recent calls kept running out of budget or memory.",
    ["plugin"],
    namespace=NS,
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
PLUGINS_LOADED = Gauge(
    "plugins_loaded", "Plugins in the set now in force.", namespace=NS, registry=REGISTRY,
    multiprocess_mode="livemax",
)
PLUGINS_FAILED = Gauge(
    "plugins_failed",
    "Plugins that failed to load in the most recent apply (kept out of the set in force).",
    namespace=NS,
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
PLUGIN_INFO = Gauge(
    "plugin_info",
    "Always 1, one series per loaded plugin, carrying the sha256 of its source.",
    ["plugin", "sha256"],
    namespace=NS,
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
PLUGIN_LOAD_ERRORS = Counter(
    "plugin_load_errors",
    "Plugin sources that failed to compile or load, by plugin.",
    ["plugin"],
    namespace=NS,
    registry=REGISTRY,
)

PLUGIN_INPUTS_TOO_LARGE = Counter(
    "plugin_inputs_too_large",
    "Pods that needed plugins but whose plugin input was above pluginMaxInputKib: no plugin was asked.",
    namespace=NS,
    registry=REGISTRY,
)
PLUGIN_HOST_EXITS = Counter(
    "plugin_host_exits",
    "Plugin host processes that ended and were replaced, by reason (timeout: killed because a plugin "
    "passed its wall-clock limit; crash: died by itself).",
    ["reason"],
    namespace=NS,
    registry=REGISTRY,
)
PLUGIN_HOSTS_UP = Gauge(
    "plugin_hosts_up",
    "Plugin host processes ready to evaluate plugins (0 while all are being replaced: no plugin answers).",
    namespace=NS,
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
PLUGIN_HOSTS_UNAVAILABLE = Counter(
    "plugin_hosts_unavailable",
    "Reviews that needed plugins while no plugin host was up: answered without plugin answers.",
    namespace=NS,
    registry=REGISTRY,
)
for _reason in HOST_EXIT_REASONS:
    PLUGIN_HOST_EXITS.labels(_reason)

# --- plugin sources -------------------------------------------------------------------------

SOURCE_SYNCS = Counter(
    "source_syncs",
    "Complete reads of a plugin source (ConfigMap list, directory scan), by source and result.",
    ["source", "result"],
    namespace=NS,
    registry=REGISTRY,
)
SOURCE_SYNCED = Gauge(
    "source_synced",
    "1 when the latest sync attempt of the source succeeded, 0 when it failed or none succeeded yet.",
    ["source"],
    namespace=NS,
    registry=REGISTRY,
    multiprocess_mode="livemin",
)
SOURCE_LAST_SYNC = Gauge(
    "source_last_sync_timestamp_seconds",
    "Unix time of the latest successful sync of the source (0: never).",
    ["source"],
    namespace=NS,
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
SOURCE_WATCH_RESTARTS = Counter(
    "source_watch_restarts",
    "Watches of a plugin source started again, by source and reason (gone, error, timeout, closed, other).",
    ["source", "reason"],
    namespace=NS,
    registry=REGISTRY,
)

# --- process --------------------------------------------------------------------------------

CERT_EXPIRY = Gauge(
    "serving_certificate_expiry_timestamp_seconds",
    "Unix time at which the serving certificate in use stops being valid.",
    namespace=NS,
    registry=REGISTRY,
    multiprocess_mode="livemin",
)
BUILD_INFO = Gauge(
    "build_info",
    "Always 1; the version running and the Python it runs on.",
    ["version", "python_version"],
    namespace=NS,
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
BUILD_INFO.labels(__version__, _platform.python_version()).set(1)

for _op in (*OPERATIONS, UNKNOWN_OPERATION):
    for _outcome in ADMISSION_OUTCOMES:
        if (_op == UNKNOWN_OPERATION) == (_outcome == "invalid"):
            ADMISSION_REQUESTS.labels(_op, _outcome)
for _platform_name in (*PLATFORMS, NONE):
    PODS_SEEN.labels(_platform_name)
RESOLUTIONS.labels(NONE, NONE)


# --- admission helpers (called by the server) -----------------------------------------------

_Child = TypeVar("_Child", Counter, Histogram)


class ChildCache(Generic[_Child]):
    """Bound label children by label values: ``metric.labels(...)`` costs ~1 µs (validation, a lock,
    a dict probe) and the hot path calls it several times per review and per plugin evaluation.

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
EXAMINED = frozenset({MUTATED, UNCHANGED})
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
    and a lock) cost ~8 µs of CPU per review inside the server, a sixth of all it spends on an
    everyday review; a dict increment and a bisect cost a fraction of that. Counts reach
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
    every plugin, and a counter increment plus a histogram observe per call cost ~1 µs in a loop,
    two to three inside the server, a tenth of a plugin call."""

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
            _PLUGIN_EVALUATIONS.get(plugin, outcome if outcome in PLUGIN_OUTCOMES else ERROR).inc(count)
        for plugin, latency in latencies.items():
            latency.add_to(_PLUGIN_LATENCY.get(plugin))


REVIEWS = ReviewTally()
PLUGIN_CALLS = PluginTally()
FLUSH_SECONDS = 1.0


def flush_tallies() -> None:
    """Everything counted in bulk into the Prometheus metrics: before any read, and periodically."""
    REVIEWS.flush()
    PLUGIN_CALLS.flush()


def observe_review(operation: str, outcome: str, resolution: Resolution | None, seconds: float) -> None:
    """One answered review, counted and timed in :data:`REVIEWS`."""
    REVIEWS.add(operation, outcome, resolution, seconds)


async def flush_periodically(stop: asyncio.Event) -> None:
    """Flush :data:`REVIEWS` every :data:`FLUSH_SECONDS` until ``stop``, and once more at the end."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), FLUSH_SECONDS)
        flush_tallies()


def set_cert_expiry(cert: x509.Certificate) -> None:
    """Record the expiry of the serving certificate now in use (call again after each reload)."""
    CERT_EXPIRY.set(cert.not_valid_after_utc.timestamp())


def prime_resolutions() -> None:
    """Create every source/type series at zero, so dashboards show them from the first request."""
    for source in RESOLUTION_SOURCES:
        for wtype in KNOWN_TYPES:
            RESOLUTIONS.labels(source, wtype)


prime_resolutions()


# --- observers (called by the plugin engine and the sources) --------------------------------


class PluginMetrics:
    """The :class:`webhook.plugins.PluginObserver` that feeds the plugin metrics.

    Contract with the engine: within one apply, report ``load_failed`` for each plugin that did
    not compile *before* ``set_loaded`` with the set now in force. ``set_loaded`` then sets
    ``plugins_failed`` to those failures and drops every series of plugins that are neither loaded
    nor just failed, so renaming plugins over months does not accumulate series.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: dict[str, str] = {}
        self._failed: set[str] = set()
        self._known_failed: set[str] = set()

    def evaluated(self, plugin: str, outcome: str, seconds: float) -> None:
        PLUGIN_CALLS.add(plugin, outcome, seconds)

    def skipped(self, plugin: str) -> None:
        _PLUGIN_EVALUATIONS.get(plugin, QUARANTINED).inc()

    def quarantine_changed(self, plugin: str, quarantined: bool) -> None:
        PLUGIN_QUARANTINED.labels(plugin).set(1 if quarantined else 0)

    def oversized(self) -> None:
        PLUGIN_INPUTS_TOO_LARGE.inc()

    def load_failed(self, plugin: str, error: str) -> None:
        with self._lock:
            self._failed.add(plugin)
            self._known_failed.add(plugin)
        PLUGIN_LOAD_ERRORS.labels(plugin).inc()

    def set_loaded(self, plugins: Mapping[str, str]) -> None:
        with self._lock:
            PLUGIN_CALLS.flush()  # calls counted so far land in the series, before any is removed
            previous, self._loaded = self._loaded, dict(plugins)
            failed, self._failed = self._failed, set()
            for name, sha in previous.items():
                if plugins.get(name) != sha:
                    _remove(PLUGIN_INFO, name, sha)
                if name not in plugins:
                    _remove(PLUGIN_QUARANTINED, name)
                    for outcome in PLUGIN_OUTCOMES:
                        _remove(PLUGIN_EVALUATIONS, name, outcome)
                    _remove(PLUGIN_LATENCY, name)
            _PLUGIN_EVALUATIONS.clear()  # removed series must not live on in the cache; refilled on use
            _PLUGIN_LATENCY.clear()
            for name in self._known_failed - failed - set(plugins):
                _remove(PLUGIN_LOAD_ERRORS, name)
            self._known_failed = failed | (self._known_failed & set(plugins))
            for name, sha in plugins.items():
                PLUGIN_INFO.labels(name, sha).set(1)
                if previous.get(name) != sha:  # a new version starts with a closed breaker
                    PLUGIN_QUARANTINED.labels(name).set(0)
                for outcome in PLUGIN_OUTCOMES:
                    PLUGIN_EVALUATIONS.labels(name, outcome)
                PLUGIN_LATENCY.labels(name)
            PLUGINS_LOADED.set(len(plugins))
            PLUGINS_FAILED.set(len(failed))


class PluginHostMetrics:
    """The :class:`webhook.plugins.client.HostObserver` that feeds the plugin host metrics."""

    def host_exited(self, reason: str) -> None:
        PLUGIN_HOST_EXITS.labels(reason if reason in HOST_EXIT_REASONS else CRASH).inc()

    def hosts_up(self, count: int) -> None:
        PLUGIN_HOSTS_UP.set(count)

    def no_host(self) -> None:
        PLUGIN_HOSTS_UNAVAILABLE.inc()


class SourceMetrics:
    """The :class:`webhook.sources.SourceObserver` that feeds the source metrics.

    ``source`` should be the kind of source (``configmap``, ``directory``): a fixed set.
    Sources should report ``synced(ok=True)`` after every complete list, including the relist
    after a watch restart, so that the last-sync time also says the watch is alive.
    """

    def expect(self, source: str) -> None:
        """Create the series before the first sync, so "never synced" is visible (synced=0, time=0)."""
        SOURCE_SYNCED.labels(source).set(0)
        SOURCE_LAST_SYNC.labels(source).set(0)
        for result in ("success", "failure"):
            SOURCE_SYNCS.labels(source, result)
        for reason in (*WATCH_RESTART_REASONS, OTHER):
            SOURCE_WATCH_RESTARTS.labels(source, reason)

    def synced(self, source: str, ok: bool) -> None:
        SOURCE_SYNCS.labels(source, "success" if ok else "failure").inc()
        SOURCE_SYNCED.labels(source).set(1 if ok else 0)
        if ok:
            SOURCE_LAST_SYNC.labels(source).set_to_current_time()
        else:
            # Make the series exist (at 0 = never) without overwriting an earlier success.
            SOURCE_LAST_SYNC.labels(source)

    def watch_restarted(self, source: str, reason: str) -> None:
        SOURCE_WATCH_RESTARTS.labels(source, reason if reason in WATCH_RESTART_REASONS else OTHER).inc()


def _remove(metric: Counter | Gauge | Histogram, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never created, or already gone
        metric.remove(*labels)


# --- exposition -----------------------------------------------------------------------------


def exposition(accept: str | None = None) -> tuple[bytes, str]:
    """The registry in the format the scraper asked for (OpenMetrics or text 0.0.4), with its content type.

    Under ``--workers N`` every worker writes its values to PROMETHEUS_MULTIPROC_DIR and any worker
    answering a scrape reads them all, so counters are the sum over workers, whichever one answers.
    """
    encoder, content_type = choose_encoder(accept or "")
    if os.environ.get(MULTIPROC_ENV):
        flush_tallies()  # this worker's counts into its files; REGISTRY flushes itself when read (_FlushFirst)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return encoder(merged), content_type
    return encoder(REGISTRY), content_type


def worker_exited(pid: int) -> None:
    """Drop a dead worker's live gauges from the shared multiprocess directory."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


async def metrics_handler(request: web.BaseRequest) -> web.Response:
    body, content_type = exposition(request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})


async def start_metrics_server(host: str, port: int, reuse_port: bool = False) -> web.AppRunner:
    """Serve ``/metrics`` over plain HTTP on its own port; the caller owns ``runner.cleanup()``.

    With port 0 the bound port is in ``runner.addresses``. With ``--workers`` every worker binds
    the port (``reuse_port``) and a scrape reaches one of them: counters are per process.
    """
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
    return runner
