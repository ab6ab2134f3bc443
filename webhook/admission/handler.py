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
from webhook.outcomes import ReviewOutcome
from webhook.plugins import PluginSet
from webhook.resolution.model import Resolution
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
    ) -> None:
        self.resolver = resolver
        self.plugins = plugins
        # Owns the prefix and the OpenTelemetry switch: the patch is the only thing that uses them.
        self.patches = PatchBuilder(prefix, otel=otel_annotations)
        self.operations = operations
        self.budget_seconds = budget_seconds
        self.clock = clock

    def handle(self, request: AdmissionRequest) -> Decision:
        allow = AdmissionResponse(request.api_version, request.uid)
        if not request.is_pod or request.operation not in self.operations:
            return Decision(allow, SKIPPED)
        pod = request.object
        if pod is None:
            return Decision(allow, UNCHANGED)
        try:
            return self._mutate(request, pod, allow)
        except Exception as exc:  # never let our own failure break a Pod creation
            return Decision(allow, ERROR, error=f"{type(exc).__name__}: {exc}")

    def _mutate(self, request: AdmissionRequest, pod: PodObject, allow: AdmissionResponse) -> Decision:
        meta = pod.meta
        namespace = meta.namespace or request.namespace
        deadline = self.clock() + self.budget_seconds if self.budget_seconds else None
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
