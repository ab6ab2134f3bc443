"""One realistic Pod per built-in rule row, with the resolution the issue's table promises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.support.factories import owner, pod


@dataclass(frozen=True)
class Case:
    id: str
    pod: dict[str, Any]
    expected: tuple[str, str, str | None, str] | None  # (type, name, platform, resolved-by)


# 2025-11-24 23:00 UTC in minutes since the epoch, as the CronJob controller names its Jobs; the
# Pod was created seven seconds later (a suffix counts as a schedule only near the Pod's creation).
CRON_MINUTES = 29_400_000 + 420
CRON_POD_CREATED = "2025-11-24T23:00:07Z"


def created(obj: dict[str, Any], stamp: str) -> dict[str, Any]:
    obj["metadata"]["creationTimestamp"] = stamp
    return obj


CASES: list[Case] = [
    Case("deployment",
         pod(generate_name="web-7c5ddbdf54-", labels={"app": "web", "pod-template-hash": "7c5ddbdf54"},
             owners=[owner("apps/v1", "ReplicaSet", "web-7c5ddbdf54")]),
         ("Deployment", "web", None, "builtin:deployment")),
    Case("deployment-dashed-name",
         pod(generate_name="my-api-v2-5d9f8b7c6d-", labels={"pod-template-hash": "5d9f8b7c6d"},
             owners=[owner("apps/v1", "ReplicaSet", "my-api-v2-5d9f8b7c6d")]),
         ("Deployment", "my-api-v2", None, "builtin:deployment")),
    Case("argo-rollout",
         pod(generate_name="canary-6b7f9c-", labels={"rollouts-pod-template-hash": "6b7f9c"},
             owners=[owner("apps/v1", "ReplicaSet", "canary-6b7f9c")]),
         ("Rollout", "canary", None, "builtin:argo-rollout")),
    Case("replicaset-hash-mismatch",
         pod(generate_name="x-", labels={"pod-template-hash": "abc"}, owners=[owner("apps/v1", "ReplicaSet", "bare-rs")]),
         ("ReplicaSet", "bare-rs", None, "builtin:replicaset")),
    Case("replicaset-bare",
         pod(generate_name="bare-rs-", owners=[owner("apps/v1", "ReplicaSet", "bare-rs")]),
         ("ReplicaSet", "bare-rs", None, "builtin:replicaset")),
    Case("statefulset",
         pod(name="db-0", labels={"statefulset.kubernetes.io/pod-name": "db-0"}, owners=[owner("apps/v1", "StatefulSet", "db")]),
         ("StatefulSet", "db", None, "builtin:statefulset")),
    Case("daemonset",
         pod(generate_name="node-exporter-", owners=[owner("apps/v1", "DaemonSet", "node-exporter")]),
         ("DaemonSet", "node-exporter", None, "builtin:daemonset")),
    Case("cronjob",
         created(pod(generate_name=f"nightly-report-{CRON_MINUTES}-",
             labels={"job-name": f"nightly-report-{CRON_MINUTES}", "batch.kubernetes.io/job-name": f"nightly-report-{CRON_MINUTES}"},
             owners=[owner("batch/v1", "Job", f"nightly-report-{CRON_MINUTES}")]), CRON_POD_CREATED),
         ("CronJob", "nightly-report", None, "builtin:cronjob")),
    Case("job-with-digits-not-a-time",
         pod(generate_name="migrate-12-", owners=[owner("batch/v1", "Job", "migrate-12")]),
         ("Job", "migrate-12", None, "builtin:job")),
    Case("job-with-huge-number",
         pod(generate_name="batch-99999999999-", owners=[owner("batch/v1", "Job", "batch-99999999999")]),
         ("Job", "batch-99999999999", None, "builtin:job")),
    Case("job",
         pod(generate_name="pi-", owners=[owner("batch/v1", "Job", "pi")]),
         ("Job", "pi", None, "builtin:job")),
    Case("openshift-deploymentconfig",
         pod(generate_name="frontend-3-", annotations={"openshift.io/deployment-config.name": "frontend",
                                                     "openshift.io/deployment.name": "frontend-3"},
             labels={"deploymentconfig": "frontend"}, owners=[owner("v1", "ReplicationController", "frontend-3")]),
         ("DeploymentConfig", "frontend", "OpenShift", "builtin:openshift-deploymentconfig")),
    Case("replicationcontroller",
         pod(generate_name="legacy-", owners=[owner("v1", "ReplicationController", "legacy")]),
         ("ReplicationController", "legacy", None, "builtin:replicationcontroller")),
    Case("kruise-cloneset",
         pod(generate_name="sample-", labels={"apps.kruise.io/cloneset-instance-id": "x2k9z"},
             owners=[owner("apps.kruise.io/v1alpha1", "CloneSet", "sample")]),
         ("CloneSet", "sample", "OpenKruise", "builtin:openkruise-cloneset")),
    Case("kruise-advanced-statefulset",
         pod(name="asts-0", owners=[owner("apps.kruise.io/v1beta1", "StatefulSet", "asts")]),
         ("StatefulSet", "asts", "OpenKruise", "builtin:openkruise-statefulset")),
    Case("kruise-daemonset",
         pod(generate_name="kds-", owners=[owner("apps.kruise.io/v1alpha1", "DaemonSet", "kds")]),
         ("DaemonSet", "kds", "OpenKruise", "builtin:openkruise-daemonset")),
    Case("opengauss",
         pod(name="ogtest-sts-0", namespace="og", owners=[owner("opengauss.sig/v1", "OpenGaussCluster", "ogtest")]),
         ("StatefulSet", "ogtest", "OpenGauss", "builtin:opengauss")),
    Case("inplaceset",
         pod(generate_name="ips-", owners=[owner("apps.example.io/v1", "InPlaceSet", "ips")]),
         ("Deployment", "ips", None, "builtin:inplaceset")),
    Case("tke-statefulsetplus",
         pod(name="sp-0", owners=[owner("platform.stke/v1alpha1", "StatefulSetPlus", "sp")]),
         ("StatefulSet", "sp", None, "builtin:tke-statefulsetplus")),
    Case("virtual-kubelet-declared",
         pod(name="vk-web-abcde", labels={"virtual-kubelet.io/provider-cluster-type": "serverless",
                                          "virtual-kubelet.io/provider-workload-type": "deployment",
                                          "virtual-kubelet.io/provider-resource-name": "vk-web-abcde"}),
         ("Deployment", "vk-web", None, "builtin:virtual-kubelet")),
    Case("virtual-kubelet-statefulset",
         pod(name="vk-db-0", labels={"virtual-kubelet.io/provider-cluster-type": "proprietary",
                                     "statefulset.kubernetes.io/pod-name": "vk-db-0",
                                     "virtual-kubelet.io/provider-resource-name": "vk-db-0"}),
         ("StatefulSet", "vk-db", None, "builtin:virtual-kubelet")),
    Case("virtual-kubelet-default-deployment",
         pod(name="fn-7d9", labels={"virtual-kubelet.io/provider-cluster-type": "serverless",
                                    "virtual-kubelet.io/provider-resource-name": "fn-7d9"}),
         ("Deployment", "fn", None, "builtin:virtual-kubelet")),
    Case("virtual-kubelet-other-cluster-type",
         pod(name="vk-x", labels={"virtual-kubelet.io/provider-cluster-type": "edge",
                                  "virtual-kubelet.io/provider-resource-name": "vk-x-1"}),
         None),
    Case("bare-pod", pod(name="debug"), None),
    Case("unknown-owner", pod(generate_name="w-", owners=[owner("example.com/v1", "Widget", "w")]), None),
    Case("controller-wins",
         pod(generate_name="db-", owners=[owner("example.com/v1", "Backup", "b", controller=False),
                                          owner("apps/v1", "StatefulSet", "db", controller=True)]),
         ("StatefulSet", "db", None, "builtin:statefulset")),
    Case("first-when-no-controller",
         pod(generate_name="x-", owners=[owner("apps/v1", "DaemonSet", "first", controller=False),
                                         owner("apps/v1", "StatefulSet", "second", controller=False)]),
         ("DaemonSet", "first", None, "builtin:daemonset")),
]


def _uid(case_id: str, index: int = 0) -> str:
    """The uid of the case Pod's owner reference (the input the OpenTelemetry uid is copied from)."""
    case = next(c for c in CASES if c.id == case_id)
    return str(case.pod["metadata"]["ownerReferences"][index]["uid"])


