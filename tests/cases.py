"""One realistic Pod per built-in rule row, with the resolution the issue's table promises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.factories import owner, pod


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
