"""Throughput and memory of audit and backfill over the paginated fake API (tests/support/fakeapi.py).

Run by `make bench`, or alone: ``python -m bench.audit_bench [pods ...]``. The fake API
and the client share one machine (and the GIL of one process), so the numbers are a floor for
the client side, not a statement about a real API server, where backfill is bounded by --qps.
"""

from __future__ import annotations

import io
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.fakeapi import FakeCluster, serve
from tests.support.podgen import make_pods
from webhook.cluster.pods import ListScope, LiveLister
from webhook.commands import audit, backfill
from webhook.commands.inputs import cluster_pods
from webhook.commands.progress import Progress
from webhook.plugins import EMPTY
from webhook.resolution.resolver import Resolver

PREFIX = "workload-tagger.io/"
PAGE = 500


def one(n: int) -> tuple[int, float, float, int, float, float]:
    cluster = FakeCluster([g.pod for g in make_pods(n)])
    resolver = Resolver()
    with serve(cluster) as api:
        t0 = time.perf_counter()
        report = audit.build_report(cluster_pods(LiveLister(api, ListScope(None, PAGE))), resolver, EMPTY, PREFIX)
        t_audit = time.perf_counter() - t0
        tracemalloc.start()
        audit.build_report(cluster_pods(LiveLister(api, ListScope(None, PAGE))), resolver, EMPTY, PREFIX)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        patcher = backfill.Patcher(api, resolver, EMPTY, PREFIX, overwrite_stale=False)
        t0 = time.perf_counter()
        result = backfill.backfill(
            cluster_pods(LiveLister(api, ListScope(None, PAGE))),
            resolver,
            EMPTY,
            PREFIX,
            patcher=patcher,
            overwrite_stale=False,
            progress=Progress(io.StringIO(), tty=False),
        )
        t_backfill = time.perf_counter() - t0
    assert report.total == n
    return n, t_audit, n / t_audit, result.counts[backfill.PATCHED], t_backfill, peak / 2**20


def main(sizes: list[int] | None = None) -> None:
    sizes = sizes or [1000, 10000]
    print(
        f"{'pods':>7} {'audit s':>8} {'audit pods/s':>13} {'patched':>8} {'backfill s':>11} {'peak MiB':>9}"
    )
    for n in sizes:
        pods, ta, rate, patched, tb, peak = one(n)
        print(f"{pods:>7} {ta:>8.2f} {rate:>13.0f} {patched:>8} {tb:>11.2f} {peak:>9.2f}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]])
