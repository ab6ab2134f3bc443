"""The observers the plugin engine, the plugin sources and the certificate reloader report to.

They implement the protocols of the parts they observe (:class:`webhook.plugins.PluginObserver`,
:class:`webhook.plugins.sources.SourceObserver`), so those parts never import metrics.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping

from cryptography import x509
from prometheus_client import Counter, Gauge, Histogram

from webhook.metrics.definitions import (
    CERT_EXPIRY,
    HOST_EXIT_REASONS,
    OTHER,
    OWNER_CACHE_OBJECTS,
    OWNER_CACHE_RESTARTS,
    OWNER_CACHE_SYNCED,
    OWNER_LOOKUPS,
    OWNER_RESTART_REASONS,
    PLUGIN_EVALUATIONS,
    PLUGIN_HOST_EXITS,
    PLUGIN_HOSTS_UNAVAILABLE,
    PLUGIN_HOSTS_UP,
    PLUGIN_INFO,
    PLUGIN_INPUTS_TOO_LARGE,
    PLUGIN_LATENCY,
    PLUGIN_LOAD_ERRORS,
    PLUGIN_OUTCOMES,
    PLUGIN_QUARANTINED,
    PLUGINS_FAILED,
    PLUGINS_LOADED,
    SOURCE_LAST_SYNC,
    SOURCE_SYNCED,
    SOURCE_SYNCS,
    SOURCE_WATCH_RESTARTS,
    WATCH_RESTART_REASONS,
)
from webhook.metrics.tally import _PLUGIN_EVALUATIONS, _PLUGIN_LATENCY, BULK_SOURCES, PLUGIN_CALLS
from webhook.outcomes import PluginOutcome


def set_cert_expiry(cert: x509.Certificate) -> None:
    """Record the expiry of the serving certificate now in use (call again after each reload)."""
    CERT_EXPIRY.set(cert.not_valid_after_utc.timestamp())


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

    def oversized(self) -> None:
        PLUGIN_INPUTS_TOO_LARGE.inc()

    def skipped(self, plugin: str) -> None:
        _PLUGIN_EVALUATIONS.get(plugin, PluginOutcome.QUARANTINED).inc()

    def quarantine_changed(self, plugin: str, quarantined: bool) -> None:
        PLUGIN_QUARANTINED.labels(plugin).set(1 if quarantined else 0)

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
        PLUGIN_HOST_EXITS.labels(reason if reason in HOST_EXIT_REASONS else PluginOutcome.CRASH).inc()

    def hosts_up(self, count: int) -> None:
        PLUGIN_HOSTS_UP.set(count)

    def no_host(self) -> None:
        PLUGIN_HOSTS_UNAVAILABLE.inc()


class SourceMetrics:
    """The :class:`webhook.plugins.sources.SourceObserver` that feeds the source metrics.

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


def count_lookups_stop() -> None:
    """Stop flushing owner lookup counts (the caches are gone: tests, shutdown)."""
    BULK_SOURCES.pop("owner_lookups", None)


class OwnerMetrics:
    """The :class:`webhook.cluster.informer.CacheObserver` that feeds the owner cache metrics, and the bulk
    flush of the lookup counts the :class:`webhook.cluster.owner_cache.OwnerIndex` keeps as plain numbers."""

    def __init__(self, resources: list[str]) -> None:
        for result in ("hit", "miss", "fallback"):
            OWNER_LOOKUPS.labels(result)
        for resource in resources:
            OWNER_CACHE_SYNCED.labels(resource).set(0)
            OWNER_CACHE_OBJECTS.labels(resource).set(0)
            for reason in OWNER_RESTART_REASONS:
                OWNER_CACHE_RESTARTS.labels(resource, reason)

    def count_lookups(self, drain: Callable[[], Mapping[str, int]]) -> None:
        """Flush ``drain()`` (result -> count) into the lookup counter with every other tally."""

        def flush() -> None:
            for result, count in drain().items():
                if count:
                    OWNER_LOOKUPS.labels(result).inc(count)

        BULK_SOURCES["owner_lookups"] = flush

    def synced(self, resource: str, ok: bool, objects: int) -> None:
        OWNER_CACHE_SYNCED.labels(resource).set(1 if ok else 0)
        if ok:
            OWNER_CACHE_OBJECTS.labels(resource).set(objects)

    def watch_restarted(self, resource: str, reason: str) -> None:
        OWNER_CACHE_RESTARTS.labels(resource, reason if reason in OWNER_RESTART_REASONS else OTHER).inc()
