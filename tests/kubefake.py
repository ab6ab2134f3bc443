"""A small Kubernetes API for the audit/backfill tests, on 127.0.0.1, driven by the real client.

kmock's emulator ignores ``limit``/``continue`` (it always answers with every object) and has
no resourceVersion preconditions, so the paginated list, the merge-patch semantics and the
fault injection the backfill must survive are served here instead. It speaks the same wire
protocol: PodList pages with ``metadata.continue``/``remainingItemCount``, ``Status`` errors,
RFC 7386 merge patches, 409 on a stale ``metadata.resourceVersion`` precondition.
"""

from __future__ import annotations

import asyncio
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

from webhook.kubeclient import core_api


@dataclass
class Fault:
    """What to do instead of serving one request: an HTTP status (with headers/body) or ``drop``."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    drop: bool = False
    after: bool = False  # serve the request first, then drop the connection instead of answering


@dataclass
class Logged:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, written from the RFC's pseudo-code."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def status_body(code: int, reason: str, message: str, **meta: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": meta,
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


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
        self.log: list[Logged] = []
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

    def requests(self, method: str) -> list[Logged]:
        return [r for r in self.log if r.method == method]

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
        self.log.append(Logged("LIST", request.path, dict(request.query), "", None))
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
        self.log.append(Logged("GET", request.path, dict(request.query), "", None))
        fault = self._take("GET", key)
        if fault:
            return await self._fail(request, fault)
        with self.lock:
            pod = self.pods.get(key)
            if pod is None:
                return web.json_response(status_body(404, "NotFound", f'pods "{key}" not found'), status=404)
            return web.Response(body=orjson.dumps(pod), content_type="application/json")

    async def patch_pod(self, request: web.Request) -> web.StreamResponse:
        key = f"{request.match_info['namespace']}/{request.match_info['name']}"
        body = orjson.loads(await request.read())
        self.log.append(Logged("PATCH", request.path, dict(request.query), request.content_type, body))
        fault = self._take("PATCH", key)
        if fault and not fault.after:
            return await self._fail(request, fault)
        if request.content_type not in (
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
        ):
            return web.json_response(
                status_body(415, "UnsupportedMediaType", request.content_type), status=415
            )
        with self.lock:
            pod = self.pods.get(key)
            if pod is None:
                return web.json_response(status_body(404, "NotFound", f'pods "{key}" not found'), status=404)
            want_rv = (body.get("metadata") or {}).get("resourceVersion")
            if want_rv is not None and want_rv != pod["metadata"]["resourceVersion"]:
                msg = "the object has been modified; please apply your changes to the latest version"
                return web.json_response(status_body(409, "Conflict", msg), status=409)
            self.rv += 1
            patched = merge_patch(pod, body)
            patched["metadata"]["resourceVersion"] = str(self.rv)
            self.pods[key] = patched
        if fault:  # applied, and the answer is lost
            return await self._fail(request, fault)
        return web.Response(body=orjson.dumps(patched), content_type="application/json")

    def app(self) -> web.Application:
        app = web.Application()
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


@contextmanager
def serve(cluster: FakeCluster) -> Iterator[k8s.CoreV1Api]:
    """Run the fake API on a loopback port in a thread; yield a real CoreV1Api pointed at it."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def start() -> None:
        runner = web.AppRunner(cluster.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        holder["runner"] = runner
        holder["port"] = runner.addresses[0][1]
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    ready.wait(10)
    conf = k8s.Configuration()
    conf.host = f"http://127.0.0.1:{holder['port']}"
    api = core_api(conf)
    try:
        yield api
    finally:
        api.api_client.close()
        asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
