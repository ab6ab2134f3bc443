"""`workload-tagger recommend`: which DeepFlow Agent settings a cluster's platforms need.

DeepFlow's "Custom Resource Tagging" guide (section 1) says: when Pods belong to OpenShift,
OpenKruise or OpenGauss workloads, the Agent must watch extra API resources (and stop watching
Ingresses on OpenShift) and its ClusterRole must allow reading them. Operators miss that step
and then see Pods without workloads. This command reads the Pods (a file, or the live cluster),
finds the platforms from their ownerReferences, and prints the guide's settings, merged, ready
to paste. The table below is the guide, entry by entry; tests compare against its YAML.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from webhook.cluster import client as kubeclient
from webhook.commands.inputs import InputError, PodInput, load_pods, read_text
from webhook.errors import UserError

if TYPE_CHECKING:
    from webhook.config import Config

OPENSHIFT, OPENKRUISE, OPENGAUSS = "OpenShift", "OpenKruise", "OpenGauss"
READ = ("get", "list", "watch")
ROUTE_GROUP = "route.openshift.io"
DC_ANNOTATION = "openshift.io/deployment-config.name"


@dataclass(frozen=True)
class ApiResource:
    """One `inputs.resources.kubernetes.api_resources` entry of the DeepFlow Agent configuration."""

    name: str
    group: str | None = None
    disabled: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.group is not None:
            out["group"] = self.group
        if self.disabled:
            out["disabled"] = True
        return out


@dataclass(frozen=True)
class Rule:
    """One ClusterRole rule the Agent needs."""

    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...] = READ

    def to_dict(self) -> dict[str, Any]:
        return {
            "apiGroups": list(self.api_groups),
            "resources": list(self.resources),
            "verbs": list(self.verbs),
        }


@dataclass(frozen=True)
class Platform:
    name: str
    api_resources: tuple[ApiResource, ...]
    rules: tuple[Rule, ...]


# The guide, in its order. OpenKruise keeps `statefulsets` in `apps` enabled as well, because
# naming the kruise group would otherwise replace the built-in StatefulSet sync.
PLATFORMS: tuple[Platform, ...] = (
    Platform(
        OPENSHIFT,
        (ApiResource("ingresses", disabled=True), ApiResource("routes")),
        (Rule((ROUTE_GROUP,), ("routes",)),),
    ),
    Platform(
        OPENKRUISE,
        (
            ApiResource("clonesets", "apps.kruise.io"),
            ApiResource("statefulsets", "apps"),
            ApiResource("statefulsets", "apps.kruise.io"),
        ),
        (Rule(("apps.kruise.io",), ("clonesets", "statefulsets")),),
    ),
    Platform(
        OPENGAUSS,
        (ApiResource("opengaussclusters"),),
        (Rule(("opengauss.sig",), ("opengaussclusters",)),),
    ),
)
BY_NAME = {p.name: p for p in PLATFORMS}


@dataclass
class Recommendation:
    pods: dict[str, int] = field(default_factory=dict)  # platform -> Pods found, guide order
    reasons: dict[str, list[str]] = field(default_factory=dict)
    scanned: int = 0

    @property
    def platforms(self) -> list[Platform]:
        return [p for p in PLATFORMS if p.name in self.pods]

    @property
    def api_resources(self) -> list[ApiResource]:
        return list(dict.fromkeys(r for p in self.platforms for r in p.api_resources))

    @property
    def rules(self) -> list[Rule]:
        return list(dict.fromkeys(r for p in self.platforms for r in p.rules))

    def document(self) -> dict[str, Any]:
        """One document: what was found, the Agent configuration to merge, the ClusterRole rules to add."""
        return {
            "scannedPods": self.scanned,
            "podsPerPlatform": dict(self.pods),
            "detectedBy": {k: v for k, v in self.reasons.items() if k in self.pods},
            "agentConfig": {
                "inputs": {
                    "resources": {"kubernetes": {"api_resources": [r.to_dict() for r in self.api_resources]}}
                }
            },
            "clusterRoleRules": [r.to_dict() for r in self.rules],
        }


def _group(api_version: Any) -> str:
    text = str(api_version or "")
    return text.split("/", 1)[0] if "/" in text else ""


def platforms_of(meta: Mapping[str, Any]) -> dict[str, str]:
    """Platform -> the evidence in this Pod's metadata."""
    found: dict[str, str] = {}
    owners = meta.get("ownerReferences")
    for owner in owners if isinstance(owners, list) else []:
        if not isinstance(owner, dict):
            continue
        api_version, kind = str(owner.get("apiVersion") or ""), str(owner.get("kind") or "")
        group = _group(api_version)
        if group == "apps.kruise.io":
            found.setdefault(OPENKRUISE, f"ownerReferences {api_version} {kind}")
        elif group == "opengauss.sig":
            found.setdefault(OPENGAUSS, f"ownerReferences {api_version} {kind}")
        elif kind == "DeploymentConfig" or group == "apps.openshift.io":
            found.setdefault(OPENSHIFT, f"ownerReferences {api_version} {kind}")
    annotations = meta.get("annotations")
    if isinstance(annotations, dict) and annotations.get(DC_ANNOTATION):
        # DeploymentConfig Pods are owned by a ReplicationController; OpenShift marks them so
        found.setdefault(OPENSHIFT, f"annotation {DC_ANNOTATION}")
    return found


