"""audit against the real kubernetes client and a paginated fake API (tests/support/fakeapi.py)."""

from __future__ import annotations

import argparse
import io
import json
import sys
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import yaml

from tests.support.fakeapi import FakeCluster, Fault, serve, status_body
from tests.support.podgen import K_NAME, K_TYPE, GenPod, make_pods
from webhook.cluster.pods import ListScope, LiveLister
from webhook.commands import audit
from webhook.commands.inputs import cluster_pods, file_pods
from webhook.config import Config
from webhook.errors import UserError
from webhook.plugins import EMPTY, PluginAnswer
from webhook.resolution.resolver import Resolver

PREFIX = "workload-tagger.io/"
EXPECTED_STATUS = {
    "missing": "missing",
    "partial": "missing",
    "correct": "correct",
    "stale": "stale",
    "user": "stale",
    "unresolved": "unresolved",
}


class ArgoPlugin:
    """A stand-in PluginSet: claims Pods owned by an Argo Workflow, like a user's Lua plugin would."""

    names = ("argo",)

    def __init__(self) -> None:
        self.calls = 0

    def answers(self, meta_json: str, deadline: float | None = None) -> Iterator[PluginAnswer]:
        self.calls += 1
        meta = json.loads(meta_json)
        for ref in meta.get("ownerReferences") or []:
            if ref.get("kind") == "Workflow":
                yield PluginAnswer("argo", "job", ref["name"])


def expected_report(gen: list[GenPod], plugin_claims_workflows: bool = False) -> dict[str, object]:
    status: Counter[str] = Counter()
    by_type: Counter[str] = Counter()
    by_platform: Counter[str] = Counter()
    gaps: Counter[tuple[str, str]] = Counter()
    for g in gen:
        t = g.truth
        if plugin_claims_workflows and t.owner[1] == "Workflow":
            status["missing"] += 1  # unannotated: missing for the plugin's answer
            by_type["Job"] += 1
            by_platform["(none)"] += 1
            continue
        status[EXPECTED_STATUS[g.state]] += 1
        if t.wtype is None:
            gaps[t.owner] += 1
        else:
            by_type[t.wtype] += 1
            by_platform[t.platform or "(none)"] += 1
    return {"status": status, "byType": by_type, "byPlatform": by_platform, "gaps": gaps}


def lister(
    api: object, page: int = 250, namespace: str | None = None, notices: list[str] | None = None
) -> LiveLister:
    sink = notices if notices is not None else []
    return LiveLister(api, ListScope(namespace, page), notice=sink.append, sleep=lambda _s: None)


def check(report: audit.AuditReport, want: dict[str, object]) -> None:
    got = report.as_json()
    assert got["status"] == {s: want["status"][s] for s in audit.STATUSES}  # type: ignore[index]
    assert Counter(got["byType"]) == want["byType"]
    assert Counter(got["byPlatform"]) == want["byPlatform"]
    gaps = {(g["apiVersion"], g["kind"]): g["count"] for g in got["unresolvedOwners"]}
    assert gaps == dict(want["gaps"])  # type: ignore[call-overload]


def test_counts_are_exact_across_pages() -> None:
    gen = make_pods(3000)
    cluster = FakeCluster([g.pod for g in gen])
    with serve(cluster) as api:
        lst = lister(api, page=250)
        report = audit.build_report(cluster_pods(lst), Resolver(), EMPTY, PREFIX)
    assert report.total == 3000
    check(report, expected_report(gen))
    lists = cluster.requests("LIST")
    assert len(lists) == 12 and lst.pages == 12
    assert all(r.query["limit"] == "250" for r in lists)
    assert "continue" not in lists[0].query and all("continue" in r.query for r in lists[1:])
    # ranked by Pod count; the example names a real Pod of that owner kind
    owners = report.unresolved_owners()
    assert [g.count for g in owners] == sorted((g.count for g in owners), reverse=True)
    assert owners[0].kind == "Workflow"
    by_key = {g.key: g for g in gen}
    assert by_key[owners[0].example].truth.owner == ("argoproj.io/v1alpha1", "Workflow")


def test_namespaced_list_and_plugin_answers_are_used() -> None:
    gen = make_pods(700)
    cluster = FakeCluster([g.pod for g in gen])
    plugin = ArgoPlugin()
    with serve(cluster) as api:
        report = audit.build_report(cluster_pods(lister(api, page=40, namespace="ns-3")), Resolver(), plugin, PREFIX)
    mine = [g for g in gen if g.pod["metadata"]["namespace"] == "ns-3"]
    assert report.total == len(mine) == 100
    check(report, expected_report(mine, plugin_claims_workflows=True))
    workflows = sum(1 for g in mine if g.truth.owner[1] == "Workflow")
    assert workflows and report.by_resolver["plugin:argo"] == workflows
    assert all(r.path == "/api/v1/namespaces/ns-3/pods" for r in cluster.requests("LIST"))


