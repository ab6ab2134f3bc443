"""A real webhook (TLS on loopback) plus its plain-HTTP metrics port, run in a background thread.

Used by the metrics and log tests: they talk to it over real sockets like the apiserver and
Prometheus would, while the test thread stays free to drive traffic and poll.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tests.support.net import free_port
from webhook import metrics
from webhook.admission.handler import PodMutator
from webhook.admission.server import Readiness, build_app, serve_until_stopped, tls_context
from webhook.certs import generate as certs
from webhook.plugins import PluginSet
from webhook.resolution.resolver import Resolver


@dataclass(frozen=True)
class CertFiles:
    ca: Path
    cert: Path
    key: Path
    leaf: certs.KeyPair


def write_certs(out: Path, validity: dt.timedelta = certs.LEAF_VALIDITY) -> CertFiles:
    """A CA and a serving certificate for 127.0.0.1/localhost, with a chosen lifetime."""
    out.mkdir(parents=True, exist_ok=True)
    ca = certs.make_ca()
    leaf = certs.make_leaf(ca, ["localhost", "127.0.0.1"], validity)
    files = CertFiles(out / "ca.crt", out / "tls.crt", out / "tls.key", leaf)
    files.ca.write_bytes(ca.cert_pem)
    files.cert.write_bytes(leaf.cert_pem)
    files.key.write_bytes(leaf.key_pem)
    return files


@dataclass
class RunningWebhook:
    port: int
    metrics_port: int
    certs: CertFiles

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.certs.ca))

    def post(self, body: bytes) -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.client_context(), timeout=10)
        try:
            conn.request("POST", "/mutate", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def review(self, review: dict[str, Any]) -> dict[str, Any]:
        status, body = self.post(orjson.dumps(review))
        assert status == 200, body
        answer: dict[str, Any] = orjson.loads(body)
        return answer


@contextmanager
def running_webhook(
    tmp_path: Path, plugins: Callable[[], PluginSet], certs_validity: dt.timedelta
) -> Iterator[RunningWebhook]:
    files = write_certs(tmp_path / "certs", certs_validity)
    metrics.set_cert_expiry(files.leaf.cert)
    port = free_port()
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        box["loop"], box["stop"] = asyncio.get_running_loop(), stop
        runner = await metrics.start_metrics_server("127.0.0.1", 0)
        box["metrics_port"] = runner.addresses[0][1]
        readiness = Readiness()
        app = build_app(PodMutator(Resolver(), plugins), readiness, 1024 * 1024)
        serving = asyncio.create_task(
            serve_until_stopped(
                app, "127.0.0.1", port, tls_context(str(files.cert), str(files.key)), readiness, 1.0, stop
            )
        )
        while not readiness.certs_loaded and not serving.done():
            await asyncio.sleep(0.01)
        ready.set()
        try:
            await serving
        finally:
            await runner.cleanup()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced to the test below
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, name="webhook", daemon=True)
    thread.start()
    assert ready.wait(15), "webhook did not start"
    if "error" in box:
        raise box["error"]
    try:
        yield RunningWebhook(port, box["metrics_port"], files)
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(15)
        assert not thread.is_alive(), "webhook did not stop"


# --- realistic AdmissionReviews -------------------------------------------------------------


def pod_review(
    uid: str,
    *,
    operation: str = "CREATE",
    owner: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    name: str = "",
) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": "shop", "labels": labels or {}}
    if name:
        meta["name"] = name
    else:
        meta["generateName"] = "web-"
    if owner:
        meta["ownerReferences"] = [{**owner, "controller": True, "blockOwnerDeletion": True, "uid": "0-1-2"}]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
    }
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "shop",
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": pod if operation == "UPDATE" else None,
            "dryRun": False,
        },
    }


def deployment_pod(uid: str) -> dict[str, Any]:
    return pod_review(
        uid,
        owner={"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c8f6d"},
        labels={"app": "web", "pod-template-hash": "7d4b9c8f6d"},
    )


def cloneset_pod(uid: str) -> dict[str, Any]:
    return pod_review(
        uid,
        owner={"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet", "name": "cart"},
        labels={"app": "cart"},
    )
