"""backfill against the real kubernetes client and a paginated fake API (tests/support/fakeapi.py)."""

from __future__ import annotations

import argparse
import io
from collections import Counter
from typing import Any

import pytest

from tests.support.fakeapi import FakeCluster, Fault, serve, status_body
from tests.support.podgen import K_NAME, K_TYPE, GenPod, make_pods, wanted
from webhook.cluster.pods import ListScope, LiveLister
from webhook.cluster.ratelimit import TokenBucket
from webhook.commands import audit, backfill
from webhook.commands.inputs import cluster_pods
from webhook.commands.progress import Progress
from webhook.config import Config
from webhook.errors import UserError
from webhook.plugins import EMPTY
from webhook.resolution.resolver import Resolver

PREFIX = "workload-tagger.io/"


def expected_change(g: GenPod, overwrite: bool) -> dict[str, Any]:
    """What the Pod should be sent, from the generator's ground truth."""
    if g.truth.wtype is None:
        return {}
    want = wanted(g.truth)
    present = g.pod["metadata"].get("annotations") or {}
    # Only our own keys can be stale; an OpenTelemetry key the Pod has is kept, whatever its value.
    have = {k: v for k, v in present.items() if k.startswith(PREFIX)}
    change: dict[str, Any] = {k: v for k, v in want.items() if k not in present}
    if overwrite:
        change.update({k: v for k, v in want.items() if k in have and have[k] != v})
    return change


def run_backfill(
    api: Any, apply: bool, overwrite: bool = False, page: int = 250, slept: list[float] | None = None
) -> tuple[backfill.BackfillResult, str]:
    out = io.StringIO()
    sleep = (slept if slept is not None else []).append
    resolver = Resolver()
    lister = LiveLister(api, ListScope(None, page), sleep=sleep)
    patcher = backfill.Patcher(api, resolver, EMPTY, PREFIX, overwrite, sleep=sleep) if apply else None
    result = backfill.backfill(
        cluster_pods(lister),
        resolver,
        EMPTY,
        PREFIX,
        patcher=patcher,
        overwrite_stale=overwrite,
        progress=Progress(out, tty=False, every=1000),
        remaining=lambda: lister.remaining,
    )
    return result, out.getvalue()


def pod_name(path: str) -> str:
    _, _, _, _, ns, _, name = path.split("/")
    return f"{ns}/{name}"


def test_dry_run_shows_the_plan_and_writes_nothing() -> None:
    gen = make_pods(1200)
    cluster = FakeCluster([g.pod for g in gen])
    with serve(cluster) as api:
        result, out = run_backfill(api, apply=False)
    need = [g for g in gen if expected_change(g, False)]
    assert result.counts[backfill.WOULD_PATCH] == len(need)
    assert result.exit_code == 0
    assert cluster.requests("PATCH") == []
    lines = [line for line in out.splitlines() if line.startswith("would patch ")]
    assert [line.split()[2].rstrip(":") for line in lines] == [
        g.key for g in sorted(need, key=lambda g: g.key)
    ]
    assert out.count("progress: 1000/1200 Pods") == 1
    assert "dry run: nothing was written" in result.summary(False)


def test_apply_patches_exactly_the_pods_that_need_it_once_then_nothing() -> None:
    gen = make_pods(3000)
    cluster = FakeCluster([g.pod for g in gen])
    by_key = {g.key: g for g in gen}
    with serve(cluster) as api:
        first, _ = run_backfill(api, apply=True)
        patches = cluster.requests("PATCH")
        second, _ = run_backfill(api, apply=True)
        after = audit.build_report(cluster_pods(LiveLister(api, ListScope(None, 500))), Resolver(), EMPTY, PREFIX)
    need = {g.key: expected_change(g, False) for g in gen if expected_change(g, False)}
    assert Counter(pod_name(p.path) for p in patches) == Counter(dict.fromkeys(need, 1))
    for p in patches:
        g = by_key[pod_name(p.path)]
        assert p.content_type == "application/merge-patch+json"
        assert p.body == {
            "metadata": {"annotations": need[g.key], "resourceVersion": g.pod["metadata"]["resourceVersion"]}
        }
    assert first.counts[backfill.PATCHED] == len(need) and first.exit_code == 0
    # users' values were kept: "user" Pods still carry their own name, stale ones their old type
    assert all(
        cluster.pods[g.key]["metadata"]["annotations"][K_NAME] == "set-by-hand"
        for g in gen
        if g.state == "user"
    )
    # the second run writes nothing
    assert len(cluster.requests("PATCH")) == len(patches)
    assert second.counts[backfill.PATCHED] == 0 and second.exit_code == 0
    assert after.status["missing"] == 0
    assert after.status["correct"] == sum(1 for g in gen if g.state in ("missing", "partial", "correct"))
    # unresolved Pods were never touched
    assert not any(by_key[pod_name(p.path)].truth.wtype is None for p in patches)


