"""The CLI as a user runs it: a subprocess, one JSON line out, one error line on failure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cases import CASES
from tests.support.cli import cli
from tests.support.factories import owner, pod, review

ROOT = Path(__file__).resolve().parent.parent


def resolved(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


STS = pod(name="db-0", owners=[owner("apps/v1", "StatefulSet", "db")])
EXPECT_STS = {"workloadType": "StatefulSet", "workloadName": "db", "platform": None, "resolvedBy": "builtin:statefulset"}


@pytest.mark.parametrize("shape", ["pod-json", "pod-yaml", "metadata", "review", "review-v1beta1", "list"])
def test_resolve_reads_every_shape(tmp_path: Path, shape: str) -> None:
    doc: Any = {
        "pod-json": STS, "pod-yaml": STS, "metadata": STS["metadata"], "review": review(STS),
        "review-v1beta1": review(STS, api_version="admission.k8s.io/v1beta1"),
        "list": {"apiVersion": "v1", "kind": "List", "items": [STS]},
    }[shape]
    f = tmp_path / ("pod.yaml" if shape == "pod-yaml" else "pod.json")
    f.write_text(yaml.safe_dump(doc) if shape == "pod-yaml" else json.dumps(doc))
    assert resolved(cli("resolve", str(f))) == [EXPECT_STS]


def test_resolve_stdin_and_unresolved_nulls() -> None:
    docs = yaml.safe_dump_all([STS, pod(name="bare")])
    out = resolved(cli("resolve", "-", stdin=docs))
    assert out == [EXPECT_STS, {"workloadType": None, "workloadName": None, "platform": None, "resolvedBy": None}]


def test_resolve_agrees_with_the_rule_table_for_every_case(tmp_path: Path) -> None:
    f = tmp_path / "pods.json"
    f.write_text(json.dumps({"kind": "PodList", "items": [c.pod for c in CASES]}))
    out = resolved(cli("resolve", str(f)))
    for case, got in zip(CASES, out, strict=True):
        want = None if case.expected is None else list(case.expected)
        assert (None if got["workloadType"] is None else [got["workloadType"], got["workloadName"],
                                                           got["platform"], got["resolvedBy"]]) == want, case.id


def test_review_namespace_and_operation_follow_the_webhook(tmp_path: Path) -> None:
    f = tmp_path / "update.json"
    f.write_text(json.dumps(review(STS, operation="UPDATE")))
    # /mutate only mutates CREATE, and resolve uses exactly that path.
    assert resolved(cli("resolve", str(f)))[0]["workloadType"] is None


def test_config_file_rules_env_and_flag_precedence(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"rules": [{"apiVersion": "example.com/v1", "kind": "Widget", "type": "Gizmo"}],
                                   "allowCustomTypes": False}))
    f = tmp_path / "w.json"
    f.write_text(json.dumps(pod(name="w-0", owners=[owner("example.com/v1", "Widget", "w")])))
    bad = cli("resolve", str(f), "--config", str(cfg))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "unknown workload type 'Gizmo'" in bad.stderr
    import os

    env = {**os.environ, "WORKLOAD_TAGGER_ALLOW_CUSTOM_TYPES": "true"}
    assert resolved(cli("resolve", str(f), "--config", str(cfg), env=env))[0]["workloadType"] == "Gizmo"
    flagged = cli("resolve", str(f), "--config", str(cfg), "--no-allow-custom-types", env=env)
    assert flagged.returncode == 2 and "unknown workload type" in flagged.stderr


@pytest.mark.parametrize("content,message", [
    (None, "cannot read"),
    ("", "is empty"),
    ("{not json: [", "neither valid JSON nor YAML"),
    ('{"kind": "Deployment", "metadata": {}}', "expected a Pod, got kind 'Deployment'"),
    ("42", "expected a Pod"),
    ('{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "no 'request' object"),
    ('{"spec": {}}', "not a Pod"),
])
def test_bad_input_is_one_clear_line(tmp_path: Path, content: str | None, message: str) -> None:
    f = tmp_path / "in.json"
    if content is not None:
        f.write_text(content)
    proc = cli("resolve", str(f))
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("workload-tagger: error: ") and message in lines[0], proc.stderr


def test_bad_config_is_one_clear_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("prot: 1\n")
    proc = cli("resolve", "-", "--config", str(cfg), stdin="{}")
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"workload-tagger: error: config file {cfg}: unknown setting 'prot'")


def test_serve_without_certs_is_one_clear_line(tmp_path: Path) -> None:
    proc = cli("serve", "--cert-file", str(tmp_path / "nope.crt"), "--key-file", str(tmp_path / "nope.key"),
               "--plugin-source", "none")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"workload-tagger: error: TLS file not found: {tmp_path / 'nope.crt'} (run `make certs` or set --cert-file/--key-file)"]


def test_console_script_and_module_are_the_same_cli() -> None:
    exe = Path(sys.executable).with_name("workload-tagger")
    assert exe.exists(), "pip install -e . provides the console script"
    a = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    b = cli("--help")
    assert a.returncode == b.returncode == 0
    assert a.stdout.replace("workload-tagger", "X") == b.stdout.replace("workload-tagger", "X")
    for command in ("serve", "resolve", "plugin", "certs", "recommend", "audit", "backfill"):
        assert command in b.stdout


def test_readme_shows_the_real_audit_table_for_the_sample_cluster() -> None:
    proc = cli("audit", "examples/cluster-pods.json")
    assert proc.returncode == 0, proc.stderr
    readme = (ROOT / "README.md").read_text()
    assert "```\n" + proc.stdout.rstrip() + "\n```" in readme
