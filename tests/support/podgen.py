"""Pods of every owner shape the resolver knows, plus unresolved ones, each with its ground truth.

The expected (type, name, platform) is written down here from the shape of the Pod, not
computed by the resolver, so the audit/backfill counts are checked against an independent
statement of what each Pod is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

P = "workload-tagger.io/"
OTEL = "resource.opentelemetry.io/"
K_TYPE, K_NAME, K_PLATFORM, K_BY = P + "workload-type", P + "workload-name", P + "platform", P + "resolved-by"


@dataclass(frozen=True)
class Truth:
    wtype: str | None  # None: unresolved
    name: str | None
    platform: str | None
    by: str | None
    owner: tuple[str, str]  # (apiVersion, kind) or ("", "(no owner)")
    otel: tuple[tuple[str, str], ...] = ()  # OpenTelemetry resource attributes the Pod must get


def _otel(base: str, name: str, derived: tuple[str, str] | None = None) -> tuple[tuple[str, str], ...]:
    """The direct owner's name and uid (as _owner writes it), after the derived workload if any."""
    own = ((f"k8s.{base}.name", name), (f"k8s.{base}.uid", f"uid-{name}"))
    return (derived, *own) if derived else own


def _owner(api: str, kind: str, name: str) -> list[dict[str, Any]]:
    return [{"apiVersion": api, "kind": kind, "name": name, "uid": f"uid-{name}", "controller": True}]


Shape = Callable[[int], tuple[dict[str, Any], Truth]]


def _deployment(i: int) -> tuple[dict[str, Any], Truth]:
    meta = {
        "labels": {"app": f"web{i}", "pod-template-hash": "7d9f8b6c5"},
        "ownerReferences": _owner("apps/v1", "ReplicaSet", f"web{i}-7d9f8b6c5"),
    }
    return meta, Truth("Deployment", f"web{i}", None, "builtin:deployment", ("apps/v1", "ReplicaSet"),
                 _otel("replicaset", f"web{i}-7d9f8b6c5", ("k8s.deployment.name", f"web{i}")))


def _replicaset(i: int) -> tuple[dict[str, Any], Truth]:
    meta = {"ownerReferences": _owner("apps/v1", "ReplicaSet", f"plainrs{i}")}
    return meta, Truth("ReplicaSet", f"plainrs{i}", None, "builtin:replicaset", ("apps/v1", "ReplicaSet"),
                 _otel("replicaset", f"plainrs{i}"))


def _rollout(i: int) -> tuple[dict[str, Any], Truth]:
    meta = {
        "labels": {"rollouts-pod-template-hash": "5c4b8"},
        "ownerReferences": _owner("apps/v1", "ReplicaSet", f"canary{i}-5c4b8"),
    }
    return meta, Truth("Rollout", f"canary{i}", None, "builtin:argo-rollout", ("apps/v1", "ReplicaSet"),
                 _otel("replicaset", f"canary{i}-5c4b8"))


def _statefulset(i: int) -> tuple[dict[str, Any], Truth]:
    meta = {"ownerReferences": _owner("apps/v1", "StatefulSet", f"db{i}")}
    return meta, Truth("StatefulSet", f"db{i}", None, "builtin:statefulset", ("apps/v1", "StatefulSet"),
                 _otel("statefulset", f"db{i}"))


def _daemonset(i: int) -> tuple[dict[str, Any], Truth]:
    meta = {"ownerReferences": _owner("apps/v1", "DaemonSet", f"agent{i}")}
    return meta, Truth("DaemonSet", f"agent{i}", None, "builtin:daemonset", ("apps/v1", "DaemonSet"),
                 _otel("daemonset", f"agent{i}"))


def _cronjob(i: int) -> tuple[dict[str, Any], Truth]:
    # Scheduled 2025-02-19 21:20 UTC (29000000 minutes); the Pod was created two minutes later.
    meta = {"ownerReferences": _owner("batch/v1", "Job", f"backup{i}-29000000"),
            "creationTimestamp": "2025-02-19T21:22:00Z"}
    return meta, Truth("CronJob", f"backup{i}", None, "builtin:cronjob", ("batch/v1", "Job"),
                 _otel("job", f"backup{i}-29000000", ("k8s.cronjob.name", f"backup{i}")))


