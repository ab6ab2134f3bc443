"""Every built-in rule row, through the one resolver every door uses."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.cases import CASES, Case
from tests.support.factories import owner, pod
from webhook.resolution.model import PodMeta
from webhook.resolution.resolver import Resolver, ResolverSettings
from webhook.resolution.rules import (
    CRONJOB_MAX_MINUTES,
    CRONJOB_MIN_MINUTES,
    CRONJOB_WINDOW_AFTER_S,
    CRONJOB_WINDOW_BEFORE_S,
    RuleConfigError,
    reference_time,
    select_owner,
    user_rules,
)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_builtin_rule_rows(case: Case) -> None:
    found = Resolver().resolve(case.pod["metadata"], "default")
    got = None if found is None else (found.workload_type, found.workload_name, found.platform, found.resolved_by)
    assert got == case.expected


def job_pod(job: str, created: str | None) -> dict[str, Any]:
    meta = pod(owners=[owner("batch/v1", "Job", job)])["metadata"]
    meta["creationTimestamp"] = created
    return meta


def stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# Was: any minute count from 2000 to 2100 made a CronJob, whenever the Pod was created. That
# expectation was the bug (issue 17): the schedule must also be near the Pod's creation.
@pytest.mark.parametrize("minutes,is_cron", [
    (CRONJOB_MIN_MINUTES - 1, False), (CRONJOB_MIN_MINUTES, True), (29_400_420, True),
    (CRONJOB_MAX_MINUTES, True), (CRONJOB_MAX_MINUTES + 1, False),
])
def test_cronjob_suffix_must_be_a_plausible_minute_count(minutes: int, is_cron: bool) -> None:
    found = Resolver().resolve(job_pod(f"report-{minutes}", stamp(minutes * 60 + 30)))
    assert found is not None
    assert (found.workload_type, found.workload_name) == (
        ("CronJob", "report") if is_cron else ("Job", f"report-{minutes}")
    )


@pytest.mark.parametrize("offset_s,is_cron", [
    (0, True), (CRONJOB_WINDOW_BEFORE_S, True), (CRONJOB_WINDOW_BEFORE_S + 60, False),
    (-CRONJOB_WINDOW_AFTER_S, True), (-CRONJOB_WINDOW_AFTER_S - 60, False), (300 * 86400, False),
])
def test_cronjob_suffix_counts_only_near_the_pods_creation(offset_s: int, is_cron: bool) -> None:
    """``offset_s``: how long after the suffix's time the Pod was created."""
    minutes = 29_400_420
    found = Resolver().resolve(job_pod(f"nightly-{minutes}", stamp(minutes * 60 + offset_s)))
    assert found is not None
    assert found.workload_type == ("CronJob" if is_cron else "Job")


@pytest.mark.parametrize("job", ["report-20241124", "backup-29000000"])
def test_dates_and_old_minute_counts_are_jobs_at_admission(job: str) -> None:
    """At admission the Pod has no creationTimestamp yet: the time now is the reference."""
    found = Resolver().resolve(job_pod(job, None))
    assert found is not None and (found.workload_type, found.workload_name) == ("Job", job)


def test_a_job_scheduled_a_minute_ago_is_a_cronjob_at_admission() -> None:
    minutes = int(time.time() // 60) - 1
    found = Resolver().resolve(job_pod(f"backup-{minutes}", None))
    assert found is not None and (found.workload_type, found.workload_name) == ("CronJob", "backup")


def test_malformed_creation_timestamp_falls_back_to_now() -> None:
    minutes = int(time.time() // 60)
    assert reference_time(PodMeta(creation_timestamp="yesterday")) == pytest.approx(time.time(), abs=5)
    found = Resolver().resolve(job_pod(f"backup-{minutes}", "not a time"))
    assert found is not None and found.workload_type == "CronJob"


def test_leading_zero_suffix_is_not_a_schedule() -> None:
    found = Resolver().resolve(pod(owners=[owner("batch/v1", "Job", "r-029400420")])["metadata"])
    assert found is not None and found.workload_type == "Job"


@pytest.mark.parametrize("refs", [None, "x", 5, {"kind": "StatefulSet"}, [None, 1, "s"], [{"kind": "StatefulSet"}],
                                  [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": 3}],
                                  [{"apiVersion": "apps/v1", "kind": "", "name": "a"}]])
def test_malformed_owner_references_are_ignored(refs: object) -> None:
    assert select_owner(refs) is None
    meta = {"name": "p", "ownerReferences": refs}
    assert Resolver().resolve(meta) is None


def test_malformed_entries_are_skipped_for_the_next_good_one() -> None:
    refs = [None, {"apiVersion": "apps/v1"}, owner("apps/v1", "DaemonSet", "ds", controller=False)]
    found = Resolver().resolve({"ownerReferences": refs})
    assert found is not None and found.workload_name == "ds"


def test_non_string_labels_do_not_crash_or_match() -> None:
    meta = {"labels": {"pod-template-hash": 5, "x": None},
            "ownerReferences": [owner("apps/v1", "ReplicaSet", "web-5")]}
    found = Resolver().resolve(meta)
    assert found is not None and found.workload_type == "ReplicaSet"


def test_user_rules_extend_and_override_the_table() -> None:
    rules = user_rules([
        {"apiVersion": "example.com/v1", "kind": "Widget", "type": "statefulset", "platform": "Acme"},
        {"group": "apps", "kind": "DaemonSet", "type": "Deployment"},
    ], allow_custom_types=False)
    resolver = Resolver(ResolverSettings(extra_rules=rules))
    widget = resolver.resolve({"ownerReferences": [owner("example.com/v1", "Widget", "w1")]})
    assert widget is not None
    assert (widget.workload_type, widget.workload_name, widget.platform, widget.resolved_by) == (
        "StatefulSet", "w1", "Acme", "config:example.com-widget")
    ds = resolver.resolve({"ownerReferences": [owner("apps/v1", "DaemonSet", "d")]})
    assert ds is not None and ds.workload_type == "Deployment"


@pytest.mark.parametrize("entry,message", [
    ({"kind": "W"}, "'type'"),
    ({"type": "Deployment"}, "'kind'"),
    ({"kind": "W", "type": "Gizmo"}, "unknown workload type"),
    ("nope", "expected a mapping"),
])
def test_user_rule_errors_are_clear(entry: object, message: str) -> None:
    with pytest.raises(RuleConfigError, match=message):
        user_rules([entry], allow_custom_types=False)  # type: ignore[list-item]


def test_custom_types_need_the_setting() -> None:
    rules = user_rules([{"kind": "W", "type": "Gizmo"}], allow_custom_types=True)
    found = Resolver(ResolverSettings(allow_custom_types=True, extra_rules=rules)).resolve(
        {"ownerReferences": [owner("x/v1", "W", "w")]})
    assert found is not None and found.workload_type == "Gizmo"


def test_virtual_kubelet_unknown_declared_type_needs_custom_types() -> None:
    labels = {"virtual-kubelet.io/provider-cluster-type": "serverless",
              "virtual-kubelet.io/provider-workload-type": "FunctionSet",
              "virtual-kubelet.io/provider-resource-name": "fn-1"}
    assert Resolver().resolve({"labels": labels}) is None
    found = Resolver(ResolverSettings(allow_custom_types=True)).resolve({"labels": labels})
    assert found is not None and (found.workload_type, found.workload_name) == ("FunctionSet", "fn")
