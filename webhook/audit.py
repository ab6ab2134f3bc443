"""`workload-tagger audit`: how much of the running cluster carries our annotations, and what is left.

Every Pod is resolved with the webhook's own :class:`Resolver` and compared with the
annotations it carries. Only counters and a small per-owner-kind table are kept, so the
report costs the same memory for 300 Pods as for 100,000 (Pods arrive page by page).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import yaml

from webhook.app import build_resolver, plugin_set_for_cli
from webhook.config import Config
from webhook.errors import CLIError
from webhook.inputs import PodInput
from webhook.owners import EXACT, OwnerIndex
from webhook.patch import annotation_keys, desired_annotations
from webhook.plugins import PluginSet
from webhook.podlist import ListScope, LiveLister, file_pods
from webhook.resolver import Resolver
from webhook.rules import select_owner
from webhook.types import Resolution

CORRECT, MISSING, STALE, UNRESOLVED = "correct", "missing", "stale", "unresolved"
STATUSES = (CORRECT, MISSING, STALE, UNRESOLVED)
NO_PLATFORM = "(none)"
NO_OWNER = "(no owner)"


@dataclass(frozen=True, slots=True)
class Assessment:
    """One Pod compared with what the webhook would write for it now.

    ``missing``: keys the Pod lacks (the webhook would add them). ``stale``: our keys present
    with another value, as key -> wanted value, where None means "the key should not be
    there" (e.g. a platform annotation for a Pod that resolves without platform).
    """

    label: str
    namespace: str
    name: str
    resolution: Resolution | None
    missing: Mapping[str, str]
    stale: Mapping[str, str | None]
    current: Mapping[str, str]

    @property
    def status(self) -> str:
        if self.resolution is None:
            return UNRESOLVED
        if self.stale:
            return STALE
        return MISSING if self.missing else CORRECT


def assess(
    pod: PodInput, resolver: Resolver, plugins: PluginSet, prefix: str, deadline_s: float | None = None
) -> Assessment:
    meta = pod.meta
    namespace = str(meta.get("namespace") or pod.namespace or "")
    name = str(meta.get("name") or meta.get("generateName") or "")
    raw = meta.get("annotations")
    annotations = raw if isinstance(raw, dict) else {}
    ours = {k: str(annotations[k]) for k in annotation_keys(prefix) if k in annotations}
    deadline = time.monotonic() + deadline_s if deadline_s else None
    resolution = resolver.resolve(meta, namespace or None, plugins, deadline)
    if resolution is None:
        return Assessment(pod.label, namespace, name, None, {}, {}, ours)
    wanted = desired_annotations(resolution, prefix)
    missing = {k: v for k, v in wanted.items() if k not in ours}
    stale: dict[str, str | None] = {k: wanted.get(k) for k, v in ours.items() if wanted.get(k) != v}
    return Assessment(pod.label, namespace, name, resolution, missing, stale, ours)


@dataclass
class OwnerGap:
    api_version: str
    kind: str
    count: int
    example: str

    def as_json(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "count": self.count,
            "example": self.example,
        }


MAX_EXAMPLES = 20  # Pods named per finding; all are counted


def disagrees_with_exact(assessment: Assessment, prefix: str) -> bool:
    """Our workload type or name on the Pod contradicts the owner chain's exact answer (a wrong guess)."""
    res = assessment.resolution
    if res is None or res.resolved_by != EXACT:
        return False
    k_type, k_name = annotation_keys(prefix)[:2]
    current = assessment.current
    return current.get(k_type, res.workload_type) != res.workload_type or (
        current.get(k_name, res.workload_name) != res.workload_name)