def _job(i: int) -> tuple[dict[str, Any], Truth]:
    meta = {"ownerReferences": _owner("batch/v1", "Job", f"migrate{i}")}
    return meta, Truth("Job", f"migrate{i}", None, "builtin:job", ("batch/v1", "Job"), _otel("job", f"migrate{i}"))


def _deploymentconfig(i: int) -> tuple[dict[str, Any], Truth]:
    meta = {
        "annotations": {"openshift.io/deployment-config.name": f"shop{i}"},
        "ownerReferences": _owner("v1", "ReplicationController", f"shop{i}-3"),
    }
    return meta, Truth(
        "DeploymentConfig",
        f"shop{i}",
        "OpenShift",
        "builtin:openshift-deploymentconfig",
        ("v1", "ReplicationController"),
        _otel("replicationcontroller", f"shop{i}-3"),
    )


def _rc(i: int) -> tuple[dict[str, Any], Truth]:
    meta = {"ownerReferences": _owner("v1", "ReplicationController", f"legacy{i}")}
    return meta, Truth(
        "ReplicationController",
        f"legacy{i}",
        None,
        "builtin:replicationcontroller",
        ("v1", "ReplicationController"),
        _otel("replicationcontroller", f"legacy{i}"),
    )


def _cloneset(i: int) -> tuple[dict[str, Any], Truth]:
    meta = {"ownerReferences": _owner("apps.kruise.io/v1alpha1", "CloneSet", f"cs{i}")}
    return meta, Truth(
        "CloneSet",
        f"cs{i}",
        "OpenKruise",
        "builtin:openkruise-cloneset",
        ("apps.kruise.io/v1alpha1", "CloneSet"),
    )


def _kruise_sts(i: int) -> tuple[dict[str, Any], Truth]:
    meta = {"ownerReferences": _owner("apps.kruise.io/v1beta1", "StatefulSet", f"ksts{i}")}
    return meta, Truth(
        "StatefulSet",
        f"ksts{i}",
        "OpenKruise",
        "builtin:openkruise-statefulset",
        ("apps.kruise.io/v1beta1", "StatefulSet"),
    )


def _kruise_ds(i: int) -> tuple[dict[str, Any], Truth]:
    meta = {"ownerReferences": _owner("apps.kruise.io/v1alpha1", "DaemonSet", f"kds{i}")}
    return meta, Truth(
        "DaemonSet",
        f"kds{i}",
        "OpenKruise",
        "builtin:openkruise-daemonset",
        ("apps.kruise.io/v1alpha1", "DaemonSet"),
    )


def _opengauss(i: int) -> tuple[dict[str, Any], Truth]:
    meta = {"ownerReferences": _owner("opengauss.sig/v1", "OpenGaussCluster", f"og{i}")}
    return meta, Truth(
        "StatefulSet", f"og{i}", "OpenGauss", "builtin:opengauss", ("opengauss.sig/v1", "OpenGaussCluster")
    )


def _inplaceset(i: int) -> tuple[dict[str, Any], Truth]:
    meta = {"ownerReferences": _owner("apps.example.com/v1", "InPlaceSet", f"ips{i}")}
    return meta, Truth(
        "Deployment", f"ips{i}", None, "builtin:inplaceset", ("apps.example.com/v1", "InPlaceSet")
    )


def _sts_plus(i: int) -> tuple[dict[str, Any], Truth]:
    meta = {"ownerReferences": _owner("platform.tkestack.io/v1", "StatefulSetPlus", f"stsp{i}")}
    return meta, Truth(
        "StatefulSet",
        f"stsp{i}",
        None,
        "builtin:tke-statefulsetplus",
        ("platform.tkestack.io/v1", "StatefulSetPlus"),
    )


