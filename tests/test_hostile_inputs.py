"""Hostile files for the CLI doors (resolve, audit, recommend): one error line, exit 2, bounded time and memory.

Deep nesting, a YAML alias inside its own anchor, and a few-hundred-byte "billion laughs" List;
and, on the other side of the bound, a 100,000-Pod `kubectl get pods -A -o json` still read whole.
Every run is a real subprocess with a timeout and an address-space cap.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.support.podgen import make_pod

ROOT = Path(__file__).resolve().parent.parent


def billion_laughs(levels: int = 8) -> str:
    """Each level a list of ten aliases to the one below: 10**levels Pods once expanded, a few hundred bytes."""
    lines = ["a0: &a0 {metadata: {name: lol, ownerReferences: [{apiVersion: apps/v1, kind: StatefulSet, name: x}]}}"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join([*lines, "kind: List", f"items: *a{levels - 1}"]) + "\n"


HOSTILE = {
    "deep-json-list": ("[" * 2000 + "]" * 2000, "nested too deeply"),
    "deep-json-object": ('{"a":' * 2000 + "1" + "}" * 2000, "nested too deeply"),
    "deep-json-items": ('{"kind":"List","items":' + "[" * 2000 + "]" * 2000 + "}", "nested too deeply"),
    "deep-yaml-block": ("a:\n" + "".join("  " * i + "-\n" for i in range(1, 2000)), "nested too deeply"),
    "deep-yaml-flow": ("x: " + "[" * 2000 + "]" * 2000 + "\n", "nested too deeply"),
    "self-alias-list": ("&a [*a]\n", "refers to itself"),
    "self-alias-map": ("&a {metadata: {labels: *a}}\n", "refers to itself"),
    "billion-laughs": (billion_laughs(), "aliases expand to more than"),
    "review-non-string-keys": ("apiVersion: admission.k8s.io/v1\nkind: AdmissionReview\nrequest:\n  uid: u\n"
                               "  object: {metadata: {name: x}, spec: {1: 2}}\n", "cannot be read as JSON"),
    "review-deep-yaml": ("apiVersion: admission.k8s.io/v1\nkind: AdmissionReview\nrequest:\n  uid: u\n"
                         "  object: {metadata: {name: x}, spec: " + "[" * 300 + "]" * 300 + "}\n",
                         "cannot be read as JSON"),
}


MEMORY_CAP = 1536 << 20  # address space: far above a CLI run on these files, far below their expansion


def cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def run(*args: str, stdin: str | None = None, timeout: float = 60,
        capped: bool = True) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess, bounded in time and (``capped``) in memory."""
    return subprocess.run([sys.executable, "-m", "webhook", *args], cwd=ROOT, input=stdin, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          preexec_fn=cap_memory if capped else None)


@pytest.mark.parametrize("command", ["resolve", "audit", "recommend"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_file_is_one_line_exit_2(tmp_path: Path, command: str, name: str) -> None:
    text, message = HOSTILE[name]
    f = tmp_path / (name + (".json" if "json" in name else ".yaml"))
    f.write_text(text)
    proc = run(command, str(f))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("workload-tagger: error: ") and message in lines[0], lines[:3]


def test_hostile_stdin_is_one_line_exit_2() -> None:
    proc = run("resolve", "-", stdin=billion_laughs(9))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "stdin" in proc.stderr


def test_small_anchors_and_aliases_still_work(tmp_path: Path) -> None:
    f = tmp_path / "pods.yaml"
    f.write_text("owner: &o [{apiVersion: apps/v1, kind: StatefulSet, name: db, controller: true}]\n"
                 "kind: List\nitems:\n"
                 "- {metadata: {name: db-0, ownerReferences: *o}}\n- {metadata: {name: db-1, ownerReferences: *o}}\n")
    proc = run("resolve", str(f))
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["workloadName"] for line in proc.stdout.splitlines()] == ["db", "db"]


def test_a_100000_pod_cluster_dump_is_still_read(tmp_path: Path) -> None:
    """`kubectl get pods -A -o json` of a large cluster: ~50 MB, no limit on size, answered whole."""
    items = []
    for i in range(100_000):
        p = make_pod(i).pod
        p["spec"] = {"containers": [{"name": "app", "image": "registry.example/app:1.2.3"}], "nodeName": f"n{i % 50}"}
        items.append({"apiVersion": "v1", "kind": "Pod", **p})
    f = tmp_path / "pods.json"
    f.write_bytes(orjson.dumps({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {}}))
    del items
    proc = run("audit", str(f), "--format", "json", timeout=240, capped=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["total"] == 100_000
