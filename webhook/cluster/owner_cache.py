"""Metadata caches of the owner kinds: per cached resource (ReplicaSets, Jobs, Deployments,
StatefulSets, DaemonSets, CronJobs) one dict ``uid -> packed controller reference``; nothing else
of an object is kept (its own kind is its store's, its name is in the reference that points at it).

Filled by :mod:`webhook.cluster.informer` threads (or one list, for the CLI doors) and read by the
event loop; single-key dict reads and writes are atomic under the GIL, and a relist replaces a
whole store by one assignment, so readers never take a lock. The chain itself is walked by
:mod:`webhook.resolution.owners`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

HIT, MISS, FALLBACK = "hit", "miss", "fallback"
LOOKUP_RESULTS = (HIT, MISS, FALLBACK)
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
