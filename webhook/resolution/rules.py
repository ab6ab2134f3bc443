"""Built-in owner rules, as data.

A rule matches an owner reference by API group and kind and names a *derivation*: how the
workload name (and sometimes the type) follows from the owner and the Pod. A derivation can
decline (return None), in which case the next rule for the same owner is tried; that is how
"ReplicaSet with a pod-template-hash is a Deployment, otherwise a ReplicaSet" is written as
two table rows instead of a chain of ifs. Users extend the table from the config file with
plain kind -> type mappings, which are tried before the built-ins so they can override them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from webhook.resolution.model import Owner, PodMeta, Resolution, canonical_type

# The CronJob controller names a Job `<cronjob>-<scheduled time in minutes since the epoch>`.
# Pods carry no CronJob label, so when the owner chain is not looked up (ownerLookup off, the
# offline doors) that suffix is the only signal, and digits alone are a poor one: users name
# one-off Jobs `report-20241124` or `backup-29000000`. So the suffix counts as a schedule only
# when that time is close to the Pod's own creation (its creationTimestamp, or the admission
# time when the API server has not set one yet, as on CREATE):
# - not more than CRONJOB_WINDOW_BEFORE_S before it: the Job controller creates a Job's Pods
#   right after the CronJob controller creates the Job at the scheduled time, and replaces
#   failed ones while the Job runs (retries back off to at most six minutes each); a day covers
#   late starts (startingDeadlineSeconds) and long retries of everyday CronJobs, while a number
#   picked by hand falls in one given day by chance only about once in tens of thousands;
# - not more than CRONJOB_WINDOW_AFTER_S after it: a Job is never created before its schedule,
#   this margin only absorbs clock skew between the controller manager and us.
# A CronJob Pod created later than the window is taken for a Job (its full name); with
# ownerLookup on, the chain answers exactly instead.
CRONJOB_MIN_MINUTES = 946_684_800 // 60
CRONJOB_MAX_MINUTES = 4_102_444_800 // 60
CRONJOB_WINDOW_BEFORE_S = 24 * 3600
CRONJOB_WINDOW_AFTER_S = 300
_CRON_SUFFIX = re.compile(r"^(?P<base>.+)-(?P<minutes>[1-9][0-9]{6,9})$")

VK_CLUSTER_TYPE = "virtual-kubelet.io/provider-cluster-type"
VK_WORKLOAD_TYPE = "virtual-kubelet.io/provider-workload-type"
VK_RESOURCE_NAME = "virtual-kubelet.io/provider-resource-name"
VK_CLUSTER_TYPES = frozenset({"serverless", "proprietary"})
STS_POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
DC_NAME_ANNOTATION = "openshift.io/deployment-config.name"


# A derivation returns (type, name) or None to let the next rule for this owner try.
Derivation = Callable[["OwnerRule", Owner, PodMeta], tuple[str, str] | None]


def _owner_name(rule: OwnerRule, owner: Owner, pod: PodMeta) -> tuple[str, str] | None:
    return rule.workload_type, owner.name


def _strip_label_hash(label: str) -> Derivation:
    def derive(rule: OwnerRule, owner: Owner, pod: PodMeta) -> tuple[str, str] | None:
        suffix = pod.label(label)
        if not suffix:
            return None
        base, sep, tail = owner.name.rpartition("-")
        if sep and base and tail == suffix:
            return rule.workload_type, base
        return None

    return derive


def _cronjob_suffix(rule: OwnerRule, owner: Owner, pod: PodMeta) -> tuple[str, str] | None:
    m = _CRON_SUFFIX.match(owner.name)
    if m is None:
        return None
    minutes = int(m["minutes"])
    if not CRONJOB_MIN_MINUTES <= minutes <= CRONJOB_MAX_MINUTES:
        return None
    if not schedule_near(minutes * 60, reference_time(pod)):
        return None
    return rule.workload_type, m["base"]


def schedule_near(scheduled_s: float, reference_s: float) -> bool:
    """Whether a CronJob schedule time (unix seconds) can have created a Pod created at ``reference_s``."""
    return reference_s - CRONJOB_WINDOW_BEFORE_S <= scheduled_s <= reference_s + CRONJOB_WINDOW_AFTER_S


def reference_time(pod: PodMeta, now: Callable[[], float] = time.time) -> float:
    """The Pod's creationTimestamp (RFC 3339) as unix seconds; the time now when it has none or it is malformed."""
    stamp = pod.creation_timestamp
    if type(stamp) is str and stamp:
        try:
            return datetime.fromisoformat(stamp).timestamp()
        except ValueError:
            pass
    return now()


