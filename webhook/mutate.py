"""The Pod mutation handler: an AdmissionRequest in, an AdmissionResponse and an outcome out.

Never denies: anything that goes wrong inside (a bug, a plugin failure that escaped the
engine) yields "allowed, no patch" with outcome ``error``; the server logs and counts it.

Two steps: :meth:`PodMutator.decide` is synchronous and answers every review the rules resolve
(everyday Pods); when only the plugins can tell, it returns a :class:`PendingReview` and the
server awaits :meth:`PodMutator.finish`, which asks the plugins (in a plugin host, without
blocking the event loop) and builds the same kind of :class:`Decision`. :meth:`handle` does both
in one synchronous call, for the offline doors and plugin sets that run in place.

Time budget: a review must be answered well inside the webhook's ``timeoutSeconds``. The budget
holds because (1) each plugin call is bounded by its instruction budget and, in a host, by a
wall-clock limit past which the host is killed, (2) the deadline passed down is checked before
each further plugin is started, and the server stops waiting for a host at the deadline, and
(3) an answer that arrives after the deadline is dropped here: the review is answered "allowed,
no patch" with outcome ``timeout``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from webhook.admission import AdmissionRequest, AdmissionResponse, PodObject
from webhook.patch import DEFAULT_PREFIX, PatchBuilder
from webhook.plugins import AsyncPluginSet, PluginSet
from webhook.resolver import NeedsPlugins, Resolver
from webhook.types import Resolution

# Outcomes, as counted by the metrics: mutated (a patch was sent), unchanged (a Pod we
# looked at but had nothing to add), skipped (not a Pod CREATE), error (internal failure).
# timeout (the review budget ran out: allowed, no patch).
MUTATED, UNCHANGED, SKIPPED, ERROR, TIMEOUT = "mutated", "unchanged", "skipped", "error", "timeout"


class Decision(msgspec.Struct, gc=False):  # one per review: a Struct, see AdmissionRequest
    response: AdmissionResponse
    outcome: str
    resolution: Resolution | None = None
    error: str | None = None


class PendingReview(msgspec.Struct, gc=False):
    """A review the rules did not answer: what :meth:`PodMutator.finish` needs to ask the plugins."""

    request: AdmissionRequest
    pod: PodObject
    allow: AdmissionResponse
    namespace: str | None
    plugins: PluginSet | AsyncPluginSet
    deadline: float | None


class PodMutator:
    def __init__(
        self,
        resolver: Resolver,
        plugins: Callable[[], PluginSet | AsyncPluginSet],
        prefix: str = DEFAULT_PREFIX,
        operations: frozenset[str] = frozenset({"CREATE"}),
        budget_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.resolver = resolver
        self.plugins = plugins
        self.patches = PatchBuilder(prefix)  # owns the prefix: the patch is the only thing that uses it
        self.operations = operations
        self.budget_seconds = budget_seconds
        self.clock = clock

    def handle(self, request: AdmissionRequest) -> Decision:
        """Both steps in one synchronous call (offline doors; plugin sets that run in place)."""
        decided = self.decide(request)
        if type(decided) is not PendingReview:
            return decided  # type: ignore[return-value]
        try:
            meta = decided.pod.meta
            found = self.resolver.by_plugins(meta, decided.namespace, decided.plugins,  # type: ignore[arg-type]
                                             decided.deadline, self.clock)
            found = self.resolver.after_plugins(meta, found)
            return self._conclude(decided.pod, decided.allow, decided.deadline, found)
        except Exception as exc:  # never let our own failure break a Pod creation
            return Decision(decided.allow, ERROR, error=f"{type(exc).__name__}: {exc}")

    def decide(self, request: AdmissionRequest) -> Decision | PendingReview:
        """The synchronous step: a Decision, or a PendingReview when the plugins must be asked."""
        allow = AdmissionResponse(request.api_version, request.uid)
        if not request.is_pod or request.operation not in self.operations:
            return Decision(allow, SKIPPED)
        obj = request.object
        pod = obj if type(obj) is PodObject else PodObject.of(obj) if isinstance(obj, dict) else None
        if pod is None:
            return Decision(allow, UNCHANGED)
        try:
            meta = pod.meta
            deadline = self.clock() + self.budget_seconds if self.budget_seconds else None
            plugins = self.plugins()
            found = self.resolver.resolve_fast(meta, plugins)
            if type(found) is NeedsPlugins:
                return PendingReview(request, pod, allow, meta.namespace or request.namespace, plugins, deadline)
            return self._conclude(pod, allow, deadline, found)  # type: ignore[arg-type]
        except Exception as exc:  # never let our own failure break a Pod creation
            return Decision(allow, ERROR, error=f"{type(exc).__name__}: {exc}")

    async def finish(self, pending: PendingReview) -> Decision:
        """The step the server awaits: ask the plugins (in their host), then decide as :meth:`decide` would."""
        try:
            found = await self.resolver.resolve_slow(pending.pod.meta, pending.namespace, pending.plugins,
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
        patch = self.patches.build(resolution, pod.meta.annotations, pod.has_metadata)
        if patch is None:
            return Decision(allow, UNCHANGED, resolution)
        allow.patch = patch
        return Decision(allow, MUTATED, resolution)
