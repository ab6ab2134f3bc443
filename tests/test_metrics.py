"""Metric label bounding, observer bookkeeping and exposition, read back from the registry itself."""

from __future__ import annotations

import datetime as dt

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.metrics_reading import series_labels, val
from webhook import metrics
from webhook.certs import generate as certs
from webhook.resolution.model import KNOWN_TYPES, Resolution


def test_every_metric_has_the_prefix_and_counters_end_in_total() -> None:
    body, _ = metrics.exposition()
    families = list(text_string_to_metric_families(body.decode()))
    assert families
    for family in families:
        assert family.name.startswith("workload_tagger_"), family.name
        for s in family.samples:
            if family.type == "counter":
                assert s.name.endswith("_total"), s.name
    assert not [f for f in families if f.name.endswith("_created")]


@pytest.mark.parametrize(
    ("operation", "label"),
    [
        ("CREATE", "CREATE"),
        ("UPDATE", "UPDATE"),
        ("", "unknown"),
        ("DROP TABLE pods", "other"),
        ("create", "other"),
    ],
)
def test_admission_operation_label_is_bounded(operation: str, label: str) -> None:
    before = val("workload_tagger_admission_requests_total", operation=label, outcome="skipped") or 0.0
    metrics.observe_admission(operation, "skipped", 0.0003)
    assert val("workload_tagger_admission_requests_total", operation=label, outcome="skipped") == before + 1
    assert {s["operation"] for s in series_labels("workload_tagger_admission_requests_total")} <= {
        *metrics.OPERATIONS,
        "unknown",
        "other",
    }


def test_invalid_reviews_are_counted_but_not_timed() -> None:
    count = val("workload_tagger_admission_duration_seconds_count") or 0.0
    invalid = val("workload_tagger_admission_requests_total", operation="unknown", outcome="invalid") or 0.0
    metrics.observe_admission("", "invalid", None)
    assert (
        val("workload_tagger_admission_requests_total", operation="unknown", outcome="invalid") == invalid + 1
    )
    assert val("workload_tagger_admission_duration_seconds_count") == count


def test_latency_buckets_reach_past_one_second_so_p99_above_it_is_measurable() -> None:
    bounds = metrics.ADMISSION_BUCKETS
    assert bounds[0] < 0.001 and 1.0 in bounds and max(bounds) > 1.0
    before = val("workload_tagger_admission_duration_seconds_bucket", le="2.0") or 0.0
    under_1 = val("workload_tagger_admission_duration_seconds_bucket", le="1.0") or 0.0
    metrics.observe_admission("CREATE", "unchanged", 1.5)
    assert val("workload_tagger_admission_duration_seconds_bucket", le="2.0") == before + 1
    assert val("workload_tagger_admission_duration_seconds_bucket", le="1.0") == under_1


@pytest.mark.parametrize(
    ("resolution", "source", "wtype"),
    [
        (Resolution("Deployment", "web", None, "builtin:deployment"), "builtin", "Deployment"),
        (
            Resolution("StatefulSet", "db", "OpenKruise", "config:apps.kruise.io-statefulset"),
            "config",
            "StatefulSet",
        ),
        (Resolution("CloneSet", "cart", None, "plugin:kruise"), "plugin", "CloneSet"),
        # allowCustomTypes lets plugins invent types: they must not become label values.
        (Resolution("MyOperatorThing-4711", "x", None, "plugin:custom"), "plugin", "other"),
        (Resolution("Job", "x", None, "weird"), "other", "Job"),
        (None, "none", "none"),
    ],
)
def test_resolution_labels_are_source_kind_and_known_type(
    resolution: Resolution | None, source: str, wtype: str
) -> None:
    before = val("workload_tagger_resolutions_total", source=source, workload_type=wtype) or 0.0
    metrics.observe_resolution(resolution)
    assert val("workload_tagger_resolutions_total", source=source, workload_type=wtype) == before + 1
    exposed = series_labels("workload_tagger_resolutions_total")
    assert {s["workload_type"] for s in exposed} <= {*KNOWN_TYPES, "other", "none"}
    assert not any(s["source"].startswith(("plugin:", "builtin:")) for s in exposed)


def test_platform_none_when_the_rule_names_none() -> None:
    before = val("workload_tagger_pods_seen_total", platform="none") or 0.0
    metrics.observe_platform(None)
    assert val("workload_tagger_pods_seen_total", platform="none") == before + 1
    metrics.observe_platform("OpenShift")
    assert (val("workload_tagger_pods_seen_total", platform="OpenShift") or 0) >= 1