def _deployment_config(rule: OwnerRule, owner: Owner, pod: PodMeta) -> tuple[str, str] | None:
    name = pod.annotation(DC_NAME_ANNOTATION)
    return (rule.workload_type, name) if name else None


DERIVATIONS: dict[str, Derivation] = {
    "owner-name": _owner_name,
    "pod-template-hash": _strip_label_hash("pod-template-hash"),
    "rollouts-pod-template-hash": _strip_label_hash("rollouts-pod-template-hash"),
    "cronjob-suffix": _cronjob_suffix,
    "deployment-config-annotation": _deployment_config,
}


@dataclass(frozen=True, slots=True)
class OwnerRule:
    """One row of the rule table. ``group`` ``"*"`` matches any API group."""

    name: str
    group: str
    kind: str
    workload_type: str
    platform: str | None = None
    derive: str = "owner-name"
    source: str = "builtin"
    resolved_by: str = field(init=False, compare=False)  # "source:name", the resolved-by annotation

    def __post_init__(self) -> None:
        object.__setattr__(self, "resolved_by", f"{self.source}:{self.name}")  # once, not per match


BUILTIN_RULES: tuple[OwnerRule, ...] = (
    OwnerRule("deployment", "apps", "ReplicaSet", "Deployment", derive="pod-template-hash"),
    OwnerRule("argo-rollout", "apps", "ReplicaSet", "Rollout", derive="rollouts-pod-template-hash"),
    OwnerRule("replicaset", "apps", "ReplicaSet", "ReplicaSet"),
    OwnerRule("statefulset", "apps", "StatefulSet", "StatefulSet"),
    OwnerRule("daemonset", "apps", "DaemonSet", "DaemonSet"),
    OwnerRule("cronjob", "batch", "Job", "CronJob", derive="cronjob-suffix"),
    OwnerRule("job", "batch", "Job", "Job"),
    OwnerRule(
        "openshift-deploymentconfig",
        "",
        "ReplicationController",
        "DeploymentConfig",
        platform="OpenShift",
        derive="deployment-config-annotation",
    ),
    OwnerRule("replicationcontroller", "", "ReplicationController", "ReplicationController"),
    OwnerRule("openkruise-cloneset", "apps.kruise.io", "CloneSet", "CloneSet", platform="OpenKruise"),
    OwnerRule("openkruise-statefulset", "apps.kruise.io", "StatefulSet", "StatefulSet", platform="OpenKruise"),
    OwnerRule("openkruise-daemonset", "apps.kruise.io", "DaemonSet", "DaemonSet", platform="OpenKruise"),
    OwnerRule("opengauss", "opengauss.sig", "OpenGaussCluster", "StatefulSet", platform="OpenGauss"),
    OwnerRule("inplaceset", "*", "InPlaceSet", "Deployment"),
    OwnerRule("tke-statefulsetplus", "*", "StatefulSetPlus", "StatefulSet"),
)


class RuleConfigError(ValueError):
    """A user rule in the config file is malformed; raised at start-up, never on the hot path."""


