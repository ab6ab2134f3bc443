"""Exact owners (issue 17): the owner chain read from metadata caches fed by list+watch.

Everything below goes through the real ``kubernetes`` ApiClient against tests/support/fakeapi.py over
loopback HTTP: paginated PartialObjectMetadata lists, watch events, 410 Gone and relist, a
watch that lags behind a Pod, the API answering 403 or going away mid-run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.factories import owner, pod, review
from tests.support.fakeapi import FakeAPI, FakeCluster, Fault, serve, write_kubeconfig
from tests.support.net import free_port
from tests.support.servers import ServerFactory, TLSFiles, serving
from tests.support.waiting import wait_for
from webhook.admission.handler import PodMutator
from webhook.cluster.backoff import Backoff
from webhook.cluster.informer import LIST_ACCEPT, OwnerCaches, sync_once
from webhook.cluster.owner_cache import FALLBACK, HIT, MISS, RESOURCES, OwnerIndex, Ref
from webhook.commands import audit, backfill
from webhook.config import Config, load
from webhook.plugins import EMPTY
from webhook.resolution.model import PodMeta, Resolution
from webhook.resolution.owners import DEFERRED_MISSES, EXACT
from webhook.resolution.resolver import Resolver, ResolverSettings
from webhook.resolution.rules import user_rules

GVR = {r.kind: (r.group, r.version, r.plural) for r in RESOURCES}
PREFIX = "workload-tagger.io/"
FAST = Backoff(initial_s=0.05, max_s=0.2)


def uid_of(api_version: str, kind: str, name: str) -> str:
    return str(owner(api_version, kind, name)["uid"])


def workload(kind: str, name: str, controller: tuple[str, str, str] | None = None,
             namespace: str = "default") -> dict[str, Any]:
    """An object of a cached kind, as stored (with a spec the metadata-only client must not receive)."""
    group, version, _ = GVR[kind]
    api_version = f"{group}/{version}"
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": uid_of(api_version, kind, name),
                            "labels": {"app": name}}
    if controller is not None:
        meta["ownerReferences"] = [owner(*controller)]
    return {"apiVersion": api_version, "kind": kind, "metadata": meta,
            "spec": {"template": {"spec": {"containers": [{"name": "main", "image": "x" * 200}]}}}}


def add(api: FakeAPI, obj: dict[str, Any], event: bool = True) -> None:
    gvr = GVR[obj["kind"]]
    if event:
        api.save(gvr, obj)
    else:
        api.seed(gvr, obj)


def pod_of(api_version: str, kind: str, name: str, labels: dict[str, str] | None = None,
           created: str | None = None) -> PodMeta:
    meta = pod(generate_name=f"{name}-", labels=labels, owners=[owner(api_version, kind, name)])["metadata"]
    meta["creationTimestamp"] = created
    return PodMeta.of(meta)






def answer(found: Resolution | None) -> tuple[str, str, str, str | None] | None:
    return None if found is None else (found.workload_type, found.workload_name, found.resolved_by, found.root_owner)


# A small cluster with every chain shape the issue names.
CRON_MINUTES = 29_400_420
SHAPES = [
    workload("Deployment", "web"),
    workload("ReplicaSet", "web-7c5ddbdf54", ("apps/v1", "Deployment", "web")),
    workload("ReplicaSet", "canary-6b7f9c", ("argoproj.io/v1alpha1", "Rollout", "canary")),
    workload("ReplicaSet", "copied-5d9f8b7c6d", ("ops.example.com/v1", "Widget", "w1")),
    workload("ReplicaSet", "bare-rs"),
    workload("CronJob", "nightly"),
    workload("Job", f"nightly-{CRON_MINUTES}", ("batch/v1", "CronJob", "nightly")),
    workload("Job", f"report-{CRON_MINUTES}"),  # named like a CronJob's Job, created by hand
    workload("StatefulSet", "pg", ("postgres-operator.crunchydata.com/v1beta1", "PostgresCluster", "hippo")),
    workload("Deployment", "api", ("platform.example.com/v1", "App", "shop")),
    workload("ReplicaSet", "api-6d4cf56db6", ("apps/v1", "Deployment", "api")),
    workload("DaemonSet", "agent"),
]


@pytest.fixture
def cluster() -> Iterator[FakeAPI]:
    with FakeAPI() as api:
        for obj in SHAPES:
            add(api, obj, event=False)
        yield api


@pytest.fixture
def synced(cluster: FakeAPI) -> Iterator[tuple[FakeAPI, OwnerCaches]]:
    caches = OwnerCaches(cluster.api_client(), watch_timeout_s=2, backoff=FAST, page_size=2)
    caches.start()
    try:
        wait_for(caches.synced, timeout=10.0)
        yield cluster, caches
    finally:
        caches.stop()


CREATED = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(CRON_MINUTES * 60 + 20))}"

CHAIN_CASES = [
    ("deployment", pod_of("apps/v1", "ReplicaSet", "web-7c5ddbdf54", {"pod-template-hash": "7c5ddbdf54"}),
     ("Deployment", "web", EXACT, None)),
    ("rollout-without-its-label", pod_of("apps/v1", "ReplicaSet", "canary-6b7f9c"),
     ("Rollout", "canary", EXACT, None)),
    ("replicaset-owned-by-a-custom-resource", pod_of("apps/v1", "ReplicaSet", "copied-5d9f8b7c6d",
                                                     {"pod-template-hash": "5d9f8b7c6d"}),
     ("ReplicaSet", "copied-5d9f8b7c6d", EXACT, "Widget.ops.example.com/w1")),
    ("bare-replicaset", pod_of("apps/v1", "ReplicaSet", "bare-rs"), ("ReplicaSet", "bare-rs", EXACT, None)),
    ("cronjob-job", pod_of("batch/v1", "Job", f"nightly-{CRON_MINUTES}", created="2020-01-01T00:00:00Z"),
     ("CronJob", "nightly", EXACT, None)),
    ("hand-made-job-named-like-a-cronjobs", pod_of("batch/v1", "Job", f"report-{CRON_MINUTES}", created=CREATED),
     ("Job", f"report-{CRON_MINUTES}", EXACT, None)),
    ("statefulset-of-an-operator", pod_of("apps/v1", "StatefulSet", "pg"),
     ("StatefulSet", "pg", EXACT, "PostgresCluster.postgres-operator.crunchydata.com/hippo")),
    ("deployment-of-an-operator", pod_of("apps/v1", "ReplicaSet", "api-6d4cf56db6", {"pod-template-hash": "6d4cf56db6"}),
     ("Deployment", "api", EXACT, "App.platform.example.com/shop")),
    ("daemonset", pod_of("apps/v1", "DaemonSet", "agent"), ("DaemonSet", "agent", EXACT, None)),
]


@pytest.mark.parametrize("meta,expected", [c[1:] for c in CHAIN_CASES], ids=[c[0] for c in CHAIN_CASES])
def test_exact_answer_for_every_chain_shape(synced: tuple[FakeAPI, OwnerCaches], meta: PodMeta,
                                            expected: tuple[str, str, str, str | None]) -> None:
    _, caches = synced
    assert answer(Resolver(owners=caches.index).resolve_pod(meta)) == expected


def test_the_same_pods_guessed_without_lookup_show_what_it_fixes() -> None:
    """Lookup off: the hand-made Job is a CronJob by its name and time, the Widget's ReplicaSet a Deployment."""
    guesses = {case[0]: answer(Resolver().resolve_pod(case[1])) for case in CHAIN_CASES}
    assert guesses["hand-made-job-named-like-a-cronjobs"] == ("CronJob", "report", "builtin:cronjob", None)
    assert guesses["replicaset-owned-by-a-custom-resource"] == ("Deployment", "copied", "builtin:deployment", None)
    assert guesses["rollout-without-its-label"] == ("ReplicaSet", "canary-6b7f9c", "builtin:replicaset", None)


