"""The Pod mutation handler: an AdmissionRequest in, an AdmissionResponse and an outcome out.

Never denies: anything that goes wrong inside (a bug, a plugin failure that escaped the
engine) yields "allowed, no patch" with outcome ``error``; the server logs and counts it.

Two steps: :meth:`PodMutator.decide` is synchronous and answers every review the rules resolve
(everyday Pods). When the answer needs something that takes time — the plugins, evaluated in a
plugin host, or an owner the owner caches have not seen yet (created a moment before its Pod) —
it returns a :class:`PendingReview` and the server awaits :meth:`PodMutator.finish`, which waits
for that owner (bounded), asks the plugins without blocking the event loop, and builds the same
kind of :class:`Decision`. :meth:`handle` does both steps in one synchronous call, for the offline
doors and plugin sets that run in place (which never wait for an owner).

Time budget: a review must be answered well inside the webhook's ``timeoutSeconds``. The budget
holds because (1) each plugin call is bounded by its instruction budget and, in a host, by a
wall-clock limit past which the host is killed, (2) the deadline is set once, in :meth:`decide`,
and checked before each further plugin is started; the wait for an owner takes at most half the
budget, and (3) an answer that arrives after the deadline is dropped here: the review is answered
"allowed, no patch" with outcome ``timeout``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from webhook.admission.patch import DEFAULT_PREFIX, PatchBuilder
from webhook.admission.review import AdmissionRequest, AdmissionResponse, PodObject
from webhook.cluster.owner_cache import Ref
from webhook.outcomes import ReviewOutcome
from webhook.plugins import AsyncPluginSet, PluginSet
from webhook.resolution.model import Resolution
from webhook.resolution.owners import DEFERRED_MISSES
from webhook.resolution.resolver import NeedsPlugins, Resolver

# Bound once: attribute lookups on the enum class cost more than a module global on the hot path.
MUTATED, UNCHANGED, SKIPPED, ERROR, TIMEOUT, UNPATCHABLE = (
    ReviewOutcome.MUTATED, ReviewOutcome.UNCHANGED, ReviewOutcome.SKIPPED, ReviewOutcome.ERROR, ReviewOutcome.TIMEOUT,
    ReviewOutcome.UNPATCHABLE,
)


class Decision(msgspec.Struct, gc=False):  # one per review: a Struct, see AdmissionRequest
    response: AdmissionResponse
    outcome: ReviewOutcome
    resolution: Resolution | None = None
    error: str | None = None
    refused: str | None = None  # outcome unpatchable: why the patched Pod would be refused


class PendingReview(msgspec.Struct, gc=False):
    """A review :meth:`PodMutator.decide` could not finish: what :meth:`PodMutator.finish` needs.

    ``owner``: the Pod's controller, of a cached kind whose watch is healthy, not in the cache yet:
    wait for it, then resolve again. Otherwise (``owner`` None) only the plugins can tell.
    """

    request: AdmissionRequest
    pod: PodObject
    allow: AdmissionResponse
    namespace: str | None
    plugins: PluginSet | AsyncPluginSet
    deadline: float | None
    owner: Ref | None = None


class PodMutator:
    def __init__(
        self,
        resolver: Resolver,
        plugins: Callable[[], PluginSet | AsyncPluginSet],
        prefix: str = DEFAULT_PREFIX,
        operations: frozenset[str] = frozenset({"CREATE"}),
        budget_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        otel_annotations: bool = True,
        owner_wait_seconds: float = 0.0,
    ) -> None:
        self.resolver = resolver
        self.plugins = plugins
        # Owns the prefix and the OpenTelemetry switch: the patch is the only thing that uses them.
        self.patches = PatchBuilder(prefix, otel=otel_annotations)
        self.operations = operations
        self.budget_seconds = budget_seconds
        self.clock = clock
        # Waiting for a missing owner happens only on the awaited step, and only with owner caches.
        self.owner_wait_seconds = owner_wait_seconds if resolver.owners is not None else 0.0

    def handle(self, request: AdmissionRequest) -> Decision:
        """Both steps in one synchronous call (offline doors; plugin sets that run in place)."""
        decided = self.decide(request, defer_owner=False)
        if type(decided) is not PendingReview:
            return decided  # type: ignore[return-value]
        try:
            found = self.resolver.resolve_slow_in_place(decided.pod.meta, decided.namespace,
                                                        decided.plugins,  # type: ignore[arg-type]
                                                        decided.deadline, self.clock)
            return self._conclude(decided.pod, decided.allow, decided.deadline, found)
        except Exception as exc:  # never let our own failure break a Pod creation
            return Decision(decided.allow, ERROR, error=f"{type(exc).__name__}: {exc}")

    async def handle_async(self, request: AdmissionRequest) -> Decision:
        """Both steps, awaiting the second when there is one (what `/mutate` does)."""
        decided = self.decide(request)
        if type(decided) is PendingReview:
            return await self.finish(decided)
        return decided  # type: ignore[return-value]

    def decide(self, request: AdmissionRequest, defer_owner: bool = True) -> Decision | PendingReview:
        """The synchronous step: a Decision, or a PendingReview when an owner or the plugins must be awaited.

        With owner caches, the resolution runs with misses deferred: when the Pod's controller is of
        a cached kind whose watch is healthy but is not in the cache yet, the lookup leaves it in
        ``owners.DEFERRED_MISSES`` (a context variable: per review task) instead of counting a miss,
        and the review becomes pending on that owner. Everyday reviews never defer anything.
        """
        allow = AdmissionResponse(request.api_version, request.uid)
        if not request.is_pod or request.operation not in self.operations:
            return Decision(allow, SKIPPED)
        pod = request.object
        if pod is None:
            return Decision(allow, UNCHANGED)
        try:
            meta = pod.meta
            deadline = self.clock() + self.budget_seconds if self.budget_seconds else None
            plugins = self.plugins()
            namespace = meta.namespace if type(meta.namespace) is str and meta.namespace else request.namespace
            if defer_owner and self.owner_wait_seconds > 0:
                missed: list[Ref] = []
                token = DEFERRED_MISSES.set(missed)
                try:
                    found = self.resolver.resolve_fast(meta, plugins)
                finally:
                    DEFERRED_MISSES.reset(token)
                if missed:
                    return PendingReview(request, pod, allow, namespace, plugins, deadline, missed[0])
            else:
                found = self.resolver.resolve_fast(meta, plugins)
            if type(found) is NeedsPlugins:
                return PendingReview(request, pod, allow, namespace, plugins, deadline)
            return self._conclude(pod, allow, deadline, found)  # type: ignore[arg-type]
        except Exception as exc:  # never let our own failure break a Pod creation
            return Decision(allow, ERROR, error=f"{type(exc).__name__}: {exc}")

    async def finish(self, pending: PendingReview) -> Decision:
        """The awaited step: wait for a missing owner (bounded) and resolve again; ask the plugins
        (in their host) when only they can tell; then decide as :meth:`decide` would."""
        try:
            meta = pending.pod.meta
            if pending.owner is not None and self.resolver.owners is not None:
                wait = self.owner_wait_seconds
                if self.budget_seconds:
                    wait = min(wait, self.budget_seconds / 2)
                await self.resolver.owners.index.wait_for(pending.owner, wait)
                found = self.resolver.resolve_fast(meta, pending.plugins)  # a miss now is counted
                if type(found) is not NeedsPlugins:
                    return self._conclude(pending.pod, pending.allow, pending.deadline, found)  # type: ignore[arg-type]
            found = await self.resolver.resolve_slow(meta, pending.namespace, pending.plugins,
                                                     pending.deadline, self.clock)
            return self._conclude(pending.pod, pending.allow, pending.deadline, found)
        except Exception as exc:  # never let our own failure break a Pod creation
            return Decision(pending.allow, ERROR, error=f"{type(exc).__name__}: {exc}")

    def _conclude(self, pod: PodObject, allow: AdmissionResponse, deadline: float | None,
                  resolution: Resolution | None) -> Decision:
        if deadline is not None and self.clock() > deadline:
            return Decision(allow, TIMEOUT, error="review budget exceeded: answered without a patch")
        if resolution is None:
            return Decision(allow, UNCHANGED)
        annotations = pod.meta.annotations
        patch = self.patches.build(resolution, annotations, pod.has_metadata)
        if patch is None:
            return Decision(allow, UNCHANGED, resolution)
        refused = patch.refusal(annotations)
        if refused is not None:
            return Decision(allow, UNPATCHABLE, resolution, refused=refused)
        allow.patch = patch
        return Decision(allow, MUTATED, resolution)
