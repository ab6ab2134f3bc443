"""Metadata-only list+watch of the owner kinds, feeding :class:`webhook.cluster.owner_cache.OwnerIndex`.

One daemon thread per resource: list in pages (``limit``/``continue``), then watch from the
list's resourceVersion with bookmarks, resuming from the last resourceVersion seen when a
stream ends; 410 Gone (the resourceVersion is too old) means "list afresh". Objects are asked
for as ``PartialObjectMetadata`` (``Accept: application/json;as=PartialObjectMetadataList;...``),
so no spec crosses the wire, and each is decoded by msgspec into the few metadata fields the
chain needs, then packed into one string (see :class:`webhook.cluster.owner_cache.OwnerIndex`).

The threads never die on an API error: they log, report to the observer, mark the resource
unhealthy (lookups then stop waiting for missing owners) and retry with capped, jittered
backoff; 403 (RBAC not granted) is said once per outage at warning level. Requests go
through the ``kubernetes`` client's own ApiClient (auth, TLS, proxies), as raw calls.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from typing import Any, Protocol

import msgspec
from kubernetes import client as k8s

from webhook.cluster.backoff import Backoff
from webhook.cluster.owner_cache import RESOURCES, OwnerIndex, Ref, Resource

log = logging.getLogger("workload_tagger.informer")

LIST_ACCEPT = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
WATCH_ACCEPT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
PAGE_SIZE = 500
GONE, FORBIDDEN, UNAUTHORIZED = 410, 403, 401


class _OwnerRef(msgspec.Struct, rename="camel"):
    api_version: Any = None
    kind: Any = None
    name: Any = None
    uid: Any = None
    controller: Any = None


class _Meta(msgspec.Struct, rename="camel"):
    uid: Any = None
    resource_version: Any = None
    owner_references: list[_OwnerRef] | None = None


class _Object(msgspec.Struct):
    metadata: _Meta | None = None
    code: Any = None  # a watch ERROR event carries a Status
    message: Any = None


class _ListMeta(msgspec.Struct, rename={"resource_version": "resourceVersion", "continue_": "continue"}):
    resource_version: Any = None
    continue_: Any = None


class _List(msgspec.Struct):
    metadata: _ListMeta | None = None
    items: list[_Object] | None = None


class _Event(msgspec.Struct):
    type: Any = None
    object: _Object | None = None


_decode_list = msgspec.json.Decoder(_List).decode
_decode_event = msgspec.json.Decoder(_Event).decode


class ApiError(Exception):
    """A failed call: HTTP status (0: no answer) and one readable line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class CacheObserver(Protocol):
    def synced(self, resource: str, ok: bool, objects: int) -> None: ...
    def watch_restarted(self, resource: str, reason: str) -> None: ...


class NullObserver:
    def synced(self, resource: str, ok: bool, objects: int) -> None:
        pass

    def watch_restarted(self, resource: str, reason: str) -> None:
        pass


def controller_of(owner_refs: list[_OwnerRef] | None) -> Ref | None:
    for ref in owner_refs or ():
        if ref.controller is True:
            fields = (ref.api_version, ref.kind, ref.name, ref.uid)
            if all(type(f) is str and f for f in fields[1:]) and type(ref.api_version) is str:
                return Ref(ref.api_version, ref.kind, ref.name, ref.uid)
            return None
    return None


def _entry(index: OwnerIndex, obj: _Object) -> tuple[str, str] | None:
    meta = obj.metadata
    if meta is None or type(meta.uid) is not str or not meta.uid:
        return None
    return meta.uid, index.pack(controller_of(meta.owner_references))


def request(
    api: k8s.ApiClient, path: str, query: list[tuple[str, str]], accept: str, timeout: tuple[float, float]
) -> Any:
    """One raw GET through the client's ApiClient; returns the open urllib3 response, or raises ApiError."""
    method, url, headers, _, _ = api.param_serialize(
        "GET", path, query_params=query, header_params={"Accept": accept}, auth_settings=["BearerToken"]
    )
    try:
        resp = api.call_api(method, url, header_params=headers, _request_timeout=timeout).response
    except k8s.exceptions.ApiException as exc:
        raise ApiError(int(exc.status or 0), str(exc.reason or exc)) from None
    if resp.status >= 300:
        try:
            body = resp.data
        finally:
            resp.release_conn()
        raise ApiError(resp.status, _status_message(body) or f"HTTP {resp.status}")
    return resp


def _status_message(body: bytes) -> str:
    try:
        status = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return ""
    return str(status.get("message") or "") if isinstance(status, dict) else ""


