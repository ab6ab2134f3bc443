"""`workload-tagger audit`: how much of the running cluster carries our annotations, and what is left.

Every Pod is resolved with the webhook's own :class:`Resolver` and compared with the
annotations it carries. For the Pods nobody resolves, the report also shows what the owner
fallback (``ownerFallback``) would write, so turning it on is an informed choice. Only counters and a small per-owner-kind table are kept, so the
report costs the same memory for 300 Pods as for 100,000 (Pods arrive page by page).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import yaml

from webhook.annotations import annotation_keys
from webhook.app import build_resolver, plugin_set_for_cli
from webhook.cluster.pods import LiveLister
from webhook.commands.assessment import (
    CORRECT,
    MISSING,
    STALE,
    STATUSES,
    Assessment,
    add_scope_arguments,
    assess,
    live_scope,
    owner_index,
    stderr_notice,
)
from webhook.commands.inputs import PodInput, cluster_pods, file_pods
from webhook.config import Config
from webhook.errors import UserError
from webhook.plugins import PluginSet
from webhook.resolution.fallback import owner_fallback
from webhook.resolution.model import PodMeta, Resolution
from webhook.resolution.owners import EXACT
from webhook.resolution.resolver import Resolver
from webhook.resolution.rules import select_owner

NO_PLATFORM = "(none)"
NO_OWNER = "(no owner)"


@dataclass
class OwnerGap:
    """Unresolved Pods of one owner kind; ``fallback`` is what the owner fallback would write for the example."""

    api_version: str
    kind: str
    count: int
    example: str
    fallback: Resolution | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "count": self.count,
            "example": self.example,
            "fallback": self.fallback.as_json() if self.fallback else None,
        }

    def fallback_cell(self) -> str:
        return f"{self.fallback.workload_type} {self.fallback.workload_name}" if self.fallback else "-"


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
            self.gaps[key] = OwnerGap(key[0], key[1], 1, assessment.label, owner_fallback(PodMeta.of(meta)))
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
    otel: bool = True,
) -> AuditReport:
    report = AuditReport(owner_lookup=resolver.owners is not None, prefix=prefix)
    for pod in pods:
        report.add(assess(pod, resolver, plugins, prefix, deadline_s, otel), pod.meta)
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
        "UNRESOLVED OWNER KINDS (write a plugin for these, or see what --owner-fallback would write)",
        ("APIVERSION", "KIND", "PODS", "EXAMPLE POD", "WITH --owner-fallback"),
        [(g.api_version or "-", g.kind, g.count, g.example, g.fallback_cell()) for g in report.unresolved_owners()],
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        nargs="?",
        metavar="FILE",
        help="read Pods from a file (kubectl get pods -A -o json; JSON or YAML; - for stdin)",
    )
    add_scope_arguments(parser)
    parser.add_argument("--format", choices=("table", "json", "yaml"), default="table", help="output format")


def run(args: argparse.Namespace, config: Config, plugins: PluginSet | None = None, api: Any = None) -> int:
    """Exit 0 when the report was printed (whatever it says); 2 for usage, permission or reach errors."""
    pods: Iterable[PodInput]
    if args.file:
        if args.selector:
            raise UserError("--selector works on the live cluster only", 2)
        resolver = build_resolver(config)
        pods = file_pods(args.file, args.namespace or None)
    else:
        scope = live_scope(args)
        if api is None:
            from webhook.cluster.client import client_configuration, core_api

            api = core_api(client_configuration(config))
        resolver = build_resolver(config, owner_index(config, api))
        pods = cluster_pods(LiveLister(api, scope, notice=stderr_notice))
    if plugins is None:
        plugins = plugin_set_for_cli(config)
    # No review deadline: the CLI wants every Pod's answer; each plugin call stays bounded by its
    # own instruction and memory budget. backfill resolves the same way, so the two agree.
    report = build_report(pods, resolver, plugins, config.prefix, otel=config.otel_annotations)
    sys.stdout.write(render(report, args.format))
    return 0