def test_overwrite_stale_rewrites_only_our_disagreeing_keys() -> None:
    gen = make_pods(460)
    cluster = FakeCluster([g.pod for g in gen])
    with serve(cluster) as api:
        result, _ = run_backfill(api, apply=True, overwrite=True)
        bodies = {pod_name(p.path): p.body["metadata"]["annotations"] for p in cluster.requests("PATCH")}
        again, _ = run_backfill(api, apply=True, overwrite=True)
    need = {g.key: expected_change(g, True) for g in gen if expected_change(g, True)}
    assert bodies == need
    stale = [g for g in gen if g.state == "stale"]
    assert stale and all(bodies[g.key] == {K_TYPE: g.truth.wtype} for g in stale)
    assert all(
        cluster.pods[g.key]["metadata"]["annotations"] | wanted(g.truth)
        == cluster.pods[g.key]["metadata"]["annotations"]
        for g in gen
        if g.truth.wtype
    )
    assert again.counts[backfill.PATCHED] == 0 and result.exit_code == 0


def test_per_pod_failures_are_handled_and_the_run_goes_on() -> None:
    gen = make_pods(600)
    cluster = FakeCluster([g.pod for g in gen])
    need = sorted(g.key for g in gen if expected_change(g, False))
    gone, conflict, throttled, dropped, broken = need[3], need[10], need[50], need[120], need[200]
    lost = need[150]
    cluster.fault("PATCH", lost, Fault(drop=True, after=True))
    cluster.fault("PATCH", gone, Fault(404))
    cluster.fault("PATCH", throttled, Fault(429, headers={"Retry-After": "7"}))
    cluster.fault("PATCH", dropped, Fault(drop=True))
    cluster.fault("PATCH", broken, *[Fault(500)] * 5)
    slept: list[float] = []
    with serve(cluster) as api:
        lister = LiveLister(api, ListScope(None, 100), sleep=slept.append)
        patcher = backfill.Patcher(api, Resolver(), EMPTY, PREFIX, False, sleep=slept.append)
        changed_mid_run = {"done": False}

        def pods() -> Any:
            for pod in cluster_pods(lister):
                if pod.label == conflict and not changed_mid_run["done"]:
                    changed_mid_run["done"] = True
                    cluster.touch(
                        conflict, {K_NAME: "user-wrote-this"}
                    )  # a user writes between list and patch
                yield pod

        result = backfill.backfill(
            pods(),
            Resolver(),
            EMPTY,
            PREFIX,
            patcher=patcher,
            overwrite_stale=False,
            progress=Progress(io.StringIO(), tty=False),
        )
    patches = Counter(pod_name(p.path) for p in cluster.requests("PATCH"))
    assert result.counts[backfill.GONE] == 1 and patches[gone] == 1
    assert 7.0 in slept and patches[throttled] == 2
    assert patches[dropped] == 2 and K_TYPE in cluster.pods[dropped]["metadata"]["annotations"]
    # applied, answer lost: the retry meets 409, the re-read shows it done, counted as patched
    assert patches[lost] == 2 and K_TYPE in cluster.pods[lost]["metadata"]["annotations"]
    assert patches[broken] == 5 and result.failures == [(broken, "HTTP 500: injected HTTP 500")]
    # 409: re-read, re-planned without the key the user wrote meanwhile, which is kept
    assert patches[conflict] == 2 and cluster.requests("GET")
    assert cluster.pods[conflict]["metadata"]["annotations"][K_NAME] == "user-wrote-this"
    assert K_TYPE in cluster.pods[conflict]["metadata"]["annotations"]
    assert result.counts[backfill.PATCHED] == len(need) - 2
    assert result.exit_code == 1
    # everything after the failures was still done
    assert all(patches[k] >= 1 for k in need)


def test_forbidden_stops_with_one_line_naming_the_permission() -> None:
    gen = make_pods(300)
    cluster = FakeCluster([g.pod for g in gen])
    first = sorted(g.key for g in gen if expected_change(g, False))[0]
    msg = (
        'pods "x" is forbidden: User "system:serviceaccount:wt:workload-tagger" cannot patch resource "pods"'
    )
    cluster.fault("PATCH", first, Fault(403, body=status_body(403, "Forbidden", msg)))
    parser = argparse.ArgumentParser()
    backfill.add_arguments(parser)
    out = io.StringIO()
    with serve(cluster) as api, pytest.raises(UserError) as err:
        backfill.run(
            parser.parse_args(["-A", "--apply", "--qps", "1000"]), Config(), plugins=EMPTY, api=api, out=out
        )
    assert err.value.code == 2
    assert "grant pods patch" in str(err.value) and "\n" not in str(err.value)
    assert len(cluster.requests("PATCH")) == 1
    assert "0 patched" in out.getvalue()


