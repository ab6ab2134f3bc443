"""One fake Kubernetes API server for the tests that kmock cannot serve.

kmock (the team's API mock) cannot express resourceVersion conflicts, paginated lists, watch
bookmarks or injected faults. :class:`FakeAPI` does, for any resource in :data:`KINDS`: an
in-memory store keyed by (group, version, resource) and (namespace, name), one resourceVersion
counter, list/watch/get/create/update/patch/delete over real HTTP on 127.0.0.1, fault
injection and a request log. At the end, thin facades give each group of tests the
accessors it uses: :class:`FakeKube` (Secrets, MutatingWebhookConfigurations, Pods for the
certificate code and ``recommend``), :class:`FakeCluster` (Pods for audit/backfill) and
:class:`FakeConfigMapAPI` (the plugin ConfigMap for its source and the plugin CLI).
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import copy
import json
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from kubernetes import client as k8s

from webhook.cluster.client import core_api as kube_core_api

T = TypeVar("T")

JSON_TYPES = ("application/json", "application/merge-patch+json", "application/strategic-merge-patch+json")
CONFLICT_MESSAGE = "the object has been modified; please apply your changes to the latest version and try again"

# --- Status objects -------------------------------------------------------------------------


def status_body(code: int, reason: str, message: str, **meta: str) -> dict[str, Any]:
    """A ``kind: Status`` failure, as the apiserver sends with every error code."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": meta,
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def status_response(code: int, reason: str, message: str, **meta: str) -> web.Response:
    return web.json_response(status_body(code, reason, message, **meta), status=code)


def not_found(resource: str, name: str) -> web.Response:
    return status_response(404, "NotFound", f'{resource} "{name}" not found')


def conflict(resource: str, name: str) -> web.Response:
    return status_response(409, "Conflict", f'Operation cannot be fulfilled on {resource} "{name}": {CONFLICT_MESSAGE}')


def already_exists(resource: str, name: str) -> web.Response:
    return status_response(409, "AlreadyExists", f'{resource} "{name}" already exists')


def forbidden(verb: str, resource: str, namespace: str, user: str = "test") -> web.Response:
    message = f'{resource} is forbidden: User "{user}" cannot {verb} resource "{resource}" in namespace "{namespace}"'
    return status_response(403, "Forbidden", message)


# --- patches --------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, written from the RFC's pseudo-code: ``null`` deletes, objects merge, the rest replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- request recording ----------------------------------------------------------------------


@dataclass
class Recorded:
    """One request as the fake saw it; ``status`` is 0 until answered (and stays 0 if dropped)."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any
    status: int = 0


class RequestLog(list[Recorded]):
    """Every request, in arrival order; :meth:`middleware` fills it before the handler runs."""

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        raw = await request.read() if request.body_exists else b""  # aiohttp keeps it for the handler
        body = json.loads(raw) if raw and request.content_type in JSON_TYPES else None
        seen = Recorded(request.method, request.path, dict(request.query), request.content_type, body)
        self.append(seen)
        response = await handler(request)
        seen.status = response.status
        return response


# --- the server thread ----------------------------------------------------------------------


class LoopbackServer:
    """Serves an aiohttp app on 127.0.0.1 from its own event loop in a daemon thread.

    Why a thread: the ``kubernetes`` client is synchronous, so the test's thread blocks in it
    while the fake answers. :meth:`run` executes a coroutine on the fake's loop, for tests that
    change the fake's state (and wake its watchers) from outside.
    """

    def __init__(self, app: web.Application, shutdown_timeout: float = 0.1) -> None:
        self.app = app
        self.url = ""
        self.port = 0
        self._shutdown_timeout = shutdown_timeout
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fake-apiserver", daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        self.run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            self.run(self._runner.cleanup())
        self.run(self._cancel_leftovers())  # e.g. a watch whose client never hung up
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @staticmethod
    async def _cancel_leftovers() -> None:
        me = asyncio.current_task()
        leftovers = [t for t in asyncio.all_tasks() if t is not me]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=self._shutdown_timeout)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self.url = f"http://127.0.0.1:{self.port}"

    def api_client(self) -> k8s.ApiClient:
        return api_client(self.url)


# --- clients --------------------------------------------------------------------------------


def api_client(url: str) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    configuration.host = url.rstrip("/")
    return k8s.ApiClient(configuration)


def core_api(url: str) -> Any:
    """A real ``CoreV1Api`` pointed at ``url`` (a fake, or kmock)."""
    return k8s.CoreV1Api(api_client(url))


def write_kubeconfig(path: Path, url: str, namespace: str = "default") -> Path:
    """A kubeconfig with one context for ``url`` and a bearer token, as an operator's would be."""
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "test", "cluster": {"server": url.rstrip("/")}}],
                "users": [{"name": "test", "user": {"token": "test-token"}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": namespace}}],
                "current-context": "test",
            }
        )
    )
    return path


