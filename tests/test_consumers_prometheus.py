"""The Prometheus recipe of docs/consumers.md, end to end, in a real Prometheus.

The sample cluster's Pods go through the webhook's own handler (owner fallback on, so every
owner kind is named); a loopback exporter then serves what kube-state-metrics, run with the
documented `--metric-annotations-allowlist`, and cAdvisor would expose for them:
`kube_pod_annotations` with the allowed annotations as labels, and a per-container Pod metric
(plus the Pod-level cgroup series cAdvisor adds, which the query must not count twice). Debian's
`prometheus` scrapes it, and the documented join — read from the docs, the one place it is kept —
must group every Pod's metric under its workload, with the expected sums.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import pytest

from tests.support.factories import review
from tests.support.prometheus import launch_prometheus, query, value
from tests.support.waiting import wait_for
from webhook.admission import review as admission
from webhook.app import build_mutator
from webhook.config import Config

pytestmark = pytest.mark.needs("prometheus")

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "consumers.md"
SAMPLE = ROOT / "examples" / "cluster-pods.json"
MIB = 1 << 20


def documented_join() -> str:
    """The PromQL block right after the `workload-join` marker in docs/consumers.md."""
    found = re.search(r"<!-- promql: workload-join -->\n```promql\n(.*?)```", DOC.read_text(), re.S)
    assert found, "docs/consumers.md lost its workload-join query"
    return found.group(1).strip()


def documented_allowlist() -> list[str]:
    """The annotation keys of the documented kube-state-metrics flag."""
    found = re.search(r"--metric-annotations-allowlist=pods=\[([^\]]+)\]", DOC.read_text())
    assert found, "docs/consumers.md lost its --metric-annotations-allowlist flag"
    return found.group(1).split(",")


def ksm_label(annotation: str) -> str:
    """kube-state-metrics' label name for an allowed annotation: `annotation_` + the key, sanitized."""
    return "annotation_" + re.sub(r"[^a-zA-Z0-9_]", "_", annotation)


def admitted_pods() -> list[dict[str, Any]]:
    """The sample cluster's Pods as the API server would store them after the webhook's patch."""
    mutator = build_mutator(Config(owner_fallback=True))
    stored = []
    for obj in json.loads(SAMPLE.read_text())["items"]:
        decision = mutator.handle(admission.decode_for_mutation(orjson.dumps(review(obj))))
        patch = decision.response.patch
        ops = json.loads(base64.b64decode(patch.encoded)) if patch else []
        stored.append(jsonpatch.apply_patch(copy.deepcopy(obj), ops))
    return stored


def escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def series(name: str, labels: dict[str, str], val: float) -> str:
    return name + "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "} " + repr(val)


def exposition(pods: list[dict[str, Any]], allowed: list[str]) -> str:
    lines = ["# TYPE kube_pod_annotations gauge", "# TYPE container_memory_working_set_bytes gauge"]
    for i, p in enumerate(pods):
        meta = p["metadata"]
        ids = {"namespace": meta["namespace"], "pod": meta["name"]}
        annotations = meta.get("annotations") or {}
        # kube-state-metrics: one series per Pod, a label per allowed annotation the Pod has.
        kept = {ksm_label(k): annotations[k] for k in allowed if k in annotations}
        lines.append(series("kube_pod_annotations", {**ids, "uid": meta["uid"], **kept}, 1))
        # cAdvisor: a series per container, and one for the Pod's cgroup (container="").
        main, sidecar = (i + 1) * MIB, (i + 1) * 1000
        lines.append(series("container_memory_working_set_bytes", {**ids, "container": "main"}, main))
        lines.append(series("container_memory_working_set_bytes", {**ids, "container": "sidecar"}, sidecar))
        lines.append(series("container_memory_working_set_bytes", {**ids, "container": ""}, main + sidecar))
    return "\n".join(lines) + "\n"


def expected_groups(pods: list[dict[str, Any]], type_key: str, name_key: str) -> dict[tuple[str, str, str], float]:
    """Plain Python grouping of the same Pods: what the join must return."""
    sums: Counter[tuple[str, str, str]] = Counter()
    for i, p in enumerate(pods):
        annotations = p["metadata"].get("annotations") or {}
        if annotations.get(name_key):
            group = (p["metadata"]["namespace"], annotations.get(type_key, ""), annotations[name_key])
            sums[group] += (i + 1) * MIB + (i + 1) * 1000
    return dict(sums)


@pytest.fixture(scope="module")
def exporter() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    pods = admitted_pods()
    body = exposition(pods, documented_allowlist()).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", pods
    finally:
        server.shutdown()
        server.server_close()


def test_the_documented_join_groups_every_pod_metric_by_workload(
    exporter: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    target, pods = exporter
    type_key, name_key = documented_allowlist()
    assert (type_key, name_key) == ("workload-tagger.io/workload-type", "workload-tagger.io/workload-name")
    type_label, name_label = ksm_label(type_key), ksm_label(name_key)
    join = documented_join()
    assert type_label in join and name_label in join  # the query names the labels the flag produces

    want = expected_groups(pods, type_key, name_key)
    # Independent spot checks of the sample cluster as tagged: a Deployment of three Pods, an Argo
    # Workflow and static Pods (owner fallback), a user's own value kept, the untagged Pod left out.
    assert sum(1 for p in pods if p["metadata"]["name"].startswith("frontend-")) == 3
    assert ("shop", "Deployment", "frontend") in want and ("ci", "Workflow", "build-main") in want
    assert ("kube-system", "StaticPod", "etcd") in want and ("shop", "StatefulSet", "redis-cache") in want
    assert not any(name == "debug-shell" for _, _, name in want)

    config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
              "scrape_configs": [{"job_name": "kube-state-metrics", "static_configs": [{"targets": [target]}]}]}
    base, proc = launch_prometheus(tmp_path, config)
    try:
        wait_for(lambda: value(base, 'up{job="kube-state-metrics"}') == 1, timeout=30.0, what="first scrape", interval=0.25)
        got: dict[tuple[str, str, str], float] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # a scrape may time out on a busy machine: retry until whole
            got = {(r["metric"]["namespace"], r["metric"].get(type_label, ""), r["metric"][name_label]): float(r["value"][1])
                   for r in query(base, join)}
            if got == want:
                break
            time.sleep(0.5)
        assert got == want
        # every result carries exactly the grouping labels (no Pod or container leaked through)
        assert all(set(r["metric"]) == {"namespace", type_label, name_label} for r in query(base, join))
    finally:
        proc.terminate()
        proc.wait(10)
