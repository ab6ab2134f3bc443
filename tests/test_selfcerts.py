"""Self-managed certificates with the real `kubernetes` client against a conflict-aware fake API."""

from __future__ import annotations

import base64
import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from tests.support.fakeapi import FakeKube, FakeKubeServer
from webhook.certs import selfmanaged as selfcerts
from webhook.certs.generate import CA_VALIDITY, KeyPair, make_ca, make_leaf, san_names
from webhook.certs.selfmanaged import SelfCertError, SelfCertSettings, ensure_serving_cert, pem

NS, SECRET, MWC = "workload-tagger", "workload-tagger-ca", "workload-tagger"
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


@pytest.fixture()
def kube() -> FakeKube:
    fake = FakeKube()
    fake.add_webhook_config(MWC, ["pods.workload-tagger.io", "pods-again.workload-tagger.io"])
    return fake


@pytest.fixture()
def server(kube: FakeKube) -> Iterator[FakeKubeServer]:
    with FakeKubeServer(kube) as srv:
        yield srv


def settings(tmp_path: Path, replica: str = "a") -> SelfCertSettings:
    return SelfCertSettings(
        namespace=NS,
        cert_file=str(tmp_path / replica / "tls.crt"),
        key_file=str(tmp_path / replica / "tls.key"),
        secret_name=SECRET,
        webhook_config_name=MWC,
        service="workload-tagger",
        request_timeout_s=5,
    )


def published(kube: FakeKube) -> list[list[x509.Certificate]]:
    return [
        x509.load_pem_x509_certificates(base64.b64decode(w["clientConfig"]["caBundle"]))
        for w in kube.webhook_configs[MWC]["webhooks"]
    ]


def secret_ca(kube: FakeKube) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(kube.secrets[(NS, SECRET)]["data"]["ca.crt"]))


def trusted_by_apiserver(kube: FakeKube, cert_file: str) -> bool:
    """What the apiserver would check: the served leaf chains to a CA in every webhook's caBundle."""
    leaf = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    for bundle in published(kube):
        ok = False
        for ca in bundle:
            try:
                leaf.verify_directly_issued_by(ca)
                ok = ca.not_valid_after_utc > NOW
            except (ValueError, InvalidSignature):
                continue
        if not ok:
            return False
    return True


def methods(kube: FakeKube, method: str) -> int:
    return sum(1 for r in kube.requests if r.method == method)


def test_first_start_creates_ca_publishes_bundle_and_writes_leaf(
    kube: FakeKube, server: FakeKubeServer, tmp_path: Path
) -> None:
    s = settings(tmp_path)
    bundle = ensure_serving_cert(server.api_client(), s, now=NOW)
    ca = secret_ca(kube)
    assert ca.serial_number == bundle.ca.cert.serial_number
    assert [[c.serial_number for c in b] for b in published(kube)] == [[ca.serial_number]] * 2
    leaf = x509.load_pem_x509_certificate(Path(s.cert_file).read_bytes())
    leaf.verify_directly_issued_by(ca)
    assert san_names(leaf) == [
        "workload-tagger",
        "workload-tagger.workload-tagger",
        "workload-tagger.workload-tagger.svc",
        "workload-tagger.workload-tagger.svc.cluster.local",
    ]
    assert leaf.not_valid_after_utc - NOW == dt.timedelta(days=365)
    assert oct(Path(s.key_file).stat().st_mode & 0o777) == "0o600"
    assert trusted_by_apiserver(kube, s.cert_file)
    assert (
        "PATCH",
        f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{MWC}",
        "application/strategic-merge-patch+json",
    ) in [(r.method, r.path, r.content_type) for r in kube.requests]


def test_second_call_is_a_no_op(kube: FakeKube, server: FakeKubeServer, tmp_path: Path) -> None:
    s = settings(tmp_path)
    first = ensure_serving_cert(server.api_client(), s, now=NOW)
    writes = methods(kube, "PATCH") + methods(kube, "PUT") + methods(kube, "POST")
    again = ensure_serving_cert(server.api_client(), s, now=NOW + dt.timedelta(days=30))
    assert again.leaf_reused and not again.patched
    assert again.leaf.cert.serial_number == first.leaf.cert.serial_number
    assert methods(kube, "PATCH") + methods(kube, "PUT") + methods(kube, "POST") == writes


def test_create_conflict_adopts_the_other_replicas_ca(
    kube: FakeKube, server: FakeKubeServer, tmp_path: Path
) -> None:
    theirs = make_ca(now=NOW)

    def other_replica_wins(method: str, path: str) -> None:
        if method == "POST" and (NS, SECRET) not in kube.secrets:
            kube.put_secret(
                NS,
                SECRET,
                {
                    "ca.crt": base64.b64encode(theirs.cert_pem).decode(),
                    "ca.key": base64.b64encode(theirs.key_pem).decode(),
                    "ca-bundle.crt": base64.b64encode(theirs.cert_pem).decode(),
                },
            )

    kube.before_write = other_replica_wins
    s = settings(tmp_path)
    bundle = ensure_serving_cert(server.api_client(), s, now=NOW)
    assert bundle.ca.cert.serial_number == theirs.cert.serial_number
    assert secret_ca(kube).serial_number == theirs.cert.serial_number
    assert methods(kube, "POST") == 1  # tried, got 409, re-read
    assert trusted_by_apiserver(kube, s.cert_file)


