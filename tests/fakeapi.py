"""What every fake Kubernetes API server in these tests shares.

kmock (the team's API mock) cannot express resourceVersion conflicts, paginated lists, watch
bookmarks/410s or injected faults, so three small fakes serve those, each for its own resources:
tests/fake_kube.py (Secrets, MutatingWebhookConfigurations, Pods for the certificate code and
``recommend``), tests/kubefake.py (paginated Pods with fault injection for audit/backfill) and
tests/sources_fakes.py (a watchable ConfigMap for the plugin source and the plugin CLI). This
module holds what they had each written for themselves: the loopback server thread, Kubernetes
``Status`` answers, RFC 7386 merge patches, request recording, and client/kubeconfig helpers.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from kubernetes import client as k8s

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
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-apiserver", daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        self.run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            self.run(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

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