# --- the fake API server ----------------------------------------------------------------------

KINDS = {
    "pods": "Pod",
    "secrets": "Secret",
    "configmaps": "ConfigMap",
    "mutatingwebhookconfigurations": "MutatingWebhookConfiguration",
    "replicasets": "ReplicaSet",
    "deployments": "Deployment",
    "statefulsets": "StatefulSet",
    "daemonsets": "DaemonSet",
    "jobs": "Job",
    "cronjobs": "CronJob",
}
# What the apiserver sends when asked for `Accept: application/json;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1`.
META_VERSION = "meta.k8s.io/v1"


def wants_metadata(accept: str) -> bool:
    """Whether the client asked for PartialObjectMetadata first (its fallback types after a comma)."""
    first = accept.split(",", 1)[0].replace(" ", "")
    return "as=PartialObjectMetadata" in first and "g=meta.k8s.io" in first


def partial(obj: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "PartialObjectMetadata", "apiVersion": META_VERSION, "metadata": obj["metadata"]}
# Lists the apiserver merges by a key under a strategic-merge patch (the rest merges as RFC 7386).
STRATEGIC_KEYS = {"mutatingwebhookconfigurations": {"webhooks": "name"}}
# Resources that accept only strategic-merge patches here, so a client sending the wrong
# content type (whose list semantics differ) is caught rather than silently served.
STRATEGIC_ONLY = frozenset(STRATEGIC_KEYS)
MERGE_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")

GVR = tuple[str, str, str]  # (group, version, resource); "" is the core group
Name = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects


