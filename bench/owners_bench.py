"""Owner lookup at cluster scale: cache memory, time to first sync, lookup cost per review.

Run by `make bench`, or alone: ``python -m bench.owners_bench [replicasets]`` (default 100,000).
A fake API (tests/fakeapi.py) in a child process holds 100,000 ReplicaSets, 20,000 Jobs and the
other kinds in proportion (see :func:`cluster_counts`), each with the metadata a real object
carries (labels, annotations, a managedFields entry); this process runs the real owner caches
against it over loopback HTTP, so its memory growth is the caches' own.

Measured here, in-process: RSS growth of the caches (after a full collection and handing freed
heap back to the OS, so parse garbage does not count) and their retained size by
``sys.getsizeof``; wall time from start to every cache synced (six list streams in parallel,
pages of 500); lookup cost per review (the wait check plus the chain walk, on Pods of random
ReplicaSets); and the whole review path (decode, resolve, patch, encode) of everyday Pods with
lookup on against lookup off, alternated in the same run. That last one is the CPU per review,
not a wrk throughput over HTTPS (the server bench measures that for lookup off); the review path
is what lookup adds to, and the rest of a request does not change with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import multiprocessing
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.pods import NAMESPACE, review_bodies
from bench.targets import Target
from webhook import admission
from webhook.informer import OwnerCaches
from webhook.mutate import PodMutator
from webhook.owners import RESOURCES, OwnerIndex, OwnerLookup
from webhook.plugins import EMPTY
from webhook.resolver import Resolver
from webhook.types import PodMeta

TARGET_MIB = 40.0
TARGET_LOOKUP_US = 5.0
TARGET_THROUGHPUT_RATIO = 0.9
NAMESPACES = 200


def cluster_counts(replicasets: int) -> dict[str, int]:
    """The issue's proportions: per 100,000 ReplicaSets (Deployments keep ~7 old ones), 20,000 Jobs
    (4,000 CronJobs keep ~4 each, the rest made by hand or by tools), 15,000 Deployments, 3,000
    StatefulSets, 500 DaemonSets."""
    scale = replicasets / 100_000
    return {"ReplicaSet": replicasets, "Job": int(20_000 * scale), "Deployment": int(15_000 * scale),
            "StatefulSet": int(3_000 * scale), "DaemonSet": int(500 * scale), "CronJob": int(4_000 * scale)}


def uid(kind: str, name: str, namespace: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{kind}/{name}"))


_LABELS = {"app.kubernetes.io/name": "svc", "app.kubernetes.io/part-of": "shop", "team": "payments"}
_ANNOTATIONS = {"deployment.kubernetes.io/revision": "7", "deployment.kubernetes.io/desired-replicas": "3",
                "deployment.kubernetes.io/max-replicas": "4"}
_MANAGED = [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1",
             "time": "2026-11-20T10:12:44Z", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:deployment.kubernetes.io/revision": {}},
                                         "f:labels": {".": {}, "f:app.kubernetes.io/name": {}, "f:team": {}},
                                         "f:ownerReferences": {".": {}}},
                          "f:spec": {"f:replicas": {}, "f:selector": {}, "f:template": {}}}}]


def objects(counts: dict[str, int]) -> list[tuple[str, dict[str, Any]]]:
    """(kind, object) for the whole fake cluster; nested maps are shared (the fake only serialises them)."""
    api = {r.kind: r.api_version for r in RESOURCES}
    out: list[tuple[str, dict[str, Any]]] = []

    def add(kind: str, name: str, ns: str, owner: tuple[str, str] | None) -> None:
        meta: dict[str, Any] = {"name": name, "namespace": ns, "uid": uid(kind, name, ns),
                                "creationTimestamp": "2026-11-20T10:12:44Z", "generation": 1,
                                "labels": _LABELS, "annotations": _ANNOTATIONS, "managedFields": _MANAGED}
        if owner is not None:
            okind, oname = owner
            meta["ownerReferences"] = [{"apiVersion": api.get(okind, "example.com/v1"), "kind": okind, "name": oname,
                                        "uid": uid(okind, oname, ns), "controller": True,
                                        "blockOwnerDeletion": True}]
        out.append((kind, {"apiVersion": api[kind], "kind": kind, "metadata": meta, "spec": {"replicas": 1}}))

    deployments = counts["Deployment"]
    for i in range(deployments):
        add("Deployment", f"svc-{i}", f"ns-{i % NAMESPACES}", None)
    for i in range(counts["ReplicaSet"]):
        d = i % max(1, deployments)
        add("ReplicaSet", f"svc-{d}-{i:08x}", f"ns-{d % NAMESPACES}", ("Deployment", f"svc-{d}"))
    add("Deployment", "checkout", NAMESPACE, None)  # the everyday Pod of bench/pods.py, owner included
    out.append(("ReplicaSet", {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {
        "name": "checkout-7c5ddbdf54", "namespace": NAMESPACE,
        "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, "checkout-7c5ddbdf54")),
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout",
                             "uid": uid("Deployment", "checkout", NAMESPACE), "controller": True}]}}))
    cronjobs = counts["CronJob"]
    for i in range(cronjobs):
        add("CronJob", f"cron-{i}", f"ns-{i % NAMESPACES}", None)
    for i in range(counts["Job"]):
        if i < cronjobs * 4:
            c = i % max(1, cronjobs)
            add("Job", f"cron-{c}-{29_919_360 + i}", f"ns-{c % NAMESPACES}", ("CronJob", f"cron-{c}"))
        else:
            add("Job", f"job-{i}", f"ns-{i % NAMESPACES}", None)
    for i in range(counts["StatefulSet"]):
        add("StatefulSet", f"db-{i}", f"ns-{i % NAMESPACES}", ("PostgresCluster", f"pg-{i}") if i % 3 == 0 else None)
    for i in range(counts["DaemonSet"]):
        add("DaemonSet", f"agent-{i}", f"ns-{i % NAMESPACES}", None)
    return out


def serve_fake(counts: dict[str, int], ready: Any, stop: Any) -> None:
    """The child: a FakeAPI holding the cluster, until told to stop."""
    from tests.fakeapi import FakeAPI

    gvr = {r.kind: (r.group, r.version, r.plural) for r in RESOURCES}
    with FakeAPI() as api:
        for kind, obj in objects(counts):
            api.seed(gvr[kind], obj)
        ready.send(api.url)
        stop.recv()


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def settle() -> None:
    gc.collect()
    with contextlib.suppress(OSError):  # not glibc: RSS then also holds freed heap
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def retained_bytes(index: OwnerIndex) -> int:
    """The stores' own size: each dict, its keys and its non-empty values ("" is one shared object)."""
    total = 0
    for resource in index.resources:
        store = index.entries(resource)
        total += sys.getsizeof(store)
        for key, value in store.items():
            total += sys.getsizeof(key) + (sys.getsizeof(value) if value else 0)
    return total


