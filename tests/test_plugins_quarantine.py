"""Quarantine of plugins that keep running out of budget or memory: the breaker alone (a fake
clock), then real Lua plugins in a registry, then the metrics it feeds."""

from __future__ import annotations

import logging

import pytest

from tests.support.metrics_reading import val
from tests.support.plugin_fakes import META, NOT_MINE, Recorder, answering
from webhook import metrics
from webhook.outcomes import PluginOutcome
from webhook.plugins import PluginAnswer
from webhook.plugins.quarantine import ENTERED, LIFTED, MAX_SECONDS, Breaker, QuarantinePolicy
from webhook.plugins.registry import PluginLimits, PluginRegistry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(after: int = 3, seconds: float = 30.0) -> tuple[Breaker, Clock]:
    clock = Clock()
    return Breaker(QuarantinePolicy(after, seconds), clock), clock


def test_consecutive_costly_failures_open_it_for_the_quarantine() -> None:
    b, clock = breaker(after=3)
    assert [b.record(PluginOutcome.BUDGET), b.record(PluginOutcome.MEMORY)] == [None, None]
    assert b.allows() and not b.quarantined
    assert b.record(PluginOutcome.BUDGET) == ENTERED
    assert not b.allows() and b.quarantined
    clock.now += 29.9
    assert not b.allows()
    clock.now += 0.2
    assert b.allows() and not b.quarantined  # the trial call


@pytest.mark.parametrize("cheap", [PluginOutcome.MATCH, PluginOutcome.NO_MATCH, PluginOutcome.ERROR, PluginOutcome.INVALID])
def test_any_cheap_outcome_resets_the_count(cheap: str) -> None:
    b, _ = breaker(after=3)
    for _ in range(5):
        assert b.record(PluginOutcome.BUDGET) is None
        assert b.record(PluginOutcome.BUDGET) is None
        assert b.record(cheap) is None
    assert b.allows()


def test_a_failed_trial_doubles_the_quarantine_up_to_the_maximum() -> None:
    b, clock = breaker(after=1, seconds=100.0)
    assert b.record(PluginOutcome.BUDGET) == ENTERED
    lengths = []
    for _ in range(6):
        clock.now = b.until or clock.now
        assert b.allows()
        assert b.record(PluginOutcome.MEMORY) == ENTERED
        lengths.append(b.length)
    assert lengths == [200.0, 400.0, MAX_SECONDS, MAX_SECONDS, MAX_SECONDS, MAX_SECONDS]


def test_a_good_trial_lifts_it_and_resets_the_length() -> None:
    b, clock = breaker(after=1, seconds=10.0)
    b.record(PluginOutcome.BUDGET)
    clock.now = b.until or 0
    b.record(PluginOutcome.BUDGET)  # failed trial: 20 s
    clock.now = b.until or 0
    assert b.record(PluginOutcome.NO_MATCH) == LIFTED
    assert b.until is None and b.length == 10.0 and b.allows()
    assert b.record(PluginOutcome.BUDGET) == ENTERED and b.until == clock.now + 10.0


def test_after_zero_never_quarantines() -> None:
    b, _ = breaker(after=0)
    assert all(b.record(PluginOutcome.BUDGET) is None for _ in range(100))
    assert b.allows()


LOOP = "function GetWorkloadTypeAndName(s) while true do end end"
LIMITS = PluginLimits(instructions=200_000, memory_bytes=4 << 20, quarantine=QuarantinePolicy(3, 30.0))