@dataclass
class Fault:
    """What to do instead of serving one request: an HTTP status (with headers/body) or ``drop``."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    drop: bool = False
    after: bool = False  # for writes: apply the write first, then fail instead of answering


@dataclass(frozen=True)
class Route:
    """Where a request points: a collection (``name`` empty) or one object."""

    gvr: GVR
    namespace: str
    name: str

    @property
    def key(self) -> str:
        """``namespace/name`` (or ``name``), the order objects are listed in, like etcd."""
        return object_key(self.namespace, self.name)


def object_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


def parse_path(path: str) -> Route | None:
    """``/api/v1[/namespaces/NS]/RESOURCE[/NAME]`` or ``/apis/GROUP/VERSION[/namespaces/NS]/RESOURCE[/NAME]``."""
    parts = path.strip("/").split("/")
    if parts[0] == "api" and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[0] == "apis" and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    if len(rest) > 2 or rest[0] not in KINDS:
        return None
    return Route((group, version, rest[0]), namespace, rest[1] if len(rest) == 2 else "")


class FakeAPI:
    """An in-memory Kubernetes API: objects by (group, version, resource) and (namespace, name).

    What it keeps like the apiserver: one resourceVersion counter for everything, 409 on a
    stale ``metadata.resourceVersion`` precondition (PATCH) or any mismatch (PUT), paginated
    lists (``limit``/``continue``, ``remainingItemCount``), ``labelSelector`` equality terms and
    ``fieldSelector=metadata.name=``, watches from a resourceVersion with server-side timeouts
    and BOOKMARKs, ``Status`` errors. What a test can inject: verbs answered 403 (``forbid``),
    one-shot :class:`Fault` s per request, a slow list, a watch that drops after N events,
    endless conflicts, and ``before_write`` - run under the lock just before a write lands,
    to play another client racing this one. Every request is in ``log``.
    """

    def __init__(self, first_rv: int = 100) -> None:
        self.lock = threading.RLock()
        self.rv = first_rv
        self.store: dict[GVR, dict[Name, dict[str, Any]]] = {}
        self.events: list[tuple[int, GVR, dict[str, Any]]] = []
        self.log = RequestLog()
        self.api_groups: list[str] = []
        self.forbid: set[str] = set()  # verbs answered 403: get, list, watch, create, update, patch
        self.faults: dict[tuple[str, str], list[Fault]] = {}  # (METHOD, key or "LIST#<n>") -> queue
        self.lists = 0
        self.list_delay_s = 0.0
        self.drop_watch_after_events: int | None = None  # next watch only
        self.always_conflict = False
        self.before_write: Callable[[str, str], None] | None = None  # (method, path)
        self.compacted_rv = 0  # watches from an older resourceVersion get an ERROR 410 Gone event
        self._watch_epoch = 0  # end_watches() bumps it: watches started before then end
        self.expire_next_watch: set[str] = set()  # of these resources: its resourceVersion compacted away, 410
        self._sorted: dict[GVR, list[str]] = {}  # list order per resource, dropped on every change
        self._changed = asyncio.Event()
        app = web.Application(middlewares=[self.log.middleware])
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.server = LoopbackServer(app)
        self.url = ""

    # -- lifecycle

    def __enter__(self) -> FakeAPI:
        self.server.__enter__()
        self.url = self.server.url
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)

    def api_client(self) -> k8s.ApiClient:
        return api_client(self.url)

    # -- the store, from tests or handlers (any thread)

    def resource(self, gvr: GVR) -> dict[Name, dict[str, Any]]:
        """The live objects of one resource; tests may read and change them in place."""
        return self.store.setdefault(gvr, {})

    def next_rv(self) -> str:
        with self.lock:
            self.rv += 1
            return str(self.rv)

    def save(self, gvr: GVR, obj: dict[str, Any], event: str | None = None) -> dict[str, Any]:
        """Store ``obj`` under a new resourceVersion (uid and namespace seeded) and tell the watchers."""
        with self.lock:
            meta = obj.setdefault("metadata", {})
            key = (meta.get("namespace", ""), meta["name"])
            existed = key in self.resource(gvr)
            meta["resourceVersion"] = self.next_rv()
            meta.setdefault("uid", f"uid-{object_key(*key).replace('/', '-')}")
            self.resource(gvr)[key] = obj
            self._publish(gvr, event or ("MODIFIED" if existed else "ADDED"), obj)
            return obj

    def seed(self, gvr: GVR, obj: dict[str, Any]) -> None:
        """Store ``obj`` as it is, giving it a resourceVersion only if it has none (no event)."""
        with self.lock:
            meta = obj.setdefault("metadata", {})
            if "resourceVersion" not in meta:
                meta["resourceVersion"] = self.next_rv()
            self.resource(gvr)[(meta.get("namespace", ""), meta["name"])] = obj
            self._sorted.pop(gvr, None)

    def delete_object(self, gvr: GVR, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            obj = self.resource(gvr).pop((namespace, name))
            gone: dict[str, Any] = json.loads(json.dumps(obj))
            gone["metadata"]["resourceVersion"] = self.next_rv()
            self._publish(gvr, "DELETED", gone)
            return gone

    def fault(self, method: str, target: str, *faults: Fault) -> None:
        """Serve ``faults`` first, one per request: ``method`` GET/LIST/POST/PUT/PATCH, ``target``
        the object's ``namespace/name`` or ``LIST#<n>`` for the n-th list."""
        with self.lock:
            self.faults.setdefault((method, target), []).extend(faults)

    def compact(self) -> None:
        """Forget the event history, as etcd compaction does: watches from before now get 410 Gone."""
        with self.lock:
            self.rv += 1
            self.compacted_rv = self.rv
            self.events.clear()

    def end_watches(self) -> None:
        """End every open watch as a server-side timeout would (the client then watches again)."""
        with self.lock:
            self._watch_epoch += 1
        if self.server.loop.is_running():
            self.server.loop.call_soon_threadsafe(self._wake)

    def _publish(self, gvr: GVR, kind: str, obj: dict[str, Any]) -> None:
        self._sorted.pop(gvr, None)
        self.events.append((self.rv, gvr, {"type": kind, "object": json.loads(json.dumps(obj))}))
        loop = self.server.loop
        if loop.is_running():
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._changed.set()  # wake every watcher, then arm a fresh event for the next change
        self._changed = asyncio.Event()

    # -- HTTP

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.rstrip("/") == "/apis" and request.method == "GET":
            return self._discovery()
        route = parse_path(request.path)
        if route is None:
            return status_response(404, "NotFound", f"no route {request.method} {request.path}")
        resource, ns = route.gvr[2], route.namespace
        verb = _verb(request.method, route, request.query)
        if verb in self.forbid:
            return forbidden(verb, resource, ns)
        raw = await request.read()
        body = json.loads(raw) if raw else None
        if verb == "watch":
            return await self._watch(request, route)
        if verb == "list":
            with self.lock:
                self.lists += 1
                fault = self._take("LIST", f"LIST#{self.lists}")
            if fault is not None:
                return await _fail(request, fault)
            if self.list_delay_s:
                await asyncio.sleep(self.list_delay_s)
            return self._list(route, request.query, wants_metadata(request.headers.get("Accept", "")))
        fault = self._take(request.method, route.key if route.name else "")
        if fault is not None and not (fault.after and verb in ("create", "update", "patch")):
            return await _fail(request, fault)
        with self.lock:
            if verb == "get":
                response = self._get(route)
            elif verb == "create":
                response = self._create(route, body, request.path)
            elif verb == "update":
                response = self._update(route, body, request.path)
            elif verb == "patch":
                response = self._patch(route, body, request.content_type, request.path)
            elif verb == "delete":
                response = self._delete(route, request.path)
            else:
                response = status_response(405, "MethodNotAllowed", f"{request.method} {request.path}")
        if fault is not None and response.status < 300:  # applied, and the answer is lost
            return await _fail(request, fault)
        return response

    def _take(self, method: str, target: str) -> Fault | None:
        with self.lock:
            queue = self.faults.get((method, target))
            return queue.pop(0) if queue else None

    def _discovery(self) -> web.Response:
        groups = [{"name": g, "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}]} for g in self.api_groups]
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})

    def _get(self, route: Route) -> web.Response:
        obj = self.resource(route.gvr).get((route.namespace, route.name))
        if obj is None:
            return not_found(route.gvr[2], route.name)
        return web.json_response(obj)

    def _list(self, route: Route, query: Mapping[str, str], metadata_only: bool = False) -> web.Response:
        limit = int(query.get("limit", "0") or 0)
        token = query.get("continue")
        labels = query.get("labelSelector")
        wanted = _field_name(query.get("fieldSelector", ""))
        group, version, resource = route.gvr
        with self.lock:
            store = self.resource(route.gvr)
            keys = self._sorted.get(route.gvr)
            if keys is None or len(keys) != len(store):  # tests may change the store in place
                keys = self._sorted[route.gvr] = sorted(object_key(*name) for name in store)
            by_key = _KeyView(store)
            start = 0
            if token:
                # "<base64 key>[~tag]": a tag marks a token a test handed out in a 410 Status
                after = base64.urlsafe_b64decode(token.partition("~")[0].encode()).decode()
                start = bisect.bisect_right(keys, after)
            items: list[dict[str, Any]] = []
            i = start
            while i < len(keys) and (not limit or len(items) < limit):
                obj = by_key[keys[i]]
                i += 1
                meta = obj["metadata"]
                if route.namespace and meta.get("namespace", "") != route.namespace:
                    continue
                if wanted is not None and meta["name"] != wanted:
                    continue
                if labels and not _labels_match(meta.get("labels") or {}, labels):
                    continue
                items.append(obj)
            list_meta: dict[str, Any] = {"resourceVersion": str(self.rv)}
            if i < len(keys) and limit:
                list_meta["continue"] = base64.urlsafe_b64encode(keys[i - 1].encode()).decode()
                if not route.namespace and not labels and wanted is None:
                    list_meta["remainingItemCount"] = len(keys) - i
            body = {
                "kind": KINDS[resource] + "List",
                "apiVersion": f"{group}/{version}" if group else version,
                "metadata": list_meta,
                "items": items,
            }
            if metadata_only:
                body.update(kind="PartialObjectMetadataList", apiVersion=META_VERSION,
                            items=[partial(item) for item in items])
            return web.json_response(body)

    def _create(self, route: Route, body: Any, path: str) -> web.Response:
        self._before_write("POST", path)
        name = body["metadata"]["name"]
        if (route.namespace, name) in self.resource(route.gvr):
            return already_exists(route.gvr[2], name)
        obj = copy.deepcopy(body)
        if route.namespace:
            obj["metadata"]["namespace"] = route.namespace
        return web.json_response(self.save(route.gvr, obj), status=201)

    def _update(self, route: Route, body: Any, path: str) -> web.Response:
        self._before_write("PUT", path)
        current = self.resource(route.gvr).get((route.namespace, route.name))
        if current is None:
            return not_found(route.gvr[2], route.name)
        if self.always_conflict or body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            return conflict(route.gvr[2], route.name)
        obj = copy.deepcopy(body)
        obj["metadata"]["uid"] = current["metadata"].get("uid")
        return web.json_response(self.save(route.gvr, obj))

    def _patch(self, route: Route, body: Any, content_type: str, path: str) -> web.Response:
        resource = route.gvr[2]
        strategic = content_type == "application/strategic-merge-patch+json"
        if content_type not in MERGE_TYPES or (resource in STRATEGIC_ONLY and not strategic):
            return status_response(415, "UnsupportedMediaType", f"fake does not apply {content_type} to {resource}")
        self._before_write("PATCH", path)
        current = self.resource(route.gvr).get((route.namespace, route.name))
        if current is None:
            return not_found(resource, route.name)
        wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
        if self.always_conflict or (wanted_rv is not None and wanted_rv != current["metadata"]["resourceVersion"]):
            return conflict(resource, route.name)
        patched = (
            merge_patch(current, _without_keyed_lists(body, resource)) if strategic else merge_patch(current, body)
        )
        if strategic:
            for field_name, merge_key in STRATEGIC_KEYS.get(resource, {}).items():
                if field_name in body:
                    patched[field_name] = _merge_by_key(current.get(field_name) or [], body[field_name], merge_key)
        return web.json_response(self.save(route.gvr, patched))

    def _delete(self, route: Route, path: str) -> web.Response:
        self._before_write("DELETE", path)
        if (route.namespace, route.name) not in self.resource(route.gvr):
            return not_found(route.gvr[2], route.name)
        return web.json_response(self.delete_object(route.gvr, route.namespace, route.name))

    def _before_write(self, method: str, path: str) -> None:
        if self.before_write is not None:
            self.before_write(method, path)

    async def _watch(self, request: web.Request, route: Route) -> web.StreamResponse:
        since = int(request.query.get("resourceVersion") or 0)
        timeout = float(request.query.get("timeoutSeconds") or 30)
        bookmarks = request.query.get("allowWatchBookmarks") in ("true", "1", "True")
        wanted = _field_name(request.query.get("fieldSelector", ""))
        metadata_only = wants_metadata(request.headers.get("Accept", ""))
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        with self.lock:
            expired = route.gvr[2] in self.expire_next_watch
            self.expire_next_watch.discard(route.gvr[2])
        if expired or (since and since < self.compacted_rv):
            gone = status_body(410, "Expired", f"too old resource version: {since} ({self.compacted_rv})")
            await response.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
            await response.write_eof()
            return response
        deadline = time.monotonic() + timeout
        epoch = self._watch_epoch
        sent = 0
        drop_after, self.drop_watch_after_events = self.drop_watch_after_events, None
        while True:
            changed = self._changed  # taken before the scan: a change after it wakes us
            with self.lock:
                pending = [(rv, event) for rv, gvr, event in self.events if rv > since and gvr == route.gvr]
            for rv, event in pending:
                meta = event["object"]["metadata"]
                if (not route.namespace or meta.get("namespace", "") == route.namespace) and wanted in (
                    None,
                    meta["name"],
                ):
                    if metadata_only:
                        event = {"type": event["type"], "object": partial(event["object"])}
                    await response.write(json.dumps(event).encode() + b"\n")
                    sent += 1
                    if drop_after is not None and sent >= drop_after:
                        assert request.transport is not None
                        request.transport.close()  # no terminating chunk: the client sees a broken stream
                        return response
                since = max(since, rv)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or epoch != self._watch_epoch:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)
        if bookmarks:
            mark = {
                "type": "BOOKMARK",
                "object": {"kind": KINDS[route.gvr[2]], "metadata": {"resourceVersion": str(self.rv)}},
            }
            await response.write(json.dumps(mark).encode() + b"\n")
        await response.write_eof()
        return response


