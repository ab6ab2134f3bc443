"""Exact owners: a Pod's controller chain, walked through metadata caches of the owner kinds.

:class:`OwnerIndex` holds, per cached resource (ReplicaSets, Jobs, Deployments, StatefulSets,
DaemonSets, CronJobs), one dict ``uid -> packed controller reference``: nothing else of an
object is kept (its own kind is its store's, its name is in the reference that points at it).
The stores are filled by :mod:`webhook.informer` threads (or one list, for the CLI doors) and
read by the event loop; single-key dict reads and writes are atomic under the GIL, and a relist
replaces a whole store by one assignment, so readers never take a lock.

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

import asyncio
import contextlib
import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

import msgspec

from webhook.types import PodMeta, Resolution

HIT, MISS, FALLBACK = "hit", "miss", "fallback"
LOOKUP_RESULTS = (HIT, MISS, FALLBACK)
EXACT = "owners:exact"
"""``resolved-by`` of an answer read from the owner chain (guessed ones keep ``builtin:<rule>``)."""

MAX_DEPTH = 8
"""Owner chains are two or three deep; the bound only keeps corrupt data from looping."""

_SEP = "\x00"  # cannot occur in a uid or an object name


@dataclass(frozen=True, slots=True)
class Resource:
    """One cached resource: the API path parts and the kind its objects have."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def path(self) -> str:
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        return f"{prefix}/{self.plural}"


RESOURCES: tuple[Resource, ...] = (
    Resource("apps", "v1", "replicasets", "ReplicaSet"),
    Resource("batch", "v1", "jobs", "Job"),
    Resource("apps", "v1", "deployments", "Deployment"),
    Resource("apps", "v1", "statefulsets", "StatefulSet"),
    Resource("apps", "v1", "daemonsets", "DaemonSet"),
    Resource("batch", "v1", "cronjobs", "CronJob"),
)
"""Exactly what the ClusterRole grants list/watch on (tests/test_manifests.py checks the two agree)."""

_INTERMEDIATE_KINDS = frozenset({"ReplicaSet", "Job"})  # of the cached stores (apps, batch) only


class Ref(msgspec.Struct, frozen=True, gc=False):
    """A controller owner reference: what the chain follows (a Struct: built in C)."""

    api_version: str
    kind: str
    name: str
    uid: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]


def group_of(api_version: str) -> str:
    return api_version.rpartition("/")[0]


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


class _Store:
    """One resource's cache and its state; the object is found by (apiVersion, kind) in one probe."""

    __slots__ = ("entries", "healthy", "resource", "synced")

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self.entries: dict[str, str] = {}
        self.synced = False
        self.healthy = False