# The OpenTelemetry resource attributes (annotation `resource.opentelemetry.io/<attribute>`) each
# case must get, written out by hand from the semantic conventions' k8s registry: the direct
# owner's name and uid for Kubernetes' own kinds, the Deployment or CronJob only where the
# built-in rule derives it, nothing for other groups' kinds, plugins or virtual-kubelet Pods.
OTEL_EXPECTED: dict[str, dict[str, str]] = {
    "deployment": {"k8s.deployment.name": "web", "k8s.replicaset.name": "web-7c5ddbdf54",
                   "k8s.replicaset.uid": _uid("deployment")},
    "deployment-dashed-name": {"k8s.deployment.name": "my-api-v2", "k8s.replicaset.name": "my-api-v2-5d9f8b7c6d",
                               "k8s.replicaset.uid": _uid("deployment-dashed-name")},
    "argo-rollout": {"k8s.replicaset.name": "canary-6b7f9c", "k8s.replicaset.uid": _uid("argo-rollout")},
    "replicaset-hash-mismatch": {"k8s.replicaset.name": "bare-rs", "k8s.replicaset.uid": _uid("replicaset-hash-mismatch")},
    "replicaset-bare": {"k8s.replicaset.name": "bare-rs", "k8s.replicaset.uid": _uid("replicaset-bare")},
    "statefulset": {"k8s.statefulset.name": "db", "k8s.statefulset.uid": _uid("statefulset")},
    "daemonset": {"k8s.daemonset.name": "node-exporter", "k8s.daemonset.uid": _uid("daemonset")},
    "cronjob": {"k8s.cronjob.name": "nightly-report", "k8s.job.name": f"nightly-report-{CRON_MINUTES}",
                "k8s.job.uid": _uid("cronjob")},
    "job-with-digits-not-a-time": {"k8s.job.name": "migrate-12", "k8s.job.uid": _uid("job-with-digits-not-a-time")},
    "job-with-huge-number": {"k8s.job.name": "batch-99999999999", "k8s.job.uid": _uid("job-with-huge-number")},
    "job": {"k8s.job.name": "pi", "k8s.job.uid": _uid("job")},
    "openshift-deploymentconfig": {"k8s.replicationcontroller.name": "frontend-3",
                                   "k8s.replicationcontroller.uid": _uid("openshift-deploymentconfig")},
    "replicationcontroller": {"k8s.replicationcontroller.name": "legacy",
                              "k8s.replicationcontroller.uid": _uid("replicationcontroller")},
    "kruise-cloneset": {},
    "kruise-advanced-statefulset": {},
    "kruise-daemonset": {},
    "opengauss": {},
    "inplaceset": {},
    "tke-statefulsetplus": {},
    "virtual-kubelet-declared": {},
    "virtual-kubelet-statefulset": {},
    "virtual-kubelet-default-deployment": {},
    "virtual-kubelet-other-cluster-type": {},
    "bare-pod": {},
    "unknown-owner": {},
    "controller-wins": {"k8s.statefulset.name": "db", "k8s.statefulset.uid": _uid("controller-wins", 1)},
    "first-when-no-controller": {"k8s.daemonset.name": "first", "k8s.daemonset.uid": _uid("first-when-no-controller")},
}