@dataclass
class AuditReport:
    """Counters only; ``add`` is called once per Pod as pages stream in.

    With owner lookup (a live cluster), Pods whose type/name annotations contradict the exact
    owner chain are counted in ``wrong`` (and named, the first :data:`MAX_EXAMPLES`).
    """

    total: int = 0
    status: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)
    by_platform: Counter[str] = field(default_factory=Counter)
    by_resolver: Counter[str] = field(default_factory=Counter)
    gaps: dict[tuple[str, str], OwnerGap] = field(default_factory=dict)
    owner_lookup: bool = False
    prefix: str = "workload-tagger.io/"
    wrong: int = 0
    wrong_examples: list[dict[str, str]] = field(default_factory=list)

    def add(self, assessment: Assessment, meta: Mapping[str, Any]) -> None:
        self.total += 1
        self.status[assessment.status] += 1
        res = assessment.resolution
        if res is not None:
            self.by_type[res.workload_type] += 1
            self.by_platform[res.platform or NO_PLATFORM] += 1
            self.by_resolver[res.resolved_by] += 1
            if self.owner_lookup and disagrees_with_exact(assessment, self.prefix):
                self.wrong += 1
                if len(self.wrong_examples) < MAX_EXAMPLES:
                    k_type, k_name = annotation_keys(self.prefix)[:2]
                    self.wrong_examples.append({
                        "pod": assessment.label,
                        "annotated": f"{assessment.current.get(k_type, '-')}/{assessment.current.get(k_name, '-')}",
                        "exact": f"{res.workload_type}/{res.workload_name}",
                    })
            return
        owner = select_owner(meta.get("ownerReferences"))
        key = (owner.api_version, owner.kind) if owner else ("", NO_OWNER)
        gap = self.gaps.get(key)
        if gap is None:
            self.gaps[key] = OwnerGap(key[0], key[1], 1, assessment.label)
        else:
            gap.count += 1

    def unresolved_owners(self) -> list[OwnerGap]:
        """Most Pods first: the first row is the plugin worth writing first."""
        return sorted(self.gaps.values(), key=lambda g: (-g.count, g.api_version, g.kind))

    @property
    def coverage(self) -> float:
        return self.status[CORRECT] / self.total if self.total else 1.0

    def as_json(self) -> dict[str, Any]:
        """The stable machine shape (documented in the README); keys never change meaning."""
        return {
            "total": self.total,
            "status": {s: self.status[s] for s in STATUSES},
            "byType": dict(sorted(self.by_type.items())),
            "byPlatform": dict(sorted(self.by_platform.items())),
            "byResolver": dict(sorted(self.by_resolver.items())),
            "unresolvedOwners": [g.as_json() for g in self.unresolved_owners()],
            **({"disagreeWithExactOwner": {"count": self.wrong, "examples": self.wrong_examples}}
               if self.owner_lookup else {}),
        }


def build_report(
    pods: Iterable[PodInput],
    resolver: Resolver,
    plugins: PluginSet,
    prefix: str,
    deadline_s: float | None = None,
) -> AuditReport:
    report = AuditReport(owner_lookup=resolver.owners is not None, prefix=prefix)
    for pod in pods:
        report.add(assess(pod, resolver, plugins, prefix, deadline_s), pod.meta)
    return report