class _KeyView:
    """``namespace/name`` -> object over a store keyed by (namespace, name), without copying it."""

    def __init__(self, store: dict[Name, dict[str, Any]]) -> None:
        self._store = store

    def __getitem__(self, key: str) -> dict[str, Any]:
        namespace, sep, name = key.partition("/")
        return self._store[(namespace, name) if sep else ("", key)]


def _verb(method: str, route: Route, query: Mapping[str, str]) -> str:
    if method == "GET" and not route.name:
        return "watch" if query.get("watch") in ("true", "1", "True") else "list"
    return {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, method)


async def _fail(request: web.Request, fault: Fault) -> web.StreamResponse:
    if fault.drop:
        assert request.transport is not None
        request.transport.close()
        raise ConnectionResetError("dropped by the test")
    body = fault.body or status_body(fault.status, "Injected", f"injected HTTP {fault.status}")
    return web.json_response(body, status=fault.status, headers=fault.headers)


def _field_name(selector: str) -> str | None:
    for part in selector.split(","):
        if part.startswith("metadata.name="):
            return part.split("=", 1)[1]
    return None


def _labels_match(labels: Mapping[str, str], selector: str) -> bool:
    for term in selector.split(","):
        k, _, v = term.partition("=")
        if labels.get(k.strip()) != v.strip():
            return False
    return True


