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


class Resolution(msgspec.Struct, gc=False):  # one per review: a Struct, see admission.AdmissionRequest
    """Who a Pod belongs to, and which rule or plugin said so (written to the `resolved-by` annotation)."""

    workload_type: str
    workload_name: str
    platform: str | None
    resolved_by: str

    def as_json(self) -> dict[str, str | None]:
        """The stable `resolve` CLI shape; also used by audit."""
        return {
            "workloadType": self.workload_type,
            "workloadName": self.workload_name,
            "platform": self.platform,
            "resolvedBy": self.resolved_by,
        }


UNRESOLVED_JSON: dict[str, str | None] = {
    "workloadType": None,
    "workloadName": None,
    "platform": None,
    "resolvedBy": None,
}


class PodMeta(msgspec.Struct, rename="camel", gc=False):
    """The four metadata fields the built-in rules and the patch read, nothing else.

    The webhook decodes it straight from the review's bytes (msgspec skips every other field,
    managedFields included, without building it); every other door builds it from a metadata
    mapping with :meth:`of`. Either way the rules see the same value, so there is one rule
    implementation. Fields stay ``Any``: a malformed shape is ignored by the readers below, the
    way the rules always ignored it, instead of failing the decode. Not GC-tracked: it only
    refers to JSON values, which cannot refer back to it.
    """

    namespace: Any = None
    labels: Any = None
    annotations: Any = None
    owner_references: Any = None

    @classmethod
    def of(cls, meta: Mapping[str, Any]) -> PodMeta:
        return cls(meta.get("namespace"), meta.get("labels"), meta.get("annotations"), meta.get("ownerReferences"))

    def label(self, key: str) -> str:
        """A label's value; "" when it or the label map is absent or not a string."""
        return _str_at(self.labels, key)

    def annotation(self, key: str) -> str:
        return _str_at(self.annotations, key)


def _str_at(mapping: object, key: str) -> str:
    if type(mapping) is dict:
        value = mapping.get(key)
        if type(value) is str:
            return value
    return ""


NO_METADATA = PodMeta()
