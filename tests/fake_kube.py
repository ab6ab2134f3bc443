"""Secrets, MutatingWebhookConfigurations and Pods for the certificate and ``recommend`` tests.

kmock's emulator ignores resourceVersion, so it cannot produce the 409 conflicts that the
self-managed certificate code must survive. tests/fakeapi.py's FakeAPI does: it keeps
resourceVersions, answers 409 on stale writes, applies strategic-merge patches to webhook
entries by name (as the apiserver does for MutatingWebhookConfiguration.webhooks), and runs
``before_write`` between requests to play "another replica". This module only names the
resources and keeps the accessors the tests use. The real `kubernetes` client talks to it.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from kubernetes import client as k8s

from tests.fakeapi import GVR, FakeAPI, RequestLog

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
