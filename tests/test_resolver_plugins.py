"""How the resolver consumes plugin answers: order, precedence, canonical types, the input it sends."""

from __future__ import annotations

import json

from tests.support.factories import owner, pod
from tests.support.plugin_fakes import Recording
from webhook.resolution.resolver import Resolver, ResolverSettings, plugin_input

UNKNOWN = pod(name="w-0", namespace=None, owners=[owner("example.com/v1", "Widget", "w")])["metadata"]
KNOWN = pod(name="db-0", owners=[owner("apps/v1", "StatefulSet", "db")])["metadata"]


def test_plugins_are_asked_only_when_rules_do_not_resolve() -> None:
    plugins = Recording([("a", "deployment", "from-plugin")])
    found = Resolver().resolve(KNOWN, "default", plugins)
    assert found is not None and found.resolved_by == "builtin:statefulset"
    assert plugins.inputs == []
    found = Resolver().resolve(UNKNOWN, "prod", plugins)
    assert found is not None
    assert (found.workload_type, found.workload_name, found.platform, found.resolved_by) == (
        "Deployment", "from-plugin", None, "plugin:a")


def test_plugins_first_setting() -> None:
    plugins = Recording([("a", "DaemonSet", "claimed")])
    found = Resolver(ResolverSettings(plugins_first=True)).resolve(KNOWN, "default", plugins)
    assert found is not None and (found.workload_type, found.resolved_by) == ("DaemonSet", "plugin:a")
    nothing = Recording([])
    found = Resolver(ResolverSettings(plugins_first=True)).resolve(KNOWN, "default", nothing)
    assert found is not None and found.resolved_by == "builtin:statefulset"


def test_unknown_types_are_passed_over_lazily_unless_custom_types_are_allowed() -> None:
    plugins = Recording([("a", "Gizmo", "g"), ("b", "STATEFULSET", "s"), ("c", "Job", "never-asked")])
    found = Resolver().resolve(UNKNOWN, "ns", plugins)
    assert found is not None and (found.workload_type, found.workload_name, found.resolved_by) == (
        "StatefulSet", "s", "plugin:b")
    assert plugins.consumed == 2  # the third plugin never ran
    custom = Resolver(ResolverSettings(allow_custom_types=True)).resolve(UNKNOWN, "ns", Recording([("a", "Gizmo", "g")]))
    assert custom is not None and custom.workload_type == "Gizmo"


def test_plugin_input_is_the_metadata_as_deepflow_shapes_it_with_the_request_namespace() -> None:
    plugins = Recording([("a", "Gizmo", "not-accepted")])
    assert Resolver().resolve(UNKNOWN, "prod", plugins) is None
    assert json.loads(plugins.inputs[0]) == {"name": "w-0", "namespace": "prod", "ownerReferences": UNKNOWN["ownerReferences"]}
    assert json.loads(plugin_input({"namespace": "own", "name": "x"}, "req")) == {"namespace": "own", "name": "x"}
    assert "namespace" not in UNKNOWN  # the caller's dict is not modified


def test_plugin_input_keeps_deepflows_fields_only_with_keys_sorted_as_go_marshals_a_map() -> None:
    """DeepFlow's agent keeps seven metadata fields of a Pod; its server gives plugins json.Marshal of
    that map (sorted keys at every level, compact). Nulls are left out, as the agent's serializer does."""
    meta = {
        "name": "w-0", "generateName": "w-", "namespace": "ns", "uid": "u-1", "creationTimestamp": None,
        "resourceVersion": "7", "finalizers": ["x"], "deletionTimestamp": None,
        "labels": {"zeta": "1", "alpha": "2"}, "annotations": {"b": "x", "a": "y"},
        "ownerReferences": [{"uid": "o", "name": "w", "kind": "Widget", "apiVersion": "example.com/v1", "controller": True}],
        "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:metadata": {}}}],
    }
    text = plugin_input(meta, "other")
    shaped = {key: meta[key] for key in ("annotations", "labels", "name", "namespace", "ownerReferences", "uid")}
    seven = {"annotations", "creationTimestamp", "labels", "name", "namespace", "ownerReferences", "uid"}
    assert set(json.loads(plugin_input({**meta, "creationTimestamp": "2026-11-25T12:00:00Z"}, None))) == seven
    assert text == json.dumps(shaped, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def test_plugin_input_survives_numbers_orjson_refuses() -> None:
    text = plugin_input({"annotations": {"n": 2**70}, "name": "x"}, None)
    assert text == '{"annotations":{"n":1180591620717411303424},"name":"x"}'