def _virtual_kubelet(i: int) -> tuple[dict[str, Any], Truth]:
    meta = {
        "labels": {
            "virtual-kubelet.io/provider-cluster-type": "serverless",
            "virtual-kubelet.io/provider-resource-name": f"fn{i}-0",
        }
    }
    return meta, Truth("Deployment", f"fn{i}", None, "builtin:virtual-kubelet", ("", "(no owner)"))


def _bare(i: int) -> tuple[dict[str, Any], Truth]:
    return {}, Truth(None, None, None, None, ("", "(no owner)"))


def _workflow(i: int) -> tuple[dict[str, Any], Truth]:
    meta = {"ownerReferences": _owner("argoproj.io/v1alpha1", "Workflow", f"wf{i}")}
    return meta, Truth(None, None, None, None, ("argoproj.io/v1alpha1", "Workflow"))


def _spark(i: int) -> tuple[dict[str, Any], Truth]:
    meta = {"ownerReferences": _owner("sparkoperator.k8s.io/v1beta2", "SparkApplication", f"spark{i}")}
    return meta, Truth(None, None, None, None, ("sparkoperator.k8s.io/v1beta2", "SparkApplication"))


def _mirror(i: int) -> tuple[dict[str, Any], Truth]:
    meta = {
        "ownerReferences": [
            {"apiVersion": "v1", "kind": "Node", "name": f"node{i}", "uid": "n", "controller": True}
        ]
    }
    return meta, Truth(None, None, None, None, ("v1", "Node"))


SHAPES: tuple[Shape, ...] = (
    _deployment,
    _deployment,
    _deployment,
    _replicaset,
    _rollout,
    _statefulset,
    _daemonset,
    _cronjob,
    _job,
    _deploymentconfig,
    _rc,
    _cloneset,
    _kruise_sts,
    _kruise_ds,
    _opengauss,
    _inplaceset,
    _sts_plus,
    _virtual_kubelet,
    _bare,
    _workflow,
    _workflow,
    _spark,
    _mirror,
)

# How the Pod is annotated already: nothing, fully and correctly, partly, with a stale
# (old) type written by us, or a name a user set themselves.
STATES = ("missing", "correct", "missing", "partial", "stale", "user")


def wanted(t: Truth) -> dict[str, str]:
    assert t.wtype and t.name and t.by
    out = {K_TYPE: t.wtype, K_NAME: t.name}
    if t.platform:
        out[K_PLATFORM] = t.platform
    out[K_BY] = t.by
    out.update({OTEL + k: v for k, v in t.otel})
    return out


@dataclass(frozen=True)
class GenPod:
    pod: dict[str, Any]
    truth: Truth
    state: str  # one of STATES; "unresolved" when truth.wtype is None

    @property
    def key(self) -> str:
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"


def make_pod(i: int, namespaces: int = 7) -> GenPod:
    meta, truth = SHAPES[i % len(SHAPES)](i)
    state = STATES[(i // len(SHAPES)) % len(STATES)]
    annotations: dict[str, str] = dict(meta.get("annotations", {}))
    if truth.wtype is None:
        state = "unresolved"
        if i % 2:
            annotations["team"] = "data"
    else:
        want = wanted(truth)
        if state == "correct":
            annotations.update(want)
        elif state == "partial":
            annotations[K_TYPE] = want[K_TYPE]
        elif state == "stale":
            annotations.update(want)
            annotations[K_TYPE] = "Pod" if want[K_TYPE] != "Pod" else "Job"
        elif state == "user":
            annotations[K_NAME] = "set-by-hand"
    full = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            **{k: v for k, v in meta.items() if k != "annotations"},
            "name": f"pod-{i:06d}",
            "namespace": f"ns-{i % namespaces}",
            "uid": f"00000000-0000-0000-0000-{i:012d}",
            **({"annotations": annotations} if annotations else {}),
        },
        "spec": {
            "containers": [{"name": "main", "image": "registry.example/app:1.0"}],
            "nodeName": f"node{i % 5}",
        },
        "status": {"phase": "Running"},
    }
    return GenPod(full, truth, state)


def make_pods(n: int) -> list[GenPod]:
    return [make_pod(i) for i in range(n)]
