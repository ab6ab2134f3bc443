"""Paginated Pods for the audit/backfill tests: tests/fakeapi.py's FakeAPI holding Pods.

kmock's emulator ignores ``limit``/``continue`` (it always answers with every object) and has
no resourceVersion preconditions, so the paginated list, the merge-patch semantics and the
fault injection the backfill must survive are served by the shared fake instead: PodList pages
with ``metadata.continue``/``remainingItemCount``, ``Status`` errors, RFC 7386 merge patches,
409 on a stale ``metadata.resourceVersion`` precondition, one-shot faults per request.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kubernetes import client as k8s

from tests.fakeapi import GVR, FakeAPI, Recorded, merge_patch, object_key
from webhook.kubeclient import core_api

PODS: GVR = ("", "v1", "pods")


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
        api = core_api(conf)
        try:
            yield api
        finally:
            api.api_client.close()
