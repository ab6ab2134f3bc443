"""Property tests: whatever arrives, the webhook answers a valid AdmissionReview (allowed) or a 400.

decode → PodMutator.handle → encode on arbitrary bytes, arbitrary JSON, arbitrary ownerReferences,
labels and annotations shapes, unicode and nested junk; the hot path's skimming decoder must agree
with the full decoder on every input; and a sample goes through the real TLS server.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import http.client
import json
import re
from typing import Any

import jsonpatch
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.servers import ServerFactory
from webhook.admission import review as admission
from webhook.admission.handler import PodMutator
from webhook.admission.patch import DEFAULT_PREFIX
from webhook.outcomes import ReviewOutcome
from webhook.plugins import EMPTY
from webhook.resolution.resolver import Resolver, ResolverSettings, plugin_input

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# The owner fallback on, so fuzzed ownerReferences also reach it (rules answer first either way).
MUTATOR = PodMutator(Resolver(ResolverSettings(owner_fallback=True)), lambda: EMPTY, budget_seconds=None)

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
words = st.sampled_from(["", "ReplicaSet", "StatefulSet", "Job", "DaemonSet", "CloneSet", "ReplicationController",
                         "web-7c5ddbdf54", "db", "nightly-29400420", "数据库", "a/b~c", "x" * 300])
api_versions = st.sampled_from(["apps/v1", "batch/v1", "v1", "apps.kruise.io/v1alpha1", "", "/", "a/b/c"])
owner_refs = st.lists(
    st.fixed_dictionaries({}, optional={"apiVersion": api_versions | json_values, "kind": words | json_values,
                                        "name": words | json_values, "controller": st.booleans() | json_values,
                                        "uid": st.text(max_size=10)})
    | json_values,
    max_size=4,
) | json_values
string_maps = st.dictionaries(st.text(max_size=30) | words, st.text(max_size=30) | words, max_size=6)
labels = string_maps.map(lambda m: m | {"pod-template-hash": "7c5ddbdf54"}) | string_maps | json_values
annotations = string_maps.map(lambda m: m | {DEFAULT_PREFIX + "workload-type": "Job"}) | string_maps | json_values
metadata = st.fixed_dictionaries({}, optional={
    "name": words | json_values, "generateName": words, "namespace": words | json_values,
    "labels": labels, "annotations": annotations, "ownerReferences": owner_refs,
    "junk": json_values,
}) | json_values
pod_objects = st.fixed_dictionaries({"kind": st.just("Pod")}, optional={
    "metadata": metadata, "spec": json_values, "status": json_values}) | json_values
gvks = st.just({"group": "", "version": "v1", "kind": "Pod"}) | json_values
requests = st.fixed_dictionaries({"uid": st.text(min_size=1, max_size=36)}, optional={
    "kind": gvks, "resource": json_values, "operation": st.sampled_from(["CREATE", "UPDATE", "DELETE", ""]) | json_values,
    "namespace": words | json_values, "subResource": st.sampled_from(["", "status"]) | json_values,
    "dryRun": st.booleans() | json_values, "object": pod_objects, "oldObject": json_values, "userInfo": json_values,
})
reviews = st.fixed_dictionaries({
    "apiVersion": st.sampled_from(sorted(admission.SUPPORTED_API_VERSIONS)),
    "kind": st.just("AdmissionReview"),
    "request": requests,
})
plausible_owner = st.fixed_dictionaries(
    {"apiVersion": api_versions, "kind": words, "name": words},
    optional={"controller": st.booleans(), "uid": st.text(max_size=10), "junk": json_values})
known_owner = st.builds(
    lambda av_kind, name, controller: {"apiVersion": av_kind[0], "kind": av_kind[1], "name": name, "controller": controller},
    st.sampled_from([("apps/v1", "StatefulSet"), ("apps/v1", "ReplicaSet"), ("batch/v1", "Job"), ("apps/v1", "DaemonSet"),
                     ("v1", "ReplicationController"), ("apps.kruise.io/v1alpha1", "CloneSet")]),
    words, st.booleans())
pod_metadata = st.fixed_dictionaries({"ownerReferences": st.lists(known_owner | plausible_owner | json_values,
                                                                  min_size=1, max_size=3)},
                                     optional={"name": words, "generateName": words, "namespace": words | json_values,
                                               "labels": labels, "annotations": annotations, "junk": json_values})
pod_creates = st.fixed_dictionaries({
    "apiVersion": st.sampled_from(sorted(admission.SUPPORTED_API_VERSIONS)),
    "kind": st.just("AdmissionReview"),
    "request": st.fixed_dictionaries({
        "uid": st.text(min_size=1, max_size=36), "kind": st.just({"group": "", "version": "v1", "kind": "Pod"}),
        "operation": st.just("CREATE"),
        "object": st.fixed_dictionaries({"kind": st.just("Pod")}, optional={"spec": json_values}).flatmap(
            lambda obj: pod_metadata.map(lambda meta: obj | {"metadata": meta})),
    }, optional={"namespace": words, "dryRun": st.booleans()}),
})
reviews = pod_creates | reviews
anything = reviews | st.fixed_dictionaries({}, optional={
    "apiVersion": st.sampled_from(["admission.k8s.io/v1", "v1"]) | json_values,
    "kind": st.just("AdmissionReview") | json_values, "request": requests | json_values}) | json_values


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    doc = draw(anything)
    return json.dumps(doc, ensure_ascii=draw(st.booleans())).encode()


def check_answer(body: bytes) -> dict[str, Any] | None:
    """Run the whole hot path; return the review's response, or None for a 400."""
    try:
        request = admission.decode_for_mutation(body)
    except admission.AdmissionError:
        return None
    decision = MUTATOR.handle(request)
    assert decision.outcome != ReviewOutcome.ERROR, decision.error
    out = json.loads(admission.encode(decision.response))
    assert out["apiVersion"] == request.api_version and out["kind"] == "AdmissionReview"
    response: dict[str, Any] = out["response"]
    assert response["uid"] == request.uid and response["allowed"] is True
    return response


