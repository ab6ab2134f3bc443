"""The everyday review's shortcuts: the whole metadata is built only for plugins, patches are built
once per workload, and neither changes an answer (the fuzz tests compare against the full decoder)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import msgspec
import orjson
import pytest

from tests.support.factories import owner, pod, review
from tests.support.plugin_fakes import Recording
from webhook.admission import review as admission
from webhook.admission.handler import PodMutator
from webhook.admission.patch import DEFAULT_PREFIX, PatchBuilder, annotation_ops, desired_annotations
from webhook.outcomes import ReviewOutcome
from webhook.plugins import EMPTY
from webhook.resolution.model import Owner, Resolution
from webhook.resolution.resolver import Resolver, plugin_input

MANAGED = [{"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {"f:metadata": {"f:labels": {}}}}]


def everyday_body(name: str = "web-7c5ddbdf54-abcde", annotations: dict[str, str] | None = None) -> bytes:
    obj = pod(generate_name="web-7c5ddbdf54-", labels={"pod-template-hash": "7c5ddbdf54", "app": "web"},
              annotations=annotations, owners=[owner("apps/v1", "ReplicaSet", "web-7c5ddbdf54")])
    obj["metadata"]["name"] = name
    obj["metadata"]["managedFields"] = MANAGED
    return orjson.dumps(review(obj))


def test_rules_answer_without_building_the_whole_metadata() -> None:
    request = admission.decode_for_mutation(everyday_body())
    pod_object = request.object
    assert isinstance(pod_object, admission.PodObject)
    decision = PodMutator(Resolver(), lambda: Recording([("never", "Job", "x")])).handle(request)
    assert decision.outcome == ReviewOutcome.MUTATED and decision.resolution is not None
    assert decision.resolution.workload_name == "web"
    # managedFields and the rest were skipped, never built: only the fields rules and plugins read exist
    assert pod_object.meta.labels == {"pod-template-hash": "7c5ddbdf54", "app": "web"}
    assert "managedFields" not in msgspec.structs.asdict(pod_object.meta)


def test_plugins_get_the_metadata_as_deepflow_shapes_it_with_the_namespace_filled_in() -> None:
    obj = pod(name="w-0", namespace=None, labels={"a": "b"}, owners=[owner("example.com/v1", "Widget", "w")])
    obj["metadata"]["managedFields"] = MANAGED
    body = orjson.dumps(review(obj, namespace="prod"))
    plugins = Recording([("widget", "Deployment", "w")])
    decision = PodMutator(Resolver(), lambda: plugins).handle(admission.decode_for_mutation(body))
    assert decision.outcome == ReviewOutcome.MUTATED
    assert plugins.inputs == [plugin_input(obj["metadata"], "prod")]
    sent = json.loads(plugins.inputs[0])
    assert sent["namespace"] == "prod" and "managedFields" not in sent and sent["labels"] == {"a": "b"}


def test_pods_of_one_workload_share_one_precomputed_patch() -> None:
    mutator = PodMutator(Resolver(), lambda: EMPTY)
    team = {"team": "shop"}
    first = mutator.handle(admission.decode_for_mutation(everyday_body("web-7c5ddbdf54-aaaaa", team))).response.patch
    second = mutator.handle(admission.decode_for_mutation(everyday_body("web-7c5ddbdf54-bbbbb", team))).response.patch
    assert first is not None and first is second
    ops = json.loads(base64.b64decode(first.encoded))
    assert ops == list(first.ops)
    assert [op["path"] for op in ops] == [
        "/metadata/annotations/workload-tagger.io~1workload-type", "/metadata/annotations/workload-tagger.io~1workload-name",
        "/metadata/annotations/workload-tagger.io~1resolved-by",
        "/metadata/annotations/resource.opentelemetry.io~1k8s.deployment.name",
        "/metadata/annotations/resource.opentelemetry.io~1k8s.replicaset.name",
        "/metadata/annotations/resource.opentelemetry.io~1k8s.replicaset.uid"]


def created_at(minutes: int) -> str:
    """The creationTimestamp of a Pod a CronJob's Job created at its scheduled minute."""
    return dt.datetime.fromtimestamp(minutes * 60 + 30, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def scheduled_pod(minutes: int) -> dict[str, Any]:
    obj = pod(generate_name="r-", annotations={"team": "shop"}, owners=[owner("batch/v1", "Job", f"r-{minutes}")])
    obj["metadata"]["creationTimestamp"] = created_at(minutes)
    return obj


def test_a_patch_is_keyed_by_the_owner_reference_whose_name_and_uid_it_carries() -> None:
    """Pods of two Jobs of one CronJob resolve alike (CronJob nightly-report) but name different Jobs."""
    mutator = PodMutator(Resolver(), lambda: EMPTY)
    patches = []
    for minutes in (29_400_420, 29_400_480):
        job = owner("batch/v1", "Job", f"nightly-report-{minutes}")
        obj = pod(generate_name=f"nightly-report-{minutes}-", annotations={"team": "shop"}, owners=[job])
        obj["metadata"]["creationTimestamp"] = created_at(minutes)  # a CronJob's Pod: created at its schedule
        decision = mutator.handle(admission.decode_for_mutation(orjson.dumps(review(obj))))
        assert decision.response.patch is not None
        patches.append({op["path"].rsplit("~1", 1)[1]: op["value"] for op in decision.response.patch.ops})
        assert patches[-1]["k8s.job.name"] == job["name"] and patches[-1]["k8s.job.uid"] == job["uid"]
        assert patches[-1]["k8s.cronjob.name"] == "nightly-report"
    assert patches[0]["k8s.job.uid"] != patches[1]["k8s.job.uid"]
    # Without the OpenTelemetry annotations the owner changes nothing: both Pods share one patch.
    plain = PodMutator(Resolver(), lambda: EMPTY, otel_annotations=False)
    shared = [plain.handle(admission.decode_for_mutation(orjson.dumps(review(scheduled_pod(m))))).response.patch
              for m in (29_400_420, 29_400_480)]
    assert shared[0] is not None and shared[0] is shared[1]


def test_a_patch_is_keyed_by_which_otel_keys_the_pod_already_has() -> None:
    mutator = PodMutator(Resolver(), lambda: EMPTY)
    ours = {f"{DEFAULT_PREFIX}{k}": "x" for k in ("workload-type", "workload-name", "resolved-by")}
    user_set = {**ours, "resource.opentelemetry.io/k8s.deployment.name": "mine"}
    kept = mutator.handle(admission.decode_for_mutation(everyday_body(annotations=user_set)))
    assert kept.response.patch is not None
    assert [op["path"].rsplit("~1", 1)[1] for op in kept.response.patch.ops] == ["k8s.replicaset.name", "k8s.replicaset.uid"]
    rest = mutator.handle(admission.decode_for_mutation(everyday_body(annotations=ours)))
    assert rest.response.patch is not None and len(rest.response.patch.ops) == 3


def test_a_patch_is_keyed_by_which_of_our_keys_the_pod_already_has() -> None:
    mutator = PodMutator(Resolver(), lambda: EMPTY, otel_annotations=False)
    done = {f"{DEFAULT_PREFIX}{k}": "x" for k in ("workload-type", "workload-name", "resolved-by")}
    untouched = mutator.handle(admission.decode_for_mutation(everyday_body(annotations=done)))
    assert untouched.outcome == ReviewOutcome.UNCHANGED and untouched.response.patch is None
    partial = mutator.handle(admission.decode_for_mutation(everyday_body(annotations={f"{DEFAULT_PREFIX}workload-type": "x"})))
    assert partial.response.patch is not None
    assert [op["path"].rsplit("~1", 1)[1] for op in partial.response.patch.ops] == ["workload-name", "resolved-by"]
    fresh = mutator.handle(admission.decode_for_mutation(everyday_body(annotations={"team": "shop"})))
    assert fresh.response.patch is not None and len(fresh.response.patch.ops) == 3
    bare = mutator.handle(admission.decode_for_mutation(everyday_body()))
    assert bare.response.patch is not None and [op["path"] for op in bare.response.patch.ops] == ["/metadata/annotations"]


@pytest.mark.parametrize("otel", [True, False])
def test_the_builder_agrees_with_annotation_ops_in_every_state_and_stays_bounded(otel: bool) -> None:
    builder = PatchBuilder(capacity=3, otel=otel)
    keys = [f"{DEFAULT_PREFIX}workload-type", f"{DEFAULT_PREFIX}platform", "resource.opentelemetry.io/k8s.statefulset.uid"]
    states: list[tuple[object, bool]] = [(None, False), (None, True), ({}, True), ({keys[0]: "a"}, True),
                                         ({keys[0]: "a", keys[1]: "b", "other": "c"}, True), ({keys[2]: "u"}, True),
                                         ("junk", True), ([], True)]
    for i in range(10):
        sts = Owner("apps/v1", "StatefulSet", f"db-{i % 4}", f"uid-{i % 3}")
        resolution = Resolution("StatefulSet", f"db-{i % 4}", "OpenKruise" if i % 2 else None, "builtin:statefulset", sts)
        for current, has_metadata in states:
            ops = annotation_ops(current, desired_annotations(resolution, otel=otel), has_metadata)
            patch = builder.build(resolution, current, has_metadata)
            assert (list(patch.ops) if patch else []) == ops
            assert len(builder._cache) <= 3


def test_duplicate_keys_read_as_the_full_decoder_reads_them() -> None:
    """JSON allows duplicate keys; both decoders keep the last, for the review's fields and the rules' alike."""
    from tests.test_fuzz_admission import same_decoding

    body = (b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"a","uid":"b",'
            b'"kind":{"group":"","version":"v1","kind":"Pod"},"operation":"DELETE","operation":"CREATE",'
            b'"object":{"metadata":{"labels":{"x":"1"}},"metadata":{"labels":{"x":"2","x":"3"},'
            b'"ownerReferences":[{"apiVersion":"apps/v1","kind":"StatefulSet","name":"db","name":"db2",'
            b'"controller":true}]}}}}')
    same_decoding(body)
    request = admission.decode_for_mutation(body)
    assert request.uid == "b" and request.operation == "CREATE"
    decision = PodMutator(Resolver(), lambda: EMPTY).handle(request)
    assert decision.resolution is not None and decision.resolution.workload_name == "db2"


def test_plugins_get_deepflows_shape_whatever_the_api_server_sent() -> None:
    """Key order, escapes and extra fields of the review's text do not reach plugins: they get what
    DeepFlow's server would hand them for this Pod."""
    meta_text = ('{"name":"w-0","generateName":"w-","namespace":"prod","labels":{"note":"a \\u003c b \\u0026 c"},'
                 '"ownerReferences":[{"uid":"o","apiVersion":"example.com/v1","kind":"Widget","name":"w","controller":true}]}')
    body = ('{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u",'
            '"kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"prod",'
            f'"object":{{"kind":"Pod","metadata": {meta_text} ,"spec":{{}}}}}}}}').encode()
    plugins = Recording([("widget", "Deployment", "w")])
    decision = PodMutator(Resolver(), lambda: plugins).handle(admission.decode_for_mutation(body))
    assert decision.outcome == ReviewOutcome.MUTATED
    assert plugins.inputs == [
        '{"labels":{"note":"a < b & c"},"name":"w-0","namespace":"prod",'
        '"ownerReferences":[{"apiVersion":"example.com/v1","controller":true,"kind":"Widget","name":"w","uid":"o"}]}'
    ]
