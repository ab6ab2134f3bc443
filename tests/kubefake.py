"""A small Kubernetes API for the audit/backfill tests, on 127.0.0.1, driven by the real client.

kmock's emulator ignores ``limit``/``continue`` (it always answers with every object) and has
no resourceVersion preconditions, so the paginated list, the merge-patch semantics and the
fault injection the backfill must survive are served here instead. It speaks the same wire
protocol: PodList pages with ``metadata.continue``/``remainingItemCount``, ``Status`` errors,
RFC 7386 merge patches, 409 on a stale ``metadata.resourceVersion`` precondition. The server
thread, Status bodies, merge patch and request log are shared with the other fakes
(tests/fakeapi.py).
"""

from __future__ import annotations

import base64
import bisect
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from kubernetes import client as k8s

from tests.fakeapi import LoopbackServer, Recorded, RequestLog, merge_patch, status_body, status_response
from webhook.kubeclient import core_api


@dataclass
class Fault:
    """What to do instead of serving one request: an HTTP status (with headers/body) or ``drop``."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    drop: bool = False
    after: bool = False  # serve the request first, then drop the connection instead of answering


class FakeCluster:
    """Pods keyed ``namespace/name`` in key order, like etcd; faults are consumed one per request."""

    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods: dict[str, dict[str, Any]] = {}
        self.rv = 1000
        for pod in pods:
            self.rv += 1
            meta = pod.setdefault("metadata", {})
            meta.setdefault("resourceVersion", str(self.rv))
            self.pods[f"{meta['namespace']}/{meta['name']}"] = pod
        self.keys = sorted(self.pods)
        self.log = RequestLog()
        # (method, pod key or "LIST#<n>") -> faults to serve first, in order
        self.faults: dict[tuple[str, str], list[Fault]] = {}
        self.lists = 0
        self.lock = threading.Lock()

    # -- helpers for tests
    def fault(self, method: str, target: str, *faults: Fault) -> None:
        self.faults.setdefault((method, target), []).extend(faults)

    def delete(self, key: str) -> None:
        with self.lock:
            del self.pods[key]
            self.keys.remove(key)

    def touch(self, key: str, annotations: dict[str, str]) -> None:
        """Someone else changes the Pod: merge annotations and bump its resourceVersion."""
        with self.lock:
            self.rv += 1
            pod = self.pods[key]
            pod["metadata"] = merge_patch(pod["metadata"], {"annotations": annotations})
            pod["metadata"]["resourceVersion"] = str(self.rv)

    def requests(self, kind: str) -> list[Recorded]:
        """``LIST`` (GET of the collection), ``GET`` (of one Pod) or ``PATCH`` requests, in order."""
        return [r for r in self.log if _kind(r) == kind]

    # -- the API
    def _take(self, method: str, target: str) -> Fault | None:
        queue = self.faults.get((method, target))
        return queue.pop(0) if queue else None

    async def _fail(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        if fault.drop:
            assert request.transport is not None
            request.transport.close()
            raise ConnectionResetError("dropped by the test")
        body = fault.body or status_body(fault.status, "Injected", f"injected HTTP {fault.status}")
        return web.json_response(body, status=fault.status, headers=fault.headers)

    async def list_pods(self, request: web.Request) -> web.StreamResponse:
        namespace = request.match_info.get("namespace")
        self.lists += 1
        fault = self._take("LIST", f"LIST#{self.lists}")
        if fault:
            return await self._fail(request, fault)
        limit = int(request.query.get("limit", "0") or 0)
        token = request.query.get("continue")
        selector = request.query.get("labelSelector")
        with self.lock:
            keys = self.keys
            start = 0
            if token:
                # "<base64 key>[~tag]": a tag marks a token a test handed out in a 410 Status
                after = base64.urlsafe_b64decode(token.partition("~")[0].encode()).decode()
                start = bisect.bisect_right(keys, after)
            items: list[dict[str, Any]] = []
            i = start
            while i < len(keys) and (not limit or len(items) < limit):
                pod = self.pods[keys[i]]
                i += 1
                if namespace and pod["metadata"]["namespace"] != namespace:
                    continue
                if selector and not _matches(pod, selector):
                    continue
                items.append(pod)
            meta: dict[str, Any] = {"resourceVersion": str(self.rv)}
            if i < len(keys) and limit:
                meta["continue"] = base64.urlsafe_b64encode(keys[i - 1].encode()).decode()
                if not namespace and not selector:
                    meta["remainingItemCount"] = len(keys) - i
            body = orjson.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": items})
        return web.Response(body=body, content_type="application/json")

    async def read_pod(self, request: web.Request) -> web.StreamResponse:
        key = f"{request.match_info['namespace']}/{request.match_info['name']}"
        fault = self._take("GET", key)
        if fault:
            return await self._fail(request, fault)
        with self.lock:
            pod = self.pods.get(key)
            if pod is None:
                return status_response(404, "NotFound", f'pods "{key}" not found')
            return web.Response(body=orjson.dumps(pod), content_type="application/json")

    async def patch_pod(self, request: web.Request) -> web.StreamResponse:
        key = f"{request.match_info['namespace']}/{request.match_info['name']}"
        body = orjson.loads(await request.read())
        fault = self._take("PATCH", key)
        if fault and not fault.after:
            return await self._fail(request, fault)
        if request.content_type not in (
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
        ):
            return status_response(415, "UnsupportedMediaType", request.content_type)
        with self.lock:
            pod = self.pods.get(key)
            if pod is None:
                return status_response(404, "NotFound", f'pods "{key}" not found')
            want_rv = (body.get("metadata") or {}).get("resourceVersion")
            if want_rv is not None and want_rv != pod["metadata"]["resourceVersion"]:
                msg = "the object has been modified; please apply your changes to the latest version"
                return status_response(409, "Conflict", msg)
            self.rv += 1
            patched = merge_patch(pod, body)
            patched["metadata"]["resourceVersion"] = str(self.rv)
            self.pods[key] = patched
        if fault:  # applied, and the answer is lost
            return await self._fail(request, fault)
        return web.Response(body=orjson.dumps(patched), content_type="application/json")

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.log.middleware])
        app.router.add_get("/api/v1/pods", self.list_pods)
        app.router.add_get("/api/v1/namespaces/{namespace}/pods", self.list_pods)
        app.router.add_get("/api/v1/namespaces/{namespace}/pods/{name}", self.read_pod)
        app.router.add_patch("/api/v1/namespaces/{namespace}/pods/{name}", self.patch_pod)
        return app


def _matches(pod: dict[str, Any], selector: str) -> bool:
    labels = pod["metadata"].get("labels") or {}
    for term in selector.split(","):
        k, _, v = term.partition("=")
        if labels.get(k.strip()) != v.strip():
            return False
    return True


def _kind(request: Recorded) -> str:
    if request.method == "GET":
        return "LIST" if request.path.endswith("/pods") else "GET"
    return request.method


@contextmanager
def serve(cluster: FakeCluster) -> Iterator[k8s.CoreV1Api]:
    """Run the fake API on a loopback port in a thread; yield a real CoreV1Api pointed at it."""
    with LoopbackServer(cluster.app()) as server:
        conf = k8s.Configuration()
        conf.host = server.url
        api = core_api(conf)
        try:
            yield api
        finally:
            api.api_client.close()
