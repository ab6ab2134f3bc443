"""Values shared by the resolver, the plugin engine and the patch builder.

Kept in one small module so that pure modules can depend on it without importing
each other (the data flows one way: admission -> resolver -> patch -> admission).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

# Workload types as DeepFlow names them, plus the ones our built-in rules produce.
# Plugins may return any case ("statefulset"); the resolver canonicalises to these.
KNOWN_TYPES: tuple[str, ...] = (
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "ReplicationController",
    "CloneSet",
    "Job",
    "CronJob",
    "Rollout",
    "DeploymentConfig",
)

_CANONICAL: dict[str, str] = {t.lower(): t for t in KNOWN_TYPES}


def canonical_type(value: str) -> str | None:
    """The canonical spelling of a known workload type, or None when it is not one we know."""
    return _CANONICAL.get(value.lower())


class Owner(msgspec.Struct, frozen=True, gc=False):  # one per review: a Struct, see admission.AdmissionRequest
    """The owner reference a Pod is attributed to (the controller one, else the first).

    Frozen, so hashable: the patch cache keys on it (see ``patch.PatchBuilder``). ``uid`` is ""
    when the reference has none (it is required by the API, but hand-written Pods may omit it).
    """

    api_version: str
    kind: str
    name: str
    uid: str = ""

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0] if "/" in self.api_version else ""


class Resolution(msgspec.Struct, gc=False):  # one per review: a Struct, see admission.AdmissionRequest
    """Who a Pod belongs to, and which rule or plugin said so (written to the `resolved-by` annotation).

    ``owner`` is the Pod's own owner reference the answer was derived from (set by the rule table
    and the owner fallback, None for plugin and virtual-kubelet answers): what the OpenTelemetry
    annotations name besides the workload (see ``otel``).
    """

    workload_type: str
    workload_name: str
    platform: str | None
    resolved_by: str
    owner: Owner | None = None
    root_owner: str | None = None  # `Kind.group/name` of the chain's root, when it is not the workload (owners.py)

    def as_json(self) -> dict[str, str | None]:
        """The stable `resolve` CLI shape; also used by audit. ``rootOwner`` only when there is one."""
        out = {
            "workloadType": self.workload_type,
            "workloadName": self.workload_name,
            "platform": self.platform,
            "resolvedBy": self.resolved_by,
        }
        if self.root_owner is not None:
            out["rootOwner"] = self.root_owner
        return out


UNRESOLVED_JSON: dict[str, str | None] = {
    "workloadType": None,
    "workloadName": None,
    "platform": None,
    "resolvedBy": None,
}


class PodMeta(msgspec.Struct, rename="camel", frozen=True, gc=False):
    """The metadata fields anything reads: the four the built-in rules and the patch read
    (namespace, labels, annotations, ownerReferences) and the rest of what DeepFlow keeps of a
    Pod, which is what plugins get (name, uid, creationTimestamp); nothing else.

    The webhook decodes it straight from the review's bytes in the same pass that skims the rest
    (msgspec skips every other field, managedFields included, without building it); every other
    door builds it from a metadata mapping with :meth:`of`. Either way rules and plugins see the
    same value, so each has one implementation. Fields are ``object``: whatever JSON value the Pod
    had there, unchecked (plugins get it as sent). Readers narrow it — mypy makes them — and ignore
    a malformed shape, the way the rules always ignored it, instead of failing the decode. Not
    GC-tracked: it only refers to JSON values, which cannot refer back to it. Frozen (free for
    msgspec, which fills fields in C): :data:`NO_METADATA` is one shared instance.
    """

    namespace: object = None
    labels: object = None
    annotations: object = None
    owner_references: object = None
    name: object = None
    uid: object = None
    creation_timestamp: object = None

    @classmethod
    def of(cls, meta: Mapping[str, Any]) -> PodMeta:
        return cls(meta.get("namespace"), meta.get("labels"), meta.get("annotations"), meta.get("ownerReferences"),
                   meta.get("name"), meta.get("uid"), meta.get("creationTimestamp"))

    def label(self, key: str) -> str:
        """A label's value; "" when it or the label map is absent or not a string."""
        return _str_at(self.labels, key)

    def annotation(self, key: str) -> str:
        return _str_at(self.annotations, key)

    def deepflow_fields(self) -> dict[str, Any]:
        """The fields DeepFlow's agent keeps of a Pod's metadata, by their JSON names; nulls left out,
        as its serializer leaves them out (see ``resolver.plugin_input``)."""
        fields = {
            "annotations": self.annotations, "creationTimestamp": self.creation_timestamp, "labels": self.labels,
            "name": self.name, "namespace": self.namespace, "ownerReferences": self.owner_references, "uid": self.uid,
        }
        return {key: value for key, value in fields.items() if value is not None}


def _str_at(mapping: object, key: str) -> str:
    if type(mapping) is dict:
        value = mapping.get(key)
        if type(value) is str:
            return value
    return ""


NO_METADATA = PodMeta()
