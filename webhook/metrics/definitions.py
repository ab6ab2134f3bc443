"""Every metric, defined once, with its bounded label vocabulary.

Names follow the Prometheus conventions: one prefix (``workload_tagger_``), base units
(seconds, unix timestamps), ``_total`` on counters. Every label value comes from a small
fixed set or from something the operator configured (loaded plugins, rule platforms,
plugin sources) — never from a request (no Pod names, namespaces or uids) — so a hostile
or merely busy cluster cannot grow the series count. Values outside a fixed set are folded
into ``other`` rather than passed through.

Import-time effects, on purpose: the metrics register in :data:`REGISTRY` and the admission
series are created at zero for every known operation/outcome pair, so ``rate()`` sees the very
first request (Prometheus cannot count an increase on a series it has never seen at a lower
value). Invariant: under ``--workers`` the multiprocess directory must be in the environment
before this module is first imported (prometheus_client chooses its value class then);
``app.run_serve`` sets it before importing anything of this package.
"""

from __future__ import annotations

import platform as _platform
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.metrics_core import Metric

from webhook import __version__
from webhook.outcomes import PluginOutcome, ReviewOutcome
from webhook.resolution.model import KNOWN_TYPES
from webhook.resolution.rules import BUILTIN_RULES

# `_created` series double the series count and Prometheus 2.x does not use them.
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)

BEFORE_READ: list[Callable[[], None]] = []
"""Called before every read of :data:`REGISTRY`: the tallies add what they counted in bulk here."""


class _BeforeRead:
    """Registered first in :data:`REGISTRY`, so any read of it (a scrape, a test) sees every review."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> list[Metric]:
        for hook in BEFORE_READ:
            hook()
        return []


REGISTRY.register(_BeforeRead())  # type: ignore[arg-type]  # before any metric: collected first

NS = "workload_tagger"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
OTHER = "other"
NONE = "none"

# --- bounded label vocabularies -------------------------------------------------------------

OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")
# "unknown" is the operation of a review too malformed to read one from.
UNKNOWN_OPERATION = "unknown"
ADMISSION_OUTCOMES = tuple(ReviewOutcome)
RESOLUTION_SOURCES = ("builtin", "config", "plugin", "owners")
PLUGIN_OUTCOMES = tuple(PluginOutcome)
HOST_EXIT_REASONS = (PluginOutcome.TIMEOUT, PluginOutcome.CRASH)
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
    "Admission reviews answered, by operation and outcome (mutated, unchanged, skipped, error, timeout, "
    "unpatchable, invalid).",
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

# --- owner caches ---------------------------------------------------------------------------

OWNER_LOOKUPS = Counter(
    "owner_lookups",
    "Owner-chain lookups by result: hit (exact answer), miss (owner not in the cache, even after the "
    "bounded wait), fallback (caches not synced, API unreachable or forbidden); misses and fallbacks "
    "are answered by the built-in rules.",
    ["result"],
    namespace=NS,
    registry=REGISTRY,
)
OWNER_CACHE_SYNCED = Gauge(
    "owner_cache_synced",
    "1 when the latest list of the owner cache succeeded, 0 when it failed or none succeeded yet.",
    ["resource"],
    namespace=NS,
    registry=REGISTRY,
    multiprocess_mode="livemin",
)
OWNER_CACHE_OBJECTS = Gauge(
    "owner_cache_objects",
    "Objects in the owner cache after its latest list.",
    ["resource"],
    namespace=NS,
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
OWNER_CACHE_RESTARTS = Counter(
    "owner_cache_watch_restarts",
    "Owner cache watches started again, by resource and reason (gone, forbidden, error, unreachable).",
    ["resource", "reason"],
    namespace=NS,
    registry=REGISTRY,
)
OWNER_RESTART_REASONS = ("gone", "forbidden", "error", "unreachable")

# --- transport ------------------------------------------------------------------------------

# Why the server refused a request or closed a connection to bound what clients hold (admission/transport.py).
REFUSAL_REASONS = ("head-timeout", "body-timeout", "body-budget", "body-too-large", "content-encoding",
                   "connection-cap", "malformed-http")
HTTP_REFUSED = Counter(
    "http_refused",
    "Requests refused or connections closed to bound what clients hold, by reason (head-timeout, body-timeout, "
    "body-budget, body-too-large, content-encoding, connection-cap, malformed-http).",
    ["reason"],
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
        if (_op == UNKNOWN_OPERATION) == (_outcome == ReviewOutcome.INVALID):
            ADMISSION_REQUESTS.labels(_op, _outcome)
for _platform_name in (*PLATFORMS, NONE):
    PODS_SEEN.labels(_platform_name)
RESOLUTIONS.labels(NONE, NONE)
for _reason in HOST_EXIT_REASONS:
    PLUGIN_HOST_EXITS.labels(_reason)


def prime_resolutions() -> None:
    """Create every source/type series at zero, so dashboards show them from the first request."""
    for source in RESOLUTION_SOURCES:
        for wtype in KNOWN_TYPES:
            RESOLUTIONS.labels(source, wtype)


prime_resolutions()
