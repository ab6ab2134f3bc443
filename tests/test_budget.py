"""The review budget: past it, a review is answered "allowed, no patch", whatever the plugins do."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from tests.support.factories import owner, pod, review
from tests.support.servers import ServerFactory
from webhook.admission import review as admission
from webhook.admission.handler import PodMutator
from webhook.admission.review import AdmissionRequest
from webhook.outcomes import ReviewOutcome
from webhook.plugins import PluginAnswer
from webhook.resolution.resolver import Resolver


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class TimedPlugins:
    """Plugins that each take ``cost`` seconds; only the one named ``answer_from`` answers.

    ``honours_deadline`` False models a broken set that ignores the deadline it is given.
    """

    count: int
    cost: float
    advance: object  # callable(seconds) -> None: moves a fake clock or really sleeps
    answer_from: int | None = None
    answer_type: str = "StatefulSet"
    honours_deadline: bool = True
    clock: object = time.monotonic
    started: list[int] = field(default_factory=list)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f"p{i:02d}" for i in range(self.count))

    def answers(self, meta_json: str, deadline: float | None = None) -> Iterator[PluginAnswer]:
        for i, name in enumerate(self.names):
            if self.honours_deadline and deadline is not None and self.clock() > deadline:  # type: ignore[operator]
                return
            self.started.append(i)
            self.advance(self.cost)  # type: ignore[operator]
            if self.answer_from is None or i == self.answer_from:
                yield PluginAnswer(name, self.answer_type, "widget-a")


def unresolved_request() -> AdmissionRequest:
    """A Pod no built-in rule knows, so the plugins decide."""
    body = review(pod(name="w-0", owners=[owner("example.com/v1", "Widget", "widget-a")]))
    return admission.decode(json.dumps(body).encode())


def fake_timed(count: int, cost: float, **kw: object) -> tuple[FakeClock, TimedPlugins]:
    clock = FakeClock()

    def advance(seconds: float) -> None:
        clock.now += seconds

    return clock, TimedPlugins(count, cost, advance, clock=clock, **kw)  # type: ignore[arg-type]


def test_within_budget_the_plugin_answer_is_patched() -> None:
    clock, plugins = fake_timed(10, 0.005, answer_from=9)
    mutator = PodMutator(Resolver(), lambda: plugins, budget_seconds=0.1, clock=clock)
    decision = mutator.handle(unresolved_request())
    assert decision.outcome == ReviewOutcome.MUTATED
    assert decision.resolution is not None and decision.resolution.resolved_by == "plugin:p09"
    assert plugins.started == list(range(10))


def test_no_plugin_starts_after_the_deadline_and_the_review_is_allowed_unpatched() -> None:
    clock, plugins = fake_timed(10, 0.03, answer_from=9)
    mutator = PodMutator(Resolver(), lambda: plugins, budget_seconds=0.1, clock=clock)
    decision = mutator.handle(unresolved_request())
    assert decision.outcome == ReviewOutcome.TIMEOUT
    assert decision.response.patch is None
    assert plugins.started == [0, 1, 2, 3]  # started at 0, 30, 60, 90 ms; the 5th would start at 120 ms


def test_an_answer_arriving_after_the_deadline_is_dropped() -> None:
    clock, plugins = fake_timed(1, 0.25, answer_from=0)
    mutator = PodMutator(Resolver(), lambda: plugins, budget_seconds=0.1, clock=clock)
    decision = mutator.handle(unresolved_request())
    assert decision.outcome == ReviewOutcome.TIMEOUT
    assert decision.response.patch is None
    assert admission.encode(decision.response) == admission.encode(
        admission.AdmissionResponse(decision.response.api_version, decision.response.uid))


def test_resolver_stops_pulling_from_a_set_that_ignores_the_deadline() -> None:
    # every plugin answers a type we refuse, so only the deadline can end the loop early
    clock, plugins = fake_timed(10, 0.03, answer_type="NotAWorkload", honours_deadline=False)
    mutator = PodMutator(Resolver(), lambda: plugins, budget_seconds=0.1, clock=clock)
    decision = mutator.handle(unresolved_request())
    assert decision.outcome == ReviewOutcome.TIMEOUT
    assert plugins.started == [0, 1, 2, 3]


def test_without_a_budget_every_plugin_may_run() -> None:
    clock, plugins = fake_timed(10, 0.03, answer_from=9)
    decision = PodMutator(Resolver(), lambda: plugins, budget_seconds=None, clock=clock).handle(unresolved_request())
    assert decision.outcome == ReviewOutcome.MUTATED
    assert plugins.started == list(range(10))


def test_rules_resolve_without_touching_plugins_even_with_a_tiny_budget() -> None:
    clock, plugins = fake_timed(10, 1.0, answer_from=0)
    body = review(pod(name="db-0", owners=[owner("apps/v1", "StatefulSet", "db")]))
    mutator = PodMutator(Resolver(), lambda: plugins, budget_seconds=0.001, clock=clock)
    decision = mutator.handle(admission.decode(json.dumps(body).encode()))
    assert decision.outcome == ReviewOutcome.MUTATED and plugins.started == []


def test_unresolved_within_budget_is_unchanged_not_timeout() -> None:
    clock, plugins = fake_timed(3, 0.001, answer_type="NotAWorkload")
    decision = PodMutator(Resolver(), lambda: plugins, budget_seconds=0.1, clock=clock).handle(unresolved_request())
    assert decision.outcome == ReviewOutcome.UNCHANGED


async def test_slow_plugins_over_tls_are_cut_at_the_budget(start_server: ServerFactory) -> None:
    """Real time, real server: 20 plugins of 40 ms each would take 0.8 s; the budget is 0.1 s."""
    plugins = TimedPlugins(20, 0.04, time.sleep, answer_from=19)
    srv = await start_server(PodMutator(Resolver(), lambda: plugins, budget_seconds=0.1))
    body = review(pod(name="w-0", owners=[owner("example.com/v1", "Widget", "widget-a")]))
    status, raw = await srv.post("/mutate", json.dumps(body).encode())
    assert status == 200
    answer = json.loads(raw)["response"]
    assert answer["allowed"] is True and answer["uid"] == body["request"]["uid"]
    assert "patch" not in answer
    assert 1 <= len(plugins.started) <= 4  # at most budget/cost + 1 plugins were started


async def test_fast_plugins_over_tls_patch(start_server: ServerFactory) -> None:
    plugins = TimedPlugins(3, 0.0, time.sleep, answer_from=2)
    srv = await start_server(PodMutator(Resolver(), lambda: plugins, budget_seconds=0.5))
    body = review(pod(name="w-0", owners=[owner("example.com/v1", "Widget", "widget-a")]))
    status, raw = await srv.post("/mutate", json.dumps(body).encode())
    ops = json.loads(base64.b64decode(json.loads(raw)["response"]["patch"]))
    assert status == 200 and any(op.get("value", {}).get("workload-tagger.io/resolved-by") == "plugin:p02"
                                 for op in ops if isinstance(op.get("value"), dict))
