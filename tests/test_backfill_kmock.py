"""audit and backfill through the real kubernetes client against kmock's Kubernetes emulator.

kmock answers a list with every object at once (it ignores ``limit``), so this covers the
single-page path and kmock's own merge semantics; pagination and faults are covered with
tests/support/fakeapi.py in test_audit.py and test_backfill.py.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

from kubernetes import client as k8s

from tests.support.podgen import make_pods, wanted
from webhook.cluster.client import core_api
from webhook.cluster.pods import ListScope, LiveLister
from webhook.commands import audit, backfill
from webhook.commands.inputs import cluster_pods
from webhook.commands.progress import Progress
from webhook.plugins import EMPTY
from webhook.resolution.resolver import Resolver

PREFIX = "workload-tagger.io/"


async def test_audit_and_backfill_against_kmock(kmock: Any) -> None:
    gen = make_pods(230)
    kmock.resources["v1/pods"] = kmock.ResourceInfo(kind="Pod", namespaced=True)
    for i, g in enumerate(gen):
        g.pod["metadata"]["resourceVersion"] = str(100 + i)
        kmock.objects["v1/pods", g.pod["metadata"]["namespace"], g.pod["metadata"]["name"]] = g.pod
    conf = k8s.Configuration()
    conf.host = str(kmock.url).rstrip("/")
    api = core_api(conf)

    def work() -> tuple[audit.AuditReport, backfill.BackfillResult, audit.AuditReport]:
        resolver = Resolver()
        before = audit.build_report(cluster_pods(LiveLister(api, ListScope(None, 100))), resolver, EMPTY, PREFIX)
        patcher = backfill.Patcher(api, resolver, EMPTY, PREFIX, overwrite_stale=False)
        result = backfill.backfill(
            cluster_pods(LiveLister(api, ListScope(None, 100))),
            resolver,
            EMPTY,
            PREFIX,
            patcher=patcher,
            overwrite_stale=False,
            progress=Progress(io.StringIO(), tty=False),
        )
        after = audit.build_report(cluster_pods(LiveLister(api, ListScope(None, 100))), resolver, EMPTY, PREFIX)
        return before, result, after

    try:
        before, result, after = await asyncio.to_thread(work)
    finally:
        api.api_client.close()
    assert before.total == after.total == 230
    need = [g for g in gen if g.truth.wtype and g.state in ("missing", "partial", "user")]
    assert (
        result.counts[backfill.PATCHED]
        == len(need)
        == before.status["missing"] + sum(1 for g in gen if g.state == "user")
    )
    assert after.status["missing"] == 0
    for g in need:
        stored = kmock.objects["v1/pods", g.pod["metadata"]["namespace"], g.pod["metadata"]["name"]]
        annotations = stored["metadata"]["annotations"]
        for key, value in wanted(g.truth).items():
            assert annotations[key] == (
                value if g.state != "user" or not key.endswith("-name") else "set-by-hand"
            )
    patches = [r for r in kmock if r.method == "PATCH"]
    assert len(patches) == len(need)
    assert {r.headers.get("Content-Type") for r in patches} == {"application/merge-patch+json"}