def check_patch(body: bytes, response: dict[str, Any]) -> None:
    """A patch applies to the object sent, only adds, only under annotations, and keeps what was there."""
    if "patch" not in response:
        return
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    obj = json.loads(body)["request"]["object"]
    for op in ops:
        assert op["op"] == "add"
        assert op["path"].startswith("/metadata/annotations") or (op["path"] == "/metadata" and not obj.get("metadata"))
    patched = jsonpatch.apply_patch(copy.deepcopy(obj), ops)
    before = (obj.get("metadata") or {}).get("annotations") or {}
    after = patched["metadata"]["annotations"]
    assert {k: after[k] for k in before} == before  # nothing a user set is replaced
    assert all(k.startswith((DEFAULT_PREFIX, "resource.opentelemetry.io/k8s.")) and isinstance(after[k], str)
               for k in set(after) - set(before))
    assert {k: v for k, v in patched.items() if k != "metadata"} == {k: v for k, v in obj.items() if k != "metadata"}


def numbers_as_orjson_reads_them(value: Any) -> Any:
    """orjson reads integers past 64 bits as floats; the skimmer keeps them exact. Neither matters to
    the rules (they read strings only), so compare with that one difference folded away."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return float(value)
    if isinstance(value, dict):
        return {k: numbers_as_orjson_reads_them(v) for k, v in value.items()}
    if isinstance(value, list):
        return [numbers_as_orjson_reads_them(v) for v in value]
    return value


def same_decoding(body: bytes) -> None:
    """The skimming decoder agrees with the full one: same error, or same fields, the same four fields
    for the rules, the same whole metadata, and the very same encoded answer from the handler."""
    try:
        full = admission.decode(body)
    except admission.AdmissionError as exc:
        try:
            admission.decode_for_mutation(body)
        except admission.AdmissionError as fast_exc:
            assert str(fast_exc) == str(exc)
            return
        raise AssertionError("the skimmer accepted what the full decoder rejects") from None
    fast = admission.decode_for_mutation(body)
    for name in ("api_version", "uid", "operation", "group", "version", "kind", "resource", "sub_resource",
                 "namespace", "dry_run"):
        assert getattr(fast, name) == getattr(full, name), name
    expected = full.object
    if expected is None or fast.object is None:
        assert fast.object is expected is None  # no object, or metadata that is not a mapping
    else:
        assert fast.object.has_metadata == expected.has_metadata
        plugins_get = [json.loads(plugin_input(o.meta, full.namespace)) for o in (fast.object, expected)]
        for got, want in ((msgspec.structs.asdict(fast.object.meta), msgspec.structs.asdict(expected.meta)),
                          (plugins_get[0], plugins_get[1])):
            if got != want:
                assert numbers_as_orjson_reads_them(got) == numbers_as_orjson_reads_them(want)
    assert encoded_answer(fast) == encoded_answer(full)


def encoded_answer(request: admission.AdmissionRequest) -> bytes:
    return admission.encode(MUTATOR.handle(request).response)


@FUZZ
@given(bodies())
def test_any_json_gets_a_valid_review_or_a_400(body: bytes) -> None:
    response = check_answer(body)
    if response is not None:
        check_patch(body, response)


@FUZZ
@given(reviews.map(lambda r: json.dumps(r).encode()))
def test_well_formed_reviews_are_never_rejected(body: bytes) -> None:
    response = check_answer(body)
    assert response is not None
    check_patch(body, response)


@FUZZ
@given(bodies() | st.binary(max_size=200))
def test_skimming_decoder_agrees_with_the_full_decoder(body: bytes) -> None:
    same_decoding(body)


@settings(max_examples=100, deadline=None)
@given(reviews, st.binary(min_size=1, max_size=8))
def test_invalid_utf8_anywhere_is_a_400(review: dict[str, Any], junk: bytes) -> None:
    body = json.dumps(review, ensure_ascii=False).encode()
    bad = body[:-1] + b',"x":"' + b"\xff" + junk + b'"}'
    same_decoding(bad)
    assert check_answer(bad) is None


def test_numbers_orjson_refuses_or_rounds_still_resolve() -> None:
    """Numbers past double range and >64-bit integers are valid JSON: answered like any other Pod."""
    for extra in ('{"big": 1e400}', '{"big": 123456789012345678901234567890}'):
        body = (b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u",'
                b'"kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","object":{"metadata":'
                b'{"name":"db-0","ownerReferences":[{"apiVersion":"apps/v1","kind":"StatefulSet","name":"db",'
                b'"controller":true}],"labels":' + extra.encode() + b"}}}}")
        same_decoding(body)
        response = check_answer(body)
        assert response is not None and "patch" in response


async def test_fuzzed_reviews_over_tls(start_server: ServerFactory) -> None:
    """A sample through the real server: never a 5xx, never a denial; always a review or a 400."""
    srv = await start_server(MUTATOR)
    ctx = srv.client_ssl

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(bodies() | st.binary(max_size=100))
    def exchange(body: bytes) -> None:
        conn = http.client.HTTPSConnection("localhost", srv.port, context=ctx, timeout=10)
        try:
            conn.request("POST", "/mutate", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        assert resp.status in (200, 400), (resp.status, raw[:200])
        out = json.loads(raw)
        if resp.status == 400:
            assert isinstance(out["error"], str) and out["error"]
            assert check_answer(body) is None
            return
        assert out["kind"] == "AdmissionReview" and out["response"]["allowed"] is True
        assert out["response"] == check_answer(body)

    await asyncio.to_thread(exchange)


async def test_client_chosen_operations_do_not_grow_the_metrics(start_server: ServerFactory) -> None:
    from webhook import metrics

    srv = await start_server()
    for i in range(20):
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                           "request": {"uid": "u", "operation": f"OP-{i}"}}).encode()
        status, _ = await srv.post("/mutate", body)
        assert status == 200
    labels = {s.labels.get("operation") for m in metrics.REGISTRY.collect() for s in m.samples}
    assert not any(str(op).startswith("OP-") for op in labels)
    assert "other" in labels


@pytest.mark.parametrize("where", ["spec", "metadata", "labels"])
@pytest.mark.parametrize("depth", [100, 600, 5_000, 200_000])
def test_deep_nesting_is_answered_not_crashed(where: str, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    meta = f'{{"labels":{nested}}}' if where == "labels" else (nested if where == "metadata" else "{}")
    spec = nested if where == "spec" else "{}"
    body = ('{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u",'
            '"kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE",'
            f'"object":{{"metadata":{meta},"spec":{spec}}}}}}}').encode()
    same_decoding(body)
    response = check_answer(body)
    assert response is None or "patch" not in response


# Every string the skimmer builds into a value (the others it only syntax-checks), each held by a marker.
_SKIMMED_TEMPLATE = {
    "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
    "request": {
        "uid": "@uid@", "kind": {"group": "@group@", "version": "@version@", "kind": "@kind@"},
        "resource": {"resource": "@resource@"}, "subResource": "@subResource@", "namespace": "@namespace@",
        "operation": "@operation@", "dryRun": False,
        "object": {"metadata": {
            "name": "@name@", "namespace": "@metaNamespace@", "uid": "@metaUid@",
            "creationTimestamp": "@created@", "labels": {"@labelKey@": "@labelValue@"},
            "annotations": {"@annotationKey@": "@annotationValue@"},
            "ownerReferences": [{"apiVersion": "@ownerApiVersion@", "kind": "@ownerKind@", "name": "@ownerName@",
                                 "controller": True, "uid": "@ownerUid@"}],
        }, "spec": {"containers": [{"name": "@spec@"}]}},
    },
}
_SKIMMED_BODY = json.dumps(_SKIMMED_TEMPLATE).encode()
# Every string of the body, keys included (a key the skimmer matches against its fields is read too),
# as (start, end) byte offsets of its contents between the quotes.
_STRINGS = [(m.start() + 1, m.end() - 1) for m in re.finditer(rb'"(?:[^"\\]|\\.)*"', _SKIMMED_BODY)]
# Every token a number could stand in place of: strings (quotes included), keys too, and literals.
_TOKENS = [(m.start(), m.end()) for m in re.finditer(rb'"(?:[^"\\]|\\.)*"|true|false', _SKIMMED_BODY)]


def _invalid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


invalid_utf8 = st.binary(min_size=1, max_size=6).filter(_invalid_utf8) | st.sampled_from(
    [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xe2\x82"])
non_json_numbers = st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"+1", b"nan", b"inf", b"-NaN", b"01", b".5"])


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(_STRINGS), st.data(), invalid_utf8)
def test_invalid_utf8_in_any_string_the_skimmer_reads_is_a_400(
    span: tuple[int, int], data: st.DataObject, junk: bytes
) -> None:
    """The same bytes are a 400 wherever they are: in a key, the uid or a label as in the spec (never an exception)."""
    start, end = span
    at = data.draw(st.integers(start, end), label="offset")
    body = _SKIMMED_BODY[:at] + junk + _SKIMMED_BODY[at:]
    same_decoding(body)
    assert check_answer(body) is None


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_TOKENS), non_json_numbers)
def test_non_json_numbers_in_place_of_any_token_are_a_400(span: tuple[int, int], number: bytes) -> None:
    """``NaN`` and friends are not JSON: refused where a string, key or literal was, not read leniently."""
    start, end = span
    body = _SKIMMED_BODY[:start] + number + _SKIMMED_BODY[end:]
    same_decoding(body)
    assert check_answer(body) is None


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_json_numbers_are_refused_by_the_lenient_fallback_too(number: bytes) -> None:
    """1e400 sends the body to the stdlib fallback (orjson refuses it); NaN beside it must still be a 400."""
    body = _SKIMMED_BODY.replace(b'"@labelValue@"', b"1e400").replace(b'"@annotationValue@"', number)
    with pytest.raises(admission.AdmissionError):
        admission.decode_for_mutation(body)
    with pytest.raises(ValueError):
        admission.loads(body)
