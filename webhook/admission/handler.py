"""The Pod mutation handler: an AdmissionRequest in, an AdmissionResponse and an outcome out.

Never denies: anything that goes wrong inside (a bug, a plugin failure that escaped the
engine) yields "allowed, no patch" with outcome ``error``; the server logs and counts it.

Time budget: a review must be answered well inside the webhook's ``timeoutSeconds``. The hot
path is synchronous, so nothing can pre-empt a running plugin; the budget holds because (1) the
engine bounds each plugin call by its Lua instruction budget, (2) the deadline passed down is
checked before each further plugin is started (by the plugin set, and again by the resolver), and
(3) an answer that arrives after the deadline is dropped here: the review is answered "allowed,
no patch" with outcome ``timeout``. Worst case is the budget plus one plugin call.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from webhook.admission.patch import DEFAULT_PREFIX, PatchBuilder
from webhook.admission.review import AdmissionRequest, AdmissionResponse, PodObject
from webhook.cluster.owner_cache import Ref
from webhook.outcomes import ReviewOutcome
from webhook.plugins import PluginSet
from webhook.resolution.model import Resolution
from webhook.resolution.owners import DEFERRED_MISSES
from webhook.resolution.resolver import Resolver

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


class PodMutator:
    def __init__(
        self,
        resolver: Resolver,
        plugins: Callable[[], PluginSet],
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
        # Waiting for a missing owner happens only in handle_async, and only with owner caches.
        self.owner_wait_seconds = owner_wait_seconds if resolver.owners is not None else 0.0

    async def handle_async(self, request: AdmissionRequest) -> Decision:
        """:meth:`handle`, after a bounded wait for a Pod's owner the owner caches have not seen yet.

        The seam between the synchronous resolution and the owner caches: the lookup itself never
        waits (it reads dicts). The first, synchronous pass runs with misses deferred: when the
        Pod's controller is of a cached kind whose watch is healthy but is not in the cache yet
        (created a moment before the Pod), the lookup leaves it in ``owners.DEFERRED_MISSES`` (a
        context variable: per review task) instead of counting a miss.
        Only then does the review await that uid's arrival, at most ``owner_wait_seconds`` and at
        most half the review budget (the rest of the review keeps its time), while other reviews run
        on the loop; then :meth:`handle` answers again, exactly or by the rules. Everyday reviews
        take the first pass only.
        """
        started = self.clock()
        owners = self.resolver.owners
        if owners is None or self.owner_wait_seconds <= 0:
            return self.handle(request, started)
        missed: list[Ref] = []
        token = DEFERRED_MISSES.set(missed)
        try:
            decision = self.handle(request, started)
        finally:
            DEFERRED_MISSES.reset(token)
        if not missed:
            return decision
        wait = self.owner_wait_seconds
        if self.budget_seconds:
            wait = min(wait, self.budget_seconds / 2)
        await owners.index.wait_for(missed[0], wait)
        return self.handle(request, started)

    def handle(self, request: AdmissionRequest, started: float | None = None) -> Decision:
        allow = AdmissionResponse(request.api_version, request.uid)
        if not request.is_pod or request.operation not in self.operations:
            return Decision(allow, SKIPPED)
        pod = request.object
        if pod is None:
            return Decision(allow, UNCHANGED)
        try:
            return self._mutate(request, pod, allow, started)
        except Exception as exc:  # never let our own failure break a Pod creation
            return Decision(allow, ERROR, error=f"{type(exc).__name__}: {exc}")

    def _mutate(
        self, request: AdmissionRequest, pod: PodObject, allow: AdmissionResponse, started: float | None = None
    ) -> Decision:
        meta = pod.meta
        namespace = meta.namespace or request.namespace
        begun = self.clock() if started is None else started
        deadline = begun + self.budget_seconds if self.budget_seconds else None
        resolution = self.resolver.resolve_pod(meta, namespace, self.plugins(), deadline, self.clock)
        if deadline is not None and self.clock() > deadline:
            return Decision(allow, TIMEOUT, error="review budget exceeded: answered without a patch")
        if resolution is None:
            return Decision(allow, UNCHANGED)
        patch = self.patches.build(resolution, meta.annotations, pod.has_metadata)
        if patch is None:
            return Decision(allow, UNCHANGED, resolution)
        refused = patch.refusal(meta.annotations)
        if refused is not None:
            return Decision(allow, UNPATCHABLE, resolution, refused=refused)
        allow.patch = patch
        return Decision(allow, MUTATED, resolution)
