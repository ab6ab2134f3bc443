"""OpenTelemetry resource annotations: the exact set per owner shape, through the webhook's own handler.

Expected attributes are written out by hand in tests/support/cases.py (OTEL_EXPECTED), from the semantic
conventions' k8s registry, not computed by webhook.admission.otel; the Pods go through `PodMutator.handle`
and the patch is applied with a JSON Patch library, so what is checked is what the API server
would store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.annotations import OTEL, OURS, QUALIFIED, admit
from tests.support.cases import CASES, OTEL_EXPECTED, Case
from tests.support.factories import owner, pod
from tests.support.plugin_fakes import Recording
from tools.readme_settings import render
from webhook.admission import otel
from webhook.admission.handler import PodMutator
from webhook.app import build_mutator
from webhook.config import Config, load
from webhook.plugins import EMPTY, PluginSet
from webhook.resolution.model import Owner, Resolution
from webhook.resolution.resolver import Resolver, ResolverSettings
from webhook.resolution.rules import BUILTIN_RULES, user_rules

ROOT = Path(__file__).resolve().parent.parent






def ours(case: Case) -> dict[str, str]:
    if case.expected is None:
        return {}
    wtype, name, platform, by = case.expected
    out = {OURS + "workload-type": wtype, OURS + "workload-name": name, OURS + "resolved-by": by}
    if platform:
        out[OURS + "platform"] = platform
    return out


def test_every_case_has_its_otel_expectation() -> None:
    assert set(OTEL_EXPECTED) == {c.id for c in CASES}, "add the case's OpenTelemetry attributes to OTEL_EXPECTED"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_exact_annotations_per_shape_with_otel_on(case: Case) -> None:
    got = admit(build_mutator(Config()), case.pod)
    original = case.pod["metadata"].get("annotations") or {}
    assert got == {**original, **ours(case), **{OTEL + k: v for k, v in OTEL_EXPECTED[case.id].items()}}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_exact_annotations_per_shape_with_otel_off(case: Case) -> None:
    got = admit(build_mutator(Config(otel_annotations=False)), case.pod)
    original = case.pod["metadata"].get("annotations") or {}
    assert got == {**original, **ours(case)}


def test_argo_rollout_pods_are_never_called_a_deployment() -> None:
    rs = owner("apps/v1", "ReplicaSet", "checkout-5b7c9d8e6f")
    got = admit(build_mutator(Config()), pod(generate_name="checkout-5b7c9d8e6f-", owners=[rs],
                                              labels={"rollouts-pod-template-hash": "5b7c9d8e6f"}))
    assert got[OURS + "workload-type"] == "Rollout"
    assert {k for k in got if k.startswith(OTEL)} == {OTEL + "k8s.replicaset.name", OTEL + "k8s.replicaset.uid"}


def test_user_set_values_are_kept_and_service_name_is_never_written() -> None:
    rs = owner("apps/v1", "ReplicaSet", "web-7c5ddbdf54")
    mine = {OTEL + "k8s.deployment.name": "storefront", OTEL + "service.name": "shop-web",
            OTEL + "k8s.replicaset.uid": "set-by-hand"}
    got = admit(build_mutator(Config()), pod(generate_name="web-7c5ddbdf54-", annotations=dict(mine),
                                              labels={"pod-template-hash": "7c5ddbdf54"}, owners=[rs]))
    assert {k: got[k] for k in mine} == mine
    assert got[OTEL + "k8s.replicaset.name"] == "web-7c5ddbdf54"
    assert got[OURS + "workload-name"] == "web"  # our key is independent of the user's OTel value
    plain = admit(build_mutator(Config()), pod(generate_name="web-7c5ddbdf54-",
                                                labels={"pod-template-hash": "7c5ddbdf54"}, owners=[rs]))
    assert not any(k.startswith(OTEL + "service.") for k in plain)
    assert not any(k.startswith("resource.opentelemetry.io/service.") for k in otel.ALL_KEYS)


@pytest.mark.parametrize("uid", [None, 5, ""])
def test_an_owner_reference_without_a_uid_string_gets_no_uid_attribute(uid: object) -> None:
    ref: dict[str, Any] = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "controller": True}
    if uid is not None:
        ref["uid"] = uid
    got = admit(build_mutator(Config()), pod(name="db-0", owners=[ref]))
    assert {k: v for k, v in got.items() if k.startswith(OTEL)} == {OTEL + "k8s.statefulset.name": "db"}


def test_plugin_answers_get_no_otel_attribute_even_for_a_kubernetes_owner() -> None:
    """With plugins first a plugin may claim a ReplicaSet's Pod: it names the workload, we cannot tell which object."""
    rs = owner("apps/v1", "ReplicaSet", "web-7c5ddbdf54")
    plugins: PluginSet = Recording([("mine", "Deployment", "frontend")])
    mutator = PodMutator(Resolver(ResolverSettings(plugins_first=True)), lambda: plugins)
    got = admit(mutator, pod(generate_name="web-7c5ddbdf54-", labels={"pod-template-hash": "7c5ddbdf54"}, owners=[rs]))
    assert got[OURS + "resolved-by"] == "plugin:mine"
    assert not any(k.startswith(OTEL) for k in got)


