"""The manifests: kustomize builds, Kubernetes 1.30 schemas, safety properties, least-privilege RBAC."""

from __future__ import annotations

import ast
import functools
import json
import subprocess
from dataclasses import fields
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from webhook.certs.generate import service_names
from webhook.cluster.owner_cache import RESOURCES
from webhook.config import Config, env_name

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
K8S_VERSION = "1.30.0"  # the version the README states; kubernetes-validate ships its schemas
TARGETS = ["", "base", "overlays/cert-manager", "overlays/servicemonitor", "overlays/networkpolicy",
           "overlays/no-owner-lookup"]
NS = "workload-tagger"
# CRDs are not in the Kubernetes schemas: their shape is checked by hand below.
CRD_KINDS = {
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}


# Settings the manifests set that webhook/config.py does not declare yet (the lead adds them).
@functools.cache
def build(target: str) -> tuple[dict[str, Any], ...]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS / target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def one(objs: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def container(objs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    containers = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env(objs: tuple[dict[str, Any], ...]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container(objs)["env"]}


@pytest.mark.parametrize("target", TARGETS)
def test_every_object_validates_against_the_kubernetes_schemas(target: str) -> None:
    objs = build(target)
    assert objs
    for obj in objs:
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
            assert obj["metadata"]["namespace"] == NS and isinstance(obj["spec"], dict)
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_top_level_is_the_base() -> None:
    assert build("") == build("base")


def test_schema_validation_catches_a_typo() -> None:
    """Guard against a validator that accepts anything."""
    deployment = json.loads(json.dumps(one(build("base"), "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesytem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_namespaced_objects_live_in_one_namespace() -> None:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration"}
    for obj in build("base"):
        if obj["kind"] in cluster_scoped:
            assert "namespace" not in obj["metadata"], obj["kind"]
        else:
            assert obj["metadata"]["namespace"] == NS, obj["kind"]


def test_webhook_configuration_is_safe() -> None:
    objs = build("base")
    (hook,) = one(objs, "MutatingWebhookConfiguration")["webhooks"]
    assert hook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["sideEffects"] == "None"
    assert hook["timeoutSeconds"] == 2
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["matchPolicy"] == "Equivalent"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["namespaceSelector"] == {
        "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [NS, "kube-system"]}]
    }
    svc = hook["clientConfig"]["service"]
    service = one(objs, "Service", svc["name"])
    assert svc["namespace"] == service["metadata"]["namespace"] == NS
    assert svc["path"] == "/mutate"
    assert svc["port"] in {p["port"] for p in service["spec"]["ports"]}
    # the review budget answers well inside the apiserver's timeout
    assert Config().review_budget_ms / 1000 <= hook["timeoutSeconds"] / 2


def test_deployment_is_hardened_and_available() -> None:
    objs = build("base")
    dep = one(objs, "Deployment")
    spec = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    anti = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(objs)
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["privileged"] is False
    assert set(c["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"]["limits"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert c["args"] == ["serve"]
    # graceful stop: the kubelet waits longer than the server drains
    grace = float(env(objs)[env_name("shutdown_grace_s")])
    assert spec["terminationGracePeriodSeconds"] > grace + 5
    pdb = one(objs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    svc = one(objs, "Service")
    assert svc["spec"]["selector"].items() <= labels.items()
    # every writable path is a volume: the root filesystem is read-only
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    cert_file = env(objs)[env_name("cert_file")]
    assert str(Path(cert_file).parent) in mounts and "/tmp" in mounts


def test_environment_matches_the_settings() -> None:
    known = {f.name for f in fields(Config)}
    for target in TARGETS:
        for name in env(build(target)):
            if name == "POD_NAMESPACE":
                continue
            assert name.startswith("WORKLOAD_TAGGER_"), name
            assert name.removeprefix("WORKLOAD_TAGGER_").lower() in known, name


EXAMPLE_PLUGIN = ROOT / "examples" / "plugins" / "opengauss.lua"


def test_shipped_plugin_is_the_example_byte_for_byte() -> None:
    """kustomize cannot read files outside its directory, so the example is copied; the copy must not drift."""
    assert (MANIFESTS / "base/plugins/opengauss.lua").read_bytes() == EXAMPLE_PLUGIN.read_bytes()


def test_plugin_configmap_holds_the_opengauss_example() -> None:
    cm = one(build("base"), "ConfigMap", "workload-tagger-plugins")
    assert list(cm["data"]) == ["opengauss.lua"]
    assert cm["data"]["opengauss.lua"] == EXAMPLE_PLUGIN.read_text(encoding="utf-8")
    for target in TARGETS:  # every build ships the same source
        built = one(build(target), "ConfigMap", "workload-tagger-plugins")
        assert built["data"] == {"opengauss.lua": EXAMPLE_PLUGIN.read_text(encoding="utf-8")}, target
    assert env(build("base"))[env_name("configmap_name")] == cm["metadata"]["name"]


LUA_RUNNER = """
dofile(arg[1])
local a, b = GetWorkloadTypeAndName(io.read("*a"))
io.write(a, "\\t", b)
"""


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        (
            {
                "name": "ogtest-0",
                "ownerReferences": [
                    {
                        "apiVersion": "opengauss.sig/v1",
                        "kind": "OpenGaussCluster",
                        "name": "ogtest",
                        "uid": "u",
                        "controller": True,
                    }
                ],
            },
            "statefulset\togtest",  # as DeepFlow's example writes it; the webhook canonicalises the type
        ),
        (
            {
                "name": "web-1",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web"}],
            },
            "\t",
        ),
        ({"name": "bare"}, "\t"),
    ],
)
@pytest.mark.needs("lua5.1")
def test_plugin_runs_on_the_reference_lua(tmp_path: Path, meta: dict[str, Any], expected: str) -> None:
    """Debian lua5.1 + lua-dkjson, as on a DeepFlow server."""
    runner = tmp_path / "run.lua"
    runner.write_text(LUA_RUNNER)
    plugin = tmp_path / "opengauss.lua"
    plugin.write_text(one(build("base"), "ConfigMap")["data"]["opengauss.lua"])
    out = subprocess.run(
        ["lua5.1", str(runner), str(plugin)],
        input=json.dumps(meta),
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    assert out.stdout == expected


# -- cert-manager overlay ---------------------------------------------------------------------


def test_cert_manager_overlay_wires_injection_and_drops_selfcert_rbac() -> None:
    objs = build("overlays/cert-manager")
    hook = one(objs, "MutatingWebhookConfiguration")
    ref = hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
    ns, name = ref.split("/")
    cert = one(objs, "Certificate", name)
    assert cert["metadata"]["namespace"] == ns == NS
    assert cert["spec"]["dnsNames"] == service_names("workload-tagger", NS)
    assert cert["spec"]["privateKey"] == {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"}
    issuer = one(objs, "Issuer", cert["spec"]["issuerRef"]["name"])
    ca_cert = one(objs, "Certificate", "workload-tagger-ca")
    assert issuer["spec"]["ca"]["secretName"] == ca_cert["spec"]["secretName"] and ca_cert["spec"]["isCA"]
    assert env(objs)[env_name("cert_mode")] == "files"
    volumes = {v["name"]: v for v in one(objs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["certs"] == {
        "name": "certs",
        "secret": {"secretName": cert["spec"]["secretName"], "defaultMode": 0o440},
    }
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert ("Role", "workload-tagger-selfcerts") not in kinds
    # Was: no cluster-scoped grant at all; since owner lookup, the read-only owners grant remains.
    assert {(o["kind"], o["metadata"]["name"]) for o in objs if o["kind"] in {"ClusterRole", "ClusterRoleBinding"}} == {
        ("ClusterRole", OWNERS_ROLE), ("ClusterRoleBinding", OWNERS_ROLE)}
    assert ("Role", "workload-tagger-plugins") in kinds


def test_servicemonitor_overlay_scrapes_a_port_that_exists() -> None:
    objs = build("overlays/servicemonitor")
    monitor = one(objs, "ServiceMonitor")
    service = one(objs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
    container_ports = {p["name"]: p["containerPort"] for p in container(objs)["ports"]}
    assert container_ports[port["targetPort"]] == int(env(objs)[env_name("metrics_port")])


def test_networkpolicy_admits_only_the_webhook_and_metrics_ports_and_selects_the_webhook_pods() -> None:
    objs = build("overlays/networkpolicy")
    policy = one(objs, "NetworkPolicy")
    assert [o for o in objs if o["kind"] != "NetworkPolicy"] == list(build("base"))  # the base, plus the policy
    spec = policy["spec"]
    template = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= template.items()
    assert spec["policyTypes"] == ["Ingress"]
    rules = {rule["ports"][0]["port"]: rule for rule in spec["ingress"]}
    assert set(rules) == {"https", "metrics"} and all(len(r["ports"]) == 1 and r["from"] for r in spec["ingress"])
    # The named ports are the webhook's: https always, metrics where the metrics port is on.
    assert "https" in {p["name"] for p in container(objs)["ports"]}
    metrics_ports = {p["name"]: p["containerPort"] for p in container(build("overlays/servicemonitor"))["ports"]}
    assert metrics_ports["metrics"] == int(env(build("overlays/servicemonitor"))[env_name("metrics_port")])
    # The API server is reached by address, other Pods are not; metrics only from Prometheus's namespace.
    (apiserver,) = rules["https"]["from"]
    assert apiserver["ipBlock"]["cidr"] == "0.0.0.0/0" and apiserver["ipBlock"]["except"]
    (prometheus,) = rules["metrics"]["from"]
    assert set(prometheus) == {"namespaceSelector", "podSelector"}


# -- RBAC ---------------------------------------------------------------------------------------

VERB_OF_PREFIX = {
    "read": "get",
    "list": "list",
    "create": "create",
    "replace": "update",
    "patch": "patch",
    "delete": "delete",
}
RESOURCE_OF_SUFFIX = {
    "namespaced_secret": ("", "secrets"),
    "namespaced_config_map": ("", "configmaps"),
    "mutating_webhook_configuration": ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
}
SELFCERTS = ROOT / "webhook/certs/selfmanaged.py"
CONFIGMAP_SOURCE = ROOT / "webhook/plugins/sources/configmap.py"
PLUGIN_CLI = ROOT / "webhook/commands/plugin_manage.py"  # runs with the operator's credentials, not the webhook's


def _client_methods(tree: ast.AST) -> list[tuple[ast.Attribute, ast.Call | None]]:
    """Every ``<verb>_<resource>`` client method the code names, with the call that uses it.

    A method is used either called (``api.read_namespaced_secret(...)``) or handed over
    (``partial(api.create_namespaced_config_map, ...)``, ``watch.stream(api.list_..., ...)``);
    the call is the one whose function or argument it is.
    """
    found: list[tuple[ast.Attribute, ast.Call | None]] = []
    used: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        for candidate in (node.func, *node.args):
            if isinstance(candidate, ast.Attribute) and _resource_verb(candidate.attr) is not None:
                found.append((candidate, node))
                used.add(id(candidate))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in used and _resource_verb(node.attr) is not None:
            found.append((node, None))
    return found


def _resource_verb(attr: str) -> tuple[tuple[str, str], str] | None:
    prefix, _, suffix = attr.partition("_")
    if prefix in VERB_OF_PREFIX and suffix in RESOURCE_OF_SUFFIX:
        return RESOURCE_OF_SUFFIX[suffix], VERB_OF_PREFIX[prefix]
    return None


def _is_watch(method: ast.Attribute, call: ast.Call | None) -> bool:
    """``watch.Watch().stream(api.list_x, ...)``: the list method used as a watch."""
    return (
        call is not None
        and isinstance(call.func, ast.Attribute)
        and call.func.attr == "stream"
        and bool(call.args)
        and call.args[0] is method
    )


def verbs_called_by(module: Path) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs, from the kubernetes client methods the module uses."""
    calls: dict[tuple[str, str], set[str]] = {}
    for method, call in _client_methods(ast.parse(module.read_text())):
        found = _resource_verb(method.attr)
        assert found is not None
        resource, verb = found
        calls.setdefault(resource, set()).add("watch" if _is_watch(method, call) else verb)
    return calls


OWNERS_ROLE = "workload-tagger-owners"
# What the owner caches list and watch (webhook/cluster/owner_cache.py); raw calls, so read from the code's table.
OWNER_GRANTS = {(r.group, r.plural): {"list", "watch"} for r in RESOURCES}


def allowed_verbs(target: str) -> dict[tuple[str, str], set[str]]:
    """What the webhook's own code uses in a build; the cert-manager overlay has no self-managed certs,
    the no-owner-lookup overlay no owner caches."""
    modules = [CONFIGMAP_SOURCE] if target == "overlays/cert-manager" else [CONFIGMAP_SOURCE, SELFCERTS]
    allowed: dict[tuple[str, str], set[str]] = {}
    for module in modules:
        for resource, verbs in verbs_called_by(module).items():
            allowed.setdefault(resource, set()).update(verbs)
    if target != "overlays/no-owner-lookup":
        for resource, verbs in OWNER_GRANTS.items():
            allowed.setdefault(resource, set()).update(verbs)
    return allowed


def test_owner_caches_ask_for_exactly_the_granted_resources() -> None:
    role = one(build("base"), "ClusterRole", OWNERS_ROLE)
    granted = {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert granted == OWNER_GRANTS
    assert env(build("base"))[env_name("owner_lookup")] == "on"


def test_recommend_and_the_manifests_readme_name_the_owner_grants() -> None:
    from webhook.commands.recommend import owner_lookup_note

    readme = (MANIFESTS / "README.md").read_text()
    for _, plural in OWNER_GRANTS:
        assert plural in owner_lookup_note() and plural in readme
    assert "overlays/no-owner-lookup" in owner_lookup_note() and "overlays/no-owner-lookup" in readme


def test_no_owner_lookup_overlay_turns_it_off_and_drops_the_grant() -> None:
    objs = build("overlays/no-owner-lookup")
    assert env(objs)[env_name("owner_lookup")] == "off"
    assert not [o for o in objs if o["metadata"]["name"] == OWNERS_ROLE]
    assert ("ClusterRole", "workload-tagger-webhook-ca") in {(o["kind"], o["metadata"]["name"]) for o in objs}


def test_code_calls_what_the_selfcert_role_expects() -> None:
    assert verbs_called_by(SELFCERTS) == {
        ("", "secrets"): {"get", "create", "update"},
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"): {"get", "patch"},
    }


def test_verb_extraction_sees_calls_references_and_watches() -> None:
    assert verbs_called_by(CONFIGMAP_SOURCE) == {("", "configmaps"): {"list", "watch"}}
    assert verbs_called_by(PLUGIN_CLI) == {("", "configmaps"): {"get", "create", "patch"}}


def test_configmap_list_and_watch_ask_for_the_one_name() -> None:
    """A Role limited by resourceNames allows list/watch only with fieldSelector=metadata.name=<name>."""
    uses = [(m, c) for m, c in _client_methods(ast.parse(CONFIGMAP_SOURCE.read_text())) if m.attr.startswith("list_")]
    assert len(uses) == 2  # the list, and the watch
    for method, call in uses:
        assert call is not None, ast.unparse(method)
        selector = {k.arg: k.value for k in call.keywords}.get("field_selector")
        assert isinstance(selector, ast.JoinedStr), ast.unparse(call)
        assert ast.unparse(selector) == "f'metadata.name={self._name}'", ast.unparse(call)


def test_webhook_role_cannot_write_the_plugin_configmap() -> None:
    """``plugin create|delete`` uses the operator's kubeconfig; its write verbs must not leak into the Role."""
    cli_only = verbs_called_by(PLUGIN_CLI)[("", "configmaps")] - verbs_called_by(CONFIGMAP_SOURCE)[("", "configmaps")]
    assert cli_only  # the CLI does write; otherwise this test would prove nothing
    for target in TARGETS:
        for role in (o for o in build(target) if o["kind"] in {"Role", "ClusterRole"}):
            for rule in role["rules"]:
                if "configmaps" in rule["resources"]:
                    assert not set(rule["verbs"]) & (cli_only | {"update", "delete", "deletecollection"}), (
                        target,
                        role["metadata"]["name"],
                    )
    readme = (MANIFESTS / "README.md").read_text()
    assert "operator's own credentials" in readme
    assert all(f"`{verb}`" in readme for verb in sorted(verbs_called_by(PLUGIN_CLI)[("", "configmaps")]))


def _walk(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _walk(v)]
    if isinstance(value, list):
        return [x for v in value for x in _walk(v)]
    return [value]


@pytest.mark.parametrize("target", TARGETS)
def test_rbac_is_least_privilege(target: str) -> None:
    allowed = allowed_verbs(target)
    roles = [o for o in build(target) if o["kind"] in {"Role", "ClusterRole"}]
    assert roles
    granted_all: dict[tuple[str, str], set[str]] = {}
    for role in roles:
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    granted_all.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted_all == allowed  # every verb the code uses is granted, and nothing more
    for role in roles:
        assert "*" not in _walk(role), role["metadata"]["name"]
        for rule in role["rules"]:
            assert not rule.get("nonResourceURLs")
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    granted = set(rule["verbs"])
                    assert granted <= allowed.get((group, resource), set()), (
                        role["metadata"]["name"],
                        resource,
                    )
                    # create cannot be limited by name, nor list/watch of every object (see rbac.yaml)
                    if rule["verbs"] != ["create"] and role["metadata"]["name"] != OWNERS_ROLE:
                        assert rule.get("resourceNames"), (role["metadata"]["name"], resource)
        if role["kind"] == "ClusterRole" and role["metadata"]["name"] == OWNERS_ROLE:
            assert all(rule["verbs"] == ["list", "watch"] and not rule.get("resourceNames") for rule in role["rules"])
        elif role["kind"] == "ClusterRole":
            assert role["rules"] == [
                {
                    "apiGroups": ["admissionregistration.k8s.io"],
                    "resources": ["mutatingwebhookconfigurations"],
                    "resourceNames": ["workload-tagger"],
                    "verbs": ["get", "patch"],
                }
            ]
    # names in resourceNames are the objects the webhook actually uses
    names = {n for r in roles for rule in r["rules"] for n in rule.get("resourceNames", [])}
    assert names <= {"workload-tagger-plugins", "workload-tagger-ca", "workload-tagger"}


def test_bindings_point_at_the_service_account() -> None:
    objs = build("base")
    sa = one(objs, "ServiceAccount")
    assert one(objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    for binding in (o for o in objs if o["kind"] in {"RoleBinding", "ClusterRoleBinding"}):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NS}]
        one(objs, binding["roleRef"]["kind"], binding["roleRef"]["name"])


def test_dockerfile_runs_serve_as_the_manifests_user() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text and 'ENTRYPOINT ["workload-tagger"]' in text
    user = next(line.split()[1] for line in text.splitlines() if line.startswith("USER "))
    pod_sc = one(build("base"), "Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert user == f"{pod_sc['runAsUser']}:{pod_sc['runAsGroup']}"
