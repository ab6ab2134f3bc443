"""The owner fallback (ownerFallback): the unresolved kinds of examples/cluster-pods.json, at every door.

What each Pod must get is written out here from the sample file's owner references, not taken
from webhook.resolution.fallback: type = the controller owner's kind, name = its name; a mirror Pod owned by
its Node is static Pod `<pod name minus -<node>>`; a Pod without a controller owner stays untagged.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.annotations import OTEL, OURS, admit
from tests.support.factories import owner, pod
from tests.support.fakeapi import FakeCluster, serve
from tests.support.plugin_fakes import Recording
from webhook.app import build_mutator, build_resolver
from webhook.commands import audit, backfill
from webhook.config import Config, load
from webhook.plugins import EMPTY
from webhook.resolution.resolver import Resolver, ResolverSettings

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "cluster-pods.json"

# namespace/name -> (type, name, resolved-by) with the fallback on; None: still unresolved.
FALLBACK_EXPECTED: dict[str, tuple[str, str, str] | None] = {
    "kube-system/etcd-control-plane": ("StaticPod", "etcd", "builtin:static-pod"),
    "kube-system/kube-apiserver-control-plane": ("StaticPod", "kube-apiserver", "builtin:static-pod"),
    "kube-system/kube-scheduler-control-plane": ("StaticPod", "kube-scheduler", "builtin:static-pod"),
    "ci/build-main-1283746501": ("Workflow", "build-main", "builtin:owner"),
    "ci/build-main-3377201945": ("Workflow", "build-main", "builtin:owner"),
    "ci/build-main-4109283312": ("Workflow", "build-main", "builtin:owner"),
    "ci/lint-pr-1721-pod": ("TaskRun", "lint-pr-1721", "builtin:owner"),
    "analytics/etl-daily-driver": ("SparkApplication", "etl-daily", "builtin:owner"),
    "analytics/etl-daily-exec-1": ("Pod", "etl-daily-driver", "builtin:owner"),
    "analytics/etl-daily-exec-2": ("Pod", "etl-daily-driver", "builtin:owner"),
    "vms/virt-launcher-win11-m6k2t": ("VirtualMachineInstance", "win11", "builtin:owner"),
    "default/debug-shell": None,
}


def sample_pods() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(SAMPLE.read_text())["items"]
    return items


def key(p: dict[str, Any]) -> str:
    return f"{p['metadata']['namespace']}/{p['metadata']['name']}"


def resolve(resolver: Resolver, p: dict[str, Any]) -> tuple[str, str, str] | None:
    found = resolver.resolve(p["metadata"], p["metadata"]["namespace"])
    return None if found is None else (found.workload_type, found.workload_name, found.resolved_by)


def test_the_sample_clusters_unresolved_pods_are_exactly_these() -> None:
    unresolved = {key(p) for p in sample_pods() if Resolver().resolve(p["metadata"]) is None}
    assert unresolved == set(FALLBACK_EXPECTED)


def test_fallback_on_the_sample_cluster_and_rules_still_win() -> None:
    plain, fallback = build_resolver(Config()), build_resolver(Config(owner_fallback=True))
    for p in sample_pods():
        if key(p) in FALLBACK_EXPECTED:
            assert resolve(plain, p) is None
            assert resolve(fallback, p) == FALLBACK_EXPECTED[key(p)], key(p)
        else:
            assert resolve(fallback, p) == resolve(plain, p) is not None


def test_what_the_webhook_writes_for_a_fallback_pod() -> None:
    workflow = next(p for p in sample_pods() if key(p) == "ci/build-main-1283746501")
    mutator = build_mutator(Config(owner_fallback=True))
    got = admit(mutator, workflow)
    original = workflow["metadata"]["annotations"]
    # type and name only, no platform; no OpenTelemetry key names a kind it is not
    assert got == {**original, OURS + "workload-type": "Workflow", OURS + "workload-name": "build-main",
                   OURS + "resolved-by": "builtin:owner"}
    assert not any(k.startswith(OTEL) for k in got)
    assert admit(build_mutator(Config()), workflow) == original


def test_plugins_win_over_the_fallback() -> None:
    meta = pod(generate_name="train-", owners=[owner("kubeflow.org/v1", "PyTorchJob", "train")])["metadata"]
    resolver = Resolver(ResolverSettings(owner_fallback=True))
    claimed = resolver.resolve(meta, "ml", Recording([("kubeflow", "Job", "train")]))
    assert claimed is not None and (claimed.workload_type, claimed.resolved_by) == ("Job", "plugin:kubeflow")
    fallback = resolver.resolve(meta, "ml", Recording([("other", "", "")]))
    assert fallback is not None and (fallback.workload_type, fallback.workload_name, fallback.resolved_by) == (
        "PyTorchJob", "train", "builtin:owner")
    first = Resolver(ResolverSettings(owner_fallback=True, plugins_first=True)).resolve(
        meta, "ml", Recording([("kubeflow", "Job", "train")]))
    assert first is not None and first.resolved_by == "plugin:kubeflow"


def test_only_the_controller_owner_counts() -> None:
    resolver = Resolver(ResolverSettings(owner_fallback=True))
    plain_owner = pod(generate_name="x-", owners=[owner("example.io/v1", "Backup", "b", controller=False)])
    assert resolver.resolve(plain_owner["metadata"]) is None
    both = pod(generate_name="x-", owners=[owner("example.io/v1", "Backup", "b", controller=False),
                                           owner("example.io/v1", "Widget", "w", controller=True)])
    found = resolver.resolve(both["metadata"])
    assert found is not None and (found.workload_type, found.workload_name) == ("Widget", "w")
    assert resolver.resolve(pod(name="bare")["metadata"]) is None
    assert resolver.resolve({"ownerReferences": [{"kind": "Widget", "controller": True}]}) is None  # malformed


@pytest.mark.parametrize("name,node,expected", [
    ("etcd-control-plane", "control-plane", "etcd"),
    ("kube-proxy-node-a.example.com", "node-a.example.com", "kube-proxy"),
    ("hand-made", "node-b", "hand-made"),  # not a kubelet mirror name: kept whole
    ("node-b", "node-b", "node-b"),  # nothing would be left: kept whole
])
def test_static_pod_names(name: str, node: str, expected: str) -> None:
    meta = pod(name=name, namespace="kube-system", owners=[owner("v1", "Node", node)])["metadata"]
    found = Resolver(ResolverSettings(owner_fallback=True)).resolve(meta)
    assert found is not None and (found.workload_type, found.workload_name, found.resolved_by) == (
        "StaticPod", expected, "builtin:static-pod")


def test_a_nameless_mirror_pod_is_not_resolved() -> None:
    meta = pod(generate_name="x-", owners=[owner("v1", "Node", "n")])["metadata"]
    assert Resolver(ResolverSettings(owner_fallback=True)).resolve(meta) is None


def test_the_setting_flag_env_and_file(tmp_path: Path) -> None:
    assert load(None, {}, {}).owner_fallback is False
    assert load(None, {}, {"WORKLOAD_TAGGER_OWNER_FALLBACK": "yes"}).owner_fallback is True
    cfg = tmp_path / "c.yaml"
    cfg.write_text("ownerFallback: true\notelAnnotations: false\n")
    loaded = load(str(cfg), {}, {})
    assert loaded.owner_fallback is True and loaded.otel_annotations is False


def audit_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    audit.add_arguments(parser)
    return parser.parse_args(argv)


def test_audit_reports_what_the_fallback_would_write(capsys: pytest.CaptureFixture[str]) -> None:
    assert audit.run(audit_args(str(SAMPLE), "--format", "json"), Config(), plugins=EMPTY) == 0
    off = orjson.loads(capsys.readouterr().out)
    by_kind = {g["kind"]: g["fallback"] for g in off["unresolvedOwners"]}
    assert by_kind == {
        "Workflow": {"workloadType": "Workflow", "workloadName": "build-main", "platform": None, "resolvedBy": "builtin:owner"},
        "Node": {"workloadType": "StaticPod", "workloadName": "etcd", "platform": None, "resolvedBy": "builtin:static-pod"},
        "Pod": {"workloadType": "Pod", "workloadName": "etl-daily-driver", "platform": None, "resolvedBy": "builtin:owner"},
        "(no owner)": None,
        "VirtualMachineInstance": {"workloadType": "VirtualMachineInstance", "workloadName": "win11", "platform": None,
                                   "resolvedBy": "builtin:owner"},
        "SparkApplication": {"workloadType": "SparkApplication", "workloadName": "etl-daily", "platform": None,
                             "resolvedBy": "builtin:owner"},
        "TaskRun": {"workloadType": "TaskRun", "workloadName": "lint-pr-1721", "platform": None,
                    "resolvedBy": "builtin:owner"},
    }
    assert audit.run(audit_args(str(SAMPLE)), Config(), plugins=EMPTY) == 0
    assert "StaticPod etcd" in capsys.readouterr().out

    assert audit.run(audit_args(str(SAMPLE), "--format", "json"), Config(owner_fallback=True), plugins=EMPTY) == 0
    on = orjson.loads(capsys.readouterr().out)
    assert on["status"]["unresolved"] == 1 and [g["kind"] for g in on["unresolvedOwners"]] == ["(no owner)"]
    assert on["status"]["missing"] == off["status"]["missing"] + 11
    assert on["byResolver"]["builtin:owner"] == 8 and on["byResolver"]["builtin:static-pod"] == 3
    assert on["byType"]["Workflow"] == 3 and on["byType"]["StaticPod"] == 3


def test_backfill_applies_the_fallback() -> None:
    pods = sample_pods()
    cluster = FakeCluster(pods)
    parser = argparse.ArgumentParser()
    backfill.add_arguments(parser)
    with serve(cluster) as api:
        code = backfill.run(parser.parse_args(["-A", "--apply", "--qps", "1000"]), Config(owner_fallback=True),
                            plugins=EMPTY, api=api)
        assert code == 0
        sent = {}
        for p in cluster.requests("PATCH"):
            _, _, _, _, ns, _, name = p.path.split("/")
            sent[f"{ns}/{name}"] = p.body["metadata"]["annotations"]
    for pod_key, expected in FALLBACK_EXPECTED.items():
        if expected is None:
            assert pod_key not in sent
            continue
        wtype, name, by = expected
        assert sent[pod_key] == {OURS + "workload-type": wtype, OURS + "workload-name": name, OURS + "resolved-by": by}


def test_resolve_shows_the_fallback() -> None:
    proc = subprocess.run([sys.executable, "-m", "webhook", "resolve", str(SAMPLE), "--owner-fallback"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    answers = {key(p): json.loads(line) for p, line in zip(sample_pods(), proc.stdout.splitlines(), strict=True)}
    for pod_key, expected in FALLBACK_EXPECTED.items():
        got = answers[pod_key]
        assert (None if got["resolvedBy"] is None else (got["workloadType"], got["workloadName"], got["resolvedBy"])) \
            == expected
    off = subprocess.run([sys.executable, "-m", "webhook", "resolve", str(SAMPLE)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert sum(1 for line in off.stdout.splitlines() if json.loads(line)["resolvedBy"] is None) == 12