def test_expired_continue_token_restarts_without_double_counting() -> None:
    gen = make_pods(1000)
    cluster = FakeCluster([g.pod for g in gen])
    expired = status_body(410, "Expired", "The provided continue parameter is too old")
    cluster.fault("LIST", "LIST#3", Fault(410, body=expired))
    notices: list[str] = []
    with serve(cluster) as api:
        lst = lister(api, page=100, notices=notices)
        report = audit.build_report(cluster_pods(lst), Resolver(), EMPTY, PREFIX)
    assert report.total == 1000 and lst.restarts == 1
    check(report, expected_report(gen))
    assert "continue" not in cluster.requests("LIST")[3].query  # the list started over
    assert any("restarting the list" in n for n in notices)


def test_expired_token_with_a_continue_token_in_the_status_goes_on() -> None:
    gen = make_pods(600)
    cluster = FakeCluster([g.pod for g in gen])
    with serve(cluster) as api:
        first = api.list_pod_for_all_namespaces(limit=100, _request_timeout=10)  # LIST#1
        offered = first.metadata._continue + "~newer-snapshot"  # continues after the same key
        body = status_body(410, "Expired", "too old; continue with this token", **{"continue": offered})
        cluster.fault("LIST", "LIST#3", Fault(410, body=body))
        notices: list[str] = []
        lst = lister(api, page=100, notices=notices)
        report = audit.build_report(cluster_pods(lst), Resolver(), EMPTY, PREFIX)
    assert report.total == 600
    check(report, expected_report(gen))
    assert cluster.requests("LIST")[3].query["continue"] == offered
    assert any("newer snapshot" in n for n in notices)


def test_dropped_connection_and_429_on_a_page_are_retried() -> None:
    gen = make_pods(900)
    cluster = FakeCluster([g.pod for g in gen])
    cluster.fault("LIST", "LIST#2", Fault(drop=True))
    cluster.fault("LIST", "LIST#4", Fault(429, headers={"Retry-After": "3"}))
    slept: list[float] = []
    with serve(cluster) as api:
        lst = LiveLister(api, ListScope(None, 300), sleep=slept.append)
        report = audit.build_report(cluster_pods(lst), Resolver(), EMPTY, PREFIX)
    assert report.total == 900
    check(report, expected_report(gen))
    assert 3.0 in slept
    # the retried requests asked for the same page again
    q = [r.query.get("continue") for r in cluster.requests("LIST")]
    assert q[1] == q[2] and q[3] == q[4]


def test_forbidden_list_is_one_line_exit_2() -> None:
    cluster = FakeCluster([g.pod for g in make_pods(10)])
    cluster.fault(
        "LIST",
        "LIST#1",
        Fault(
            403, body=status_body(403, "Forbidden", 'pods is forbidden: User "x" cannot list resource "pods"')
        ),
    )
    with serve(cluster) as api, pytest.raises(UserError) as err:
        audit.build_report(cluster_pods(lister(api)), Resolver(), EMPTY, PREFIX)
    assert err.value.code == 2
    assert "grant pods list" in str(err.value) and "\n" not in str(err.value)


def test_memory_stays_flat_across_pages() -> None:
    """Peak traced memory of a 3000-Pod audit stays close to a 300-Pod one (same page size)."""

    def peak(n: int) -> int:
        cluster = FakeCluster([g.pod for g in make_pods(n)])
        with serve(cluster) as api:
            audit.build_report(cluster_pods(lister(api, page=100)), Resolver(), EMPTY, PREFIX)  # warm-up: imports, pools
            tracemalloc.start()
            try:
                audit.build_report(cluster_pods(lister(api, page=100)), Resolver(), EMPTY, PREFIX)
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

    small, large = peak(300), peak(3000)
    # holding every Pod would cost ~10x; one page at a time costs about the same
    assert large < small * 1.6, (small, large)


def test_renderers() -> None:
    gen = make_pods(230)
    report = audit.build_report((p for p in file_pods_from(gen)), Resolver(), EMPTY, PREFIX)
    as_json = orjson.loads(audit.render(report, "json"))
    assert list(as_json) == ["total", "status", "byType", "byPlatform", "byResolver", "unresolvedOwners"]
    assert yaml.safe_load(audit.render(report, "yaml")) == as_json
    table = audit.render(report, "table")
    assert table.startswith(f"Pods: 230   annotated and correct: {report.status['correct']}")
    for gap in report.unresolved_owners():
        assert any(
            gap.kind in line and str(gap.count) in line and gap.example in line for line in table.splitlines()
        )
    assert "UNRESOLVED OWNER KINDS" in table and "OpenKruise" in table


def file_pods_from(gen: list[GenPod]) -> Iterator[object]:
    from webhook.commands.inputs import PodInput

    return (PodInput("t", g.pod) for g in gen)