def test_plugin_series_of_removed_plugins_are_dropped() -> None:
    obs = metrics.PluginMetrics()
    obs.set_loaded({"rm-a": "1" * 64, "rm-b": "2" * 64})
    obs.evaluated("rm-a", "match", 0.001)
    obs.evaluated("rm-b", "error", 0.001)
    assert val("workload_tagger_plugins_loaded") == 2
    assert val("workload_tagger_plugin_info", plugin="rm-a", sha256="1" * 64) == 1

    # rm-a changes source, rm-b disappears, rm-c fails to compile in the same apply.
    obs.load_failed("rm-c", "syntax error near 'end'")
    obs.set_loaded({"rm-a": "3" * 64})
    assert val("workload_tagger_plugins_loaded") == 1
    assert val("workload_tagger_plugins_failed") == 1
    info = {(s["plugin"], s["sha256"]) for s in series_labels("workload_tagger_plugin_info")}
    assert {p for p in info if p[0].startswith("rm-")} == {("rm-a", "3" * 64)}
    plugins_with_evaluations = {
        s["plugin"] for s in series_labels("workload_tagger_plugin_evaluations_total")
    }
    assert "rm-a" in plugins_with_evaluations and "rm-b" not in plugins_with_evaluations
    assert val("workload_tagger_plugin_evaluations_total", plugin="rm-a", outcome="match") == 1
    assert val("workload_tagger_plugin_evaluation_duration_seconds_count", plugin="rm-b") is None
    assert val("workload_tagger_plugin_load_errors_total", plugin="rm-c") == 1

    # rm-c is removed from the source: its load-error series goes with it; the failure gauge clears.
    obs.set_loaded({"rm-a": "3" * 64})
    assert val("workload_tagger_plugins_failed") == 0
    assert val("workload_tagger_plugin_load_errors_total", plugin="rm-c") is None
    obs.set_loaded({})
    assert not [s for s in series_labels("workload_tagger_plugin_info") if s["plugin"].startswith("rm-")]


def test_a_plugin_removed_and_added_again_is_counted_in_its_new_series() -> None:
    """The hot path keeps bound label children; removing a plugin must not leave a stale one behind."""
    obs = metrics.PluginMetrics()
    obs.set_loaded({"back": "5" * 64})
    obs.evaluated("back", "no-match", 0.001)
    obs.set_loaded({})
    assert val("workload_tagger_plugin_evaluations_total", plugin="back", outcome="no-match") is None
    obs.set_loaded({"back": "5" * 64})
    obs.evaluated("back", "no-match", 0.001)
    obs.evaluated("back", "no-match", 0.001)
    assert val("workload_tagger_plugin_evaluations_total", plugin="back", outcome="no-match") == 2
    assert val("workload_tagger_plugin_evaluation_duration_seconds_count", plugin="back") == 2
    # counted in bulk: the bound itself is inside its bucket (le), the one below stays empty
    assert val("workload_tagger_plugin_evaluation_duration_seconds_bucket", plugin="back", le="0.001") == 2
    assert val("workload_tagger_plugin_evaluation_duration_seconds_bucket", plugin="back", le="0.0005") == 0
    assert val("workload_tagger_plugin_evaluation_duration_seconds_sum", plugin="back") == pytest.approx(0.002)
    obs.set_loaded({})


def test_unknown_plugin_outcome_counts_as_error() -> None:
    obs = metrics.PluginMetrics()
    obs.set_loaded({"odd": "4" * 64})
    obs.evaluated("odd", "exploded", 0.002)
    assert val("workload_tagger_plugin_evaluations_total", plugin="odd", outcome="error") == 1
    assert "exploded" not in {s["outcome"] for s in series_labels("workload_tagger_plugin_evaluations_total")}
    obs.set_loaded({})


def test_source_observer_tracks_sync_state_and_bounds_reasons() -> None:
    src = metrics.SourceMetrics()
    src.expect("unit-src")
    assert val("workload_tagger_source_synced", source="unit-src") == 0
    assert val("workload_tagger_source_last_sync_timestamp_seconds", source="unit-src") == 0
    src.synced("unit-src", True)
    ok_at = val("workload_tagger_source_last_sync_timestamp_seconds", source="unit-src")
    assert ok_at is not None and ok_at > 1.7e9
    src.synced("unit-src", False)
    # A failure clears "synced" but keeps the time of the last success.
    assert val("workload_tagger_source_synced", source="unit-src") == 0
    assert val("workload_tagger_source_last_sync_timestamp_seconds", source="unit-src") == ok_at
    assert val("workload_tagger_source_syncs_total", source="unit-src", result="failure") == 1
    src.watch_restarted("unit-src", "gone")
    src.watch_restarted("unit-src", "ProtocolError('Connection broken: IncompleteRead(0 bytes read)')")
    reasons = {s["reason"] for s in series_labels("workload_tagger_source_watch_restarts_total")}
    assert reasons <= {*metrics.WATCH_RESTART_REASONS, "other"}
    assert val("workload_tagger_source_watch_restarts_total", source="unit-src", reason="other") == 1


def test_cert_expiry_is_the_leaf_not_after() -> None:
    leaf = certs.make_leaf(certs.make_ca(), ["webhook.svc"], dt.timedelta(days=3))
    metrics.set_cert_expiry(leaf.cert)
    assert val("workload_tagger_serving_certificate_expiry_timestamp_seconds") == (
        leaf.cert.not_valid_after_utc.timestamp()
    )


