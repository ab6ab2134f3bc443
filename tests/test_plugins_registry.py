"""Registry semantics: apply, keep-last-good, removal, observer calls, hot replacement under load."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from tests.support.plugin_fakes import BROKEN, LIMITS, META, NOT_MINE, Recorder, answering
from webhook.outcomes import PluginOutcome
from webhook.plugins import PluginAnswer
from webhook.plugins.registry import (
    PluginLimits,
    PluginLoadError,
    PluginRegistry,
    validate_plugin,
)
from webhook.resolution.resolver import Resolver, ResolverSettings


def answers(registry: PluginRegistry) -> list[PluginAnswer]:
    return list(registry.current.answers(META))


def test_apply_loads_in_name_order_and_reports() -> None:
    rec = Recorder()
    reg = PluginRegistry(LIMITS, rec)
    report = reg.apply(
        {"b": answering("Job", "from-b"), "a": NOT_MINE, "c": answering("CronJob", "from-c")}, origin="test"
    )
    assert (report.loaded, report.unchanged, report.removed, report.failed) == (["a", "b", "c"], [], [], {})
    assert reg.current.names == ("a", "b", "c")
    assert answers(reg) == [PluginAnswer("b", "Job", "from-b"), PluginAnswer("c", "CronJob", "from-c")]
    assert rec.evaluations == [("a", PluginOutcome.NO_MATCH), ("b", PluginOutcome.MATCH), ("c", PluginOutcome.MATCH)]
    assert list(rec.sets[-1]) == ["a", "b", "c"] and all(len(h) == 64 for h in rec.sets[-1].values())


def test_answers_are_lazy_so_later_plugins_are_not_run() -> None:
    rec = Recorder()
    reg = PluginRegistry(LIMITS, rec)
    reg.apply({"a": answering("Job", "x"), "b": answering("Job", "y")}, origin="test")
    first = next(reg.current.answers(META))
    assert first.plugin == "a" and rec.evaluations == [("a", PluginOutcome.MATCH)]


def test_bad_version_keeps_last_good_and_others_still_apply() -> None:
    rec = Recorder()
    reg = PluginRegistry(LIMITS, rec)
    reg.apply({"a": answering("Job", "v1"), "b": answering("Job", "b1")}, origin="test")
    old_runtime = reg.current.plugins["b"].runtime
    report = reg.apply(
        {"a": BROKEN, "b": answering("Job", "b1"), "new": BROKEN, "c": answering("Job", "c1")}, origin="test"
    )
    assert report.loaded == ["c"] and report.unchanged == ["b"]
    assert set(report.failed) == {"a", "new"} and "line 2" not in report.failed["a"]
    assert "a.lua:2:" in report.failed["a"] and "'a'" in report.failed["a"]
    assert reg.current.names == ("a", "b", "c")
    assert reg.current.plugins["b"].runtime is old_runtime  # unchanged source: not recompiled
    assert [a.workload_name for a in answers(reg)] == ["v1", "b1", "c1"]
    assert [p for p, _ in rec.failures] == ["a", "new"]


def test_names_missing_from_sources_are_removed() -> None:
    reg = PluginRegistry(LIMITS)
    reg.apply({"a": NOT_MINE, "b": NOT_MINE}, origin="test")
    report = reg.apply({"b": NOT_MINE}, origin="test")
    assert report.removed == ["a"] and reg.current.names == ("b",)
    reg.apply({}, origin="test")
    assert reg.current.names == ()


def test_failing_plugin_is_skipped_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    reg = PluginRegistry(LIMITS, rec)
    reg.apply(
        {
            "a": "function GetWorkloadTypeAndName(s) error('boom') end",
            "b": "function GetWorkloadTypeAndName(s) while true do end end",
            "c": answering("Job", "c"),
        },
        origin="test",
    )
    with caplog.at_level(logging.WARNING, logger="workload_tagger.plugins"):
        for _ in range(3):
            assert answers(reg) == [PluginAnswer("c", "Job", "c")]
    assert rec.evaluations[:3] == [("a", PluginOutcome.ERROR), ("b", PluginOutcome.BUDGET), ("c", PluginOutcome.MATCH)]
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 2 and "a.lua:1: boom" in logged[0] and "budget" in logged[1]


def test_deadline_stops_starting_plugins() -> None:
    rec = Recorder()
    reg = PluginRegistry(LIMITS, rec)
    reg.apply({"a": NOT_MINE, "b": answering("Job", "b")}, origin="test")
    assert list(reg.current.answers(META, deadline=time.monotonic() - 1)) == []
    assert rec.evaluations == []


def test_validate_plugin_runs_a_sample_pod() -> None:
    validate_plugin("ok", NOT_MINE, LIMITS)
    validate_plugin(
        "ok",
        'local j = require("dkjson")\nfunction GetWorkloadTypeAndName(s)\n'
        '  return "Deployment", j.decode(s).ownerReferences[1].name\nend',
        LIMITS,
    )
    with pytest.raises(PluginLoadError, match=r"'fails'.*error on the sample Pod.*fails.lua:2:"):
        validate_plugin("fails", "function GetWorkloadTypeAndName(s)\n  return s.x.y\nend", LIMITS)
    with pytest.raises(PluginLoadError, match=r"'loops'.*budget"):
        validate_plugin("loops", "function GetWorkloadTypeAndName(s) while true do end end", LIMITS, META)
    with pytest.raises(PluginLoadError, match=r"'bad'.*bad.lua:2:"):
        validate_plugin("bad", BROKEN, LIMITS)


def test_resolver_uses_plugin_answers_and_names_the_plugin() -> None:
    reg = PluginRegistry(LIMITS)
    reg.apply({"a": answering("Rocket", "r"), "b": answering("statefulset", "db")}, origin="test")
    owner = {"apiVersion": "x/v1", "kind": "Widget", "name": "w", "uid": "u"}
    meta = {"name": "w-0", "ownerReferences": [owner]}
    found = Resolver().resolve(meta, "default", reg.current)
    assert found is not None and (found.workload_type, found.workload_name, found.resolved_by) == (
        "StatefulSet",
        "db",
        "plugin:b",
    )
    custom = Resolver(ResolverSettings(allow_custom_types=True)).resolve(meta, "default", reg.current)
    assert custom is not None and (custom.workload_type, custom.resolved_by) == ("Rocket", "plugin:a")


def test_hot_replacement_while_serving() -> None:
    """Every answer comes wholly from the old set or wholly from the new one; nothing crashes."""
    reg = PluginRegistry(PluginLimits())
    versions = [{name: answering("Job", f"{name}-v{v}") for name in ("a", "b", "c")} for v in range(6)]
    reg.apply(versions[0], origin="test")
    stop = threading.Event()
    seen: list[tuple[str, ...]] = []
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            while not stop.is_set():
                seen.append(tuple(a.workload_name for a in reg.current.answers(META)))
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=hammer) for _ in range(2)]
    for w in workers:
        w.start()
    for version in versions[1:]:
        time.sleep(0.02)
        reg.apply(version, origin="test")
    time.sleep(0.02)
    stop.set()
    for w in workers:
        w.join(timeout=10)
    assert not errors
    allowed = {tuple(f"{n}-v{v}" for n in ("a", "b", "c")) for v in range(6)}
    assert seen and set(seen) <= allowed
    assert len(set(seen)) >= 2  # replacement really happened while serving