def recommend(
    pods: Iterable[PodInput | Mapping[str, Any]], openshift_routes_available: bool = False
) -> Recommendation:
    """Count Pods per platform (a Pod counts once per platform) and collect why."""
    counts: dict[str, int] = {}
    reasons: dict[str, list[str]] = {}
    scanned = 0
    for pod in pods:
        scanned += 1
        meta = pod.meta if isinstance(pod, PodInput) else _meta(pod)
        for name, why in platforms_of(meta).items():
            counts[name] = counts.get(name, 0) + 1
            if why not in reasons.setdefault(name, []):
                reasons[name].append(why)
    if openshift_routes_available:
        counts.setdefault(OPENSHIFT, 0)
        reasons.setdefault(OPENSHIFT, []).insert(0, f"API group {ROUTE_GROUP} is served")
    ordered = {p.name: counts[p.name] for p in PLATFORMS if p.name in counts}
    return Recommendation(ordered, reasons, scanned)


def _meta(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = pod.get("metadata", pod)
    return meta if isinstance(meta, Mapping) else {}


def render(rec: Recommendation, fmt: str) -> str:
    doc = rec.document()
    if fmt == "json":
        return json.dumps(doc, indent=2) + "\n"
    head = (
        "# DeepFlow Agent settings for this cluster (DeepFlow guide: Custom Resource Tagging, section 1).\n"
    )
    head += "# agentConfig: merge into the deepflow-agent configuration;"
    head += " clusterRoleRules: add to the deepflow-agent ClusterRole.\n"
    head += owner_lookup_note()
    return head + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def owner_lookup_note() -> str:
    """What workload-tagger's own ClusterRole needs for ownerLookup, from the table the caches use."""
    from webhook.cluster.owner_cache import RESOURCES

    by_group: dict[str, list[str]] = {}
    for r in RESOURCES:
        by_group.setdefault(r.group, []).append(r.plural)
    grants = "; ".join(f"{group}: {', '.join(plurals)}" for group, plurals in by_group.items())
    return (
        f"# workload-tagger itself, for ownerLookup (exact owners, root owner): list/watch on {grants}"
        " (manifests/base/rbac.yaml grants them; manifests/overlays/no-owner-lookup turns lookup off).\n"
    )


def groups_from_api_versions(text: str) -> set[str]:
    """API groups from `kubectl api-versions` output (`group/version` per line, `v1` for core)."""
    return {line.split("/", 1)[0] for line in text.split() if "/" in line}


# -- live cluster -------------------------------------------------------------------------------


def live_inputs(client_: Any, page: int = 500, timeout_s: float = 30.0) -> tuple[list[dict[str, Any]], bool]:
    """All Pods (paged) and whether route.openshift.io is served."""
    from kubernetes import client

    core = client.CoreV1Api(client_)
    pods: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"limit": page, "_preload_content": False, "_request_timeout": timeout_s}
        if token:
            kwargs["_continue"] = token
        raw: Any = core.list_pod_for_all_namespaces(**kwargs)  # raw response: _preload_content=False
        data = json.loads(raw.data)
        pods.extend(i for i in data.get("items") or [] if isinstance(i, dict))
        token = (data.get("metadata") or {}).get("continue")
        if not token:
            break
    groups = client.ApisApi(client_).get_api_versions(_request_timeout=timeout_s)
    served = {g.name for g in groups.groups or []}
    return pods, ROUTE_GROUP in served


# -- CLI ----------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        nargs="?",
        default=None,
        help="Pods as JSON/YAML (`kubectl get pods -A -o json`), `-` for stdin; absent: the live cluster",
    )
    parser.add_argument("--format", choices=("yaml", "json"), default="yaml", help="output format")
    parser.add_argument(
        "--api-versions",
        metavar="FILE",
        default=None,
        help="with FILE: `kubectl api-versions` output, so a served route.openshift.io counts as OpenShift",
    )


def run(args: argparse.Namespace, config: Config) -> int:
    if args.file is not None:
        try:
            pods: list[PodInput] | list[dict[str, Any]] = load_pods(args.file)
            routes = bool(args.api_versions) and ROUTE_GROUP in groups_from_api_versions(
                read_text(args.api_versions)
            )
        except InputError as exc:
            raise UserError(str(exc), 2) from None  # input errors exit 2, as everywhere in the CLI
    else:
        if args.api_versions:
            raise UserError("--api-versions only applies with a Pods file; the live cluster is asked directly")
        try:
            pods, routes = live_inputs(kubeclient.api_client(config))
        except UserError:
            raise
        except Exception as exc:
            status = getattr(exc, "status", None)
            reason = getattr(exc, "reason", None) or str(exc).splitlines()[0]
            where = f"HTTP {status} {reason}" if status else f"{type(exc).__name__}: {reason}"
            raise UserError(f"cannot read Pods from the cluster: {where}") from None
    rec = recommend(pods, openshift_routes_available=routes)
    sys.stdout.write(render(rec, args.format))
    if not rec.pods:
        print(
            f"no OpenShift, OpenKruise or OpenGauss workloads among {rec.scanned} Pods: nothing to change",
            file=sys.stderr,
        )
    return 0