def test_exposition_negotiates_openmetrics_for_prometheus() -> None:
    body, content_type = metrics.exposition("application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
    text, plain = metrics.exposition(None)
    assert plain.startswith("text/plain; version=0.0.4") and b"# EOF" not in text


def test_reviews_are_tallied_then_counted_in_bulk_before_any_read() -> None:
    mutated = ("workload_tagger_admission_requests_total", (("operation", "CREATE"), ("outcome", "mutated")))
    skipped = ("workload_tagger_admission_requests_total", (("operation", "UPDATE"), ("outcome", "skipped")))
    kruise = ("workload_tagger_resolutions_total", (("source", "builtin"), ("workload_type", "CloneSet")))
    unresolved = ("workload_tagger_resolutions_total", (("source", "none"), ("workload_type", "none")))
    openkruise = ("workload_tagger_pods_seen_total", (("platform", "OpenKruise"),))
    timed = ("workload_tagger_admission_duration_seconds_count", ())
    watched = (mutated, skipped, kruise, unresolved, openkruise, timed)
    before = {key: val(key[0], **dict(key[1])) or 0.0 for key in watched}
    pending = metrics.REVIEWS._pending
    for i in range(5):  # different workloads, one key: the tally does not grow with Pod names
        res = Resolution("CloneSet", f"cart-{i}", "OpenKruise", "builtin:openkruise-cloneset")
        metrics.observe_review("CREATE", "mutated", res, 0.0002)
    metrics.observe_review("CREATE", "unchanged", None, 0.0002)
    metrics.observe_review("UPDATE", "skipped", None, 0.0001)
    assert len(pending) == 3 and sum(pending.values()) == 7
    after = {key: val(key[0], **dict(key[1])) or 0.0 for key in watched}  # reading the registry flushes
    assert {key: after[key] - before[key] for key in watched} == {
        mutated: 5, skipped: 1, kruise: 5, unresolved: 1, openkruise: 5, timed: 7,
    }
    assert metrics.REVIEWS._pending == {}


async def test_periodic_flush_counts_reviews_without_a_read_and_flushes_once_more_at_stop() -> None:
    import asyncio

    metrics.REVIEWS.flush()
    start = val("workload_tagger_admission_requests_total", operation="DELETE", outcome="skipped") or 0.0
    child = metrics._ADMISSION_REQUESTS.get("DELETE", "skipped")
    stop = asyncio.Event()
    task = asyncio.create_task(metrics.flush_periodically(stop))
    metrics.observe_review("DELETE", "skipped", None, 0.0001)
    deadline = asyncio.get_running_loop().time() + metrics.FLUSH_SECONDS * 3
    while child._value.get() < start + 1:  # the child itself: reading the registry would flush
        assert asyncio.get_running_loop().time() < deadline, "no periodic flush"
        await asyncio.sleep(0.05)
    metrics.observe_review("DELETE", "skipped", None, 0.0001)
    stop.set()
    await task
    assert child._value.get() == start + 2


def test_tallied_latencies_expose_exactly_what_observe_would() -> None:
    """Bulk-added latencies against a histogram fed one ``observe`` per review: same buckets, count, sum.

    Values sit on, just under and just over bucket bounds (``le`` is inclusive), below the first
    and past the last; this also guards the histogram internals the tally adds to.
    """
    from prometheus_client import CollectorRegistry, Histogram

    registry = CollectorRegistry()
    tallied = Histogram("tallied_seconds", "t", registry=registry, buckets=metrics.ADMISSION_BUCKETS)
    observed = Histogram("observed_seconds", "o", registry=registry, buckets=metrics.ADMISSION_BUCKETS)
    tally = metrics.ReviewTally(tallied, metrics.ADMISSION_BUCKETS)
    values = [0.0, 0.00001, *metrics.ADMISSION_BUCKETS]
    values += [b * 1.000001 for b in metrics.ADMISSION_BUCKETS] + [b * 0.999999 for b in metrics.ADMISSION_BUCKETS]
    values += [100.0, 0.0003, 0.0003]
    for seconds in values:
        tally.add("CREATE", "mutated", None, seconds)
        observed.observe(seconds)
    tally.flush()
    tally.flush()  # a second flush with nothing pending adds nothing

    def samples(name: str) -> list[tuple[str, dict[str, str], float]]:
        family = next(f for f in registry.collect() if f.name == name)
        return [(s.name.removeprefix(name), s.labels, s.value) for s in family.samples if not s.name.endswith("_created")]

    got, want = samples("tallied_seconds"), samples("observed_seconds")
    assert [(n, lb) for n, lb, _ in got] == [(n, lb) for n, lb, _ in want]
    for (name, labels, g), (_, _, w) in zip(got, want, strict=True):
        assert g == pytest.approx(w, rel=1e-12), (name, labels)
    assert dict((n, v) for n, lb, v in got if n == "_count") == {"_count": len(values)}