def test_replicas_in_parallel_converge_on_one_ca(
    kube: FakeKube, server: FakeKubeServer, tmp_path: Path
) -> None:
    results: dict[str, selfcerts.CertBundle] = {}
    start = threading.Barrier(3)

    def replica(name: str) -> None:
        start.wait()
        results[name] = ensure_serving_cert(server.api_client(), settings(tmp_path, name), now=NOW)

    threads = [threading.Thread(target=replica, args=(n,)) for n in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert {b.ca.cert.serial_number for b in results.values()} == {secret_ca(kube).serial_number}
    assert len({b.leaf.cert.serial_number for b in results.values()}) == 3  # a leaf per replica
    for name in "abc":
        assert trusted_by_apiserver(kube, settings(tmp_path, name).cert_file)


def _seed_old_ca(kube: FakeKube, issued: dt.datetime) -> KeyPair:
    old = make_ca(now=issued)
    kube.put_secret(
        NS,
        SECRET,
        {
            "ca.crt": base64.b64encode(old.cert_pem).decode(),
            "ca.key": base64.b64encode(old.key_pem).decode(),
            "ca-bundle.crt": base64.b64encode(old.cert_pem).decode(),
        },
    )
    return old


def test_ca_rotation_keeps_old_and_new_in_every_bundle(
    kube: FakeKube, server: FakeKubeServer, tmp_path: Path
) -> None:
    old = _seed_old_ca(kube, NOW - CA_VALIDITY + dt.timedelta(days=200))  # 200 days left: due (365)
    a, b = settings(tmp_path, "a"), settings(tmp_path, "b")
    # replica b started earlier and still serves a leaf signed by the old CA
    b_leaf = make_leaf(old, b.names(), now=NOW - dt.timedelta(days=100))
    Path(b.cert_file).parent.mkdir(parents=True)
    Path(b.cert_file).write_bytes(b_leaf.cert_pem)
    Path(b.key_file).write_bytes(b_leaf.key_pem)

    rotated = ensure_serving_cert(server.api_client(), a, now=NOW)
    new = secret_ca(kube)
    assert new == rotated.ca.cert and new.serial_number != old.cert.serial_number
    assert [[c.serial_number for c in bnd] for bnd in published(kube)] == [
        [new.serial_number, old.cert.serial_number]
    ] * 2
    assert trusted_by_apiserver(kube, a.cert_file)
    assert trusted_by_apiserver(kube, b.cert_file)  # b is not cut off by a's rotation

    # b's next check re-issues from the new CA and does not rotate again
    caught_up = ensure_serving_cert(server.api_client(), b, now=NOW + dt.timedelta(hours=1))
    assert caught_up.ca.cert == new and not caught_up.leaf_reused and not caught_up.patched
    caught_up.leaf.cert.verify_directly_issued_by(new)
    assert trusted_by_apiserver(kube, b.cert_file)


def test_leaf_from_rotated_out_ca_is_reissued_and_expired_ca_is_pruned(
    kube: FakeKube, server: FakeKubeServer, tmp_path: Path
) -> None:
    old = _seed_old_ca(kube, NOW - CA_VALIDITY + dt.timedelta(days=400))  # 400 days left: not due yet
    s = settings(tmp_path)
    first = ensure_serving_cert(server.api_client(), s, now=NOW)
    assert first.ca.cert == old.cert and trusted_by_apiserver(kube, s.cert_file)
    # 60 days later the CA is inside its renewal window: rotate, re-issue the leaf from the new CA
    later = NOW + dt.timedelta(days=60)
    second = ensure_serving_cert(server.api_client(), s, now=later)
    assert second.ca.cert != old.cert and not second.leaf_reused
    second.leaf.cert.verify_directly_issued_by(second.ca.cert)
    assert [c.serial_number for c in second.trust] == [second.ca.cert.serial_number, old.cert.serial_number]
    # once the old CA has expired it leaves the Secret and the caBundle
    gone = old.cert.not_valid_after_utc + dt.timedelta(days=1)
    third = ensure_serving_cert(server.api_client(), s, now=gone)
    assert [c.serial_number for c in third.trust] == [second.ca.cert.serial_number]
    assert [[c.serial_number for c in b] for b in published(kube)] == [[second.ca.cert.serial_number]] * 2
    assert third.patched


def test_update_conflict_rereads_and_does_not_rotate_twice(
    kube: FakeKube, server: FakeKubeServer, tmp_path: Path
) -> None:
    old = _seed_old_ca(kube, NOW - CA_VALIDITY + dt.timedelta(days=10))
    theirs = make_ca(now=NOW)

    def other_replica_rotates_first(method: str, path: str) -> None:
        if method == "PUT" and secret_ca(kube) == old.cert:
            kube.put_secret(
                NS,
                SECRET,
                {
                    "ca.crt": base64.b64encode(theirs.cert_pem).decode(),
                    "ca.key": base64.b64encode(theirs.key_pem).decode(),
                    "ca-bundle.crt": base64.b64encode(pem([theirs.cert, old.cert])).decode(),
                },
            )

    kube.before_write = other_replica_rotates_first
    s = settings(tmp_path)
    bundle = ensure_serving_cert(server.api_client(), s, now=NOW)
    assert bundle.ca.cert == theirs.cert
    assert [c.serial_number for c in bundle.trust] == [theirs.cert.serial_number, old.cert.serial_number]
    assert methods(kube, "PUT") == 1  # our stale write was refused; we did not write again
    assert trusted_by_apiserver(kube, s.cert_file)


def test_stale_webhook_patch_is_retried(kube: FakeKube, server: FakeKubeServer, tmp_path: Path) -> None:
    bumped: list[str] = []

    def someone_edits_the_config(method: str, path: str) -> None:
        if method == "PATCH" and not bumped:
            kube.webhook_configs[MWC]["metadata"]["resourceVersion"] = kube.next_rv()
            bumped.append(path)

    kube.before_write = someone_edits_the_config
    s = settings(tmp_path)
    ensure_serving_cert(server.api_client(), s, now=NOW)
    assert methods(kube, "PATCH") == 2
    assert trusted_by_apiserver(kube, s.cert_file)


def test_leaf_renewed_60_days_ahead(kube: FakeKube, server: FakeKubeServer, tmp_path: Path) -> None:
    s = settings(tmp_path)
    first = ensure_serving_cert(server.api_client(), s, now=NOW)
    expiry = first.leaf.cert.not_valid_after_utc
    kept = ensure_serving_cert(server.api_client(), s, now=expiry - dt.timedelta(days=61))
    assert kept.leaf_reused
    renewed = ensure_serving_cert(server.api_client(), s, now=expiry - dt.timedelta(days=59))
    assert not renewed.leaf_reused
    assert renewed.leaf.cert.serial_number != first.leaf.cert.serial_number
    assert x509.load_pem_x509_certificate(Path(s.cert_file).read_bytes()) == renewed.leaf.cert


def test_missing_webhook_configuration_is_a_clear_error(
    server: FakeKubeServer, kube: FakeKube, tmp_path: Path
) -> None:
    kube.webhook_configs.clear()
    with pytest.raises(SelfCertError, match="MutatingWebhookConfiguration workload-tagger not found"):
        ensure_serving_cert(server.api_client(), settings(tmp_path), now=NOW)


def test_renewal_loop_renews_and_stops(kube: FakeKube, server: FakeKubeServer, tmp_path: Path) -> None:
    s = settings(tmp_path)
    first = ensure_serving_cert(server.api_client(), s, now=NOW)
    stop = threading.Event()
    renewed: list[selfcerts.CertBundle] = []

    def on_renewed(bundle: selfcerts.CertBundle) -> None:
        renewed.append(bundle)
        stop.set()

    late = first.leaf.cert.not_valid_after_utc - dt.timedelta(days=10)
    t = threading.Thread(
        target=selfcerts.run_renewal,
        kwargs={
            "api_client": server.api_client(),
            "settings": s,
            "stop": stop,
            "interval_s": 0.05,
            "on_renewed": on_renewed,
            "clock": lambda: late,
        },
    )
    t.start()
    t.join(20)
    assert not t.is_alive()
    assert renewed and renewed[0].leaf.cert.serial_number != first.leaf.cert.serial_number


def test_renewal_due_boundaries() -> None:
    ca = make_ca(now=NOW)
    end = ca.cert.not_valid_after_utc
    assert not selfcerts.renewal_due(ca.cert, end - dt.timedelta(days=61))
    assert selfcerts.renewal_due(ca.cert, end - dt.timedelta(days=60))
    assert selfcerts.renewal_due(ca.cert, end + dt.timedelta(days=1))


def test_settings_from_config_and_background_thread(
    kube: FakeKube, server: FakeKubeServer, tmp_path: Path
) -> None:
    from webhook.config import Config

    config = Config(cert_file=str(tmp_path / "c" / "tls.crt"), key_file=str(tmp_path / "c" / "tls.key"))
    s = selfcerts.settings_from_config(config, NS)
    assert (s.secret_name, s.webhook_config_name, s.service) == (SECRET, MWC, "workload-tagger")
    done = threading.Event()
    thread, stop = selfcerts.start_renewal(
        server.api_client(), s, on_renewed=lambda _: done.set(), interval_s=0.05
    )
    assert done.wait(20)  # first pass: nothing on disk yet, so it issues
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    assert trusted_by_apiserver(kube, s.cert_file)