def list_all(
    api: k8s.ApiClient,
    resource: Resource,
    index: OwnerIndex,
    page_size: int = PAGE_SIZE,
    request_timeout_s: float = 30.0,
) -> tuple[dict[str, str], str]:
    """Every object of ``resource``, page by page, as (uid -> packed controller, list resourceVersion).

    A continue token that expires mid-list (410) restarts the list: the entries of a new snapshot
    must not be mixed with an older one's, or a deleted object could survive in the cache.
    """
    entries: dict[str, str] = {}
    token = ""
    rv = ""
    while True:
        query = [("limit", str(page_size))]
        if token:
            query.append(("continue", token))
        try:
            resp = request(api, resource.path, query, LIST_ACCEPT, (request_timeout_s, request_timeout_s))
        except ApiError as exc:
            if exc.status == GONE and token:
                entries, token = {}, ""
                continue
            raise
        try:
            body = _decode_list(resp.data)
        except msgspec.DecodeError as exc:
            raise ApiError(0, f"list of {resource.plural} is not a list: {exc}") from None
        finally:
            resp.release_conn()
        for obj in body.items or ():
            entry = _entry(index, obj)
            if entry is not None:
                entries[entry[0]] = entry[1]
        meta = body.metadata or _ListMeta()
        if type(meta.resource_version) is str and meta.resource_version:
            rv = meta.resource_version
        token = meta.continue_ if type(meta.continue_) is str else ""
        if not token:
            return entries, rv


def sync_once(api: k8s.ApiClient, index: OwnerIndex, page_size: int = PAGE_SIZE) -> list[str]:
    """List every resource once (the CLI doors: no watch); returns one line per resource that failed."""
    failed = []
    for resource in index.resources:
        try:
            entries, _ = list_all(api, resource, index, page_size)
        except ApiError as exc:
            failed.append(f"{resource.plural}.{resource.group}: HTTP {exc.status}: {exc}")
            continue
        except Exception as exc:
            failed.append(f"{resource.plural}.{resource.group}: {type(exc).__name__}: {exc}")
            continue
        index.replace(resource, entries)
    return failed


class _Gone(Exception):
    """The watch's resourceVersion is too old: only a fresh list helps."""