def _without_keyed_lists(patch: dict[str, Any], resource: str) -> dict[str, Any]:
    keyed = STRATEGIC_KEYS.get(resource, {})
    return {k: v for k, v in patch.items() if k not in keyed}


def _merge_by_key(current: list[Any], patch: list[Any], merge_key: str) -> list[Any]:
    """A strategic-merge list: entries are matched by ``merge_key`` and merged; new ones appended."""
    merged = [copy.deepcopy(entry) for entry in current]
    index = {entry.get(merge_key): i for i, entry in enumerate(merged)}
    for entry in patch:
        if entry.get(merge_key) in index:
            i = index[entry[merge_key]]
            merged[i] = merge_patch(merged[i], entry)
        else:
            merged.append(entry)
    return merged


# --- facades: the accessors each group of tests uses ------------------------------------------
#
# Certificates and `recommend` (Secrets, MutatingWebhookConfigurations, Pods), audit/backfill
# (paginated Pods with faults), the plugin source and CLI (one watched ConfigMap).

SECRETS: GVR = ("", "v1", "secrets")
WEBHOOK_CONFIGS: GVR = ("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations")
PODS: GVR = ("", "v1", "pods")


class _ByName(MutableMapping[str, dict[str, Any]]):
    """A cluster-scoped resource's live objects, by name alone."""

    def __init__(self, objects: dict[tuple[str, str], dict[str, Any]]) -> None:
        self._objects = objects

    def __getitem__(self, name: str) -> dict[str, Any]:
        return self._objects[("", name)]

    def __setitem__(self, name: str, obj: dict[str, Any]) -> None:
        self._objects[("", name)] = obj

    def __delitem__(self, name: str) -> None:
        del self._objects[("", name)]

    def __iter__(self) -> Iterator[str]:
        return (name for _, name in self._objects)

    def __len__(self) -> int:
        return len(self._objects)