def test_run_exit_codes_and_flags(capsys: pytest.CaptureFixture[str]) -> None:
    gen = make_pods(200)
    cluster = FakeCluster([g.pod for g in gen])
    parser = argparse.ArgumentParser()
    backfill.add_arguments(parser)
    with serve(cluster) as api:
        dry = backfill.run(
            parser.parse_args(["-n", "ns-1", "--qps", "1000"]), Config(), plugins=EMPTY, api=api
        )
        assert dry == 0 and cluster.requests("PATCH") == []
        applied = backfill.run(
            parser.parse_args(["-n", "ns-1", "--apply", "--qps", "1000", "--page-size", "9"]),
            Config(),
            plugins=EMPTY,
            api=api,
        )
        with pytest.raises(UserError) as err:
            backfill.run(parser.parse_args(["--apply"]), Config(), plugins=EMPTY, api=api)
    assert applied == 0 and err.value.code == 2
    ns1 = [g for g in gen if g.pod["metadata"]["namespace"] == "ns-1" and expected_change(g, False)]
    assert {pod_name(p.path) for p in cluster.requests("PATCH")} == {g.key for g in ns1}
    assert f"{len(ns1)} patched" in capsys.readouterr().out


def test_token_bucket_allows_a_burst_then_qps() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    bucket = TokenBucket(qps=10, burst=3, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        bucket.acquire()
    assert slept == []
    for _ in range(5):
        bucket.acquire()
    assert slept == pytest.approx([0.1] * 5)
    now[0] += 10.0  # idle: the bucket refills to the burst, not beyond
    for _ in range(3):
        bucket.acquire()
    assert len(slept) == 5
    bucket.acquire()
    assert len(slept) == 6


def test_progress_bar_on_a_terminal_plain_lines_otherwise() -> None:
    now = [0.0]
    tty = io.StringIO()
    bar = Progress(tty, tty=True, clock=lambda: now[0])
    now[0] = 2.0
    bar.update(Counter({backfill.PATCHED: 40}), 100, 300)
    bar.line("patched ns/p: +a=b")
    bar.finish()
    text = tty.getvalue()
    assert "[######------------------] 100/400 Pods  50/s  ETA 6s  patched=40" in text
    assert "\r\x1b[2Kpatched ns/p: +a=b\n" in text

    plain = io.StringIO()
    now[0] = 0.0
    lines = Progress(plain, tty=False, every=2, clock=lambda: now[0])
    now[0] = 2.0
    for seen in range(1, 6):
        lines.update(Counter(), seen, None)
    assert plain.getvalue().splitlines() == ["progress: 2 Pods, 1/s, ETA ?", "progress: 4 Pods, 2/s, ETA ?"]


def test_backfill_overlay_grants_only_pod_get_list_patch_to_its_own_account() -> None:
    from pathlib import Path

    import kubernetes_validate
    import yaml

    root = Path(__file__).parent.parent / "manifests" / "overlays" / "backfill"
    kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
    assert "../../base" in kustomization["resources"]
    docs = [
        d
        for f in kustomization["resources"]
        if f.endswith(".yaml")
        for d in yaml.safe_load_all((root / f).read_text())
    ]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)
    by_kind = {d["kind"]: d for d in docs}
    assert by_kind["ClusterRole"]["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "patch"]}
    ]
    subjects = by_kind["ClusterRoleBinding"]["subjects"]
    assert subjects == [
        {"kind": "ServiceAccount", "name": "workload-tagger-backfill", "namespace": "workload-tagger"}
    ]
    pod = by_kind["Job"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "workload-tagger-backfill"
    argv = pod["containers"][0]["args"]
    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    backfill.add_arguments(parser)
    parsed = parser.parse_args(argv)
    assert parsed.command == "backfill" and parsed.all_namespaces and parsed.apply


def test_conflict_then_failing_reread_is_a_per_pod_failure() -> None:
    gen = make_pods(120)
    cluster = FakeCluster([g.pod for g in gen])
    need = sorted(g.key for g in gen if expected_change(g, False))
    cluster.fault("PATCH", need[0], Fault(409))
    cluster.fault("GET", need[0], *[Fault(503)] * 5)
    with serve(cluster) as api:
        result, _ = run_backfill(api, apply=True)
    assert result.failures == [(need[0], "conflict, then re-reading failed: HTTP 503")]
    assert result.counts[backfill.PATCHED] == len(need) - 1 and result.exit_code == 1