def test_a_config_rule_names_only_the_direct_owner() -> None:
    """A user rule calling DaemonSets Deployments derives no Kubernetes Deployment: k8s.daemonset.* only."""
    rules = user_rules([{"group": "apps", "kind": "DaemonSet", "type": "Deployment"}], allow_custom_types=False)
    mutator = PodMutator(Resolver(ResolverSettings(extra_rules=rules)), lambda: EMPTY)
    ds = owner("apps/v1", "DaemonSet", "agent")
    got = admit(mutator, pod(generate_name="agent-", owners=[ds]))
    assert got[OURS + "workload-type"] == "Deployment"
    assert {k: v for k, v in got.items() if k.startswith(OTEL)} == {
        OTEL + "k8s.daemonset.name": "agent", OTEL + "k8s.daemonset.uid": ds["uid"]}


def test_other_groups_kinds_named_like_kubernetes_ones_get_nothing() -> None:
    for api_version in ("apps.kruise.io/v1beta1", "example.io/v1", "extensions/v1beta1"):
        for kind in ("StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"):
            res = Resolution("X", "n", None, "config:x", Owner(api_version, kind, "n", "u"))
            assert otel.otel_attributes(res) == {}, (api_version, kind)


def test_derived_workload_rules_exist_and_every_key_is_a_valid_annotation_key() -> None:
    assert set(otel.DERIVED_WORKLOAD) <= {r.resolved_by for r in BUILTIN_RULES}
    assert all(QUALIFIED.match(k) for k in otel.ALL_KEYS), sorted(otel.ALL_KEYS)
    # every key otel_annotations can write is known to the patch builder's state check
    for case in CASES:
        resolution = Resolver().resolve(case.pod["metadata"])
        if resolution is not None:
            assert set(otel.otel_annotations(resolution)) <= otel.ALL_KEYS


def test_the_setting_default_env_and_flag() -> None:
    assert load(None, {}, {}).otel_annotations is True
    assert load(None, {}, {"WORKLOAD_TAGGER_OTEL_ANNOTATIONS": "false"}).otel_annotations is False
    assert load(None, {"otel_annotations": False}, {"WORKLOAD_TAGGER_OTEL_ANNOTATIONS": "true"}).otel_annotations is False


def test_the_convention_version_is_kept_in_one_place() -> None:
    hits = [p for p in (ROOT / "webhook").rglob("*.py") if otel.SEMCONV_VERSION in p.read_text()]
    assert hits == [ROOT / "webhook" / "admission" / "otel.py"]
    assert otel.SEMCONV_SCHEMA_URL.endswith("/" + otel.SEMCONV_VERSION)


def test_readme_otel_table_is_generated_from_the_code() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "<!-- otel-table:start -->" in readme
    assert render(readme) == readme, "run `make docs` to regenerate the README tables"
    table = otel.mapping_table()
    # the generated table says, per shape, what the hand-written expectations say
    assert "| `apps` ReplicaSet → Rollout | `builtin:argo-rollout` | `k8s.replicaset.name` = owner's name, " \
           "`k8s.replicaset.uid` = owner's uid |" in table
    assert "`k8s.cronjob.name` = workload name, `k8s.job.name` = owner's name" in table
    assert "| `apps.kruise.io` StatefulSet → StatefulSet | `builtin:openkruise-statefulset` | none |" in table
