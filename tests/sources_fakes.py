"""Test doubles for the plugin sources and the plugin CLI.

``FakeConfigMapAPI`` is a small aiohttp app on 127.0.0.1 speaking the Kubernetes ConfigMap
protocol for what kmock 0.8 cannot express: real resourceVersions (409 on a stale write, 410 on a
compacted watch), server-side watch timeouts with bookmarks, dropped connections, slow answers
and 403s. The server thread, Status answers, merge patches and request log come from
tests/fakeapi.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakeapi import (
    LoopbackServer,
    RequestLog,
    already_exists,
    conflict,
    forbidden,
    merge_patch,
    not_found,
    status_response,
)

# --- recorders ----------------------------------------------------------------------------


class RecordingSink:
    """Records every snapshot a source applies (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.applied: list[tuple[dict[str, str], str]] = []

    def apply(self, sources: Mapping[str, str], *, origin: str) -> None:
        with self._lock:
            self.applied.append((dict(sources), origin))

    @property
    def snapshots(self) -> list[dict[str, str]]:
        with self._lock:
            return [snapshot for snapshot, _ in self.applied]

    @property
    def last(self) -> dict[str, str] | None:
        snapshots = self.snapshots
        return snapshots[-1] if snapshots else None


class RecordingObserver:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.syncs: list[tuple[str, bool]] = []
        self.restarts: list[tuple[str, str]] = []

    def synced(self, source: str, ok: bool) -> None:
        with self._lock:
            self.syncs.append((source, ok))

    def watch_restarted(self, source: str, reason: str) -> None:
        with self._lock:
            self.restarts.append((source, reason))


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Like :func:`wait_for` but yields to the event loop (kmock serves on it)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


# --- the fake API server ------------------------------------------------------------------


@dataclass
class FakeConfigMapAPI:
    """ConfigMaps with real resourceVersion semantics, plus knobs for failure modes."""

    list_delay_s: float = 0.0
    forbid: set[str] = field(default_factory=set)  # verbs answered 403: get, list, watch, create, patch
    drop_watch_after_events: int | None = None  # next watch: drop the connection after N events
    concurrent_write: tuple[str, str, dict[str, str]] | None = None  # lands just before the next write
    always_conflict: bool = False
    seen: RequestLog = field(default_factory=RequestLog)

    def __post_init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.rv = 100
        self.events: list[tuple[int, dict[str, Any]]] = []
        self._changed = asyncio.Event()  # not bound to a loop until awaited (on the server's loop)
        app = web.Application(middlewares=[self.seen.middleware])
        app.router.add_route("*", "/api/v1/namespaces/{ns}/configmaps", self._collection)
        app.router.add_route("*", "/api/v1/namespaces/{ns}/configmaps/{name}", self._item)
        self._server = LoopbackServer(app)
        self.url = ""

    # lifecycle

    def __enter__(self) -> FakeConfigMapAPI:
        self._server.__enter__()
        self.url = self._server.url
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.__exit__(*exc)

    # state changes from the test thread

    def put(self, namespace: str, name: str, data: dict[str, str]) -> None:
        """Create or replace the ConfigMap's data (what ``kubectl apply`` of a whole ConfigMap does)."""
        self._call(self._put, namespace, name, data, False)

    def remove(self, namespace: str, name: str) -> None:
        self._call(self._remove, namespace, name)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._server.run(fn(*args), timeout=5)

    async def _put(
        self, namespace: str, name: str, data: Mapping[str, str | None], merge: bool = True
    ) -> dict[str, Any]:
        key = (namespace, name)
        existing = self.objects.get(key)
        merged = merge_patch(dict((existing or {}).get("data") or {}) if merge else {}, data)
        self.rv += 1
        obj = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "resourceVersion": str(self.rv),
                "uid": f"uid-{namespace}-{name}",
            },
            "data": merged,
        }
        self.objects[key] = obj
        await self._publish("MODIFIED" if existing else "ADDED", obj)
        return obj

    async def _remove(self, namespace: str, name: str) -> dict[str, Any]:
        obj = self.objects.pop((namespace, name))
        self.rv += 1
        gone: dict[str, Any] = json.loads(json.dumps(obj))
        gone["metadata"]["resourceVersion"] = str(self.rv)
        await self._publish("DELETED", gone)
        return gone

    async def _publish(self, kind: str, obj: dict[str, Any]) -> None:
        self.events.append((self.rv, {"type": kind, "object": obj}))
        self._changed.set()  # wake every watcher, then arm a fresh event for the next change
        self._changed = asyncio.Event()

    # HTTP

    def _forbidden(self, verb: str, namespace: str) -> web.Response:
        return forbidden(verb, "configmaps", namespace)

    async def _collection(self, request: web.Request) -> web.StreamResponse:
        ns = request.match_info["ns"]
        if request.method == "GET" and request.query.get("watch") in ("true", "1", "True"):
            if "watch" in self.forbid:
                return self._forbidden("watch", ns)
            return await self._watch(request, ns)
        if request.method == "GET":
            if "list" in self.forbid:
                return self._forbidden("list", ns)
            if self.list_delay_s:
                await asyncio.sleep(self.list_delay_s)
            wanted = _field_name(request.query.get("fieldSelector", ""))
            items = [o for (n, name), o in self.objects.items() if n == ns and wanted in (None, name)]
            return web.json_response(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMapList",
                    "metadata": {"resourceVersion": str(self.rv)},
                    "items": items,
                }
            )
        if request.method == "POST":
            if "create" in self.forbid:
                return self._forbidden("create", ns)
            body = await request.json()
            await self._concurrent_write()
            name = body["metadata"]["name"]
            if (ns, name) in self.objects:
                return already_exists("configmaps", name)
            obj = await self._put(ns, name, body.get("data") or {})
            obj["metadata"]["labels"] = body["metadata"].get("labels", {})
            return web.json_response(obj, status=201)
        return status_response(405, "MethodNotAllowed", "method not allowed")

    async def _item(self, request: web.Request) -> web.StreamResponse:
        ns, name = request.match_info["ns"], request.match_info["name"]
        if request.method == "GET":
            if "get" in self.forbid:
                return self._forbidden("get", ns)
            if (ns, name) not in self.objects:
                return not_found("configmaps", name)
            return web.json_response(self.objects[(ns, name)])
        if request.method == "PATCH":
            if "patch" in self.forbid:
                return self._forbidden("patch", ns)
            body = await request.json()
            await self._concurrent_write()
            if (ns, name) not in self.objects:
                return not_found("configmaps", name)
            wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
            current_rv = self.objects[(ns, name)]["metadata"]["resourceVersion"]
            if self.always_conflict or (wanted_rv is not None and wanted_rv != current_rv):
                return conflict("configmaps", name)
            obj = await self._put(ns, name, body.get("data") or {})
            return web.json_response(obj)
        return status_response(405, "MethodNotAllowed", "method not allowed")

    async def _concurrent_write(self) -> None:
        """Somebody else's write, landing between the client's read and its write."""
        if self.concurrent_write is not None:
            other, self.concurrent_write = self.concurrent_write, None
            await self._put(*other)

    async def _watch(self, request: web.Request, ns: str) -> web.StreamResponse:
        since = int(request.query.get("resourceVersion") or 0)
        timeout = float(request.query.get("timeoutSeconds") or 30)
        bookmarks = request.query.get("allowWatchBookmarks") in ("true", "1", "True")
        wanted = _field_name(request.query.get("fieldSelector", ""))
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        deadline = time.monotonic() + timeout
        sent = 0
        drop_after, self.drop_watch_after_events = self.drop_watch_after_events, None
        while True:
            for rv, event in self.events:
                obj = event["object"]["metadata"]
                if rv > since and obj["namespace"] == ns and wanted in (None, obj["name"]):
                    await response.write(json.dumps(event).encode() + b"\n")
                    sent += 1
                    if drop_after is not None and sent >= drop_after:
                        assert request.transport is not None
                        request.transport.close()  # no terminating chunk: the client sees a broken stream
                        return response
                since = max(since, rv)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)
        if bookmarks:
            mark = {
                "type": "BOOKMARK",
                "object": {"kind": "ConfigMap", "metadata": {"resourceVersion": str(self.rv)}},
            }
            await response.write(json.dumps(mark).encode() + b"\n")
        await response.write_eof()
        return response


def _field_name(selector: str) -> str | None:
    for part in selector.split(","):
        if part.startswith("metadata.name="):
            return part.split("=", 1)[1]
    return None