def user_rules(entries: Iterable[Mapping[str, Any]], allow_custom_types: bool) -> tuple[OwnerRule, ...]:
    """Turn config-file mappings (``{apiVersion|group, kind, type, platform?}``) into rules."""
    rules: list[OwnerRule] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise RuleConfigError(f"rules[{i}]: expected a mapping, got {type(entry).__name__}")
        kind = entry.get("kind")
        wtype = entry.get("type")
        if not isinstance(kind, str) or not kind:
            raise RuleConfigError(f"rules[{i}]: 'kind' must be a non-empty string")
        if not isinstance(wtype, str) or not wtype:
            raise RuleConfigError(f"rules[{i}]: 'type' must be a non-empty string")
        canon = canonical_type(wtype)
        if canon is None and not allow_custom_types:
            raise RuleConfigError(
                f"rules[{i}]: unknown workload type {wtype!r} (set allowCustomTypes to accept it)"
            )
        if "group" in entry:
            group = entry["group"]
        elif "apiVersion" in entry:
            api_version = entry["apiVersion"]
            if not isinstance(api_version, str):
                raise RuleConfigError(f"rules[{i}]: 'apiVersion' must be a string")
            group = Owner(api_version, kind, "").group
        else:
            group = "*"
        if not isinstance(group, str):
            raise RuleConfigError(f"rules[{i}]: 'group' must be a string")
        platform = entry.get("platform")
        if platform is not None and not isinstance(platform, str):
            raise RuleConfigError(f"rules[{i}]: 'platform' must be a string")
        name = entry.get("name") or f"{group or 'core'}-{kind}".lower()
        rules.append(OwnerRule(str(name), group, kind, canon or wtype, platform, source="config"))
    return tuple(rules)


class RuleTable:
    """Rules indexed by (group, kind) so a lookup costs one or two dict probes."""

    def __init__(self, rules: Sequence[OwnerRule]) -> None:
        for rule in rules:
            if rule.derive not in DERIVATIONS:
                raise RuleConfigError(f"rule {rule.name!r}: unknown derivation {rule.derive!r}")
        self.rules = tuple(rules)
        self._by_key: dict[tuple[str, str], list[tuple[OwnerRule, Derivation]]] = {}
        for rule in self.rules:
            self._by_key.setdefault((rule.group, rule.kind), []).append((rule, DERIVATIONS[rule.derive]))

    def match(self, owner: Owner, pod: PodMeta) -> Resolution | None:
        """The first row for the owner's exact group, then for any group, whose derivation answers."""
        exact = self._by_key.get((owner.group, owner.kind))
        found = _first_answer(exact, owner, pod) if exact else None
        if found is None:
            wildcard = self._by_key.get(("*", owner.kind))
            found = _first_answer(wildcard, owner, pod) if wildcard else None
        return found


def _first_answer(rows: list[tuple[OwnerRule, Derivation]], owner: Owner, pod: PodMeta) -> Resolution | None:
    for rule, derive in rows:
        derived = derive(rule, owner, pod)
        if derived is not None and derived[1]:
            return Resolution(derived[0], derived[1], rule.platform, rule.resolved_by, owner)
    return None


def select_owner(owner_refs: object) -> Owner | None:
    """The controller owner reference wins; else the first well-formed one. Malformed shapes are ignored."""
    if not isinstance(owner_refs, list):
        return None
    first: Owner | None = None
    for ref in owner_refs:
        if not isinstance(ref, dict):
            continue
        api_version, kind, name = ref.get("apiVersion"), ref.get("kind"), ref.get("name")
        if not (isinstance(api_version, str) and isinstance(kind, str) and isinstance(name, str)):
            continue
        if not (kind and name):
            continue
        uid = ref.get("uid")
        owner = Owner(api_version, kind, name, uid if type(uid) is str else "")
        if ref.get("controller") is True:
            return owner
        if first is None:
            first = owner
    return first


def virtual_kubelet(pod: PodMeta) -> Resolution | None:
    """Serverless virtual-kubelet Pods have no owner; the provider writes the workload into labels."""
    if pod.label(VK_CLUSTER_TYPE) not in VK_CLUSTER_TYPES:
        return None
    resource = pod.label(VK_RESOURCE_NAME)
    base, sep, _ = resource.rpartition("-")
    name = base if sep and base else resource
    if not name:
        return None
    declared = pod.label(VK_WORKLOAD_TYPE)
    if declared:
        wtype = canonical_type(declared) or declared
    else:
        wtype = "StatefulSet" if pod.label(STS_POD_NAME_LABEL) else "Deployment"
    return Resolution(wtype, name, None, "builtin:virtual-kubelet")
