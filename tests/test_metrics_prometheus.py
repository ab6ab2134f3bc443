"""Metrics end to end: a real webhook, a real Prometheus scraping it, values read back via PromQL.

Debian's `prometheus` scrapes the webhook both on its HTTPS port and on the separate plain-HTTP
metrics port, loads the shipped PrometheusRule, and answers every alert expression and every
Grafana panel query. Traffic is driven in two rounds with a scrape in between, because
Prometheus only sees a counter increase between two samples it has scraped.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

import webhook
from tests.support.prometheus import launch_prometheus, prom_get, query, value
from tests.support.running_webhook import (
    RunningWebhook,
    cloneset_pod,
    deployment_pod,
    pod_review,
    running_webhook,
)
from tests.support.waiting import wait_for
from webhook import metrics
from webhook.plugins import PluginAnswer

pytestmark = pytest.mark.needs("prometheus")

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "manifests" / "monitoring" / "prometheusrule.yaml"
DASHBOARD = ROOT / "manifests" / "monitoring" / "grafana-dashboard.json"
DOCS = ROOT / "docs" / "metrics.md"
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
            time.sleep(1.1)
        claim = labels.get(CLAIM)
        self.observer.evaluated(STUB, "match" if claim else "no-match", time.perf_counter() - started)
        if claim:
            yield PluginAnswer(STUB, "statefulset", claim)


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


def doc_examples() -> list[str]:
    examples = re.findall(r"```promql\n(.*?)```", DOCS.read_text(), re.S)
    assert len(examples) >= 3
    return [e.strip() for e in examples]


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "PrometheusRule"
    return [r for g in doc["spec"]["groups"] for r in g["rules"]]


def latest(series: str) -> str:
    """The newest sample within a minute, skipping staleness markers.

    On this shared 2-core machine a scrape can exceed its 1 s timeout; Prometheus then marks the
    target's series stale and a plain instant query returns nothing until the next good scrape.
    """
    return f"last_over_time({series}[1m])"


def selector(name: str, **labels: str) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def start_prometheus(tmp_path: Path, hook: RunningWebhook) -> tuple[str, subprocess.Popen[bytes]]:
    """Debian's prometheus on loopback, scraping both webhook ports every second, with our rules loaded."""
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
    return launch_prometheus(tmp_path, config)


@dataclass(frozen=True)
class Scraped:
    """Prometheus after the traffic, plus registry values from before it (tests share the registry)."""

    prom: str
    hook: RunningWebhook
    before: dict[str, float]
    synced_at: float

    def value(self, job: str, name: str, **labels: str) -> float | None:
        return value(self.prom, latest(selector(name, job=job, **labels)))

    def answers(self, expr: str) -> list[dict[str, Any]]:
        """The query's result once it has one (up to 10 s); see :func:`latest` for why it may need a retry."""
        deadline = time.monotonic() + 10
        while not (result := query(self.prom, expr)) and time.monotonic() < deadline:
            time.sleep(0.25)
        return result

    def delta(self, job: str, name: str, **labels: str) -> float:
        got = self.value(job, name, **labels)
        assert got is not None, selector(name, job=job, **labels)
        return got - self.before.get(selector(name, **labels), 0.0)


ADMISSIONS = "workload_tagger_admission_requests_total"
RESOLUTIONS = "workload_tagger_resolutions_total"
PODS_SEEN = "workload_tagger_pods_seen_total"
LATENCY = "workload_tagger_admission_duration_seconds"
EVALUATIONS = "workload_tagger_plugin_evaluations_total"
PLUGIN_LATENCY = "workload_tagger_plugin_evaluation_duration_seconds"
# Slow reviews: 3 of 21, so p99 > 1 s holds with a margin. With 1 of 19 it sits within the few
# percent by which rate() extrapolates bucket series differently (their start values differ, as
# other tests in the process observed earlier), and the quantile flickered below 1 s.
SLOW_REVIEWS = 3
# What the two rounds plus the slow reviews add up to (see drive_round).
EXPECTED_ADMISSIONS = {
    ("CREATE", "mutated"): 10,
    ("CREATE", "unchanged"): 4 + SLOW_REVIEWS,
    ("UPDATE", "skipped"): 2,
    ("CREATE", "error"): 2,
    ("unknown", "invalid"): 2,
}
EXPECTED_RESOLUTIONS = {
    ("builtin", "Deployment"): 6,
    ("builtin", "CloneSet"): 2,
    ("plugin", "StatefulSet"): 2,
    ("none", "none"): 4 + SLOW_REVIEWS,
}
EXPECTED_PLATFORMS = {"OpenKruise": 2, "none": 12 + SLOW_REVIEWS}


