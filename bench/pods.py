"""Realistic AdmissionReviews of a chosen size, for the benchmarks.

A Pod the ReplicaSet controller creates carries far more than its owner: containers with env,
probes, resources and mounts, projected volumes, tolerations, managedFields. The rules read only
``metadata``, so the body size mostly measures transport and decoding; the metadata is kept near
1.5 KB (the size the plugin targets are quoted for) whatever the body size.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

NAMESPACE = "payments"


def _container(index: int, env_vars: int) -> dict[str, Any]:
    return {
        "name": f"app-{index}",
        "image": f"registry.example.com/payments/app-{index}:1.24.{index}",
        "imagePullPolicy": "IfNotPresent",
        "args": ["--listen=:8080", "--metrics=:9090", f"--shard={index}"],
        "ports": [
            {"name": "http", "containerPort": 8080, "protocol": "TCP"},
            {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
        ],
        "env": [
            {"name": f"SETTING_{index}_{n}", "value": f"value-{n}-" + "x" * (n % 17)} for n in range(env_vars)
        ]
        + [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
            {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
        ],
        "resources": {"limits": {"cpu": "1", "memory": "512Mi"}, "requests": {"cpu": "250m", "memory": "256Mi"}},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"}, "periodSeconds": 10,
                          "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/app", "readOnly": True},
            {"name": "kube-api-access-8x2lq", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
             "readOnly": True},
        ],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }


def _metadata(kind: str) -> dict[str, Any]:
    """About 1.5 KB of metadata as plugins get it (labels, annotations, one owner reference), plus the
    managedFields entry the API server adds before admission, which plugins do not get."""
    labels = {
        "app.kubernetes.io/name": "checkout",
        "app.kubernetes.io/instance": "checkout-eu",
        "app.kubernetes.io/version": "1.24.0",
        "app.kubernetes.io/component": "api",
        "app.kubernetes.io/part-of": "payments",
        "team": "payments",
        "tier": "backend",
        "security.istio.io/tlsMode": "istio",
        "service.istio.io/canonical-name": "checkout",
        "service.istio.io/canonical-revision": "1.24.0",
    }
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9090",
        "kubectl.kubernetes.io/restartedAt": "2026-11-20T10:12:44Z",
        "checksum/config": "5f2b9c0d1e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c",
        "vault.hashicorp.com/agent-inject": "true",
        "vault.hashicorp.com/role": "payments-checkout",
        "kubectl.kubernetes.io/default-container": "app-0",
        "sidecar.istio.io/inject": "true",
        "cluster-autoscaler.kubernetes.io/safe-to-evict": "true",
        "payments.example.com/owner-contact": "payments-oncall@example.com",
        "payments.example.com/runbook": "https://runbooks.example.com/payments/checkout/api-latency-and-errors",
        "payments.example.com/cost-center": "cc-4711-payments-eu-west",
        "sidecar.istio.io/status": '{"initContainers":["istio-init"],"containers":["istio-proxy"],'
        '"volumes":["istio-envoy","istio-data","istio-podinfo","istio-token","istiod-ca-cert"],"revision":"default"}',
    }
    if kind == "everyday":  # a Deployment's Pod: the built-in rules resolve it
        labels["pod-template-hash"] = "7c5ddbdf54"
        owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "checkout-7c5ddbdf54"}
    else:  # an operator's own kind: no built-in rule knows it, so every plugin runs
        owner = {"apiVersion": "apps.example.com/v1alpha1", "kind": "ShardedWorker", "name": "checkout-shard-3"}
    owner |= {"uid": str(uuid.uuid5(uuid.NAMESPACE_URL, owner["name"])), "controller": True,
              "blockOwnerDeletion": True}
    return {
        "generateName": "checkout-7c5ddbdf54-",
        "namespace": NAMESPACE,
        "creationTimestamp": None,
        "labels": labels,
        "annotations": annotations,
        "ownerReferences": [owner],
        "managedFields": [{
            "manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
            "time": "2026-11-25T12:00:00Z", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app.kubernetes.io/name": {}},
                                        "f:ownerReferences": {".": {}}}},
        }],
    }


def _pod(kind: str, containers: int, env_vars: int) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": _metadata(kind),
        "spec": {
            "containers": [_container(i, env_vars) for i in range(containers)],
            "volumes": [
                {"name": "config", "configMap": {"name": "checkout-config", "defaultMode": 420}},
                {"name": "kube-api-access-8x2lq", "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1",
                                                                                  "fieldPath": "metadata.namespace"}}]}},
                ]}},
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "checkout",
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                 "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
                 "tolerationSeconds": 300},
            ],
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": {},
    }


def review_body(kind: str, target_bytes: int) -> bytes:
    """An AdmissionReview (Pod CREATE) of about ``target_bytes``; ``kind`` is everyday or worst."""
    containers, env_vars = 1, 0
    while True:
        body = _review(_pod(kind, containers, env_vars))
        if len(body) >= target_bytes or containers > 200:
            return body
        if env_vars < 20:
            env_vars += 1
        else:
            containers += 1


def review_bodies(kind: str, target_bytes: int, count: int) -> list[bytes]:
    """``count`` reviews of one workload's Pods, as :func:`review_body`, each a different Pod CREATE.

    What differs between the Pods of one ReplicaSet at admission: the review's uid, and the time
    in managedFields (a controller creates them over time; the name is generated after admission).
    Same length each, so every variant has the same size. A benchmark that sent one body over and
    over would hit caches (the plugins' parse of the metadata) that production traffic misses.
    """
    base = review_body(kind, target_bytes)
    bodies = []
    for i in range(count):
        uid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{kind}-{target_bytes}-{i}"))
        minute, second = divmod(i, 60)
        body = base.replace(b"705ab4f5-6393-11e8-b7cc-42010a800002", uid.encode(), 1)
        bodies.append(body.replace(b"2026-11-25T12:00:00Z", f"2026-11-25T12:{minute % 60:02d}:{second:02d}Z".encode(), 1))
    return bodies


def _review(obj: dict[str, Any]) -> bytes:
    return orjson.dumps({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": NAMESPACE,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "uid": "8d6f0c3e-1b2a-4c5d-9e8f-7a6b5c4d3e2f",
                         "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system",
                                    "system:authenticated"]},
            "object": obj,
            "oldObject": None,
            "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    })


def metadata_size(body: bytes) -> int:
    """Bytes of the Pod metadata JSON a plugin would receive for this review."""
    from webhook.resolution.resolver import plugin_input

    request = orjson.loads(body)["request"]
    return len(plugin_input(request["object"]["metadata"], request.get("namespace")).encode())
