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
import threading
from collections.abc import Callable
from dataclasses import dataclass

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

INTERMEDIATE = frozenset({("apps", "ReplicaSet"), ("batch", "Job")})


@dataclass(frozen=True, slots=True)
class Ref:
    """A controller owner reference: what the chain follows."""

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


def controller_ref(owner_refs: object) -> Ref | None:
    """The Pod's reference marked ``controller: true``, well formed, or None."""
    if type(owner_refs) is not list:
        return None
    for ref in owner_refs:
        if type(ref) is dict and ref.get("controller") is True:
            api_version, kind, name, uid = ref.get("apiVersion"), ref.get("kind"), ref.get("name"), ref.get("uid")
            if type(api_version) is str and type(kind) is str and type(name) is str and type(uid) is str:
                return Ref(api_version, kind, name, uid) if kind and name and uid else None
            return None
    return None


class OwnerIndex:
    """The caches: per resource, ``uid -> ""`` (no controller) or a packed controller reference.

    Packed as ``<code><owner uid>\\0<owner name>``, where ``code`` is one character standing for
    the owner's (apiVersion, kind): one string per object instead of a tuple of four, which is
    what keeps a cache of 100,000 ReplicaSets small. Writers are one thread per resource.
    """

    def __init__(self, resources: tuple[Resource, ...] = RESOURCES) -> None:
        self.resources = resources
        self._stores: dict[tuple[str, str], dict[str, str]] = {(r.group, r.kind): {} for r in resources}
        self._synced: dict[tuple[str, str], bool] = {(r.group, r.kind): False for r in resources}
        self._healthy: dict[tuple[str, str], bool] = {(r.group, r.kind): False for r in resources}
        self._codes: dict[tuple[str, str], str] = {}
        self._kinds: list[tuple[str, str]] = []
        self._lock = threading.Lock()  # owner codes and waiters; never taken by a read that hits
        self._waiters: dict[str, list[Callable[[], None]]] = {}
        self.counts: dict[str, int] = dict.fromkeys(LOOKUP_RESULTS, 0)

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

    def unpack(self, packed: str) -> Ref | None:
        if not packed:
            return None
        api_version, kind = self._kinds[ord(packed[0]) - 0x21]
        uid, _, name = packed[1:].partition(_SEP)
        return Ref(api_version, kind, name, uid)

    def replace(self, resource: Resource, entries: dict[str, str]) -> None:
        """A complete list: the store becomes ``entries`` at once (readers see old or new, never half)."""
        self._stores[(resource.group, resource.kind)] = entries
        self._synced[(resource.group, resource.kind)] = True
        self._healthy[(resource.group, resource.kind)] = True
        if self._waiters:
            for uid in [u for u in self._waiters if u in entries]:
                self._wake(uid)

    def put(self, resource: Resource, uid: str, packed: str) -> None:
        self._stores[(resource.group, resource.kind)][uid] = packed
        if self._waiters:
            self._wake(uid)

    def delete(self, resource: Resource, uid: str) -> None:
        self._stores[(resource.group, resource.kind)].pop(uid, None)

    def set_healthy(self, resource: Resource, healthy: bool) -> None:
        """False while the watch of ``resource`` is broken: a missing owner is then not waited for."""
        self._healthy[(resource.group, resource.kind)] = healthy

    def _wake(self, uid: str) -> None:
        with self._lock:
            callbacks = self._waiters.pop(uid, ())
        for callback in callbacks:
            callback()

    # --- readers ----------------------------------------------------------------------------

    def size(self, resource: Resource) -> int:
        return len(self._stores[(resource.group, resource.kind)])

    def synced(self, resource: Resource | None = None) -> bool:
        if resource is None:
            return all(self._synced.values())
        return self._synced[(resource.group, resource.kind)]

    def cached(self, group: str, kind: str) -> bool:
        return (group, kind) in self._stores

    def get(self, group: str, kind: str, uid: str) -> str | None:
        store = self._stores.get((group, kind))
        return None if store is None else store.get(uid)

    async def wait_for(self, group: str, kind: str, uid: str, timeout: float) -> bool:
        """Until ``uid`` is in the ``kind`` cache or ``timeout`` seconds pass; never blocks the loop."""
        if timeout <= 0:
            return self.get(group, kind, uid) is not None
        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()

        def wake() -> None:  # on a writer thread
            loop.call_soon_threadsafe(arrived.set)

        with self._lock:  # a writer puts before it takes the lock: we see the entry or it sees us
            if self.get(group, kind, uid) is not None:
                return True
            self._waiters.setdefault(uid, []).append(wake)
        try:
            await asyncio.wait_for(arrived.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                waiting = self._waiters.get(uid)
                if waiting is not None and wake in waiting:
                    waiting.remove(wake)
                    if not waiting:
                        del self._waiters[uid]
        return self.get(group, kind, uid) is not None

    def waiting(self) -> int:
        with self._lock:
            return sum(len(w) for w in self._waiters.values())

    def drain_counts(self) -> dict[str, int]:
        """The lookups counted since the last drain (metrics flush them in bulk)."""
        counts, self.counts = self.counts, dict.fromkeys(LOOKUP_RESULTS, 0)
        return counts

    def store_state(self, group: str, kind: str) -> tuple[bool, bool]:
        key = (group, kind)
        return self._synced[key], self._healthy[key]


AcceptType = Callable[[str], "str | None"]


class OwnerLookup:
    """Resolves a Pod from the caches; see the module docstring for the chain rules."""

    def __init__(self, index: OwnerIndex, accept_type: AcceptType) -> None:
        self.index = index
        self.accept_type = accept_type

    def pending(self, pod: PodMeta) -> Ref | None:
        """The Pod's controller when it is worth waiting for: of a cached kind, its cache synced and
        its watch healthy, and not in the cache yet (created a moment before the Pod). Not counted."""
        ref = controller_ref(pod.owner_references)
        if ref is None:
            return None
        group = ref.group
        if not self.index.cached(group, ref.kind):
            return None
        synced, healthy = self.index.store_state(group, ref.kind)
        if not (synced and healthy) or self.index.get(group, ref.kind, ref.uid) is not None:
            return None
        return ref

    def resolve(self, pod: PodMeta) -> Resolution | None:
        """The exact answer, or None (counted as miss or fallback) for the rules to answer."""
        ref = controller_ref(pod.owner_references)
        if ref is None:
            return None
        index = self.index
        group, kind = ref.group, ref.kind
        if not index.cached(group, kind):
            return None  # not a kind we cache (a custom resource, ReplicationController): the rules know it
        counts = index.counts
        synced, healthy = index.store_state(group, kind)
        packed = index.get(group, kind, ref.uid) if synced else None
        if packed is None:
            counts[MISS if synced and healthy else FALLBACK] += 1
            return None
        workload = ref
        wtype = kind
        owner = index.unpack(packed)
        if owner is not None and (group, kind) in INTERMEDIATE:
            accepted = self.accept_type(owner.kind)
            if accepted is not None:
                workload, wtype = owner, accepted
        root = self.root(workload, owner if workload is ref else None)
        counts[HIT] += 1
        return Resolution(wtype, workload.name, None, EXACT, format_owner(root) if root is not workload else None)

    def root(self, start: Ref, known_owner: Ref | None = None) -> Ref:
        """Follow controller references from ``start`` while the owner is cached; the last one reached."""
        current = start
        owner = known_owner
        for _ in range(MAX_DEPTH):
            if owner is None:
                if not self.index.cached(current.group, current.kind):
                    return current
                packed = self.index.get(current.group, current.kind, current.uid)
                if not packed:  # not cached yet (we stop here) or no controller (the top)
                    return current
                owner = self.index.unpack(packed)
                if owner is None:
                    return current
            current, owner = owner, None
        return current
