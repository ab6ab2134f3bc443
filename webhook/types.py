"""Values shared by the resolver, the plugin engine and the patch builder.

Kept in one small module so that pure modules can depend on it without importing
each other (the data flows one way: admission -> resolver -> patch -> admission).
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class Resolution:
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
