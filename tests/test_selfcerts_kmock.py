"""Self-managed certificates against kmock's Kubernetes emulator (the real client, a second API model).

kmock cannot produce update conflicts (it ignores resourceVersion) and merges patches as plain
dicts, so the conflict cases live in test_selfcerts.py against tests/support/fakeapi.py; here the
create-or-get path and the shape of the real client's requests are checked against kmock.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import kmock as kmock_lib
from cryptography import x509
from kubernetes import client as k8s

from webhook.certs.selfmanaged import SelfCertSettings, ensure_serving_cert

NS = "workload-tagger"
MWC = kmock_lib.resource("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations")
SECRETS = kmock_lib.resource("", "v1", "secrets")


def settings(tmp_path: Path, replica: str) -> SelfCertSettings:
    return SelfCertSettings(
        namespace=NS,
        cert_file=str(tmp_path / replica / "tls.crt"),
        key_file=str(tmp_path / replica / "tls.key"),
        request_timeout_s=5,
    )


async def test_two_replicas_share_one_ca_through_kmock(kmock: Any, tmp_path: Path) -> None:
    kmock.objects[MWC, None, "workload-tagger"] = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "workload-tagger", "resourceVersion": "1", "uid": "u1"},
        "webhooks": [
            {
                "name": "pods.workload-tagger.io",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "clientConfig": {"service": {"name": "workload-tagger", "namespace": NS}},
            }
        ],
    }
    api = k8s.ApiClient(k8s.Configuration(host=str(kmock.url).rstrip("/")))
    a = await asyncio.to_thread(ensure_serving_cert, api, settings(tmp_path, "a"))
    b = await asyncio.to_thread(ensure_serving_cert, api, settings(tmp_path, "b"))
    assert a.ca.cert == b.ca.cert
    assert a.leaf.cert.serial_number != b.leaf.cert.serial_number
    secret = kmock.objects[SECRETS, NS, "workload-tagger-ca"]
    stored = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    assert stored == a.ca.cert
    webhooks = kmock.objects[MWC, None, "workload-tagger"]["webhooks"]
    bundle = x509.load_pem_x509_certificates(base64.b64decode(webhooks[0]["clientConfig"]["caBundle"]))
    assert bundle == [a.ca.cert]
    for replica in "ab":
        leaf = x509.load_pem_x509_certificate((tmp_path / replica / "tls.crt").read_bytes())
        leaf.verify_directly_issued_by(bundle[0])
