"""Metrics end to end: a real webhook, a real Prometheus scraping it, values read back via PromQL.

Debian's `prometheus` scrapes the webhook both on its HTTPS port and on the separate plain-HTTP
metrics port, loads the shipped PrometheusRule, and answers every alert expression and every
Grafana panel query. Traffic is driven in two rounds with a scrape in between, because
Prometheus only sees a counter increase between two samples it has scraped.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from running_webhook import RunningWebhook, cloneset_pod, deployment_pod, free_port, pod_review, running_webhook

import webhook
from webhook import metrics
from webhook.plugins import PluginAnswer

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "manifests" / "monitoring" / "prometheusrule.yaml"
DASHBOARD = ROOT / "manifests" / "monitoring" / "grafana-dashboard.json"
JOBS = ("plain", "tls")
STUB = "stub-prom"
FLAKY = "flaky-prom"
# Labels the stub plugin set reads, standing in for what real Lua plugins would decide.
CLAIM, SLOW, CRASH = "test.io/claim", "test.io/slow", "test.io/crash"


class StubPlugins:
    """A plugin set that behaves like the engine from the outside: answers by label, reports each call.

    ``slow`` sleeps past 1 s (a plugin ignoring its budget), ``crash`` raises out of the set
    (a bug escaping the engine, which the mutator must turn into outcome ``error``).
    """

    names = (STUB,)

    def __init__(self, observer: metrics.PluginMetrics) -> None:
        self.observer = observer

    def answers(self, meta_json: str, deadline: float | None = None) -> Iterator[PluginAnswer]:
        started = time.perf_counter()
        labels = orjson.loads(meta_json).get("labels", {})
        if CRASH in labels:
            raise RuntimeError("engine bug")
        if SLOW in labels:
            time.sleep(1.2)
        claim = labels.get(CLAIM)
        self.observer.evaluated(STUB, "match" if claim else "no-match", time.perf_counter() - started)
        if claim:
            yield PluginAnswer(STUB, "statefulset", claim)


def prom_get(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else base + path
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return body["data"]


def query(base: str, expr: str) -> list[dict[str, Any]]:
    data = prom_get(base, "/api/v1/query", query=expr)
    assert data["resultType"] == "vector", (expr, data)
    result: list[dict[str, Any]] = data["result"]
    return result


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def value(base: str, expr: str) -> float | None:
    result = query(base, expr)
    return float(result[0]["value"][1]) if len(result) == 1 else None


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def dashboard_queries() -> list[str]:
    """Every panel expression, with Grafana's variables replaced the way Grafana would expand them."""
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    subst = {"$__rate_interval": "1m", "$__range": "5m", "$job": ".+"}
    out = []
    for expr in exprs:
        for var, repl in subst.items():
            expr = expr.replace(var, repl)
        assert "$" not in expr, expr
        out.append(expr)
    return out


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "PrometheusRule"
    return [r for g in doc["spec"]["groups"] for r in g["rules"]]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[RunningWebhook], str]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(hook: RunningWebhook) -> str:
        rules_file = tmp_path / "rules.yml"
        rules_file.write_text(yaml.safe_dump(yaml.safe_load(RULES.read_text())["spec"]))
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules_file)],
            "scrape_configs": [
                {"job_name": "plain", "static_configs": [{"targets": [f"127.0.0.1:{hook.metrics_port}"]}]},
                {
                    "job_name": "tls",
                    "scheme": "https",
                    "tls_config": {"ca_file": str(hook.certs.ca)},
                    "static_configs": [{"targets": [f"127.0.0.1:{hook.port}"]}],
                },
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        procs.append(
            subprocess.Popen(
                [
                    "/usr/bin/prometheus",
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                with urllib.request.urlopen(base + "/-/ready", timeout=1) as resp:
                    return bool(resp.status == 200)
            except OSError:
                assert procs[0].poll() is None, (tmp_path / "prometheus.log").read_text()
                return False

        wait_for("prometheus ready", ready, 15)
        return base

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def drive_round(hook: RunningWebhook, round_no: int, flaky_observer: metrics.PluginMetrics) -> None:
    """One round of traffic: 5 mutated, 2 unchanged, 1 skipped, 1 error, 1 invalid (+ direct plugin calls)."""
    u = f"r{round_no}"
    for i in range(3):
        answer = hook.review(deployment_pod(f"{u}-deploy-{i}"))
        assert answer["response"]["patchType"] == "JSONPatch"
    assert "patch" in hook.review(cloneset_pod(f"{u}-cloneset"))["response"]
    assert "patch" in hook.review(pod_review(f"{u}-plugin", labels={CLAIM: "db"}))["response"]
    for i in range(2):
        assert "patch" not in hook.review(pod_review(f"{u}-bare-{i}", name=f"bare-{i}"))["response"]
    update = deployment_pod(f"{u}-update")
    update["request"]["operation"] = "UPDATE"
    assert "patch" not in hook.review(update)["response"]
    crash = hook.review(pod_review(f"{u}-crash", labels={CRASH: "1"}))["response"]
    assert crash["allowed"] is True and "patch" not in crash
    status, _ = hook.post(b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"')
    assert status == 400
    # A second plugin the engine would report on; 3 of its 5 calls fail one way or another.
    for outcome in ("match", "no-match", "error", "budget", "memory"):
        flaky_observer.evaluated(FLAKY, outcome, 0.004)


def test_prometheus_scrapes_and_answers_every_rule_and_panel(
    tmp_path: Path, prometheus: Callable[[RunningWebhook], str]
) -> None:
    plugin_metrics = metrics.PluginMetrics()
    plugin_metrics.load_failed("broken-prom", "[string \"broken-prom\"]:3: 'end' expected")
    plugin_metrics.set_loaded({STUB: "a" * 64, FLAKY: "b" * 64})
    sources = metrics.SourceMetrics()
    sources.expect("configmap")
    sources.expect("directory")
    sources.synced("configmap", True)
    sources.synced("directory", False)  # never synced: the not-synced alert must see it
    sources.watch_restarted("configmap", "gone")
    sources.watch_restarted("configmap", "HTTP 500 from apiserver")  # folded into "other"
    synced_at = time.time()

    counters = {
        ("CREATE", "mutated"): 0.0, ("CREATE", "unchanged"): 0.0, ("UPDATE", "skipped"): 0.0,
        ("CREATE", "error"): 0.0, ("unknown", "invalid"): 0.0,
    }
    for op, outcome in counters:
        counters[op, outcome] = sample("workload_tagger_admission_requests_total", operation=op, outcome=outcome)
    resolutions = {
        ("builtin", "Deployment"): 0.0, ("builtin", "CloneSet"): 0.0, ("plugin", "StatefulSet"): 0.0,
        ("none", "none"): 0.0,
    }
    for source, wtype in resolutions:
        resolutions[source, wtype] = sample("workload_tagger_resolutions_total", source=source, workload_type=wtype)
    platforms = {p: sample("workload_tagger_pods_seen_total", platform=p) for p in ("OpenKruise", "none")}
    latency_count = sample("workload_tagger_admission_duration_seconds_count")
    under_1s = sample("workload_tagger_admission_duration_seconds_bucket", le="1.0")

    # The leaf expires in 10 days, so the certificate alert must fire.
    with running_webhook(tmp_path, lambda: StubPlugins(plugin_metrics), dt.timedelta(days=10)) as hook:
        prom = prometheus(hook)
        for job in JOBS:
            wait_for(f"first scrape of {job}", lambda job=job: value(prom, f'up{{job="{job}"}}') == 1.0)

        drive_round(hook, 1, plugin_metrics)
        mutated_after_1 = counters["CREATE", "mutated"] + 5
        for job in JOBS:
            expr = f'workload_tagger_admission_requests_total{{job="{job}",operation="CREATE",outcome="mutated"}}'
            wait_for(f"round 1 in {job}", lambda expr=expr: value(prom, expr) == mutated_after_1)

        drive_round(hook, 2, plugin_metrics)
        assert "patch" not in hook.review(pod_review("r2-slow", labels={SLOW: "1"}))["response"]

        expected_counts = {
            ("CREATE", "mutated"): 10, ("CREATE", "unchanged"): 5, ("UPDATE", "skipped"): 2,
            ("CREATE", "error"): 2, ("unknown", "invalid"): 2,
        }
        for job in JOBS:
            for (op, outcome), delta in expected_counts.items():
                expr = (
                    f'workload_tagger_admission_requests_total{{job="{job}",operation="{op}",outcome="{outcome}"}}'
                )
                want = counters[op, outcome] + delta
                wait_for(f"{expr} == {want}", lambda expr=expr, want=want: value(prom, expr) == want)

        # --- values read back through PromQL equal the traffic driven ---------------------
        for job in JOBS:
            sel = f'job="{job}"'
            for (source, wtype), delta in {
                ("builtin", "Deployment"): 6, ("builtin", "CloneSet"): 2, ("plugin", "StatefulSet"): 2,
                ("none", "none"): 5,
            }.items():
                got = value(prom, f'workload_tagger_resolutions_total{{{sel},source="{source}",workload_type="{wtype}"}}')
                assert got == resolutions[source, wtype] + delta, (source, wtype, got)
            assert value(prom, f'workload_tagger_pods_seen_total{{{sel},platform="OpenKruise"}}') == (
                platforms["OpenKruise"] + 2
            )
            assert value(prom, f'workload_tagger_pods_seen_total{{{sel},platform="none"}}') == platforms["none"] + 13
            # 19 timed reviews (invalid ones are not timed); only the slow one is above 1 s.
            assert value(prom, f"workload_tagger_admission_duration_seconds_count{{{sel}}}") == latency_count + 19
            assert value(prom, f'workload_tagger_admission_duration_seconds_bucket{{{sel},le="1.0"}}') == under_1s + 18
            p99 = value(prom, f"histogram_quantile(0.99, sum by (le) (rate(workload_tagger_admission_duration_seconds_bucket{{{sel}}}[1m])))")
            assert p99 is not None and 1.0 < p99 <= 2.0, p99

            ev = "workload_tagger_plugin_evaluations_total"
            assert value(prom, f'{ev}{{{sel},plugin="{STUB}",outcome="match"}}') == 2
            assert value(prom, f'{ev}{{{sel},plugin="{STUB}",outcome="no-match"}}') == 5
            for outcome in ("match", "no-match", "error", "budget", "memory"):
                assert value(prom, f'{ev}{{{sel},plugin="{FLAKY}",outcome="{outcome}"}}') == 2
            assert value(prom, f'{ev}{{{sel},plugin="{FLAKY}",outcome="invalid"}}') == 0
            assert value(prom, f'workload_tagger_plugin_evaluation_duration_seconds_count{{{sel},plugin="{FLAKY}"}}') == 10
            assert value(prom, f'workload_tagger_plugin_evaluation_duration_seconds_bucket{{{sel},plugin="{FLAKY}",le="0.0025"}}') == 0
            assert value(prom, f'workload_tagger_plugin_evaluation_duration_seconds_bucket{{{sel},plugin="{FLAKY}",le="0.005"}}') == 10
            assert value(prom, f"workload_tagger_plugins_loaded{{{sel}}}") == 2
            assert value(prom, f"workload_tagger_plugins_failed{{{sel}}}") == 1
            info = query(prom, f"workload_tagger_plugin_info{{{sel}}}")
            assert {(r["metric"]["plugin"], r["metric"]["sha256"]) for r in info} == {
                (STUB, "a" * 64), (FLAKY, "b" * 64)
            }
            assert value(prom, f'workload_tagger_plugin_load_errors_total{{{sel},plugin="broken-prom"}}') == 1

            assert value(prom, f'workload_tagger_source_synced{{{sel},source="configmap"}}') == 1
            assert value(prom, f'workload_tagger_source_synced{{{sel},source="directory"}}') == 0
            last = value(prom, f'workload_tagger_source_last_sync_timestamp_seconds{{{sel},source="configmap"}}')
            assert last is not None and abs(last - synced_at) < 5
            assert value(prom, f'workload_tagger_source_last_sync_timestamp_seconds{{{sel},source="directory"}}') == 0
            assert value(prom, f'workload_tagger_source_syncs_total{{{sel},source="directory",result="failure"}}') == 1
            restarts = query(prom, f'workload_tagger_source_watch_restarts_total{{{sel},source="configmap"}} > 0')
            assert {r["metric"]["reason"]: r["value"][1] for r in restarts} == {"gone": "1", "other": "1"}

            expiry = value(prom, f"workload_tagger_serving_certificate_expiry_timestamp_seconds{{{sel}}}")
            assert expiry == hook.certs.leaf.cert.not_valid_after_utc.timestamp()
            build = query(prom, f"workload_tagger_build_info{{{sel}}}")
            assert [r["metric"]["version"] for r in build] == [webhook.__version__]

        # --- every alert expression and every dashboard query returns data ----------------
        rules = alert_rules()
        assert {r["alert"] for r in rules} >= {
            "WorkloadTaggerAdmissionErrors", "WorkloadTaggerPluginErrors", "WorkloadTaggerCertificateExpiringSoon",
            "WorkloadTaggerSourceNotSynced", "WorkloadTaggerSlowAdmission", "WorkloadTaggerPluginLoadFailed",
        }
        for rule in rules:
            result = query(prom, rule["expr"])
            assert result, f"alert {rule['alert']} has no data: {rule['expr']}"
        not_synced = query(prom, next(r["expr"] for r in rules if r["alert"] == "WorkloadTaggerSourceNotSynced"))
        assert {r["metric"]["source"] for r in not_synced} == {"directory"}
        flaky = query(prom, next(r["expr"] for r in rules if r["alert"] == "WorkloadTaggerPluginErrors"))
        assert {r["metric"]["plugin"] for r in flaky} == {FLAKY}

        # Prometheus itself loaded the rule file and has every alert pending (all have a `for`).
        def all_alerts_active() -> bool:
            active = {a["labels"]["alertname"] for a in prom_get(prom, "/api/v1/alerts")["alerts"]}
            return active >= {r["alert"] for r in rules}

        wait_for("every alert pending in Prometheus", all_alerts_active, 10)

        for expr in dashboard_queries():
            assert query(prom, expr), f"dashboard query has no data: {expr}"
        jobs = prom_get(prom, "/api/v1/label/job/values", **{"match[]": "workload_tagger_build_info"})
        assert sorted(jobs) == sorted(JOBS)


def test_promtool_check_metrics_is_silent_on_our_exposition() -> None:
    observer = metrics.PluginMetrics()
    observer.set_loaded({"lint": "c" * 64})
    observer.evaluated("lint", "match", 0.0002)
    observer.load_failed("lint-broken", "syntax error")
    metrics.SourceMetrics().synced("configmap", True)
    for accept in (None, "text/plain;version=0.0.4"):
        body, content_type = metrics.exposition(accept)
        assert content_type.startswith("text/plain; version=0.0.4")
        done = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=30)
        assert done.returncode == 0 and done.stdout == b"" and done.stderr == b"", done


def test_promtool_check_rules_passes_on_the_prometheus_rule(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(yaml.safe_dump(yaml.safe_load(RULES.read_text())["spec"]))
    done = subprocess.run(["promtool", "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(rf"SUCCESS: {len(alert_rules())} rules found", done.stdout), done.stdout