def _table(title: str, headers: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    cells = [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def line(values: tuple[str, ...]) -> str:
        return "  ".join(
            v.rjust(w) if v.isdigit() or v.endswith("%") else v.ljust(w)
            for v, w in zip(values, widths, strict=True)
        ).rstrip()

    out = [title, line(headers)]
    out += [line(r) for r in cells] if cells else ["  (none)"]
    return [*out, ""]


def _pct(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "0.0%"


def render_table(report: AuditReport) -> str:
    t = report.total
    lines = [
        f"Pods: {t}   annotated and correct: {report.status[CORRECT]} ({_pct(report.status[CORRECT], t)})",
        "",
    ]
    lines += _table(
        "ANNOTATIONS",
        ("STATUS", "PODS", "SHARE"),
        [(s, report.status[s], _pct(report.status[s], t)) for s in STATUSES],
    )
    lines += _table(
        "WORKLOAD TYPES", ("TYPE", "PODS"), sorted(report.by_type.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    lines += _table(
        "PLATFORMS", ("PLATFORM", "PODS"), sorted(report.by_platform.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    lines += _table(
        "RESOLVED BY",
        ("RULE OR PLUGIN", "PODS"),
        sorted(report.by_resolver.items(), key=lambda kv: (-kv[1], kv[0])),
    )
    lines += _table(
        "UNRESOLVED OWNER KINDS (write a plugin for these)",
        ("APIVERSION", "KIND", "PODS", "EXAMPLE POD"),
        [(g.api_version or "-", g.kind, g.count, g.example) for g in report.unresolved_owners()],
    )
    if report.owner_lookup:
        lines += _table(
            f"DISAGREE WITH THE EXACT OWNER (tagged by a wrong guess): {report.wrong} Pods",
            ("POD", "ANNOTATED TYPE/NAME", "EXACT TYPE/NAME"),
            [(e["pod"], e["annotated"], e["exact"]) for e in report.wrong_examples],
        )
    missing, stale = report.status[MISSING], report.status[STALE]
    if missing or stale:
        lines.append(
            f"Next: `workload-tagger backfill -A --apply` adds the missing annotations ({missing} Pods); "
            f"--overwrite-stale also rewrites the stale ones ({stale} Pods)."
        )
    return "\n".join(lines).rstrip() + "\n"


def render(report: AuditReport, fmt: str) -> str:
    if fmt == "json":
        return orjson.dumps(report.as_json(), option=orjson.OPT_INDENT_2).decode() + "\n"
    if fmt == "yaml":
        return yaml.safe_dump(report.as_json(), sort_keys=False)
    return render_table(report)


def stderr_notice(message: str) -> None:
    print(f"workload-tagger: {message}", file=sys.stderr, flush=True)


def add_scope_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("-n", "--namespace", help="only Pods of this namespace")
    where.add_argument("-A", "--all-namespaces", action="store_true", help="Pods of all namespaces")
    parser.add_argument("-l", "--selector", help="label selector, as for kubectl (live cluster only)")
    parser.add_argument("--page-size", type=int, default=500, help="Pods per list request (default 500)")


def live_scope(args: argparse.Namespace) -> ListScope:
    if not args.namespace and not args.all_namespaces:
        raise CLIError("say which Pods: -n NAMESPACE or -A (all namespaces)", 2)
    if args.page_size < 1:
        raise CLIError("--page-size must be at least 1", 2)
    return ListScope(args.namespace or None, args.page_size, args.selector or None)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        nargs="?",
        metavar="FILE",
        help="read Pods from a file (kubectl get pods -A -o json; JSON or YAML; - for stdin)",
    )
    add_scope_arguments(parser)
    parser.add_argument("--format", choices=("table", "json", "yaml"), default="table", help="output format")


def owner_index(config: Config, api: Any, notice: Callable[[str], None] = stderr_notice) -> OwnerIndex | None:
    """The owner caches, listed once, for a door that runs against a cluster (audit, backfill).

    On unless ``ownerLookup: off``: a live run is always "in a cluster". A resource we may not
    list (403) or cannot reach is said once on stderr; its Pods are answered by the rules.
    """
    if config.owner_lookup == "off":
        return None
    from webhook.informer import sync_once

    index = OwnerIndex()
    for failure in sync_once(api.api_client, index):
        notice(f"owner lookup: cannot list {failure}; those Pods are answered by the built-in rules")
    return index


def run(args: argparse.Namespace, config: Config, plugins: PluginSet | None = None, api: Any = None) -> int:
    """Exit 0 when the report was printed (whatever it says); 2 for usage, permission or reach errors."""
    pods: Iterable[PodInput]
    if args.file:
        if args.selector:
            raise CLIError("--selector works on the live cluster only", 2)
        resolver = build_resolver(config)
        pods = file_pods(args.file, args.namespace or None)
    else:
        scope = live_scope(args)
        if api is None:
            from webhook.kubeclient import client_configuration, core_api

            api = core_api(client_configuration(config))
        resolver = build_resolver(config, owner_index(config, api))
        pods = LiveLister(api, scope, notice=stderr_notice)
    if plugins is None:
        plugins = plugin_set_for_cli(config)
    # No review deadline: the CLI wants every Pod's answer; each plugin call stays bounded by its
    # own instruction and memory budget. backfill resolves the same way, so the two agree.
    report = build_report(pods, resolver, plugins, config.prefix)
    sys.stdout.write(render(report, args.format))
    return 0
