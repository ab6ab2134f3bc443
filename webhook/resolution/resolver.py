"""One answer to "which workload does this Pod belong to?", shared by every door.

`/mutate`, `resolve`, `plugin test`, `audit` and `backfill` all call :meth:`Resolver.resolve`,
so the CLI can never disagree with the webhook. Order: built-in (and config) rules, then
plugins — or plugins first when ``plugins_first`` is set — first acceptable answer wins; then,
with ``owner_fallback``, the Pod's controller owner itself (:mod:`webhook.resolution.fallback`).

The webhook takes the same order in two steps, so that everyday Pods never wait for anything:
:meth:`Resolver.resolve_fast` (sync: the rules) answers, or says :data:`NEEDS_PLUGINS`; only then
the handler awaits :meth:`Resolver.resolve_slow` (the plugins, evaluated in a plugin host, then
whatever comes after them).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from webhook.cluster.owner_cache import OwnerIndex
from webhook.plugins import EMPTY, AsyncPluginSet, PluginSet
from webhook.resolution.fallback import owner_fallback
from webhook.resolution.model import PodMeta, Resolution, canonical_type
from webhook.resolution.owners import OwnerLookup
from webhook.resolution.rules import (
    BUILTIN_RULES,
    OwnerRule,
    RuleTable,
    select_owner,
    virtual_kubelet,
)


@dataclass(frozen=True, slots=True)
class ResolverSettings:
    plugins_first: bool = False
    allow_custom_types: bool = False
    extra_rules: tuple[OwnerRule, ...] = ()
    owner_fallback: bool = False


class NeedsPlugins:
    """The fast path's answer when only the plugins can tell (see :meth:`Resolver.resolve_fast`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEEDS_PLUGINS"


NEEDS_PLUGINS = NeedsPlugins()