def registry_values() -> dict[str, float]:
    out: dict[str, float] = {}
    for op, outcome in EXPECTED_ADMISSIONS:
        out[selector(ADMISSIONS, operation=op, outcome=outcome)] = 0.0
    for source, wtype in EXPECTED_RESOLUTIONS:
        out[selector(RESOLUTIONS, source=source, workload_type=wtype)] = 0.0
    for plat in EXPECTED_PLATFORMS:
        out[selector(PODS_SEEN, platform=plat)] = 0.0
    out[selector(LATENCY + "_count")] = 0.0
    out[selector(LATENCY + "_bucket", le="1.0")] = 0.0
    for metric in metrics.REGISTRY.collect():
        for s in metric.samples:
            key = selector(s.name, **s.labels)
            if key in out:
                out[key] = s.value
    return out


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
    # A second plugin, as the engine would report it: 3 of its 5 calls fail one way or another.
    for outcome in ("match", "no-match", "error", "budget", "memory"):
        flaky_observer.evaluated(FLAKY, outcome, 0.004)
    # ... after which the engine quarantines it and skips its next call.
    flaky_observer.quarantine_changed(FLAKY, True)
    flaky_observer.skipped(FLAKY)
    # Plugin hosts, as the pool would report them: one killed for a plugin past its limit, one
    # dead by itself, and none up at the end of the round.
    hosts = metrics.PluginHostMetrics()
    hosts.host_exited("timeout")
    hosts.host_exited("crash")
    hosts.hosts_up(0)


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    tmp_path = tmp_path_factory.mktemp("prometheus")
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
    owners = metrics.OwnerMetrics(["replicasets.apps"])  # owner lookups, counted in bulk with every flush
    owners.synced("replicasets.apps", True, 5)
    owners.count_lookups(lambda: {"hit": 3, "miss": 1})
    synced_at = time.time()
    before = registry_values()

    # The leaf expires in 10 days, so the certificate alert must fire.
    with running_webhook(tmp_path, lambda: StubPlugins(plugin_metrics), dt.timedelta(days=10)) as hook:
        prom, proc = start_prometheus(tmp_path, hook)
        try:
            for job in JOBS:
                wait_for(lambda job=job: value(prom, selector("up", job=job)) == 1, timeout=30.0, what=f"first scrape of {job}", interval=0.25)

            drive_round(hook, 1, plugin_metrics)
            key = selector(ADMISSIONS, operation="CREATE", outcome="mutated")
            for job in JOBS:
                expr = selector(ADMISSIONS, job=job, operation="CREATE", outcome="mutated")
                want = before[key] + 5
                wait_for(lambda expr=expr, want=want: value(prom, expr) == want, timeout=30.0, what=f"round 1 in {job}", interval=0.25)

            drive_round(hook, 2, plugin_metrics)
            for i in range(SLOW_REVIEWS):
                assert "patch" not in hook.review(pod_review(f"r2-slow-{i}", labels={SLOW: "1"}))["response"]
            for job in JOBS:
                for (op, outcome), delta in EXPECTED_ADMISSIONS.items():
                    expr = selector(ADMISSIONS, job=job, operation=op, outcome=outcome)
                    want = before[selector(ADMISSIONS, operation=op, outcome=outcome)] + delta
                    wait_for(lambda expr=expr, want=want: value(prom, expr) == want, timeout=30.0, what=f"{expr} == {want}", interval=0.25)
                expr = selector(PLUGIN_LATENCY + "_count", job=job, plugin=FLAKY)
                wait_for(lambda expr=expr: value(prom, expr) == 10, timeout=30.0, what=f"{expr} == 10", interval=0.25)
            yield Scraped(prom, hook, before, synced_at)
        finally:
            proc.terminate()
            proc.wait(10)
            metrics.count_lookups_stop()


@pytest.mark.parametrize("job", JOBS)
def test_admission_values_read_back_equal_the_traffic(scraped: Scraped, job: str) -> None:
    for (op, outcome), delta in EXPECTED_ADMISSIONS.items():
        assert scraped.delta(job, ADMISSIONS, operation=op, outcome=outcome) == delta, (op, outcome)
    for (source, wtype), delta in EXPECTED_RESOLUTIONS.items():
        assert scraped.delta(job, RESOLUTIONS, source=source, workload_type=wtype) == delta, (source, wtype)
    for plat, delta in EXPECTED_PLATFORMS.items():
        assert scraped.delta(job, PODS_SEEN, platform=plat) == delta, plat
    # 18 + 3 timed reviews (unreadable ones are not timed); only the slow ones took more than 1 s.
    assert scraped.delta(job, LATENCY + "_count") == 18 + SLOW_REVIEWS
    assert scraped.delta(job, LATENCY + "_bucket", le="1.0") == 18
    p99 = value(
        scraped.prom,
        f"histogram_quantile(0.99, sum by (le) (rate({selector(LATENCY + '_bucket', job=job)}[1m])))",
    )
    assert p99 is not None and 1.0 < p99 <= 2.0, p99


