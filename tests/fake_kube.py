"""A small Kubernetes API fake (aiohttp, loopback) for what kmock cannot express.

kmock's emulator ignores resourceVersion, so it cannot produce the 409 conflicts that the
self-managed certificate code must survive. This fake keeps resourceVersions, answers 409 on
stale writes, applies strategic-merge patches to webhook entries by name (as the apiserver
does for MutatingWebhookConfiguration.webhooks), and lets a test run a hook between requests
to play "another replica". The real `kubernetes` client talks to it over HTTP. The server
thread, Status answers and request log are shared with the other fakes (tests/fakeapi.py).
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakeapi import LoopbackServer, RequestLog, already_exists, conflict, not_found, status_response

MWC = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


@dataclass
class FakeKube:
    secrets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    webhook_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: list[dict[str, Any]] = field(default_factory=list)
    api_groups: list[str] = field(default_factory=list)
    requests: RequestLog = field(default_factory=RequestLog)
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
                        {"name": g, "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}]} for g in self.api_groups
                    ],
                }
            )
        if path == "/api/v1/pods" and method == "GET":
            return self._list_pods(request)
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) >= 5 and parts[4] == "secrets":
            return self._secret(method, parts[3], parts[5] if len(parts) > 5 else None, body, path)
        if path.startswith(MWC + "/"):
            return self._mwc(method, parts[-1], body, request.content_type, path)
        return status_response(404, "NotFound", f"no route {method} {path}")

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
                return not_found("secrets", name)
            return web.json_response(obj)
        if method == "POST" and name is None:
            self._hook(method, path)
            name = body["metadata"]["name"]
            if (ns, name) in self.secrets:
                return already_exists("secrets", name)
            obj = copy.deepcopy(body)
            obj["metadata"].update(namespace=ns, resourceVersion=self.next_rv(), uid=f"uid-{name}")
            self.secrets[(ns, name)] = obj
            return web.json_response(obj, status=201)
        if method == "PUT" and name:
            self._hook(method, path)
            current = self.secrets.get((ns, name))
            if current is None:
                return not_found("secrets", name)
            if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                return conflict("secrets", name)
            obj = copy.deepcopy(body)
            obj["metadata"]["resourceVersion"] = self.next_rv()
            self.secrets[(ns, name)] = obj
            return web.json_response(obj)
        return status_response(405, "MethodNotAllowed", f"{method} {path}")

    def _mwc(self, method: str, name: str, body: Any, content_type: str, path: str) -> web.Response:
        current = self.webhook_configs.get(name)
        if current is None:
            return not_found("mutatingwebhookconfigurations", name)
        if method == "GET":
            return web.json_response(current)
        if method == "PATCH":
            self._hook(method, path)
            if content_type != "application/strategic-merge-patch+json":
                return status_response(
                    415, "UnsupportedMediaType", f"fake only speaks strategic merge, not {content_type}"
                )
            current = self.webhook_configs[name]
            rv = (body.get("metadata") or {}).get("resourceVersion")
            if rv is not None and rv != current["metadata"]["resourceVersion"]:
                return conflict("mutatingwebhookconfigurations", name)
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
        return status_response(405, "MethodNotAllowed", f"{method} {path}")


class FakeKubeServer(LoopbackServer):
    """Runs a FakeKube on 127.0.0.1 in a thread with its own loop; `api_client()` talks to it."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube
        app = web.Application(middlewares=[kube.requests.middleware])
        app.router.add_route("*", "/{tail:.*}", kube.handle)
        super().__init__(app)

    def __enter__(self) -> FakeKubeServer:
        super().__enter__()
        return self
