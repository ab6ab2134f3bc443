"""Plugins from one watched ConfigMap: list, then watch from the list's resourceVersion, in a thread.

Every event carries the whole ConfigMap, so each one is turned into a complete snapshot and
handed to the sink, which swaps atomically; re-delivered or replayed events are harmless
because an unchanged snapshot is not applied again. The thread never dies on an API error: it
logs, reports to the observer, backs off and starts over; 410 Gone means "list afresh".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import urllib3
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from webhook.cluster.backoff import Backoff
from webhook.plugins.sources import PluginSink, SourceObserver, ThreadedSource
from webhook.plugins.sources.snapshot import plugins_from_data

log = logging.getLogger("workload_tagger.sources.configmap")

SOURCE = "configmap"
GONE = 410


class _Gone(Exception):
    """The resourceVersion we watch from is too old; only a fresh list helps."""


class ConfigMapSource(ThreadedSource):
    """Feeds ``sink`` from ConfigMap ``namespace/name``; see :class:`webhook.plugins.sources.PluginSource`.

    ``watch_timeout_s`` is the server-side watch timeout (the watch is then renewed from the last
    resourceVersion); ``request_timeout_s`` bounds every call on the client side, which is also
    what bounds ``stop()`` against an API server that has stopped answering.
    """

    def __init__(
        self,
        core_v1_api: Any,
        namespace: str,
        name: str,
        sink: PluginSink,
        observer: SourceObserver | None = None,
        clear_on_delete: bool = False,
        backoff: Backoff | None = None,
        watch_timeout_s: int = 60,
        request_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(sink, observer)
        self.thread_name = f"plugins-configmap-{name}"
        self._api = core_v1_api
        self._namespace = namespace
        self._name = name
        self._clear_on_delete = clear_on_delete
        self._backoff = backoff or Backoff()
        self._watch_timeout_s = max(1, int(watch_timeout_s))
        self._request_timeout_s = request_timeout_s
        self._watch_lock = threading.Lock()
        self._watch: watch.Watch | None = None
        self._rv: str | None = None  # where the next watch starts; None: list (afresh) first
        self._failures = 0

    @property
    def where(self) -> str:
        return f"{self._namespace}/{self._name}"

    def stop(self) -> None:
        """Stop the thread; a watch in progress is cut by shutting its socket down.

        The watch may not have its socket yet when we are asked (the request is still being
        sent), so keep cutting until the thread is gone, within the client-side bound.
        """
        self._stopping.set()
        if self._thread is None:
            return
        deadline = time.monotonic() + self._request_timeout_s + 2.0
        while self._thread.is_alive() and time.monotonic() < deadline:
            with self._watch_lock:
                if self._watch is not None:
                    self._watch.stop()  # type: ignore[no-untyped-call]
            self._thread.join(timeout=0.05)
        if self._thread.is_alive():
            log.warning("configmap source thread did not stop in time", extra={"configmap": self.where})

    # --- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            listing = self._rv is None
            try:
                if self._rv is None:
                    self._rv = self._list()
                self._watch_once(self._rv)
            except _Gone:
                self._rv = None
                self._restarted("gone", "watch expired (410 Gone); listing afresh", logging.INFO)
                if self._failures:  # expired again with no progress in between: do not spin
                    self._stopping.wait(self._backoff.delay(self._failures - 1))
                self._failures += 1
            except Exception as exc:
                if self._stopping.is_set():
                    break
                reason, message = _describe(exc)
                if listing:
                    self._observer.synced(SOURCE, False)
                self._restarted(reason, message, logging.WARNING)
                delay = self._backoff.delay(self._failures)
                self._failures += 1
                log.debug("retrying", extra={"configmap": self.where, "retry_in_s": round(delay, 3)})
                self._stopping.wait(delay)
        log.debug("configmap source stopped", extra={"configmap": self.where})

    def _restarted(self, reason: str, message: str, level: int) -> None:
        self._observer.watch_restarted(SOURCE, reason)
        log.log(level, message, extra={"configmap": self.where, "reason": reason})

    def _list(self) -> str:
        result = self._api.list_namespaced_config_map(
            self._namespace,
            field_selector=f"metadata.name={self._name}",
            _request_timeout=(self._request_timeout_s, self._request_timeout_s),
        )
        rv = str(result.metadata.resource_version or "")
        found = [item for item in result.items or [] if item.metadata.name == self._name]
        if found:
            self._update(plugins_from_data(found[0].data, self.where), f"list rv={rv}")
        else:
            self._gone_missing(initial=self._last is None)
        self._observer.synced(SOURCE, True)
        self._synced.set()
        return rv

    def _watch_once(self, resource_version: str) -> None:
        """One watch request; every event moves ``self._rv`` on, so a broken stream resumes after it."""
        stream = watch.Watch()  # type: ignore[no-untyped-call]
        with self._watch_lock:
            if self._stopping.is_set():
                return
            self._watch = stream
        try:
            for event in stream.stream(  # type: ignore[no-untyped-call]
                self._api.list_namespaced_config_map,
                self._namespace,
                field_selector=f"metadata.name={self._name}",
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=self._watch_timeout_s,
                _request_timeout=(self._request_timeout_s, self._watch_timeout_s + self._request_timeout_s),
            ):
                if self._stopping.is_set():
                    break
                self._rv = self._handle(event, self._rv or resource_version)
            self._failures = 0  # the stream ended normally (server-side timeout): renew it
        except ApiException as exc:
            if exc.status == GONE:
                raise _Gone() from exc
            raise
        except urllib3.exceptions.ReadTimeoutError:
            if not self._stopping.is_set():  # quiet for longer than the server-side timeout
                log.debug("watch read timed out; renewing", extra={"configmap": self.where})
            self._failures = 0
        finally:
            with self._watch_lock:
                self._watch = None

    def _handle(self, event: Mapping[str, Any], resource_version: str) -> str:
        kind = event.get("type")
        raw = event.get("raw_object") or {}
        meta = (raw.get("metadata") or {}) if isinstance(raw, dict) else {}
        new_rv = str(meta.get("resourceVersion") or resource_version)
        if kind == "BOOKMARK":
            return new_rv
        if meta.get("name") != self._name:  # a server that ignores the field selector
            return new_rv
        self._failures = 0
        if kind in ("ADDED", "MODIFIED"):
            self._update(plugins_from_data(raw.get("data"), self.where), f"{kind.lower()} rv={new_rv}")
            self._observer.synced(SOURCE, True)
        elif kind == "DELETED":
            self._gone_missing(initial=False)
        else:
            log.warning("unexpected watch event", extra={"configmap": self.where, "type": kind})
        return new_rv

    def _gone_missing(self, initial: bool) -> None:
        """The ConfigMap does not exist: at start that is simply "no plugins"."""
        if initial or self._clear_on_delete:
            if not initial:
                log.warning("plugin configmap deleted; clearing plugins", extra={"configmap": self.where})
            else:
                log.info("plugin configmap does not exist; no plugins", extra={"configmap": self.where})
            self._update({}, "absent")
        else:
            log.warning(
                "plugin configmap deleted; keeping the last good plugin set", extra={"configmap": self.where}
            )

    def _update(self, snapshot: dict[str, str], why: str) -> None:
        self._hand_over(snapshot, f"configmap {self.where} ({why})", configmap=self.where, why=why)


def _describe(exc: Exception) -> tuple[str, str]:
    """A bounded reason label for metrics and one readable line for the log."""
    if isinstance(exc, ApiException):
        return "error", f"kubernetes API answered {exc.status} {exc.reason}".strip()
    if isinstance(exc, urllib3.exceptions.ProtocolError):
        return "disconnected", f"connection to the API server dropped: {exc}"
    if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
        return "unreachable", f"cannot reach the API server: {exc}"
    return "error", f"plugin configmap watch failed: {type(exc).__name__}: {exc}"
