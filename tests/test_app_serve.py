"""`serve` wired end to end: self-managed certificates, the ConfigMap plugin source, metrics port.

The real `app.serve` runs in a thread against the fake API (tests/support/fakeapi.py) through the real
`kubernetes` client, exactly as in a cluster Pod minus the apiserver: it must publish its CA,
serve a certificate that CA signs, turn ready only after the first ConfigMap sync, answer with
the ConfigMap's plugin, pick up a new plugin version without a restart, and stop cleanly.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.factories import owner, pod, review
from tests.support.fakeapi import CONFIGMAPS, FakeKube, write_kubeconfig
from tests.support.net import free_port
from tests.support.servers import serving
from tests.support.waiting import wait_for
from webhook.config import load

NS = "workload-tagger"

PLUGIN = """
package.path = package.path..";/bin/?.lua"
local dkjson = require("dkjson")
function GetWorkloadTypeAndName(metaJsonStr)
    local meta = dkjson.decode(metaJsonStr, 1, nil)
    for _, ref in ipairs(meta.ownerReferences or {}) do
        if ref.kind == "Widget" then return "%s", ref.name end
    end
    return "", ""
end
"""






@pytest.fixture()
def kube() -> Iterator[FakeKube]:
    fake = FakeKube()
    fake.add_webhook_config("workload-tagger", ["pods.workload-tagger.io"])
    with fake:
        yield fake


def put_plugin(kube: FakeKube, wtype: str) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "workload-tagger-plugins", "namespace": NS},
          "data": {"widgets.lua": PLUGIN % wtype, "README": "not a plugin"}}
    kube.save(CONFIGMAPS, cm)


def test_serve_in_cluster_mode_end_to_end(kube: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", NS)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube.url)
    port, metrics_port = free_port(), free_port()
    config = load(None, {
        "host": "127.0.0.1", "port": port, "metrics_port": metrics_port, "cert_mode": "self-managed",
        "cert_file": str(tmp_path / "tls" / "tls.crt"), "key_file": str(tmp_path / "tls" / "tls.key"),
        "kubeconfig": str(kubeconfig), "plugin_source": "configmap", "shutdown_drain_s": 0,
    }, {})
    put_plugin(kube, "statefulset")

    with serving(config):

        # The CA the apiserver would trust is whatever the webhook published in its caBundle.
        def ca_bundle() -> str:
            hooks = kube.webhook_configs["workload-tagger"]["webhooks"]
            return str(hooks[0].get("clientConfig", {}).get("caBundle", ""))

        wait_for(lambda: bool(ca_bundle()), timeout=20.0, what="caBundle patched")
        trusted = ssl.create_default_context(cadata=base64.b64decode(ca_bundle()).decode())

        def readyz() -> int:
            """Status of /readyz, verifying the certificate for the Service name the apiserver dials."""
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, trusted.wrap_socket(
                    raw, server_hostname=f"workload-tagger.{NS}.svc"
                ) as tls:
                    tls.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    return int(tls.recv(64).split()[1])
            except OSError:
                return 0

        wait_for(lambda: readyz() == 200, timeout=20.0, what="ready")

        def mutate() -> dict[str, str]:
            body = review(pod(generate_name="w-", owners=[owner("example.com/v1", "Widget", "gizmo")]))
            req = urllib.request.Request(f"https://127.0.0.1:{port}/mutate", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            ctx = ssl.create_default_context(cadata=base64.b64decode(ca_bundle()).decode())
            ctx.check_hostname = False  # by IP here; the name check is made by /readyz above
            with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
                answer = json.loads(resp.read())["response"]
            assert answer["allowed"] is True
            ops = json.loads(base64.b64decode(answer["patch"])) if "patch" in answer else []
            return {op["path"]: op["value"] for op in ops} if ops else {}

        first = mutate()["/metadata/annotations"]
        assert first == {"workload-tagger.io/workload-type": "StatefulSet", "workload-tagger.io/workload-name": "gizmo",
                         "workload-tagger.io/resolved-by": "plugin:widgets"}

        put_plugin(kube, "daemonset")  # a new version of the plugin: no restart
        wait_for(lambda: mutate().get("/metadata/annotations", {}).get("workload-tagger.io/workload-type") == "DaemonSet",
                 timeout=20.0, what="DaemonSet rule in force")

        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
            exposition = resp.read().decode()
        assert 'workload_tagger_plugin_evaluations_total{outcome="match",plugin="widgets"}' in exposition
        assert "workload_tagger_plugins_loaded 1.0" in exposition
        assert 'workload_tagger_source_synced{source="configmap"} 1.0' in exposition
        expiry = [line for line in exposition.splitlines()
                  if line.startswith("workload_tagger_serving_certificate_expiry_timestamp_seconds ")]
        days_left = (float(expiry[0].split()[1]) - time.time()) / 86400
        assert 300 < days_left <= 366  # the self-managed leaf: about a year
    secret = kube.secrets[(NS, "workload-tagger-ca")]
    assert "ca.crt" in secret["data"]