class OwnerIndex:
    """The caches: per resource, ``uid -> ""`` (no controller) or a packed controller reference.

    Packed as ``<code><owner uid>\\0<owner name>``, where ``code`` is one character standing for
    the owner's (apiVersion, kind): one string per object instead of a tuple of four, which is
    what keeps a cache of 100,000 ReplicaSets small. Writers are one thread per resource.
    """

    def __init__(self, resources: tuple[Resource, ...] = RESOURCES) -> None:
        self.resources = resources
        self._stores: dict[tuple[str, str], _Store] = {(r.group, r.kind): _Store(r) for r in resources}
        # The same stores by (apiVersion, kind), as references spell them: the hot path's one probe.
        self._by_api: dict[tuple[str, str], _Store] = {
            (r.api_version, r.kind): self._stores[(r.group, r.kind)] for r in resources}
        self._codes: dict[tuple[str, str], str] = {}
        self._kinds: list[tuple[str, str]] = []
        self._lock = threading.Lock()  # owner codes and waiters; never taken by a read that hits
        self._waiters: dict[str, list[Callable[[], None]]] = {}
        self.counts: dict[str, int] = dict.fromkeys(LOOKUP_RESULTS, 0)

    def store(self, api_version: str, kind: str) -> _Store | None:
        """The cache of objects referenced as (apiVersion, kind); any version of a cached group/kind."""
        found = self._by_api.get((api_version, kind))
        if found is None:
            found = self._stores.get((group_of(api_version), kind))
            if found is not None:  # another version of a cached kind (e.g. batch/v1beta1): remember it
                self._by_api[(api_version, kind)] = found
        return found

    # --- writers (informer threads) -------------------------------------------------------

    def pack(self, owner: Ref | None) -> str:
        if owner is None:
            return ""
        key = (owner.api_version, owner.kind)
        code = self._codes.get(key)
        if code is None:
            with self._lock:
                code = self._codes.get(key)
                if code is None:
                    code = chr(0x21 + len(self._kinds))
                    self._kinds.append(key)
                    self._codes[key] = code
        return code + owner.uid + _SEP + owner.name

    def unpack(self, packed: str) -> tuple[str, str, str, str] | None:
        """(apiVersion, kind, name, uid) of a packed reference; None for "no controller"."""
        if not packed:
            return None
        api_version, kind = self._kinds[ord(packed[0]) - 0x21]
        cut = packed.find(_SEP)
        return api_version, kind, packed[cut + 1:], packed[1:cut]

    def replace(self, resource: Resource, entries: dict[str, str]) -> None:
        """A complete list: the store becomes ``entries`` at once (readers see old or new, never half)."""
        store = self._stores[(resource.group, resource.kind)]
        store.entries = entries
        store.synced = store.healthy = True
        if self._waiters:
            with self._lock:  # the loop adds and removes waiters meanwhile
                arrived = [u for u in self._waiters if u in entries]
            for uid in arrived:
                self._wake(uid)

    def put(self, resource: Resource, uid: str, packed: str) -> None:
        self._stores[(resource.group, resource.kind)].entries[uid] = packed
        if self._waiters:
            self._wake(uid)

    def delete(self, resource: Resource, uid: str) -> None:
        self._stores[(resource.group, resource.kind)].entries.pop(uid, None)

    def set_healthy(self, resource: Resource, healthy: bool) -> None:
        """False while the watch of ``resource`` is broken: a missing owner is then not waited for."""
        self._stores[(resource.group, resource.kind)].healthy = healthy

    def _wake(self, uid: str) -> None:
        with self._lock:
            callbacks = self._waiters.pop(uid, ())
        for callback in callbacks:
            callback()

    # --- readers ----------------------------------------------------------------------------

    def size(self, resource: Resource) -> int:
        return len(self._stores[(resource.group, resource.kind)].entries)

    def entries(self, resource: Resource) -> dict[str, str]:
        return self._stores[(resource.group, resource.kind)].entries

    def synced(self, resource: Resource | None = None) -> bool:
        if resource is None:
            return all(s.synced for s in self._stores.values())
        return self._stores[(resource.group, resource.kind)].synced

    def store_state(self, group: str, kind: str) -> tuple[bool, bool]:
        store = self._stores[(group, kind)]
        return store.synced, store.healthy

    def get(self, api_version: str, kind: str, uid: str) -> str | None:
        store = self.store(api_version, kind)
        return None if store is None else store.entries.get(uid)

    async def wait_for(self, ref: Ref, timeout: float) -> bool:
        """Until ``ref`` is in its cache or ``timeout`` seconds pass; never blocks the loop."""
        if timeout <= 0:
            return self.get(ref.api_version, ref.kind, ref.uid) is not None
        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()

        def wake() -> None:  # on a writer thread
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (shutdown): nobody waits
                loop.call_soon_threadsafe(arrived.set)

        with self._lock:  # a writer puts before it takes the lock: we see the entry or it sees us
            if self.get(ref.api_version, ref.kind, ref.uid) is not None:
                return True
            self._waiters.setdefault(ref.uid, []).append(wake)
        try:
            await asyncio.wait_for(arrived.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                waiting = self._waiters.get(ref.uid)
                if waiting is not None and wake in waiting:
                    waiting.remove(wake)
                    if not waiting:
                        del self._waiters[ref.uid]
        return self.get(ref.api_version, ref.kind, ref.uid) is not None

    def waiting(self) -> int:
        with self._lock:
            return sum(len(w) for w in self._waiters.values())

    def drain_counts(self) -> dict[str, int]:
        """The lookups counted since the last drain (metrics flush them in bulk)."""
        counts, self.counts = self.counts, dict.fromkeys(LOOKUP_RESULTS, 0)
        return counts


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
        return Resolution(wtype, workload[2], None, EXACT, None if root is workload else format_owner(Ref(*root)))

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
