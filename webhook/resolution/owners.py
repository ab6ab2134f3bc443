"""Exact owners: a Pod's controller chain, walked through metadata caches of the owner kinds.

:class:`OwnerIndex` holds, per cached resource (ReplicaSets, Jobs, Deployments, StatefulSets,
DaemonSets, CronJobs), one dict ``uid -> packed controller reference``: nothing else of an
object is kept (its own kind is its store's, its name is in the reference that points at it).
The caches are :class:`webhook.cluster.owner_cache.OwnerIndex`.

:class:`OwnerLookup` answers a review from the caches alone (dict reads, no I/O):

- the Pod's controller reference must be of a cached kind, else the rules answer as before;
- ReplicaSet and Job are intermediate: the workload is their controller when its kind is a
  workload type we accept (Deployment, Rollout, CronJob, ...), else the ReplicaSet or Job
  itself; so a Job is a CronJob's only when its controller reference says so;
- the root owner: from the workload, keep following controller references while the current
  owner is of a cached kind and in the cache; the first owner that is not cached (an operator's
  custom resource) or the top of the chain is the root. It is written only when it is not the
  workload itself, as :func:`format_owner` spells it.

Results, counted per lookup (drained into metrics in bulk): ``hit`` (exact answer), ``miss``
(caches healthy, the Pod's owner not in them even after the bounded wait), ``fallback`` (caches
not synced, API unreachable or forbidden). Misses and fallbacks leave the answer to the rules.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

from webhook.cluster.owner_cache import FALLBACK, HIT, MISS, OwnerIndex, Ref
from webhook.resolution.model import Owner, PodMeta, Resolution

EXACT = "owners:exact"
"""``resolved-by`` of an answer read from the owner chain (guessed ones keep ``builtin:<rule>``)."""

MAX_DEPTH = 8
"""Owner chains are two or three deep; the bound only keeps corrupt data from looping."""

_INTERMEDIATE_KINDS = frozenset({"ReplicaSet", "Job"})  # of the cached stores (apps, batch) only


def format_owner(ref: Ref) -> str:
    """``Kind.group/name`` (``Kind/name`` for the core group): kubectl's ``TYPE.GROUP/NAME``, with
    the kind as the objects call themselves; the namespace is the Pod's (owners cannot be elsewhere)."""
    group = ref.group
    return f"{ref.kind}.{group}/{ref.name}" if group else f"{ref.kind}/{ref.name}"


def _controller(owner_refs: object) -> tuple[str, str, str, str] | None:
    """(apiVersion, kind, name, uid) of the controller reference; the hot path's one pass over the list."""
    if type(owner_refs) is not list:
        return None
    for ref in owner_refs:
        if type(ref) is dict and ref.get("controller") is True:
            api_version, kind, name, uid = ref.get("apiVersion"), ref.get("kind"), ref.get("name"), ref.get("uid")
            if type(api_version) is str and type(kind) is str and type(name) is str and type(uid) is str:
                return (api_version, kind, name, uid) if kind and name and uid else None
            return None
    return None


AcceptType = Callable[[str], "str | None"]

DEFERRED_MISSES: ContextVar[list[Ref] | None] = ContextVar("workload_tagger_deferred_owner_misses", default=None)
"""The async seam (``PodMutator.handle_async``): while a review's task holds a list here, a lookup
that misses on healthy caches appends the owner's reference to it instead of counting a miss, so
the review can wait for that owner and ask again. A context variable, not an attribute: each
review runs in its own task, so reviews interleaved on the loop (at any await) never see each
other's."""


class OwnerLookup:
    """Resolves a Pod from the caches; see the module docstring for the chain rules.

    Per review: one pass over the Pod's owner references, one dict probe for the cache, one for
    the entry, and as many more as the chain is deep; nothing is built unless it is returned.
    """

    def __init__(self, index: OwnerIndex, accept_type: AcceptType) -> None:
        self.index = index
        self.accept_type = accept_type
        self._accepted: dict[str, str | None] = {}  # owner kind -> accepted workload type, memoised

    def resolve(self, pod: PodMeta) -> Resolution | None:
        """The exact answer, or None (counted as miss or fallback) for the rules to answer."""
        found = _controller(pod.owner_references)
        if found is None:
            return None
        index = self.index
        store = index.store(found[0], found[1])
        if store is None:
            return None  # not a kind we cache (a custom resource, ReplicationController): the rules know it
        packed = store.entries.get(found[3]) if store.synced else None
        if packed is None:
            if not (store.synced and store.healthy):
                index.counts[FALLBACK] += 1
            else:
                deferred = DEFERRED_MISSES.get()
                if deferred is None:
                    index.counts[MISS] += 1
                else:
                    deferred.append(Ref(*found))
            return None
        workload = found
        wtype = found[1]
        owner = index.unpack(packed)
        if owner is not None and store.resource.kind in _INTERMEDIATE_KINDS:
            accepted = self._accept(owner[1])
            if accepted is not None:
                workload, wtype = owner, accepted
        root = self._root(workload, owner if workload is found else None)
        index.counts[HIT] += 1
        return Resolution(wtype, workload[2], None, EXACT, owner=Owner(*found),
                          root_owner=None if root is workload else format_owner(Ref(*root)))

    def _accept(self, kind: str) -> str | None:
        try:
            return self._accepted[kind]
        except KeyError:
            accepted = self._accepted[kind] = self.accept_type(kind)
            return accepted

    def _root(self, start: tuple[str, str, str, str],
              known_owner: tuple[str, str, str, str] | None) -> tuple[str, str, str, str]:
        """Follow controller references from ``start`` while the owner is cached; the last one reached."""
        current, owner = start, known_owner
        for _ in range(MAX_DEPTH):
            if owner is None:
                store = self.index.store(current[0], current[1])
                packed = store.entries.get(current[3]) if store is not None else None
                if not packed:  # uncached kind, not cached yet (we stop here), or no controller (the top)
                    return current
                owner = self.index.unpack(packed)
                if owner is None:
                    return current
            current, owner = owner, None
        return current
