"""Never a patch the API server would refuse: annotation size and key syntax, as Kubernetes validates them.

The expected answers come from apimachinery's rules (ValidateAnnotations: each key, lower-cased, a
qualified name; keys plus values at most 262,144 bytes of UTF-8), written out case by case here.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
from pathlib import Path

import pytest

from tests.support.cases import CASES
from tests.support.cli import cli
from tests.support.factories import owner, pod, review
from tests.support.logs import lines
from tests.support.running_webhook import running_webhook
from webhook import config, metrics
from webhook.admission import review as admission
from webhook.admission.handler import PodMutator
from webhook.admission.patch import DEFAULT_PREFIX, annotations_size
from webhook.annotations import ANNOTATIONS_TOTAL_LIMIT, annotation_key_problem
from webhook.outcomes import ReviewOutcome
from webhook.plugins import EMPTY
from webhook.resolution.resolver import Resolver

MUTATOR = PodMutator(Resolver(), lambda: EMPTY)
STS_OWNER = [owner("apps/v1", "StatefulSet", "db")]


def decide(annotations: dict[str, str] | None, mutator: PodMutator = MUTATOR) -> tuple[str, dict[str, str]]:
    """The outcome, and the Pod's annotations once the patch (if any) is applied."""
    body = json.dumps(review(pod(name="db-0", owners=STS_OWNER, annotations=annotations))).encode()
    decision = mutator.handle(admission.decode_for_mutation(body))
    after = dict(annotations or {})
    if decision.response.patch is not None:
        for op in json.loads(base64.b64decode(decision.response.patch.encoded)):
            if op["path"] == "/metadata/annotations":
                after.update(op["value"])
            else:
                after[op["path"].rsplit("/", 1)[1].replace("~1", "/")] = op["value"]
    return decision.outcome, after


def what_we_add() -> int:
    _, after = decide({})
    return annotations_size(after)


