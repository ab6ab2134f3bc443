"""OpenTelemetry resource annotations: the semantic-convention attributes a resolution determines exactly.

The semantic conventions (non-normative "Populating resource attributes in Kubernetes") say that
a Pod annotation ``resource.opentelemetry.io/<attribute>`` becomes the resource attribute
``<attribute>``; the Collector's ``k8sattributes`` processor (``extract.otel_annotations``) and
the Operator read them. We write the Kubernetes workload attributes of the convention's ``k8s``
registry, and only those the resolution and the Pod's own owner reference fix without a guess:

- the direct owner's ``k8s.<kind>.name`` and ``k8s.<kind>.uid``, for the owner kinds of the
  Kubernetes API itself (``apps`` ReplicaSet/StatefulSet/DaemonSet, ``batch`` Job, core
  ReplicationController). A kind of another API group (OpenKruise's ``apps.kruise.io``
  StatefulSet and DaemonSet, CloneSet, CRDs) is not the object the convention names: a consumer
  joining ``k8s.statefulset.name`` to ``apps/v1`` StatefulSets would find none, or another one of
  the same name, so it gets no ``k8s.*`` key;
- the workload above it, only where a built-in rule derives it from that owner: the Deployment of
  a ReplicaSet with the matching ``pod-template-hash``, the CronJob of a Job named after its
  schedule. Its uid is not known from the Pod, so it is not written.

Plugin answers carry no owner and get no key (the plugin names the workload; nothing says which
API object that is). ``service.name`` is never written: users derive it from their own labels.

Pure: no I/O. The convention version followed is :data:`SEMCONV_VERSION`, the one place it is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from webhook.resolution.model import Owner, Resolution
from webhook.resolution.rules import BUILTIN_RULES

# The semantic-conventions release whose k8s registry the mapping below follows. The k8s
# workload attributes used here have kept their names since they were introduced; a release
# that renames one shows up in its schema file (https://opentelemetry.io/schemas/<version>).
SEMCONV_VERSION = "1.44.0"
SEMCONV_SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"
ANNOTATION_PREFIX = "resource.opentelemetry.io/"

# The direct owner's own attributes: (API group, kind) -> the convention's attribute namespace.
# Each of these has both a `.name` and a `.uid` attribute in the k8s registry.
DIRECT_OWNER: dict[tuple[str, str], str] = {
    ("apps", "ReplicaSet"): "k8s.replicaset",
    ("apps", "StatefulSet"): "k8s.statefulset",
    ("apps", "DaemonSet"): "k8s.daemonset",
    ("batch", "Job"): "k8s.job",
    ("", "ReplicationController"): "k8s.replicationcontroller",
}

# The workload above the direct owner, keyed by the built-in rule that derives it (resolved-by):
# the attribute takes the resolved workload name. Other rules that produce the same type (Argo
# Rollouts' ReplicaSets, InPlaceSet, a config rule) derive no Kubernetes Deployment or CronJob.
DERIVED_WORKLOAD: dict[str, str] = {
    "builtin:deployment": "k8s.deployment.name",
    "builtin:cronjob": "k8s.cronjob.name",
}

# The same workloads when the owner chain was read through the API (resolved-by ``owners:exact``):
# the ReplicaSet's or Job's real controller, keyed by (direct owner's group, kind, resolved type).
EXACT = "owners:exact"
EXACT_WORKLOAD: dict[tuple[str, str, str], str] = {
    ("apps", "ReplicaSet", "Deployment"): "k8s.deployment.name",
    ("batch", "Job", "CronJob"): "k8s.cronjob.name",
}

# Every key :func:`otel_annotations` can write; the patch builder checks which of them a Pod has.
ALL_ATTRIBUTES: tuple[str, ...] = (
    *DERIVED_WORKLOAD.values(),
    *(f"{base}.{field}" for base in DIRECT_OWNER.values() for field in ("name", "uid")),
)
ALL_KEYS: frozenset[str] = frozenset(ANNOTATION_PREFIX + a for a in ALL_ATTRIBUTES)


def otel_attributes(resolution: Resolution) -> dict[str, str]:
    """The resource attributes (without the annotation prefix) this resolution determines exactly."""
    owner = resolution.owner
    if owner is None:
        return {}
    found: dict[str, str] = {}
    if resolution.resolved_by == EXACT:
        derived = EXACT_WORKLOAD.get((owner.group, owner.kind, resolution.workload_type))
    else:
        derived = DERIVED_WORKLOAD.get(resolution.resolved_by)
    if derived is not None and resolution.workload_name:
        found[derived] = resolution.workload_name
    base = DIRECT_OWNER.get((owner.group, owner.kind))
    if base is not None:
        found[base + ".name"] = owner.name
        if owner.uid:
            found[base + ".uid"] = owner.uid
    return found


def otel_annotations(resolution: Resolution) -> dict[str, str]:
    """The ``resource.opentelemetry.io/`` annotations for a resolution (see :func:`otel_attributes`)."""
    return {annotation_key(k): v for k, v in otel_attributes(resolution).items()}


@lru_cache(maxsize=64)
def annotation_key(attribute: str) -> str:
    return ANNOTATION_PREFIX + attribute


# --- the README's mapping table, generated from the functions above -------------------------------

@dataclass(frozen=True, slots=True)
class Shape:
    """One kind of Pod the table documents: who resolves it, its owner reference, what it resolves to."""

    label: str
    resolved_by: str
    owner: Owner | None
    workload_type: str = "TYPE"


def _api_version(group: str) -> str:
    if group == "*":
        return "example.io/v1"
    return f"{group}/v1" if group else "v1"


def builtin_shapes() -> list[Shape]:
    """A row per built-in rule, then the answers that come from elsewhere."""
    shapes = []
    for rule in BUILTIN_RULES:
        group = "any group's" if rule.group == "*" else f"`{rule.group or 'v1'}`"
        shapes.append(Shape(f"{group} {rule.kind} → {rule.workload_type}", rule.resolved_by,
                            Owner(_api_version(rule.group), rule.kind, "OWNER", "UID")))
    shapes += [
        Shape("`apps` ReplicaSet whose controller, read from the API (`--owner-lookup`), is a Deployment", EXACT,
              Owner("apps/v1", "ReplicaSet", "OWNER", "UID"), "Deployment"),
        Shape("`batch` Job whose controller, read from the API, is a CronJob", EXACT,
              Owner("batch/v1", "Job", "OWNER", "UID"), "CronJob"),
        Shape("`apps` ReplicaSet whose controller, read from the API, is anything else (a Rollout, ...)", EXACT,
              Owner("apps/v1", "ReplicaSet", "OWNER", "UID"), "Rollout"),
        Shape("virtual-kubelet (no owner)", "builtin:virtual-kubelet", None),
        Shape("a plugin's answer", "plugin:NAME", None),
        Shape("owner fallback (`--owner-fallback`), any other owner kind", "builtin:owner",
              Owner("example.io/v1", "Widget", "OWNER", "UID")),
        Shape("owner fallback, static Pod (owner `v1` Node)", "builtin:static-pod",
              Owner("v1", "Node", "OWNER", "UID")),
    ]
    return shapes


def mapping_table() -> str:
    """The README table: per shape, the attributes written and where each value comes from."""
    sources = {"WORKLOAD": "workload name", "OWNER": "owner's name", "UID": "owner's uid"}
    rows = ["| Pod | resolved-by | attributes written (`resource.opentelemetry.io/` + attribute = value) |",
            "|---|---|---|"]
    for shape in builtin_shapes():
        found = otel_attributes(Resolution(shape.workload_type, "WORKLOAD", None, shape.resolved_by, shape.owner))
        cells = ", ".join(f"`{k}` = {sources[v]}" for k, v in found.items()) or "none"
        rows.append(f"| {shape.label} | `{shape.resolved_by}` | {cells} |")
    rows += ["", f"Attribute names follow the OpenTelemetry semantic conventions {SEMCONV_VERSION} "
                 f"(`{SEMCONV_SCHEMA_URL}`), registry `k8s`."]
    return "\n".join(rows)