def test_lists_ask_for_metadata_only_and_follow_pages(synced: tuple[FakeAPI, OwnerCaches]) -> None:
    cluster, caches = synced
    lists = [r for r in cluster.log if r.path.endswith("/replicasets") and "watch" not in r.query]
    assert [r.query.get("continue") is not None for r in lists] == [False, True, True]  # 5 objects, pages of 2
    assert caches.index.size(RESOURCES[0]) == 5

    def watches() -> list[Any]:
        return [r for r in cluster.log if r.path.endswith("/replicasets") and r.query.get("watch") == "true"]

    wait_for(lambda: bool(watches()), timeout=10.0)  # the watch starts right after the list
    assert watches()[0].query["resourceVersion"] and watches()[0].query["allowWatchBookmarks"] == "true"


def test_the_fake_serves_partial_object_metadata_to_that_accept_header(cluster: FakeAPI) -> None:
    """The cache's Accept header gets PartialObjectMetadata (no spec) from the fake, as from an apiserver."""
    api = cluster.api_client()
    method, url, headers, _, _ = api.param_serialize("GET", "/apis/apps/v1/replicasets", query_params=[("limit", "1")],
                                                     header_params={"Accept": LIST_ACCEPT})
    body = json.loads(api.call_api(method, url, header_params=headers).read())
    assert body["kind"] == "PartialObjectMetadataList"
    assert body["items"][0]["kind"] == "PartialObjectMetadata" and "spec" not in body["items"][0]


