"""The handler's two steps: `decide` answers what the rules resolve, `finish` awaits the plugins.

Everyday Pods must never reach an awaited plugin set (zero added cost for them); Pods the rules
do not resolve come back as a PendingReview, and `finish` gives the same kind of Decision as the
synchronous `handle` would.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable

from tests.support.factories import owner, pod, review
from webhook.admission import review as admission
from webhook.admission.handler import Decision, PendingReview, PodMutator
from webhook.outcomes import ReviewOutcome
from webhook.plugins import PluginAnswer
from webhook.resolution.resolver import Resolver, ResolverSettings


class AwaitedPlugins:
    """An AsyncPluginSet that answers after an await, and counts how often it was asked."""

    names = ("widgets",)

    def __init__(self, answer: tuple[str, str] | None, delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay
        self.asked: list[str] = []

    async def first_answer(
        self, meta_json: str, deadline: float | None, accept: Callable[[str], str | None]
    ) -> tuple[PluginAnswer, str] | None:
        self.asked.append(meta_json)
        await asyncio.sleep(self.delay)
        if self.answer is None:
            return None
        wtype = accept(self.answer[0])
        return (PluginAnswer("widgets", *self.answer), wtype) if wtype else None


def request(owners: list[dict[str, object]]) -> admission.AdmissionRequest:
    return admission.decode_for_mutation(json.dumps(review(pod(name="p-0", owners=owners))).encode())


EVERYDAY = [owner("apps/v1", "StatefulSet", "db")]
UNKNOWN = [owner("example.com/v1", "Widget", "w")]


def answer(decision: Decision) -> dict[str, object]:
    """The AdmissionReview response as the API server would read it."""
    return dict(json.loads(admission.encode(decision.response))["response"])


def annotations(decision: Decision) -> dict[str, str]:
    """Our annotations the patch adds (the Pod has none yet: one op adds them all), prefix dropped."""
    (op,) = json.loads(base64.b64decode(str(answer(decision)["patch"])))
    assert op["path"] == "/metadata/annotations"
    return {key.rsplit("/", 1)[-1]: value for key, value in op["value"].items()}


async def test_everyday_pods_are_decided_without_the_plugins() -> None:
    plugins = AwaitedPlugins(("Deployment", "never"))
    decided = PodMutator(Resolver(), lambda: plugins).decide(request(EVERYDAY))
    assert isinstance(decided, Decision) and decided.outcome == ReviewOutcome.MUTATED
    assert annotations(decided)["resolved-by"] == "builtin:statefulset"
    assert plugins.asked == []


async def test_other_pods_wait_for_the_plugins_and_get_their_answer() -> None:
    plugins = AwaitedPlugins(("statefulset", "w"), delay=0.01)
    mutator = PodMutator(Resolver(), lambda: plugins, budget_seconds=5)
    pending = mutator.decide(request(UNKNOWN))
    assert isinstance(pending, PendingReview) and plugins.asked == []
    decision = await mutator.finish(pending)
    assert decision.outcome == ReviewOutcome.MUTATED
    assert annotations(decision)["workload-type"] == "StatefulSet"
    assert annotations(decision)["resolved-by"] == "plugin:widgets"
    assert json.loads(plugins.asked[0])["ownerReferences"][0]["kind"] == "Widget"


async def test_plugins_first_sends_every_pod_to_the_plugins_and_falls_back_to_the_rules() -> None:
    plugins = AwaitedPlugins(None)
    mutator = PodMutator(Resolver(ResolverSettings(plugins_first=True)), lambda: plugins)
    pending = mutator.decide(request(EVERYDAY))
    assert isinstance(pending, PendingReview)
    decision = await mutator.finish(pending)
    assert decision.outcome == ReviewOutcome.MUTATED and annotations(decision)["resolved-by"] == "builtin:statefulset"
    assert len(plugins.asked) == 1


async def test_an_answer_past_the_budget_is_dropped() -> None:
    plugins = AwaitedPlugins(("Deployment", "w"), delay=0.2)
    mutator = PodMutator(Resolver(), lambda: plugins, budget_seconds=0.05)
    pending = mutator.decide(request(UNKNOWN))
    assert isinstance(pending, PendingReview)
    decision = await mutator.finish(pending)
    assert decision.outcome == ReviewOutcome.TIMEOUT and "patch" not in answer(decision)


async def test_a_failing_plugin_set_never_breaks_the_review() -> None:
    class Broken(AwaitedPlugins):
        async def first_answer(self, *args: object) -> None:  # type: ignore[override]
            raise RuntimeError("host gone")

    mutator = PodMutator(Resolver(), lambda: Broken(None))
    pending = mutator.decide(request(UNKNOWN))
    assert isinstance(pending, PendingReview)
    decision = await mutator.finish(pending)
    assert answer(decision)["allowed"] is True and "patch" not in answer(decision)
    assert decision.outcome not in (ReviewOutcome.MUTATED, ReviewOutcome.UNCHANGED) and "host gone" in (decision.error or "")