def test_a_looping_plugin_is_skipped_while_quarantined_and_the_others_still_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec = Recorder()
    reg = PluginRegistry(LIMITS, rec)
    reg.apply({"a-loop": LOOP, "b-good": answering("Job", "b")}, origin="test")
    clock = Clock()
    reg.current.plugins["a-loop"].breaker.clock = clock
    with caplog.at_level(logging.INFO, logger="workload_tagger.plugins"):
        for _ in range(6):
            assert list(reg.current.answers(META)) == [PluginAnswer("b-good", "Job", "b")]
    loop_outcomes = [outcome for plugin, outcome in rec.evaluations if plugin == "a-loop"]
    assert loop_outcomes == [PluginOutcome.BUDGET] * 3 + [PluginOutcome.QUARANTINED] * 3
    assert [outcome for plugin, outcome in rec.evaluations if plugin == "b-good"] == [PluginOutcome.MATCH] * 6
    assert rec.quarantines == [("a-loop", True)]
    assert any("a-loop quarantined for 30 s after 3 consecutive" in r.getMessage() for r in caplog.records)

    clock.now += 31  # the trial: still looping, so 60 s more
    list(reg.current.answers(META))
    assert rec.evaluations[-2:] == [("a-loop", PluginOutcome.BUDGET), ("b-good", PluginOutcome.MATCH)]
    assert rec.quarantines[-1] == ("a-loop", True)
    assert reg.current.plugins["a-loop"].breaker.length == 60.0


def test_a_fixed_plugin_gets_a_fresh_breaker_and_an_unchanged_one_keeps_its_own() -> None:
    rec = Recorder()
    reg = PluginRegistry(LIMITS, rec)
    reg.apply({"a-loop": LOOP, "c-loop": LOOP}, origin="test")
    for _ in range(3):
        list(reg.current.answers(META))
    assert reg.current.plugins["a-loop"].breaker.quarantined
    reg.apply({"a-loop": NOT_MINE, "c-loop": LOOP}, origin="test")  # a fixed, c untouched
    rec.evaluations.clear()
    list(reg.current.answers(META))
    assert rec.evaluations == [("a-loop", PluginOutcome.NO_MATCH), ("c-loop", PluginOutcome.QUARANTINED)]


def test_quarantine_off_runs_the_looping_plugin_every_time() -> None:
    rec = Recorder()
    off = PluginLimits(instructions=200_000, memory_bytes=4 << 20, quarantine=QuarantinePolicy(0))
    reg = PluginRegistry(off, rec)
    reg.apply({"a-loop": LOOP}, origin="test")
    for _ in range(8):
        list(reg.current.answers(META))
    assert rec.evaluations == [("a-loop", PluginOutcome.BUDGET)] * 8 and rec.quarantines == []


def test_metrics_count_skipped_calls_and_show_the_quarantine() -> None:
    reg = PluginRegistry(LIMITS, metrics.PluginMetrics())
    reg.apply({"q-loop": LOOP, "q-other": NOT_MINE}, origin="test")
    gauge = "workload_tagger_plugin_quarantined"
    assert val(gauge, plugin="q-loop") == 0 and val(gauge, plugin="q-other") == 0
    for _ in range(5):
        list(reg.current.answers(META))
    calls = "workload_tagger_plugin_evaluations_total"
    assert val(calls, outcome="budget", plugin="q-loop") == 3
    assert val(calls, outcome="quarantined", plugin="q-loop") == 2
    assert val(calls, outcome="no-match", plugin="q-other") == 5
    assert val(gauge, plugin="q-loop") == 1

    reg.apply({"q-loop": NOT_MINE.replace("s)", "meta)"), "q-other": NOT_MINE}, origin="test")
    assert val(gauge, plugin="q-loop") == 0  # the new version starts afresh
    reg.apply({"q-other": NOT_MINE}, origin="test")
    assert val(gauge, plugin="q-loop") is None
    reg.apply({}, origin="test")


def test_memory_bombs_count_as_costly_too() -> None:
    bomb = "function GetWorkloadTypeAndName(s) local t = {} while true do t[#t + 1] = s .. #t end end"
    rec = Recorder()
    reg = PluginRegistry(PluginLimits(instructions=50_000_000, memory_bytes=2 << 20,
                                      quarantine=QuarantinePolicy(2, 30.0)), rec)
    reg.apply({"bomb": bomb}, origin="test")
    for _ in range(3):
        list(reg.current.answers(META))
    assert rec.evaluations == [("bomb", PluginOutcome.MEMORY), ("bomb", PluginOutcome.MEMORY), ("bomb", PluginOutcome.QUARANTINED)]