def filler(total: int, char: str = "x") -> dict[str, str]:
    """One annotation ``k`` whose key and value weigh ``total`` bytes of UTF-8."""
    width = len(char.encode())
    assert (total - 1) % width == 0
    return {"k": char * ((total - 1) // width)}


@pytest.mark.parametrize("char", ["x", "é", "数"])
def test_total_size_at_the_limit_is_patched_one_byte_over_is_not(char: str) -> None:
    ours = what_we_add()
    step = len(char.encode())
    fits = filler(ANNOTATIONS_TOTAL_LIMIT - ours - (ANNOTATIONS_TOTAL_LIMIT - ours - 1) % step, char)
    outcome, after = decide(fits)
    assert outcome == ReviewOutcome.MUTATED and annotations_size(after) <= ANNOTATIONS_TOTAL_LIMIT
    over = filler(annotations_size(fits) + step, char)
    outcome, after = decide(over)
    assert outcome == ReviewOutcome.UNPATCHABLE and after == over
    assert annotations_size(over) + ours > ANNOTATIONS_TOTAL_LIMIT


def test_keys_we_already_have_are_not_counted_twice() -> None:
    mine = {DEFAULT_PREFIX + "workload-type": "StatefulSet", DEFAULT_PREFIX + "workload-name": "db"}
    _, full = decide({})
    rest = annotations_size(full) - annotations_size(mine)
    room = ANNOTATIONS_TOTAL_LIMIT - annotations_size(mine) - rest
    outcome, after = decide(mine | filler(room))
    assert outcome == ReviewOutcome.MUTATED and annotations_size(after) == ANNOTATIONS_TOTAL_LIMIT


def test_a_pod_already_over_the_limit_gets_no_patch_but_is_admitted() -> None:
    body = json.dumps(review(pod(name="db-0", owners=STS_OWNER, annotations=filler(ANNOTATIONS_TOTAL_LIMIT + 1))))
    decision = MUTATOR.handle(admission.decode_for_mutation(body.encode()))
    assert decision.outcome == ReviewOutcome.UNPATCHABLE and decision.response.patch is None
    assert json.loads(admission.encode(decision.response))["response"]["allowed"] is True
    assert decision.resolution is not None and decision.refused and "262144" in decision.refused


@pytest.mark.parametrize(("key", "valid"), [
    ("workload-tagger.io/workload-type", True),
    ("Workload-Tagger.IO/Workload-Type", True),  # keys are lower-cased before validation
    ("workload-type", True),
    ("a.b-c.d/x_y.z", True),
    ("/workload-type", False),  # empty prefix
    ("a/b/c", False),
    ("acme.io~x/workload-type", False),
    ("-acme.io/workload-type", False),
    ("acme..io/workload-type", False),
    ("acme.io/-workload", False),
    ("acme.io/workload-", False),
    ("acme.io/" + "n" * 63, True),
    ("acme.io/" + "n" * 64, False),
    ("a" * 253 + "/n", True),
    ("a" * 254 + "/n", False),
    ("ünicode.io/x", False),
    ("acme.io/", False),
])
def test_key_syntax_follows_kubernetes(key: str, valid: bool) -> None:
    assert (annotation_key_problem(key) is None) is valid


def test_a_mutator_with_a_bad_prefix_never_sends_its_keys() -> None:
    outcome, after = decide({"team": "a"}, PodMutator(Resolver(), lambda: EMPTY, prefix="x" * 60 + "-"))
    assert outcome == ReviewOutcome.UNPATCHABLE and after == {"team": "a"}


@pytest.mark.parametrize("prefix", ["acme.io~x/", "a/b/", "/", "x" * 60, "Acme_Corp/"])
def test_bad_prefix_is_a_config_error(prefix: str) -> None:
    with pytest.raises(config.ConfigError, match="makes invalid annotation keys"):
        config.load(flags={"prefix": prefix}, environ={})


@pytest.mark.parametrize("prefix", ["", "acme.io/", "acme.io/wt-", "wt-"])
def test_good_prefixes_load(prefix: str) -> None:
    assert config.load(flags={"prefix": prefix}, environ={}).prefix == prefix


def test_bad_prefix_on_the_command_line_is_one_line_exit_2() -> None:
    proc = cli("resolve", "-", "--prefix", "acme.io~x/", stdin="{}")
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "prefix 'acme.io~x/'" in proc.stderr


def test_over_the_limit_over_tls_is_allowed_counted_and_logged_naming_the_pod(
    tmp_path: Path, log_stream: io.StringIO
) -> None:
    metrics.flush_tallies()
    before = metrics.REGISTRY.get_sample_value(
        "workload_tagger_admission_requests_total", {"operation": "CREATE", "outcome": ReviewOutcome.UNPATCHABLE}) or 0.0
    big = review(pod(name="db-0", owners=STS_OWNER, annotations=filler(ANNOTATIONS_TOTAL_LIMIT - 10)), uid="u-big")
    with running_webhook(tmp_path, lambda: EMPTY, dt.timedelta(days=30)) as hook:
        start = log_stream.tell()
        answer = hook.review(big)["response"]
        assert answer == {"uid": "u-big", "allowed": True}
        assert "patch" in hook.review(review(CASES[0].pod))["response"]  # the next ordinary Pod is patched
        logged = lines(log_stream.getvalue()[start:])
    metrics.flush_tallies()
    after = metrics.REGISTRY.get_sample_value(
        "workload_tagger_admission_requests_total", {"operation": "CREATE", "outcome": ReviewOutcome.UNPATCHABLE})
    assert after == before + 1
    [line] = [e for e in logged if e["level"] == "warning"]
    assert line["uid"] == "u-big" and line["pod"] == "db-0" and line["namespace"] == "default"
    assert line["workload"] == "StatefulSet/db" and "262144" in line["reason"]


def test_the_check_counts_whatever_annotations_a_patch_adds() -> None:
    """Generic over the ops: keys other parts add later (OpenTelemetry resource keys, say) count too."""
    from webhook.admission.patch import Patch

    otel = {"op": "add", "path": "/metadata/annotations/resource.opentelemetry.io~1k8s.deployment.name",
            "value": "web"}
    patch = Patch.of([{"op": "add", "path": "/metadata/annotations/a~1b", "value": "x" * 10}, otel])
    assert patch.problem is None
    assert patch.added_bytes == len("a/b") + 10 + len("resource.opentelemetry.io/k8s.deployment.name") + 3
    room = ANNOTATIONS_TOTAL_LIMIT - patch.added_bytes
    assert patch.refusal(filler(room)) is None and patch.refusal(filler(room + 1)) is not None
    whole = Patch.of([{"op": "add", "path": "/metadata", "value": {"annotations": {"ok.io/k": "v", "bad key": "v"}}}])
    assert whole.problem is not None and "bad key" in whole.problem
    elsewhere = Patch.of([{"op": "add", "path": "/metadata/labels/app", "value": "web"}])
    assert elsewhere.problem is None and elsewhere.added_bytes == 0