class Resolver:
    """Stateless apart from its rule table; the plugin snapshot is passed per call so a request sees one set.

    With an :class:`OwnerIndex` (ownerLookup on), Pods whose controller is of a cached kind are
    answered from the owner chain (exact, ``owners:exact``); config rules still come first (the
    user's explicit word), and the built-in rules answer whenever the chain cannot.
    """

    def __init__(self, settings: ResolverSettings | None = None, owners: OwnerIndex | None = None) -> None:
        self.settings = settings or ResolverSettings()
        self.table = RuleTable((*self.settings.extra_rules, *BUILTIN_RULES))
        self.user_table = RuleTable(self.settings.extra_rules) if self.settings.extra_rules else None
        self.owners = OwnerLookup(owners, self.accept_type) if owners is not None else None

    def accept_type(self, value: str) -> str | None:
        """Canonical spelling of a type, the value itself for custom types when allowed, else None."""
        canon = canonical_type(value)
        if canon is not None:
            return canon
        return value if self.settings.allow_custom_types else None

    def by_rules(self, pod: PodMeta) -> Resolution | None:
        if self.owners is not None:
            exact = self._by_user_rules(pod) if self.user_table is not None else None
            exact = exact or self.owners.resolve(pod)
            if exact is not None:
                return exact
        owner = select_owner(pod.owner_references)
        found = self.table.match(owner, pod) if owner is not None else virtual_kubelet(pod)
        if found is None:
            return None
        wtype = self.accept_type(found.workload_type)
        if wtype is None:
            return None
        if wtype != found.workload_type:
            return Resolution(wtype, found.workload_name, found.platform, found.resolved_by, found.owner)
        return found

    def _by_user_rules(self, pod: PodMeta) -> Resolution | None:
        owner = select_owner(pod.owner_references)
        found = self.user_table.match(owner, pod) if owner is not None and self.user_table is not None else None
        if found is None:
            return None
        wtype = self.accept_type(found.workload_type)
        return None if wtype is None else Resolution(wtype, found.workload_name, found.platform, found.resolved_by,
                                                     found.owner)

    def by_plugins(
        self,
        pod: PodMeta,
        namespace: str | None,
        plugins: PluginSet,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Resolution | None:
        if not plugins.names:
            return None  # the plugins' input is built only when a plugin will read it
        for answer in plugins.answers(plugin_input(pod, namespace), deadline):
            if deadline is not None and clock() > deadline:
                return None  # do not pull further plugins past the budget, whatever the set does
            wtype = self.accept_type(answer.workload_type)
            if wtype is not None:
                return Resolution(wtype, answer.workload_name, None, f"plugin:{answer.plugin}")
        return None

    def resolve_fast(self, pod: PodMeta, plugins: PluginSet | AsyncPluginSet) -> Resolution | NeedsPlugins | None:
        """The synchronous step: the rules' answer, or :data:`NEEDS_PLUGINS` when plugins must be asked
        (no rule answered, or ``plugins_first``, and the set has plugins); then await :meth:`resolve_slow`."""
        if not plugins.names:
            return self.or_fallback(pod, self.by_rules(pod))
        if self.settings.plugins_first:
            return NEEDS_PLUGINS
        found = self.by_rules(pod)
        return NEEDS_PLUGINS if found is None else found

    async def resolve_slow(
        self,
        pod: PodMeta,
        namespace: str | None,
        plugins: PluginSet | AsyncPluginSet,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Resolution | None:
        """The step after :data:`NEEDS_PLUGINS`: the plugins (awaited from their host when the set is
        hosted; a synchronous set is run in place), then the rules when ``plugins_first``."""
        if hasattr(plugins, "first_answer"):
            found = await self.by_plugins_async(pod, namespace, plugins, deadline)  # type: ignore[arg-type]
            return self.after_plugins(pod, found)
        return self.resolve_slow_in_place(pod, namespace, plugins, deadline, clock)  # type: ignore[arg-type]

    def resolve_slow_in_place(
        self,
        pod: PodMeta,
        namespace: str | None,
        plugins: PluginSet,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Resolution | None:
        """:meth:`resolve_slow` for a plugin set that runs in the caller (the synchronous doors)."""
        return self.after_plugins(pod, self.by_plugins(pod, namespace, plugins, deadline, clock))

    def after_plugins(self, pod: PodMeta, found: Resolution | None) -> Resolution | None:
        """What follows the plugins on the slow path (both doors: awaited and synchronous)."""
        if found is None and self.settings.plugins_first:
            found = self.by_rules(pod)
        return self.or_fallback(pod, found)

    def or_fallback(self, pod: PodMeta, found: Resolution | None) -> Resolution | None:
        """``found``, or with ``owner_fallback`` the Pod's controller owner itself when nobody answered.

        Last, so rules and plugins still win; its types are owner kinds, accepted without
        allowCustomTypes: turning the fallback on is the opt-in.
        """
        if found is None and self.settings.owner_fallback:
            return owner_fallback(pod)
        return found

    async def by_plugins_async(
        self, pod: PodMeta, namespace: str | None, plugins: AsyncPluginSet, deadline: float | None = None
    ) -> Resolution | None:
        if not plugins.names:
            return None
        found = await plugins.first_answer(plugin_input(pod, namespace), deadline, self.accept_type)
        if found is None:
            return None
        answer, wtype = found
        return Resolution(wtype, answer.workload_name, None, f"plugin:{answer.plugin}")

    def resolve(
        self,
        meta: Mapping[str, Any],
        namespace: str | None = None,
        plugins: PluginSet = EMPTY,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Resolution | None:
        """The answer for a Pod's metadata mapping (every door but `/mutate`, which uses :meth:`resolve_pod`)."""
        return self.resolve_pod(PodMeta.of(meta), namespace, plugins, deadline, clock)

    def resolve_pod(
        self,
        pod: PodMeta,
        namespace: str | None = None,
        plugins: PluginSet = EMPTY,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Resolution | None:
        """The answer for a decoded :class:`PodMeta`; ``namespace`` fills in the plugins' input (built only if one runs).

        The webhook decodes :class:`PodMeta` straight from the review, so everyday Pods (answered
        by the rules) build neither the rest of the metadata nor the plugins' input.
        """
        found = self.resolve_fast(pod, plugins)
        if type(found) is NeedsPlugins:
            return self.resolve_slow_in_place(pod, namespace, plugins, deadline, clock)
        return found  # type: ignore[return-value]


def plugin_input(meta: Mapping[str, Any] | PodMeta, namespace: str | None) -> str:
    """The JSON string a DeepFlow plugin receives: the Pod metadata as DeepFlow shapes it, with the
    namespace filled in from the request when the object has none.

    DeepFlow's agent trims each Pod's metadata to annotations, creationTimestamp, labels, name,
    namespace, ownerReferences and uid (agent/src/platform/kubernetes/resource_watcher.rs,
    ``Trimmable for Pod``), and its server hands a plugin Go's json.Marshal of that map: keys
    sorted at every level, compact. Beyond fidelity, this keeps managedFields (a dozen nested
    tables per Pod at admission) out of every plugin's Lua tables: a third of a plugin call.
    """
    shaped = (meta if isinstance(meta, PodMeta) else PodMeta.of(meta)).deepflow_fields()
    if namespace and not shaped.get("namespace"):
        shaped["namespace"] = namespace
    try:
        return orjson.dumps(shaped, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:  # integers beyond 64 bits: rare, but valid JSON
        return json.dumps(shaped, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
