"""Every built-in rule row, through the one resolver every door uses."""

from __future__ import annotations

import pytest

from tests.support.cases import CASES, Case
from tests.support.factories import owner, pod
from webhook.resolution.resolver import Resolver, ResolverSettings
from webhook.resolution.rules import CRONJOB_MAX_MINUTES, CRONJOB_MIN_MINUTES, RuleConfigError, select_owner, user_rules


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_builtin_rule_rows(case: Case) -> None:
    found = Resolver().resolve(case.pod["metadata"], "default")
    got = None if found is None else (found.workload_type, found.workload_name, found.platform, found.resolved_by)
    assert got == case.expected


@pytest.mark.parametrize("minutes,is_cron", [
    (CRONJOB_MIN_MINUTES - 1, False), (CRONJOB_MIN_MINUTES, True), (29_400_420, True),
    (CRONJOB_MAX_MINUTES, True), (CRONJOB_MAX_MINUTES + 1, False),
])
def test_cronjob_suffix_must_be_a_plausible_minute_count(minutes: int, is_cron: bool) -> None:
    meta = pod(owners=[owner("batch/v1", "Job", f"report-{minutes}")])["metadata"]
    found = Resolver().resolve(meta)
    assert found is not None
    assert (found.workload_type, found.workload_name) == (
        ("CronJob", "report") if is_cron else ("Job", f"report-{minutes}")
    )


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