class MetadataInformer:
    """List+watch one resource on a daemon thread; see the module docstring."""

    def __init__(
        self,
        api: k8s.ApiClient,
        resource: Resource,
        index: OwnerIndex,
        observer: CacheObserver | None = None,
        backoff: Backoff | None = None,
        page_size: int = PAGE_SIZE,
        watch_timeout_s: int = 300,
        request_timeout_s: float = 30.0,
    ) -> None:
        self.api = api
        self.resource = resource
        self.index = index
        self.observer = observer or NullObserver()
        self.backoff = backoff or Backoff(initial_s=0.5, max_s=60.0)
        self.page_size = page_size
        self.watch_timeout_s = max(1, watch_timeout_s)
        self.request_timeout_s = request_timeout_s
        self.name = f"{resource.plural}.{resource.group}"
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._resp_lock = threading.Lock()
        self._resp: Any = None
        self._failures = 0
        self._failing = False
        self.lists = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"owners-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread; a watch in progress is cut by shutting its socket down."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        while self._thread is not None and self._thread.is_alive() and time.monotonic() < deadline:
            with self._resp_lock:
                if self._resp is not None:
                    try:
                        self._resp.shutdown()
                    except Exception:  # already closed, or no socket yet: keep trying until it ends
                        log.debug("watch shutdown raced", extra={"resource": self.name})
            self._thread.join(0.05)

    # --- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        rv: str | None = None
        while not self._stopping.is_set():
            try:
                if rv is None:
                    rv = self._list()
                rv = self._watch(rv)
            except _Gone:
                rv = None
                self.observer.watch_restarted(self.name, "gone")
                log.info("owner cache watch expired (410 Gone); listing afresh", extra={"resource": self.name})
                if self._failures:  # expired again without progress: do not spin
                    self._stopping.wait(self.backoff.delay(self._failures - 1))
                self._failures += 1
            except Exception as exc:
                if self._stopping.is_set():
                    break
                self._failed(exc, listing=rv is None)
        log.debug("owner cache stopped", extra={"resource": self.name})

    def _failed(self, exc: Exception, listing: bool) -> None:
        self.index.set_healthy(self.resource, False)
        status = exc.status if isinstance(exc, ApiError) else 0
        if status in (FORBIDDEN, UNAUTHORIZED):
            reason, message = "forbidden", (
                f"owner lookup: not allowed to list/watch {self.name} ({exc}); answering with the "
                "built-in rules. Grant list/watch on it (manifests/base/rbac.yaml) or set ownerLookup=off"
            )
        elif isinstance(exc, ApiError) and status:
            reason, message = "error", f"owner lookup: API answered {status} for {self.name}: {exc}"
        else:
            reason, message = "unreachable", f"owner lookup: cannot reach the API for {self.name}: " + (
                f"{type(exc).__name__}: {exc}")
        if listing:
            self.observer.synced(self.name, False, self.index.size(self.resource))
        self.observer.watch_restarted(self.name, reason)
        # Once per outage at warning level, then quietly: a missing grant must not flood the log.
        log.log(logging.DEBUG if self._failing else logging.WARNING, message,
                extra={"resource": self.name, "reason": reason})
        self._failing = True
        delay = self.backoff.delay(self._failures)
        self._failures += 1
        self._stopping.wait(delay)

    def _recovered(self) -> None:
        self.index.set_healthy(self.resource, True)
        self._failures = 0
        if self._failing:
            self._failing = False
            log.info("owner cache reconnected", extra={"resource": self.name})

    def _list(self) -> str:
        entries, rv = list_all(self.api, self.resource, self.index, self.page_size, self.request_timeout_s)
        self.index.replace(self.resource, entries)
        self.lists += 1
        self.observer.synced(self.name, True, len(entries))
        self._recovered()
        log.info("owner cache synced", extra={"resource": self.name, "objects": len(entries), "resource_version": rv})
        return rv

    def _watch(self, rv: str) -> str:
        """One watch request from ``rv``; returns the resourceVersion to resume from."""
        # Spread renewals like client-go does (timeout between 1x and 2x), so replicas do not align.
        timeout = int(self.watch_timeout_s * (1 + random.random()))
        query = [("watch", "true"), ("resourceVersion", rv), ("allowWatchBookmarks", "true"),
                 ("timeoutSeconds", str(timeout))]
        resp = request(self.api, self.resource.path, query, WATCH_ACCEPT,
                       (self.request_timeout_s, timeout + self.request_timeout_s))
        with self._resp_lock:
            self._resp = resp
        try:
            if self._stopping.is_set():
                return rv
            self._recovered()
            for line in _lines(resp):
                rv = self._handle(line, rv)
                if self._stopping.is_set():
                    break
        finally:
            with self._resp_lock:
                self._resp = None
            resp.release_conn()
        return rv

    def _handle(self, line: bytes, rv: str) -> str:
        try:
            event = _decode_event(line)
        except msgspec.DecodeError:
            log.warning("owner cache: undecodable watch event skipped", extra={"resource": self.name})
            return rv
        obj = event.object or _Object()
        if event.type == "ERROR":
            if obj.code == GONE:
                raise _Gone()
            raise ApiError(obj.code if type(obj.code) is int else 0, str(obj.message or "watch error event"))
        meta = obj.metadata
        new_rv = meta.resource_version if meta is not None and type(meta.resource_version) is str else ""
        if event.type in ("ADDED", "MODIFIED"):
            entry = _entry(self.index, obj)
            if entry is not None:
                self.index.put(self.resource, *entry)
        elif event.type == "DELETED" and meta is not None and type(meta.uid) is str:
            self.index.delete(self.resource, meta.uid)
        return new_rv or rv


def _lines(resp: Any) -> Iterator[bytes]:
    """The watch stream's newline-separated JSON events, as they arrive."""
    pending = b""
    for chunk in resp.stream(amt=None, decode_content=True):
        pending += chunk
        while True:
            cut = pending.find(b"\n")
            if cut < 0:
                break
            line, pending = pending[:cut], pending[cut + 1:]
            if line.strip():
                yield line
    if pending.strip():
        yield pending


class OwnerCaches:
    """Every cached resource's informer, started and stopped together (what app.py holds)."""

    def __init__(
        self,
        api: k8s.ApiClient,
        index: OwnerIndex | None = None,
        observer: CacheObserver | None = None,
        watch_timeout_s: int = 300,
        backoff: Backoff | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.index = index or OwnerIndex(RESOURCES)
        self.informers = [
            MetadataInformer(api, r, self.index, observer, backoff, page_size, watch_timeout_s)
            for r in self.index.resources
        ]

    def start(self) -> None:
        for informer in self.informers:
            informer.start()

    def stop(self) -> None:
        for informer in self.informers:
            informer._stopping.set()
        for informer in self.informers:
            informer.stop()

    def synced(self) -> bool:
        return self.index.synced()