@pytest.mark.parametrize("job", JOBS)
def test_plugin_values_read_back_equal_the_calls(scraped: Scraped, job: str) -> None:
    v = scraped.value
    assert v(job, EVALUATIONS, plugin=STUB, outcome="match") == 2
    assert v(job, EVALUATIONS, plugin=STUB, outcome="no-match") == 4 + SLOW_REVIEWS
    for outcome in ("match", "no-match", "error", "budget", "memory"):
        assert v(job, EVALUATIONS, plugin=FLAKY, outcome=outcome) == 2, outcome
    assert v(job, EVALUATIONS, plugin=FLAKY, outcome="invalid") == 0
    assert v(job, EVALUATIONS, plugin=FLAKY, outcome="quarantined") == 2
    assert v(job, "workload_tagger_plugin_quarantined", plugin=FLAKY) == 1
    assert v(job, "workload_tagger_plugin_quarantined", plugin=STUB) == 0
    assert v(job, PLUGIN_LATENCY + "_count", plugin=FLAKY) == 10
    assert v(job, PLUGIN_LATENCY + "_bucket", plugin=FLAKY, le="0.0025") == 0
    assert v(job, PLUGIN_LATENCY + "_bucket", plugin=FLAKY, le="0.005") == 10
    assert v(job, "workload_tagger_plugins_loaded") == 2
    assert v(job, "workload_tagger_plugins_failed") == 1
    info = query(scraped.prom, latest(f'workload_tagger_plugin_info{{job="{job}",plugin=~"{STUB}|{FLAKY}"}}'))
    assert {(r["metric"]["plugin"], r["metric"]["sha256"]) for r in info} == {
        (STUB, "a" * 64),
        (FLAKY, "b" * 64),
    }
    assert v(job, "workload_tagger_plugin_load_errors_total", plugin="broken-prom") == 1


@pytest.mark.parametrize("job", JOBS)
def test_source_cert_and_build_values_read_back(scraped: Scraped, job: str) -> None:
    v = scraped.value
    assert v(job, "workload_tagger_source_synced", source="configmap") == 1
    assert v(job, "workload_tagger_source_synced", source="directory") == 0
    last = v(job, "workload_tagger_source_last_sync_timestamp_seconds", source="configmap")
    assert last is not None and abs(last - scraped.synced_at) < 5
    assert v(job, "workload_tagger_source_last_sync_timestamp_seconds", source="directory") == 0
    assert v(job, "workload_tagger_source_syncs_total", source="directory", result="failure") == 1
    restarts = query(
        scraped.prom,
        latest(selector("workload_tagger_source_watch_restarts_total", job=job, source="configmap")) + " > 0",
    )
    assert {r["metric"]["reason"]: r["value"][1] for r in restarts} == {"gone": "1", "other": "1"}
    expiry = v(job, "workload_tagger_serving_certificate_expiry_timestamp_seconds")
    assert expiry == scraped.hook.certs.leaf.cert.not_valid_after_utc.timestamp()
    build = query(scraped.prom, latest(selector("workload_tagger_build_info", job=job)))
    assert [(r["metric"]["version"], r["metric"]["python_version"]) for r in build] == [
        (webhook.__version__, platform.python_version())
    ]


def test_every_alert_expression_fires_on_the_driven_faults(scraped: Scraped) -> None:
    rules = {r["alert"]: r["expr"] for r in alert_rules()}
    assert set(rules) >= {
        "WorkloadTaggerAdmissionErrors",
        "WorkloadTaggerPluginErrors",
        "WorkloadTaggerPluginLoadFailed",
        "WorkloadTaggerCertificateExpiringSoon",
        "WorkloadTaggerSourceNotSynced",
        "WorkloadTaggerSlowAdmission",
        "WorkloadTaggerPluginHostsExiting",
        "WorkloadTaggerPluginHostsDown",
    }
    for name, expr in rules.items():
        assert scraped.answers(expr), f"alert {name} has no data: {expr}"
    # ...and only on the faulty parts.
    not_synced = scraped.answers(rules["WorkloadTaggerSourceNotSynced"])
    not_synced_sources = {r["metric"]["source"] for r in not_synced}
    assert "directory" in not_synced_sources and "configmap" not in not_synced_sources
    plugin_errors = {r["metric"]["plugin"] for r in scraped.answers(rules["WorkloadTaggerPluginErrors"])}
    assert FLAKY in plugin_errors and STUB not in plugin_errors

    # Prometheus itself loaded the rule file and holds every alert pending (each has a `for`).
    def all_alerts_active() -> bool:
        active = {a["labels"]["alertname"] for a in prom_get(scraped.prom, "/api/v1/alerts")["alerts"]}
        return active >= set(rules)

    wait_for(all_alerts_active, timeout=10, what="every alert pending in Prometheus", interval=0.25)


def test_every_dashboard_query_and_doc_example_returns_data(scraped: Scraped) -> None:
    for expr in dashboard_queries():
        assert scraped.answers(expr), f"dashboard query has no data: {expr}"
    for expr in doc_examples():
        assert scraped.answers(expr), f"docs/metrics.md example has no data: {expr}"
    # The dashboard's job variable lists both scrape jobs.
    jobs = prom_get(scraped.prom, "/api/v1/label/job/values", **{"match[]": "workload_tagger_build_info"})
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
    done = subprocess.run(
        ["promtool", "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(rf"SUCCESS: {len(alert_rules())} rules found", done.stdout), done.stdout