def sample_pods(counts: dict[str, int], n: int) -> list[PodMeta]:
    """Pods of random ReplicaSets, as the rules and the lookup see them."""
    rng = random.Random(17)
    deployments = max(1, counts["Deployment"])
    pods = []
    for _ in range(n):
        i = rng.randrange(counts["ReplicaSet"])
        d = i % deployments
        name, ns = f"svc-{d}-{i:08x}", f"ns-{d % NAMESPACES}"
        ref = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name, "uid": uid("ReplicaSet", name, ns),
               "controller": True, "blockOwnerDeletion": True}
        pods.append(PodMeta(ns, {"pod-template-hash": f"{i:08x}"}, None, [ref]))
    return pods


def per_call(fn: Any, items: list[Any], rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, (time.perf_counter() - t0) / len(items))
    return best


async def review_rates(index: OwnerIndex, rounds: int = 7, per_round: int = 20_000) -> tuple[float, float]:
    """Everyday reviews per second, whole review path, lookup off and on, alternated; best of each."""
    bodies = review_bodies("everyday", 4096, 64)
    off = PodMutator(Resolver(), lambda: EMPTY, budget_seconds=0.5)
    on = PodMutator(Resolver(owners=index), lambda: EMPTY, budget_seconds=0.5, owner_wait_seconds=0.1)
    probe = on.handle(admission.decode_for_mutation(bodies[0]))
    assert probe.resolution is not None and probe.resolution.resolved_by == "owners:exact", probe
    best_off = best_on = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(per_round):
            admission.encode(off.handle(admission.decode_for_mutation(bodies[i & 63])).response)
        best_off = max(best_off, per_round / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for i in range(per_round):
            admission.encode((await on.handle_async(admission.decode_for_mutation(bodies[i & 63]))).response)
        best_on = max(best_on, per_round / (time.perf_counter() - t0))
    return best_off, best_on


def run(replicasets: int) -> tuple[dict[str, float], dict[str, int]]:
    counts = cluster_counts(replicasets)
    ctx = multiprocessing.get_context("fork")
    ready_recv, ready_send = ctx.Pipe(False)
    stop_recv, stop_send = ctx.Pipe(False)
    child = ctx.Process(target=serve_fake, args=(counts, ready_send, stop_recv), daemon=True)
    child.start()
    try:
        url = ready_recv.recv()
        from tests.fakeapi import api_client

        client = api_client(url)
        settle()
        before = rss_bytes()
        caches = OwnerCaches(client)
        t0 = time.perf_counter()
        caches.start()
        while not caches.synced():
            time.sleep(0.01)
        sync_s = time.perf_counter() - t0
        caches.stop()  # the watches: the numbers below are the caches' alone
        settle()
        rss = rss_bytes() - before
        index = caches.index
        objects_cached = sum(index.size(r) for r in RESOURCES)
        pods = sample_pods(counts, 100_000)
        lookup = OwnerLookup(index, Resolver().accept_type)
        walk = per_call(lookup.resolve, pods)
        pending = per_call(lookup.pending, pods)
        rules = per_call(Resolver().resolve_pod, pods)
        with_lookup = per_call(Resolver(owners=index).resolve_pod, pods)
        off, on = asyncio.run(review_rates(index))
    finally:
        stop_send.send(True)
        child.join(30)
    results = {"sync_s": sync_s, "rss_mib": rss / 2**20, "retained_mib": retained_bytes(index) / 2**20,
               "walk_us": walk * 1e6, "pending_us": pending * 1e6, "rules_us": rules * 1e6,
               "with_lookup_us": with_lookup * 1e6, "off_rps": off, "on_rps": on, "objects": objects_cached}
    return results, counts


def main(replicasets: int = 100_000) -> list[Target]:
    results, counts = run(replicasets)
    r = results
    print("fake API (child process): " + ", ".join(f"{n:,} {k}s" for k, n in counts.items()))
    print(f"{'objects cached':<44} {int(r['objects']):>12,}")
    print(f"{'time to first sync (6 lists in parallel)':<44} {r['sync_s']:>10.2f} s")
    print(f"{'caches: RSS growth':<44} {r['rss_mib']:>10.1f} MiB")
    print(f"{'caches: retained (sys.getsizeof)':<44} {r['retained_mib']:>10.1f} MiB")
    lookup_us = r["walk_us"] + r["pending_us"]
    print(f"{'lookup per review: wait check + chain walk':<44} {lookup_us:>10.2f} µs"
          f"  ({r['pending_us']:.2f} + {r['walk_us']:.2f})")
    print(f"{'resolve_pod, rules only (lookup off)':<44} {r['rules_us']:>10.2f} µs")
    print(f"{'resolve_pod, lookup on':<44} {r['with_lookup_us']:>10.2f} µs")
    ratio = r["on_rps"] / r["off_rps"]
    print(f"{'review path, everyday 4 KB, lookup off':<44} {r['off_rps']:>10,.0f} reviews/s")
    print(f"{'review path, everyday 4 KB, lookup on':<44} {r['on_rps']:>10,.0f} reviews/s  ({ratio:.3f} x off)")
    return [
        Target(f"owner caches at {replicasets:,} ReplicaSets: RSS <= {TARGET_MIB:g} MiB",
               f"{r['rss_mib']:.1f} MiB RSS ({r['retained_mib']:.1f} MiB retained)", r["rss_mib"] <= TARGET_MIB),
        Target(f"owner lookup per review <= {TARGET_LOOKUP_US:g} µs", f"{lookup_us:.2f} µs",
               lookup_us <= TARGET_LOOKUP_US),
        Target(f"everyday review path with lookup >= {TARGET_THROUGHPUT_RATIO} x lookup off (in-process)",
               f"{ratio:.3f} x", ratio >= TARGET_THROUGHPUT_RATIO),
        Target("owner caches: time to first sync (reported)", f"{r['sync_s']:.2f} s", True),
    ]


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