class FakeKube(FakeAPI):
    def __init__(self) -> None:
        super().__init__(first_rv=100)

    @property
    def requests(self) -> RequestLog:
        return self.log

    @property
    def secrets(self) -> dict[tuple[str, str], dict[str, Any]]:
        return self.resource(SECRETS)

    @property
    def webhook_configs(self) -> _ByName:
        return _ByName(self.resource(WEBHOOK_CONFIGS))

    @property
    def pods(self) -> list[dict[str, Any]]:
        return list(self.resource(PODS).values())

    @pods.setter
    def pods(self, pods: list[dict[str, Any]]) -> None:
        with self.lock:
            self.resource(PODS).clear()
            for pod in pods:
                self.seed(PODS, pod)
            if len(self.resource(PODS)) != len(pods):
                raise ValueError("Pods must have distinct namespace/name pairs")

    def add_webhook_config(self, name: str, webhook_names: list[str]) -> None:
        self.seed(
            WEBHOOK_CONFIGS,
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": name, "uid": f"uid-{name}"},
                "webhooks": [
                    {
                        "name": w,
                        "admissionReviewVersions": ["v1"],
                        "sideEffects": "None",
                        "clientConfig": {"service": {"name": "workload-tagger", "namespace": "workload-tagger"}},
                    }
                    for w in webhook_names
                ],
            },
        )

    def put_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        self.seed(
            SECRETS,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {"name": name, "namespace": namespace, "resourceVersion": self.next_rv(), "uid": "u"},
                "data": data,
            },
        )


