"""What audit and backfill share: one Pod compared with what the webhook would write for it now,
and which Pods to look at (scope flags, the live list's notices)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from webhook.admission.patch import desired_annotations
from webhook.annotations import annotation_keys
from webhook.cluster.owner_cache import OwnerIndex
from webhook.cluster.pods import ListScope
from webhook.commands.inputs import PodInput
from webhook.config import Config
from webhook.errors import UserError
from webhook.plugins import PluginSet
from webhook.resolution.model import Resolution
from webhook.resolution.resolver import Resolver

CORRECT, MISSING, STALE, UNRESOLVED = "correct", "missing", "stale", "unresolved"
STATUSES = (CORRECT, MISSING, STALE, UNRESOLVED)


@dataclass(frozen=True, slots=True)
class Assessment:
    """One Pod compared with what the webhook would write for it now.

    ``missing``: keys the Pod lacks (the webhook would add them). ``stale``: our keys present
    with another value, as key -> wanted value, where None means "the key should not be
    there" (e.g. a platform annotation for a Pod that resolves without platform). The
    OpenTelemetry annotations are only ever missing, never stale: a value a Pod has under
    ``resource.opentelemetry.io/`` may be its owner's choice (the convention invites users to set
    them), so it is kept, like any value the webhook finds.
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
    pod: PodInput, resolver: Resolver, plugins: PluginSet, prefix: str, deadline_s: float | None = None,
    otel: bool = True,
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
    wanted = desired_annotations(resolution, prefix, otel)
    missing = {k: v for k, v in wanted.items() if k not in annotations}
    stale: dict[str, str | None] = {k: wanted.get(k) for k, v in ours.items() if wanted.get(k) != v}
    return Assessment(pod.label, namespace, name, resolution, missing, stale, ours)


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
        raise UserError("say which Pods: -n NAMESPACE or -A (all namespaces)", 2)
    if args.page_size < 1:
        raise UserError("--page-size must be at least 1", 2)
    return ListScope(args.namespace or None, args.page_size, args.selector or None)


def owner_index(config: Config, api: Any, notice: Callable[[str], None] = stderr_notice) -> OwnerIndex | None:
    """The owner caches, listed once, for a door that runs against a cluster (audit, backfill).

    On unless ``ownerLookup: off``: a live run is always "in a cluster". A resource we may not
    list (403) or cannot reach is said once on stderr; its Pods are answered by the rules.
    """
    if config.owner_lookup == "off":
        return None
    from webhook.cluster.informer import sync_once

    index = OwnerIndex()
    for failure in sync_once(api.api_client, index):
        notice(f"owner lookup: cannot list {failure}; those Pods are answered by the built-in rules")
    return index