def test_watch_events_add_change_and_remove_owners(synced: tuple[FakeAPI, OwnerCaches]) -> None:
    cluster, caches = synced
    resolver = Resolver(owners=caches.index)
    add(cluster, workload("Deployment", "late"))
    add(cluster, workload("ReplicaSet", "late-abc", ("apps/v1", "Deployment", "late")))
    meta = pod_of("apps/v1", "ReplicaSet", "late-abc")
    wait_for(lambda: answer(resolver.resolve_pod(meta)) == ("Deployment", "late", EXACT, None), timeout=10.0)
    # adopted by an operator: the ReplicaSet's controller changes
    add(cluster, workload("ReplicaSet", "late-abc", ("ops.example.com/v1", "Widget", "w9")))
    wait_for(lambda: answer(resolver.resolve_pod(meta)) == ("ReplicaSet", "late-abc", EXACT,
                                                            "Widget.ops.example.com/w9"), timeout=10.0)
    cluster.delete_object(GVR["ReplicaSet"], "default", "late-abc")
    wait_for(lambda: answer(resolver.resolve_pod(meta)) == ("ReplicaSet", "late-abc", "builtin:replicaset", None), timeout=10.0)


def test_gone_relists_and_keeps_answering(synced: tuple[FakeAPI, OwnerCaches]) -> None:
    cluster, caches = synced
    informer = caches.informers[0]
    lists_before = informer.lists
    # The watch broke and etcd compacted past its resourceVersion before it came back.
    add(cluster, workload("ReplicaSet", "after-gone", ("apps/v1", "Deployment", "web")), event=False)  # no event
    cluster.expire_next_watch = {"replicasets"}
    cluster.end_watches()
    wait_for(lambda: informer.lists > lists_before, timeout=10.0)
    meta = pod_of("apps/v1", "ReplicaSet", "after-gone")
    wait_for(lambda: answer(Resolver(owners=caches.index).resolve_pod(meta)) == ("Deployment", "web", EXACT, None), timeout=10.0)


