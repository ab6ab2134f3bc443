"""A small Kubernetes API fake (aiohttp, loopback) for what kmock cannot express.

kmock's emulator ignores resourceVersion, so it cannot produce the 409 conflicts that the
self-managed certificate code must survive. This fake keeps resourceVersions, answers 409 on
stale writes, applies strategic-merge patches to webhook entries by name (as the apiserver
does for MutatingWebhookConfiguration.webhooks), and lets a test run a hook between requests
to play "another replica". The real `kubernetes` client talks to it over HTTP.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from kubernetes import client as k8s

MWC = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "code": code,
        "message": message,
    }
    return web.json_response(body, status=code)


@dataclass
class FakeKube:
    secrets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    webhook_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: list[dict[str, Any]] = field(default_factory=list)
    api_groups: list[str] = field(default_factory=list)
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    # called (under the lock) before a write is applied: (method, path) -> None; may change the store
    before_write: Callable[[str, str], None] | None = None
    _rv: int = 100
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def add_webhook_config(self, name: str, webhook_names: list[str]) -> None:
        self.webhook_configs[name] = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name, "resourceVersion": self.next_rv(), "uid": f"uid-{name}"},
            "webhooks": [
                {
                    "name": w,
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                    "clientConfig": {"service": {"name": "workload-tagger", "namespace": "workload-tagger"}},
                }
                for w in webhook_names
            ],
        }

    def put_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        self.secrets[(namespace, name)] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": self.next_rv(), "uid": "u"},
            "data": data,
        }

    # -- handlers ----------------------------------------------------------------------------
    def _hook(self, method: str, path: str) -> None:
        if self.before_write is not None:
            self.before_write(method, path)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path, request.content_type))
        body = await request.read()
        with self.lock:
            return self._dispatch(request, json.loads(body) if body else None)

    def _dispatch(self, request: web.Request, body: Any) -> web.Response:
        path, method = request.path, request.method
        parts = path.strip("/").split("/")
        if path in ("/apis", "/apis/") and method == "GET":
            return web.json_response(
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [
                        {"name": g, "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}]}
                        for g in self.api_groups
                    ],
                }
            )
        if path == "/api/v1/pods" and method == "GET":
            return self._list_pods(request)
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) >= 5 and parts[4] == "secrets":
            return self._secret(method, parts[3], parts[5] if len(parts) > 5 else None, body, path)
        if path.startswith(MWC + "/"):
            return self._mwc(method, parts[-1], body, request.content_type, path)
        return _status(404, "NotFound", f"no route {method} {path}")

    def _list_pods(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "0") or 0) or len(self.pods) or 1
        start = int(request.query.get("continue", "0") or 0)
        chunk = self.pods[start : start + limit]
        meta: dict[str, Any] = {"resourceVersion": str(self._rv)}
        if start + limit < len(self.pods):
            meta["continue"] = str(start + limit)
        return web.json_response({"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": chunk})

    def _secret(self, method: str, ns: str, name: str | None, body: Any, path: str) -> web.Response:
        if method == "GET" and name:
            obj = self.secrets.get((ns, name))
            if obj is None:
                return _status(404, "NotFound", f'secrets "{name}" not found')
            return web.json_response(obj)
        if method == "POST" and name is None:
            self._hook(method, path)
            name = body["metadata"]["name"]
            if (ns, name) in self.secrets:
                return _status(409, "AlreadyExists", f'secrets "{name}" already exists')
            obj = copy.deepcopy(body)
            obj["metadata"].update(namespace=ns, resourceVersion=self.next_rv(), uid=f"uid-{name}")
            self.secrets[(ns, name)] = obj
            return web.json_response(obj, status=201)
        if method == "PUT" and name:
            self._hook(method, path)
            current = self.secrets.get((ns, name))
            if current is None:
                return _status(404, "NotFound", f'secrets "{name}" not found')
            if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                return _status(409, "Conflict", "the object has been modified; please apply your changes")
            obj = copy.deepcopy(body)
            obj["metadata"]["resourceVersion"] = self.next_rv()
            self.secrets[(ns, name)] = obj
            return web.json_response(obj)
        return _status(405, "MethodNotAllowed", f"{method} {path}")

    def _mwc(self, method: str, name: str, body: Any, content_type: str, path: str) -> web.Response:
        current = self.webhook_configs.get(name)
        if current is None:
            return _status(404, "NotFound", f'mutatingwebhookconfigurations "{name}" not found')
        if method == "GET":
            return web.json_response(current)
        if method == "PATCH":
            self._hook(method, path)
            if content_type != "application/strategic-merge-patch+json":
                return _status(
                    415, "UnsupportedMediaType", f"fake only speaks strategic merge, not {content_type}"
                )
            current = self.webhook_configs[name]
            rv = (body.get("metadata") or {}).get("resourceVersion")
            if rv is not None and rv != current["metadata"]["resourceVersion"]:
                return _status(409, "Conflict", "the object has been modified; please apply your changes")
            obj = copy.deepcopy(current)
            by_name = {w["name"]: w for w in obj["webhooks"]}
            for entry in body.get("webhooks", []):
                target = by_name.get(entry["name"])
                if target is None:
                    obj["webhooks"].append(entry)
                else:
                    target.setdefault("clientConfig", {}).update(entry.get("clientConfig", {}))
            obj["metadata"]["resourceVersion"] = self.next_rv()
            self.webhook_configs[name] = obj
            return web.json_response(obj)
        return _status(405, "MethodNotAllowed", f"{method} {path}")


class FakeKubeServer:
    """Runs a FakeKube on 127.0.0.1 in a thread with its own loop; `api_client()` talks to it."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.kube.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> FakeKubeServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake API server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def api_client(self) -> k8s.ApiClient:
        configuration = k8s.Configuration(host=self.url)
        return k8s.ApiClient(configuration)