class FakeKubeServer:
    """Serves a FakeKube on 127.0.0.1 for the test's duration; `api_client()` talks to it."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube
        self.url = ""

    def __enter__(self) -> FakeKubeServer:
        self.kube.__enter__()
        self.url = self.kube.url
        return self

    def __exit__(self, *exc: object) -> None:
        self.kube.__exit__(*exc)

    def api_client(self) -> k8s.ApiClient:
        return self.kube.api_client()


class FakeCluster(FakeAPI):
    """Pods keyed ``namespace/name`` in key order, like etcd; faults are consumed one per request."""

    def __init__(self, pods: list[dict[str, Any]]) -> None:
        super().__init__(first_rv=1000)
        for pod in pods:
            self.seed(PODS, pod)

    @property
    def pods(self) -> dict[str, dict[str, Any]]:
        """The stored Pods by ``namespace/name`` (the objects themselves, not copies)."""
        with self.lock:
            return {object_key(*name): pod for name, pod in self.resource(PODS).items()}

    def delete(self, key: str) -> None:
        namespace, _, name = key.partition("/")
        self.delete_object(PODS, namespace, name)

    def touch(self, key: str, annotations: dict[str, str]) -> None:
        """Someone else changes the Pod: merge annotations and bump its resourceVersion."""
        with self.lock:
            pod = self.pods[key]
            pod["metadata"] = merge_patch(pod["metadata"], {"annotations": annotations})
            pod["metadata"]["resourceVersion"] = self.next_rv()

    def requests(self, kind: str) -> list[Recorded]:
        """``LIST`` (GET of the collection), ``GET`` (of one Pod) or ``PATCH`` requests, in order."""
        return [r for r in self.log if _kind(r) == kind]


def _kind(request: Recorded) -> str:
    if request.method == "GET":
        return "LIST" if request.path.endswith("/pods") else "GET"
    return request.method


@contextmanager
def serve(cluster: FakeCluster) -> Iterator[k8s.CoreV1Api]:
    """Run the fake API on a loopback port in a thread; yield a real CoreV1Api pointed at it."""
    with cluster:
        conf = k8s.Configuration()
        conf.host = cluster.url
        api = kube_core_api(conf)
        try:
            yield api
        finally:
            api.api_client.close()


CONFIGMAPS: GVR = ("", "v1", "configmaps")


class FakeConfigMapAPI(FakeAPI):
    """ConfigMaps with real resourceVersion semantics, plus knobs for failure modes."""

    def __init__(
        self,
        list_delay_s: float = 0.0,
        forbid: set[str] | None = None,  # verbs answered 403: get, list, watch, create, patch
        drop_watch_after_events: int | None = None,  # next watch: drop the connection after N events
        always_conflict: bool = False,
    ) -> None:
        super().__init__(first_rv=100)
        self.list_delay_s = list_delay_s
        self.forbid = set(forbid or ())
        self.drop_watch_after_events = drop_watch_after_events
        self.always_conflict = always_conflict
        # lands just before the next write, merged into the ConfigMap's data
        self.concurrent_write: tuple[str, str, dict[str, str]] | None = None
        self.before_write = self._concurrent_write

    def __enter__(self) -> FakeConfigMapAPI:
        super().__enter__()
        return self

    @property
    def seen(self) -> RequestLog:
        return self.log

    @property
    def objects(self) -> dict[tuple[str, str], dict[str, Any]]:
        return self.resource(CONFIGMAPS)

    def put(self, namespace: str, name: str, data: dict[str, str]) -> None:
        """Create or replace the ConfigMap's data (what ``kubectl apply`` of a whole ConfigMap does)."""
        obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace}}
        self.save(CONFIGMAPS, {**obj, "data": dict(data)})

    def remove(self, namespace: str, name: str) -> None:
        self.delete_object(CONFIGMAPS, namespace, name)

    def _concurrent_write(self, method: str, path: str) -> None:
        """Somebody else's write, landing between the client's read and its write."""
        if self.concurrent_write is not None:
            (namespace, name, data), self.concurrent_write = self.concurrent_write, None
            current = self.objects.get((namespace, name))
            self.put(namespace, name, merge_patch((current or {}).get("data") or {}, data))