def test_forbidden_falls_back_to_the_rules_and_counts_it(cluster: FakeAPI,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    cluster.forbid = {"list", "watch"}
    caches = OwnerCaches(cluster.api_client(), watch_timeout_s=2, backoff=FAST)
    caches.start()
    try:
        wait_for(lambda: sum(1 for r in cluster.log if r.status == 403) >= 12, timeout=10.0)  # every resource, twice
        resolver = Resolver(owners=caches.index)
        meta = pod_of("apps/v1", "ReplicaSet", "web-7c5ddbdf54", {"pod-template-hash": "7c5ddbdf54"})
        assert answer(resolver.resolve_pod(meta)) == ("Deployment", "web", "builtin:deployment", None)
        assert caches.index.drain_counts() == {HIT: 0, MISS: 0, FALLBACK: 1}
        warnings = [r for r in caplog.records if "not allowed to list/watch replicasets.apps" in r.getMessage()]
        assert len(warnings) == 1  # once per outage, not once per retry
        # granted later: the caches sync without a restart
        cluster.forbid = set()
        wait_for(caches.synced, timeout=10.0)
        assert answer(resolver.resolve_pod(meta)) == ("Deployment", "web", EXACT, None)
    finally:
        caches.stop()


def test_api_going_away_mid_run(synced: tuple[FakeAPI, OwnerCaches]) -> None:
    """Known owners keep their exact answers from the cache; new ones get the rules at once (no wait
    while the watch is broken); when the API is back, the watch resumes."""
    cluster, caches = synced
    resolver = Resolver(owners=caches.index)
    for n in range(3):
        cluster.fault("LIST", f"LIST#{cluster.lists + 1 + n}", Fault(drop=True))
    cluster.forbid = {"watch"}  # the API answers nothing useful any more
    cluster.end_watches()
    add(cluster, workload("ReplicaSet", "x-1", ("apps/v1", "Deployment", "x")))
    rs = RESOURCES[0]
    wait_for(lambda: caches.index.store_state(rs.group, rs.kind) == (True, False), timeout=10.0)
    known = pod_of("apps/v1", "ReplicaSet", "web-7c5ddbdf54", {"pod-template-hash": "7c5ddbdf54"})
    assert answer(resolver.resolve_pod(known)) == ("Deployment", "web", EXACT, None)
    new = pod_of("apps/v1", "ReplicaSet", "new-5f5f5f", {"pod-template-hash": "5f5f5f"})
    deferred: list[Ref] = []
    token = DEFERRED_MISSES.set(deferred)  # as a review that may wait does
    try:
        assert answer(resolver.resolve_pod(new)) == ("Deployment", "new", "builtin:deployment", None)
    finally:
        DEFERRED_MISSES.reset(token)
    assert deferred == []  # nothing to wait for on a broken watch
    assert caches.index.drain_counts()[FALLBACK] >= 1
    cluster.forbid = set()
    wait_for(lambda: caches.index.store_state(rs.group, rs.kind) == (True, True), timeout=10.0)
    late = pod_of("apps/v1", "ReplicaSet", "x-1")
    wait_for(lambda: answer(resolver.resolve_pod(late)) == ("Deployment", "x", EXACT, None), timeout=10.0)


def test_config_rules_still_come_first(synced: tuple[FakeAPI, OwnerCaches]) -> None:
    _, caches = synced
    rules = user_rules([{"group": "apps", "kind": "DaemonSet", "type": "Deployment"}], allow_custom_types=False)
    resolver = Resolver(ResolverSettings(extra_rules=rules), owners=caches.index)
    assert answer(resolver.resolve_pod(pod_of("apps/v1", "DaemonSet", "agent"))) == (
        "Deployment", "agent", "config:apps-daemonset", None)


def test_lookups_are_counted_by_result() -> None:
    index = OwnerIndex()
    for resource in RESOURCES:
        index.replace(resource, {})
    rs = RESOURCES[0]
    index.put(rs, uid_of("apps/v1", "ReplicaSet", "a-1"), "")
    resolver = Resolver(owners=index)
    resolver.resolve_pod(pod_of("apps/v1", "ReplicaSet", "a-1"))
    resolver.resolve_pod(pod_of("apps/v1", "ReplicaSet", "b-1"))
    resolver.resolve_pod(pod_of("apps.kruise.io/v1alpha1", "CloneSet", "c"))  # not a cached kind: not a lookup
    index.set_healthy(rs, False)
    resolver.resolve_pod(pod_of("apps/v1", "ReplicaSet", "b-1"))
    assert index.drain_counts() == {HIT: 1, MISS: 1, FALLBACK: 1}


def test_root_owner_annotation_only_when_it_differs(synced: tuple[FakeAPI, OwnerCaches]) -> None:
    _, caches = synced
    mutator = PodMutator(Resolver(owners=caches.index), lambda: EMPTY, prefix=PREFIX)
    from webhook.admission.review import decode_for_mutation

    def ops(obj: dict[str, Any]) -> dict[str, Any]:
        decision = mutator.handle(decode_for_mutation(json.dumps(review(obj)).encode()))
        assert decision.response.patch is not None
        return {op["path"]: op["value"] for op in json.loads(base64.b64decode(decision.response.patch.encoded))}

    sts = pod(name="pg-0", owners=[owner("apps/v1", "StatefulSet", "pg")])
    assert ops(sts)["/metadata/annotations"][PREFIX + "root-owner"] == (
        "PostgresCluster.postgres-operator.crunchydata.com/hippo")
    ds = pod(generate_name="agent-", owners=[owner("apps/v1", "DaemonSet", "agent")])
    assert PREFIX + "root-owner" not in ops(ds)["/metadata/annotations"]


# --- the bounded wait, through the real HTTPS server --------------------------------------------


async def post_review(srv: Any, obj: dict[str, Any]) -> dict[str, str]:
    status, raw = await srv.post("/mutate", json.dumps(review(obj)).encode())
    assert status == 200
    response = json.loads(raw)["response"]
    assert response["allowed"] is True
    if "patch" not in response:
        return {}
    ops = json.loads(base64.b64decode(response["patch"]))
    return {k.removeprefix(PREFIX): v for k, v in ops[0]["value"].items()}


async def test_owner_arriving_during_the_wait_gets_the_exact_answer(
        synced: tuple[FakeAPI, OwnerCaches], start_server: ServerFactory) -> None:
    cluster, caches = synced
    mutator = PodMutator(Resolver(owners=caches.index), lambda: EMPTY, prefix=PREFIX, budget_seconds=10.0,
                         owner_wait_seconds=4.0)
    srv = await start_server(mutator)
    new_pod = pod(generate_name="fresh-", owners=[owner("apps/v1", "ReplicaSet", "fresh-abc")],
                  labels={"pod-template-hash": "abc"})
    loop = asyncio.get_running_loop()
    pending = asyncio.create_task(post_review(srv, new_pod))
    await asyncio.sleep(0.3)  # the review is waiting for the ReplicaSet
    assert not pending.done()
    # meanwhile other reviews are answered at once
    other = await asyncio.wait_for(post_review(srv, pod(name="pg-0", owners=[owner("apps/v1", "StatefulSet", "pg")])), 2)
    assert other["resolved-by"] == EXACT and not pending.done()
    owned = workload("ReplicaSet", "fresh-abc", ("argoproj.io/v1alpha1", "Rollout", "fresh"))
    await loop.run_in_executor(None, add, cluster, owned)  # the watch catches up
    got = await asyncio.wait_for(pending, 5)
    assert (got["workload-type"], got["workload-name"], got["resolved-by"]) == ("Rollout", "fresh", EXACT)


async def test_owner_that_never_arrives_gets_the_rules_after_the_bounded_wait(
        synced: tuple[FakeAPI, OwnerCaches], start_server: ServerFactory) -> None:
    _, caches = synced
    mutator = PodMutator(Resolver(owners=caches.index), lambda: EMPTY, prefix=PREFIX, budget_seconds=10.0,
                         owner_wait_seconds=0.2)
    srv = await start_server(mutator)
    ghost = pod(generate_name="ghost-", owners=[owner("apps/v1", "ReplicaSet", "ghost-abc")],
                labels={"pod-template-hash": "abc"})
    began = time.monotonic()
    got = await asyncio.wait_for(post_review(srv, ghost), 5)
    assert time.monotonic() - began >= 0.2
    assert (got["workload-type"], got["workload-name"], got["resolved-by"]) == ("Deployment", "ghost",
                                                                                 "builtin:deployment")
    assert caches.index.drain_counts()[MISS] == 1
    assert caches.index.waiting() == 0  # nothing left behind
    # The watch catches up later: the ReplicaSet's next Pod gets the exact answer at once.
    cluster = synced[0]
    await asyncio.get_running_loop().run_in_executor(
        None, add, cluster, workload("ReplicaSet", "ghost-abc", ("apps/v1", "Deployment", "ghost")))
    deadline = time.monotonic() + 10
    while caches.index.get("apps/v1", "ReplicaSet", uid_of("apps/v1", "ReplicaSet", "ghost-abc")) is None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    got = await asyncio.wait_for(post_review(srv, ghost), 5)
    assert (got["workload-type"], got["resolved-by"]) == ("Deployment", EXACT)


async def test_the_wait_never_exceeds_half_the_review_budget(synced: tuple[FakeAPI, OwnerCaches]) -> None:
    _, caches = synced
    mutator = PodMutator(Resolver(owners=caches.index), lambda: EMPTY, prefix=PREFIX, budget_seconds=0.2,
                         owner_wait_seconds=30.0)
    from webhook.admission.review import decode_for_mutation

    ghost = pod(generate_name="g-", owners=[owner("apps/v1", "ReplicaSet", "g-1")])
    began = time.monotonic()
    decision = await asyncio.wait_for(mutator.handle_async(decode_for_mutation(json.dumps(review(ghost)).encode())), 5)
    assert time.monotonic() - began < 1.0
    assert decision.outcome == "mutated" and decision.resolution is not None
    assert decision.resolution.resolved_by == "builtin:replicaset"


def test_cli_doors_list_once(cluster: FakeAPI) -> None:
    index = OwnerIndex()
    assert sync_once(cluster.api_client(), index, page_size=3) == []
    assert index.synced()
    found = Resolver(owners=index).resolve_pod(pod_of("apps/v1", "StatefulSet", "pg"))
    assert answer(found) == ("StatefulSet", "pg", EXACT, "PostgresCluster.postgres-operator.crunchydata.com/hippo")
    cluster.forbid = {"list"}
    denied = OwnerIndex()
    failures = sync_once(cluster.api_client(), denied)
    assert len(failures) == len(RESOURCES) and "HTTP 403" in failures[0]
    assert not denied.synced()


# --- audit and backfill use the same chain against a cluster ------------------------------------


def cluster_pod(name: str, ref: dict[str, Any], annotations: dict[str, str] | None = None,
                labels: dict[str, str] | None = None) -> dict[str, Any]:
    obj = pod(name=name, owners=[ref], annotations=annotations, labels=labels)
    obj["metadata"].update(uid=f"uid-pod-{name}", creationTimestamp=CREATED)
    return obj


def wrong_guess_cluster() -> FakeCluster:
    """A hand-made Job named like a CronJob's, its Pod tagged CronJob by an earlier guess; a Rollout's Pod."""
    guessed = {PREFIX + "workload-type": "CronJob", PREFIX + "workload-name": "report",
               PREFIX + "resolved-by": "builtin:cronjob"}
    pods = [
        cluster_pod("report-a", owner("batch/v1", "Job", f"report-{CRON_MINUTES}"), guessed),
        cluster_pod("canary-a", owner("apps/v1", "ReplicaSet", "canary-6b7f9c")),
        cluster_pod("web-a", owner("apps/v1", "ReplicaSet", "web-7c5ddbdf54"), labels={"pod-template-hash": "7c5ddbdf54"}),
    ]
    cluster = FakeCluster(pods)
    for obj in SHAPES:
        add(cluster, obj, event=False)
    return cluster


def cli_args(module: Any, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


def test_audit_reports_pods_a_wrong_guess_tagged(capsys: pytest.CaptureFixture[str]) -> None:
    with serve(wrong_guess_cluster()) as api:
        assert audit.run(cli_args(audit, "-A", "--format", "json"), Config(), plugins=EMPTY, api=api) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["disagreeWithExactOwner"] == {"count": 1, "examples": [
        {"pod": "default/report-a", "annotated": "CronJob/report", "exact": f"Job/report-{CRON_MINUTES}"}]}
    assert report["byResolver"] == {EXACT: 3}
    assert report["byType"] == {"Deployment": 1, "Job": 1, "Rollout": 1}


def test_audit_without_the_rights_says_so_and_guesses(capsys: pytest.CaptureFixture[str]) -> None:
    cluster = wrong_guess_cluster()
    cluster.forbid = {"watch"}
    with serve(cluster) as api:
        cluster.forbid = set()
        cluster.fault("LIST", "LIST#1", Fault(status=403))  # replicasets, the first resource listed
        assert audit.run(cli_args(audit, "-A", "--format", "json"), Config(), plugins=EMPTY, api=api) == 0
    captured = capsys.readouterr()
    assert "owner lookup: cannot list replicasets.apps: HTTP 403" in captured.err
    assert json.loads(captured.out)["byResolver"] == {EXACT: 1, "builtin:deployment": 1, "builtin:replicaset": 1}


def test_backfill_rewrites_a_wrong_guess_with_the_exact_owner() -> None:
    cluster = wrong_guess_cluster()
    out = io.StringIO()
    with serve(cluster) as api:
        code = backfill.run(cli_args(backfill, "-A", "--apply", "--overwrite-stale"), Config(), plugins=EMPTY,
                            api=api, out=out)
    assert code == 0, out.getvalue()
    notes = cluster.pods["default/report-a"]["metadata"]["annotations"]
    assert (notes[PREFIX + "workload-type"], notes[PREFIX + "workload-name"], notes[PREFIX + "resolved-by"]) == (
        "Job", f"report-{CRON_MINUTES}", EXACT)
    assert cluster.pods["default/canary-a"]["metadata"]["annotations"][PREFIX + "workload-type"] == "Rollout"


# --- `serve` wired end to end --------------------------------------------------------------------


def test_serve_with_owner_lookup_end_to_end(cluster: FakeAPI, tls_files: TLSFiles, tmp_path: Path) -> None:
    """app.serve builds the caches from the kubeconfig, answers from them, exposes their metrics, stops."""
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", cluster.url)
    port, metrics_port = free_port(), free_port()
    config = load(None, {
        "host": "127.0.0.1", "port": port, "metrics_port": metrics_port, "cert_file": str(tls_files.cert),
        "key_file": str(tls_files.key), "kubeconfig": str(kubeconfig), "plugin_source": "none",
        "shutdown_drain_s": 0, "owner_lookup": "on",
    }, {})
    ctx = ssl.create_default_context(cafile=str(tls_files.ca))
    ctx.check_hostname = False

    def annotations() -> dict[str, str]:
        body = review(pod(name="pg-0", owners=[owner("apps/v1", "StatefulSet", "pg")]))
        req = urllib.request.Request(f"https://127.0.0.1:{port}/mutate", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
                answer = json.loads(resp.read())["response"]
        except OSError:
            return {}
        ops = json.loads(base64.b64decode(answer["patch"]))
        return {k.removeprefix(PREFIX): v for k, v in ops[0]["value"].items()}

    with serving(config):
        wait_for(lambda: annotations().get("resolved-by") == EXACT, timeout=30)
        assert annotations()["root-owner"] == "PostgresCluster.postgres-operator.crunchydata.com/hippo"
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
            exposition = resp.read().decode()
        hits = [line for line in exposition.splitlines()
                if line.startswith('workload_tagger_owner_lookups_total{result="hit"}')]
        assert hits and float(hits[0].split()[1]) >= 2
        assert 'workload_tagger_owner_cache_synced{resource="statefulsets.apps"} 1.0' in exposition
        assert 'workload_tagger_owner_cache_objects{resource="replicasets.apps"} 5.0' in exposition
        assert 'workload_tagger_resolutions_total{source="owners",workload_type="StatefulSet"}' in exposition
    assert not [t for t in threading.enumerate() if t.name.startswith("owners-")]  # the cache threads stopped


async def test_a_relist_wakes_a_waiting_review_too() -> None:
    """The owner may arrive by a relist (after 410) instead of a watch event: the waiter wakes either way."""
    index = OwnerIndex()
    for resource in RESOURCES:
        index.replace(resource, {})
    ref = Ref("apps/v1", "ReplicaSet", "x-1", "uid-x-1")
    waiting = asyncio.create_task(index.wait_for(ref, 5.0))
    await asyncio.sleep(0.05)
    assert index.waiting() == 1
    writer = threading.Thread(target=index.replace, args=(RESOURCES[0], {"uid-x-1": ""}))
    writer.start()
    assert await asyncio.wait_for(waiting, 2) is True
    writer.join(5)
    assert index.waiting() == 0


def test_owner_lookup_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert not Config().effective_owner_lookup()  # `make run`, a laptop: off
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert Config().effective_owner_lookup() and not Config(owner_lookup="off").effective_owner_lookup()
    assert load(None, {}, {"WORKLOAD_TAGGER_OWNER_LOOKUP": "on"}).owner_lookup == "on"
    with pytest.raises(ValueError, match="ownerLookup must be auto, on or off"):
        load(None, {"owner_lookup": "maybe"}, {})
    with pytest.raises(ValueError, match="ownerWaitMs"):
        load(None, {"owner_wait_ms": -1}, {})


async def test_deferred_misses_belong_to_their_own_review() -> None:
    """A review waiting (or awaiting anything) with misses deferred never takes another review's miss."""
    index = OwnerIndex()
    for resource in RESOURCES:
        index.replace(resource, {})
    resolver = Resolver(owners=index)
    first_pod, second_pod = pod_of("apps/v1", "ReplicaSet", "a-1"), pod_of("apps/v1", "ReplicaSet", "b-1")
    first_missed: list[Ref] = []
    paused, resumed = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        DEFERRED_MISSES.set(first_missed)  # this task's own context
        paused.set()
        await resumed.wait()  # another review runs meanwhile
        resolver.resolve_pod(first_pod)

    async def second() -> None:
        await paused.wait()
        resolver.resolve_pod(second_pod)  # not deferring: an ordinary, counted miss
        resumed.set()

    await asyncio.wait_for(asyncio.gather(first(), second()), 5)
    assert [r.name for r in first_missed] == ["a-1"]
    assert index.drain_counts() == {HIT: 0, MISS: 1, FALLBACK: 0}
