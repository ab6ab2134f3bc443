"""`recommend` against DeepFlow's guide, entry by entry, from files and from a (fake) live cluster."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.fakeapi import FakeKube, FakeKubeServer, write_kubeconfig
from webhook.commands import recommend as rc
from webhook.commands.inputs import load_pods
from webhook.config import Config
from webhook.errors import UserError

DATA = Path(__file__).parent / "data"
GUIDE: dict[str, dict[str, str]] = yaml.safe_load((DATA / "deepflow-k8s-crd-guide.yaml").read_text())
MIXED = DATA / "pods-mixed-platforms.json"


def guide_resources(platform: str) -> list[dict[str, Any]]:
    doc: Any = yaml.safe_load(GUIDE[platform]["agent_config"])
    resources: list[dict[str, Any]] = doc["inputs"]["resources"]["kubernetes"]["api_resources"]
    return resources


def guide_rules(platform: str) -> list[dict[str, Any]]:
    doc: Any = yaml.safe_load(GUIDE[platform]["cluster_role"])
    rules: list[dict[str, Any]] = doc["rules"] if isinstance(doc, dict) else doc
    return rules


def owned_by(api_version: str, kind: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "ownerReferences": [{"apiVersion": api_version, "kind": kind, "name": "o"}]}
    }


SINGLE = [
    (rc.OPENKRUISE, owned_by("apps.kruise.io/v1beta1", "StatefulSet")),
    (rc.OPENKRUISE, owned_by("apps.kruise.io/v1alpha1", "CloneSet")),
    (rc.OPENGAUSS, owned_by("opengauss.sig/v1", "OpenGaussCluster")),
    (rc.OPENSHIFT, owned_by("apps.openshift.io/v1", "DeploymentConfig")),
]


@pytest.mark.parametrize(("platform", "pod"), SINGLE)
def test_each_platform_matches_the_guide_entry_by_entry(platform: str, pod: dict[str, Any]) -> None:
    doc = rc.recommend([pod]).document()
    got = doc["agentConfig"]["inputs"]["resources"]["kubernetes"]["api_resources"]
    want = guide_resources(platform)
    assert len(got) == len(want)
    for mine, theirs in zip(got, want, strict=True):
        assert mine == theirs
    assert doc["clusterRoleRules"] == guide_rules(platform)
    assert doc["podsPerPlatform"] == {platform: 1}


def test_routes_api_alone_means_openshift() -> None:
    rec = rc.recommend([owned_by("apps/v1", "ReplicaSet")], openshift_routes_available=True)
    assert rec.pods == {rc.OPENSHIFT: 0}
    assert [r.to_dict() for r in rec.api_resources] == guide_resources(rc.OPENSHIFT)
    assert rec.reasons[rc.OPENSHIFT] == ["API group route.openshift.io is served"]


def test_mixed_cluster_file_merges_all_three_in_guide_order() -> None:
    rec = rc.recommend(load_pods(str(MIXED)))
    assert rec.scanned == 8
    assert rec.pods == {rc.OPENSHIFT: 1, rc.OPENKRUISE: 3, rc.OPENGAUSS: 1}
    doc = rec.document()
    merged = [*guide_resources(rc.OPENSHIFT), *guide_resources(rc.OPENKRUISE), *guide_resources(rc.OPENGAUSS)]
    assert doc["agentConfig"]["inputs"]["resources"]["kubernetes"]["api_resources"] == merged
    rules = [*guide_rules(rc.OPENSHIFT), *guide_rules(rc.OPENKRUISE), *guide_rules(rc.OPENGAUSS)]
    assert doc["clusterRoleRules"] == rules
    assert doc["detectedBy"][rc.OPENSHIFT] == ["annotation openshift.io/deployment-config.name"]


def test_plain_cluster_needs_nothing() -> None:
    rec = rc.recommend([owned_by("apps/v1", "ReplicaSet"), {"metadata": {"name": "x"}}, {"metadata": None}])
    doc = rec.document()
    assert doc["podsPerPlatform"] == {} and doc["clusterRoleRules"] == []
    assert doc["agentConfig"]["inputs"]["resources"]["kubernetes"]["api_resources"] == []


def test_pod_with_two_kruise_owners_counts_once() -> None:
    pod = {
        "metadata": {
            "ownerReferences": [
                {"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet", "name": "a"},
                {"apiVersion": "apps.kruise.io/v1beta1", "kind": "StatefulSet", "name": "b"},
            ]
        }
    }
    assert rc.recommend([pod]).pods == {rc.OPENKRUISE: 1}


def args(**kw: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    rc.add_arguments(parser)
    argv = [kw.pop("file")] if "file" in kw else []
    for key, value in kw.items():
        argv += [f"--{key.replace('_', '-')}", value]
    return parser.parse_args(argv)


def test_cli_yaml_is_one_document_that_pastes(capsys: pytest.CaptureFixture[str]) -> None:
    assert rc.run(args(file=str(MIXED)), Config()) == 0
    out = capsys.readouterr().out
    docs = list(yaml.safe_load_all(out))
    assert len(docs) == 1
    assert docs[0]["podsPerPlatform"] == {"OpenShift": 1, "OpenKruise": 3, "OpenGauss": 1}
    agent = docs[0]["agentConfig"]
    assert list(agent) == ["inputs"]  # pasteable as is into the Agent configuration


def test_cli_json_and_api_versions_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    versions = tmp_path / "api-versions.txt"
    versions.write_text("apps/v1\nroute.openshift.io/v1\nv1\n")
    pods = tmp_path / "pods.json"
    pods.write_text(json.dumps({"kind": "List", "items": [owned_by("apps/v1", "ReplicaSet")]}))
    assert rc.run(args(file=str(pods), format="json", api_versions=str(versions)), Config()) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["podsPerPlatform"] == {"OpenShift": 0}
    assert doc["clusterRoleRules"] == guide_rules(rc.OPENSHIFT)


def test_cli_bad_file_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError) as err:
        rc.run(args(file=str(bad)), Config())
    assert "bad.json" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match="cannot read"):
        rc.run(args(file=str(tmp_path / "missing.json")), Config())


def test_live_cluster_pages_pods_and_asks_discovery(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kube = FakeKube()
    items = json.loads(MIXED.read_text())["items"]
    kube.pods = [  # 2400 distinct Pods: five pages of 500
        {**pod, "metadata": {**pod["metadata"], "name": f"{pod['metadata']['name']}-{i}"}}
        for i in range(300)
        for pod in items
    ]
    kube.api_groups = ["apps", "route.openshift.io"]
    with FakeKubeServer(kube) as srv:
        config = Config(kubeconfig=str(write_kubeconfig(tmp_path / "kubeconfig", srv.url)))
        assert rc.run(args(format="json"), config) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["scannedPods"] == 2400
    assert doc["podsPerPlatform"] == {"OpenShift": 300, "OpenKruise": 900, "OpenGauss": 300}
    assert doc["detectedBy"]["OpenShift"][0] == "API group route.openshift.io is served"
    assert sum(1 for r in kube.requests if r.path == "/api/v1/pods") == 5


def test_live_cluster_unreachable_is_one_clear_line(tmp_path: Path) -> None:
    config = Config(kubeconfig=str(write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9")))
    with pytest.raises(UserError, match="cannot read Pods from the cluster"):
        rc.run(args(), config)
    with pytest.raises(UserError, match="cannot reach a cluster"):
        rc.run(args(), Config(kubeconfig=str(tmp_path / "nope")))
