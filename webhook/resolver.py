"""One answer to "which workload does this Pod belong to?", shared by every door.

`/mutate`, `resolve`, `plugin test`, `audit` and `backfill` all call :meth:`Resolver.resolve`,
so the CLI can never disagree with the webhook. Order: built-in (and config) rules, then
plugins — or plugins first when ``plugins_first`` is set — first acceptable answer wins.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from webhook.plugins import EMPTY, PluginSet
from webhook.rules import (
    BUILTIN_RULES,
    OwnerRule,
    PodView,
    RuleTable,
    select_owner,
    virtual_kubelet,
)
from webhook.types import Resolution, canonical_type


@dataclass(frozen=True, slots=True)
class ResolverSettings:
    plugins_first: bool = False
    allow_custom_types: bool = False
    extra_rules: tuple[OwnerRule, ...] = ()


class Resolver:
    """Stateless apart from its rule table; the plugin snapshot is passed per call so a request sees one set."""

    def __init__(self, settings: ResolverSettings | None = None) -> None:
        self.settings = settings or ResolverSettings()
        self.table = RuleTable((*self.settings.extra_rules, *BUILTIN_RULES))

    def accept_type(self, value: str) -> str | None:
        """Canonical spelling of a type, the value itself for custom types when allowed, else None."""
        canon = canonical_type(value)
        if canon is not None:
            return canon
        return value if self.settings.allow_custom_types else None

    def by_rules(self, meta: Mapping[str, Any]) -> Resolution | None:
        pod = PodView(meta.get("labels"), meta.get("annotations"))
        owner = select_owner(meta.get("ownerReferences"))
        found = self.table.match(owner, pod) if owner is not None else virtual_kubelet(pod)
        if found is None:
            return None
        wtype = self.accept_type(found.workload_type)
        if wtype is None:
            return None
        if wtype != found.workload_type:
            return Resolution(wtype, found.workload_name, found.platform, found.resolved_by)
        return found

    def by_plugins(
        self,
        meta: Mapping[str, Any],
        namespace: str | None,
        plugins: PluginSet,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Resolution | None:
        if not plugins.names:
            return None
        for answer in plugins.answers(plugin_input(meta, namespace), deadline):
            if deadline is not None and clock() > deadline:
                return None  # do not pull further plugins past the budget, whatever the set does
            wtype = self.accept_type(answer.workload_type)
            if wtype is not None:
                return Resolution(wtype, answer.workload_name, None, f"plugin:{answer.plugin}")
        return None

    def resolve(
        self,
        meta: Mapping[str, Any],
        namespace: str | None = None,
        plugins: PluginSet = EMPTY,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Resolution | None:
        if self.settings.plugins_first:
            return self.by_plugins(meta, namespace, plugins, deadline, clock) or self.by_rules(meta)
        return self.by_rules(meta) or self.by_plugins(meta, namespace, plugins, deadline, clock)


def plugin_input(meta: Mapping[str, Any], namespace: str | None) -> str:
    """The JSON string a DeepFlow plugin receives: the Pod metadata with the namespace filled in."""
    if namespace and not meta.get("namespace"):
        meta = {**meta, "namespace": namespace}
    try:
        return orjson.dumps(meta).decode()
    except TypeError:  # integers beyond 64 bits: rare, but valid JSON
        return json.dumps(meta, ensure_ascii=False, separators=(",", ":"))