def args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    audit.add_arguments(parser)
    return parser.parse_args(argv)


def test_run_on_a_file_and_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    gen = make_pods(120)
    path = tmp_path / "pods.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [g.pod for g in gen]}))
    assert audit.run(args(str(path), "--format", "json"), Config(), plugins=EMPTY) == 0
    out = orjson.loads(capsys.readouterr().out)
    assert out["total"] == 120
    assert out["status"] == dict(expected_report(gen)["status"])  # type: ignore[call-overload]

    only = [g for g in gen if g.pod["metadata"]["namespace"] == "ns-2"]
    monkeypatch.setattr(
        sys, "stdin", io.StringIO(json.dumps({"kind": "PodList", "items": [g.pod for g in gen]}))
    )
    assert audit.run(args("-", "-n", "ns-2", "--format", "json"), Config(), plugins=EMPTY) == 0
    assert orjson.loads(capsys.readouterr().out)["total"] == len(only)


def test_run_live_uses_the_api_and_needs_a_scope(capsys: pytest.CaptureFixture[str]) -> None:
    gen = make_pods(50)
    cluster = FakeCluster([g.pod for g in gen])
    with serve(cluster) as api:
        with pytest.raises(UserError) as err:
            audit.run(args(), Config(), plugins=EMPTY, api=api)
        assert err.value.code == 2 and "-A" in str(err.value)
        assert audit.run(args("-A", "--page-size", "7"), Config(), plugins=EMPTY, api=api) == 0
    assert capsys.readouterr().out.startswith("Pods: 50 ")
    assert len(cluster.requests("LIST")) == 8


def test_stale_means_our_key_disagrees() -> None:
    from webhook.commands.inputs import PodInput

    pod = {
        "metadata": {
            "name": "p",
            "namespace": "n",
            "annotations": {K_TYPE: "Deployment", K_NAME: "mine"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db"}],
        }
    }
    a = audit.assess(PodInput("t", pod), Resolver(), EMPTY, PREFIX)
    assert a.status == "stale"
    assert a.stale == {K_TYPE: "StatefulSet", K_NAME: "db"}
    assert set(a.missing) == {PREFIX + "resolved-by", "resource.opentelemetry.io/k8s.statefulset.name"}


def test_unreadable_file_is_one_line() -> None:
    with pytest.raises(UserError) as err:
        list(file_pods("/nonexistent/pods.json", None))
    assert err.value.code == 2 and "cannot read /nonexistent/pods.json" in str(err.value)


def test_the_example_cluster_file(capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(__file__).parent.parent / "examples" / "cluster-pods.json"
    items = json.loads(path.read_text())["items"]
    assert audit.run(args(str(path), "--format", "json"), Config(), plugins=EMPTY) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["total"] == len(items) == sum(report["status"].values())
    assert all(report["status"][s] > 0 for s in audit.STATUSES)  # the sample shows every case
    names = {f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in items}
    assert all(g["example"] in names for g in report["unresolvedOwners"])
    assert sum(g["count"] for g in report["unresolvedOwners"]) == report["status"]["unresolved"]
    assert audit.run(args(str(path)), Config(), plugins=EMPTY) == 0
    assert "Next: `workload-tagger backfill -A --apply`" in capsys.readouterr().out


def test_a_list_that_keeps_failing_ends_with_one_line() -> None:
    cluster = FakeCluster([g.pod for g in make_pods(400)])
    cluster.fault("LIST", "LIST#2", Fault(drop=True))
    for n in range(3, 8):
        cluster.fault("LIST", f"LIST#{n}", Fault(drop=True))
    notices: list[str] = []
    with serve(cluster) as api, pytest.raises(UserError) as err:
        audit.build_report(cluster_pods(lister(api, page=100, notices=notices)), Resolver(), EMPTY, PREFIX)
    assert str(err.value).startswith("cannot list Pods: connection failed") and "\n" not in str(err.value)
    assert len(cluster.requests("LIST")) == 6  # the first page, then 5 attempts at the second
    assert len(notices) == 4


def test_live_path_through_a_kubeconfig(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = Config(kubeconfig=str(tmp_path / "nope.yaml"))
    with pytest.raises(UserError) as err:
        audit.run(args("-A"), missing, plugins=EMPTY)
    assert err.value.code == 2 and str(err.value).startswith("cannot reach a cluster: ")

    gen = make_pods(90)
    cluster = FakeCluster([g.pod for g in gen])
    with serve(cluster) as api:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [{"name": "fake", "cluster": {"server": api.api_client.configuration.host}}],
                    "users": [{"name": "me", "user": {"token": "t0ken"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me"}}],
                }
            )
        )
        assert (
            audit.run(args("-A", "--format", "json"), Config(kubeconfig=str(kubeconfig)), plugins=EMPTY) == 0
        )
    assert orjson.loads(capsys.readouterr().out)["total"] == 90
