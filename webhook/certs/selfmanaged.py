"""Self-managed serving certificates: one CA shared through a Secret, one leaf per replica.

Why this shape: the apiserver only calls the webhook over TLS it trusts (the caBundle of the
MutatingWebhookConfiguration). Without cert-manager the webhook is its own issuer, and with
several replicas starting at once they must agree on a single CA. So:

* The CA lives in a Secret (create-or-get; a 409 on create means another replica won, re-read;
  updates carry the resourceVersion, a 409 means re-read and decide again).
* The Secret also holds the *trust bundle*: the current CA plus, during a rotation, the previous
  one until it expires. The bundle is published into every webhook entry of the configuration
  *before* this replica serves a leaf signed by a new CA, so no replica ever serves a
  certificate the apiserver does not trust.
* The caBundle patch carries the configuration's resourceVersion, and the Secret is read after
  the configuration, so a replica holding a stale view of the Secret can never overwrite a
  newer bundle: its patch fails with 409 and it starts over.

Everything here is synchronous (the `kubernetes` client is) and runs before serving, then in a
background thread that re-checks every hour. Nothing here is on the admission path.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization

from webhook.certs.generate import (
    CA_VALIDITY,
    LEAF_VALIDITY,
    KeyPair,
    _write,
    load_keypair,
    make_ca,
    make_leaf,
    san_names,
)
from webhook.certs.generate import service_names as _service_names
from webhook.config import Config

log = logging.getLogger("workload_tagger.selfcerts")

LEAF_RENEW_BEFORE = dt.timedelta(days=60)
CA_RENEW_BEFORE = dt.timedelta(days=365)  # a CA is replaced a year ahead; its leaves are capped to its life
CA_CERT, CA_KEY, CA_BUNDLE = "ca.crt", "ca.key", "ca-bundle.crt"
MANAGED_BY = {"app.kubernetes.io/name": "workload-tagger", "app.kubernetes.io/component": "webhook-ca"}
STRATEGIC_MERGE = "application/strategic-merge-patch+json"


class SelfCertError(RuntimeError):
    """The certificates could not be brought to a safe state; the message says which object and why."""


@dataclass(frozen=True)
class SelfCertSettings:
    namespace: str
    cert_file: str
    key_file: str
    secret_name: str = "workload-tagger-ca"
    webhook_config_name: str = "workload-tagger"
    service: str = "workload-tagger"
    extra_sans: tuple[str, ...] = ()
    attempts: int = 8
    request_timeout_s: float = 10.0

    def names(self) -> list[str]:
        return [*_service_names(self.service, self.namespace), *self.extra_sans]


@dataclass(frozen=True)
class CertBundle:
    """What this replica serves and what the apiserver trusts."""

    ca: KeyPair
    trust: tuple[x509.Certificate, ...]
    leaf: KeyPair
    leaf_reused: bool = False
    patched: bool = False

    @property
    def trust_pem(self) -> bytes:
        return pem(self.trust)


@dataclass
class _CAState:
    ca: KeyPair
    trust: list[x509.Certificate] = field(default_factory=list)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def renewal_due(cert: x509.Certificate, now: dt.datetime, before: dt.timedelta = LEAF_RENEW_BEFORE) -> bool:
    """True once ``cert`` is within ``before`` of expiry (or past it)."""
    return cert.not_valid_after_utc - before <= now


def pem(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def parse_pem_list(data: bytes) -> list[x509.Certificate]:
    """Certificates in a PEM bundle; an empty or unreadable bundle is an empty list (caller decides)."""
    if not data.strip():
        return []
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        return []


def _fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


def merge_trust(groups: Iterable[Iterable[x509.Certificate]], now: dt.datetime) -> list[x509.Certificate]:
    """Union in order, without duplicates or expired CAs (an expired CA can vouch for nothing)."""
    seen: set[bytes] = set()
    out: list[x509.Certificate] = []
    for group in groups:
        for cert in group:
            fp = _fingerprint(cert)
            if fp in seen or cert.not_valid_after_utc <= now:
                continue
            seen.add(fp)
            out.append(cert)
    return out


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: Any) -> bytes:
    if not isinstance(value, str):
        return b""
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return b""


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def _secret_data(state: _CAState) -> dict[str, str]:
    return {
        CA_CERT: _b64(state.ca.cert_pem),
        CA_KEY: _b64(state.ca.key_pem),
        CA_BUNDLE: _b64(pem(state.trust)),
    }


def _read_ca(data: dict[str, Any], now: dt.datetime) -> tuple[KeyPair | None, list[x509.Certificate]]:
    trust = parse_pem_list(_unb64(data.get(CA_BUNDLE)))
    try:
        ca = load_keypair(_unb64(data.get(CA_CERT)), _unb64(data.get(CA_KEY)))
    except ValueError:
        return None, merge_trust([trust], now)
    return ca, merge_trust([[ca.cert], trust], now)


def ensure_ca(core: Any, settings: SelfCertSettings, now: dt.datetime) -> _CAState:
    """Create-or-get the CA Secret, rotating the CA when due; return the agreed CA and trust bundle."""
    timeout = settings.request_timeout_s
    for _ in range(settings.attempts):
        try:
            secret = core.read_namespaced_secret(
                settings.secret_name, settings.namespace, _request_timeout=timeout
            )
        except Exception as exc:
            if _status(exc) != 404:
                raise
            ca = make_ca(now=now)
            state = _CAState(ca, [ca.cert])
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {
                    "name": settings.secret_name,
                    "namespace": settings.namespace,
                    "labels": MANAGED_BY,
                },
                "data": _secret_data(state),
            }
            try:
                core.create_namespaced_secret(settings.namespace, body, _request_timeout=timeout)
            except Exception as create_exc:
                if _status(create_exc) == 409:  # another replica created it first: use theirs
                    continue
                raise
            log.info(
                "created CA secret",
                extra={"secret": settings.secret_name, "ca_serial": ca.cert.serial_number},
            )
            return state
        data = dict(secret.data or {})
        current, trust = _read_ca(data, now)
        if current is not None and not renewal_due(current.cert, now, CA_RENEW_BEFORE):
            state = _CAState(current, trust)
            if data == {**data, **_secret_data(state)}:
                return state
            reason = "pruned trust bundle"
        else:
            new = make_ca(now=now)
            state = _CAState(new, merge_trust([[new.cert], trust], now))
            reason = "rotated CA" if current is not None else "replaced unreadable CA"
        secret.data = {**data, **_secret_data(state)}
        try:
            # replace carries metadata.resourceVersion: a concurrent writer makes this a 409
            core.replace_namespaced_secret(
                settings.secret_name, settings.namespace, secret, _request_timeout=timeout
            )
        except Exception as exc:
            if _status(exc) == 409:
                continue
            raise
        log.warning(reason, extra={"secret": settings.secret_name, "ca_serial": state.ca.cert.serial_number})
        return state
    raise SelfCertError(
        f"secret {settings.namespace}/{settings.secret_name}: "
        f"no agreement after {settings.attempts} conflicting writes"
    )


def _current_bundle(webhook: Any) -> bytes:
    client_config = webhook.get("clientConfig") if isinstance(webhook, dict) else None
    return _unb64(client_config.get("caBundle")) if isinstance(client_config, dict) else b""


def publish_trust(
    admission: Any, core: Any, settings: SelfCertSettings, now: dt.datetime
) -> tuple[_CAState, bool]:
    """Make every webhook entry trust exactly the Secret's bundle; return the CA state and whether we patched.

    Order matters: configuration first, Secret second, then a patch guarded by the
    configuration's resourceVersion. See the module docstring for why that is race-free.
    """
    timeout = settings.request_timeout_s
    name = settings.webhook_config_name
    for _ in range(settings.attempts):
        try:
            # raw JSON, not the typed model: we only touch caBundle and must not trip over the rest
            raw = admission.read_mutating_webhook_configuration(
                name, _request_timeout=timeout, _preload_content=False
            )
            config = json.loads(raw.data)
        except Exception as exc:
            if _status(exc) == 404:
                raise SelfCertError(
                    f"MutatingWebhookConfiguration {name} not found: apply the manifests first"
                ) from None
            raise
        webhooks = [w for w in config.get("webhooks") or [] if isinstance(w, dict) and w.get("name")]
        if not webhooks:
            raise SelfCertError(f"MutatingWebhookConfiguration {name} has no webhooks to patch")
        state = ensure_ca(core, settings, now)
        bundle = pem(state.trust)
        if all(_current_bundle(w) == bundle for w in webhooks):
            return state, False
        patch = {
            "metadata": {"resourceVersion": (config.get("metadata") or {}).get("resourceVersion")},
            "webhooks": [{"name": w["name"], "clientConfig": {"caBundle": _b64(bundle)}} for w in webhooks],
        }
        try:
            admission.patch_mutating_webhook_configuration(
                name, patch, _content_type=STRATEGIC_MERGE, _request_timeout=timeout, _preload_content=False
            )
        except Exception as exc:
            if _status(exc) == 409:
                continue
            raise
        log.info("published caBundle", extra={"webhook_config": name, "cas": len(state.trust)})
        return state, True
    raise SelfCertError(
        f"MutatingWebhookConfiguration {name}: no agreement after {settings.attempts} conflicts"
    )


def reusable_leaf(
    cert_file: str, key_file: str, ca: KeyPair, names: Sequence[str], now: dt.datetime
) -> KeyPair | None:
    """The leaf on disk if ours to keep: matching key, signed by the current CA, right names, not due."""
    try:
        leaf = load_keypair(Path(cert_file).read_bytes(), Path(key_file).read_bytes())
        leaf.cert.verify_directly_issued_by(ca.cert)
    except (OSError, ValueError, TypeError, InvalidSignature):
        return None
    if renewal_due(leaf.cert, now) or leaf.cert.not_valid_before_utc > now:
        return None
    if not set(names) <= set(san_names(leaf.cert)):
        return None
    return leaf


def ensure_serving_cert(
    api_client: Any, settings: SelfCertSettings, now: dt.datetime | None = None
) -> CertBundle:
    """Converge: CA Secret agreed, caBundle published, then a leaf for this replica on disk.

    Idempotent and cheap when nothing is due (two GETs), so the renewal loop just calls it again.
    """
    from kubernetes import client as k8s

    now = now or utcnow()
    core = k8s.CoreV1Api(api_client)
    admission = k8s.AdmissionregistrationV1Api(api_client)
    state, patched = publish_trust(admission, core, settings, now)
    names = settings.names()
    leaf = reusable_leaf(settings.cert_file, settings.key_file, state.ca, names, now)
    reused = leaf is not None
    if leaf is None:
        leaf = make_leaf(state.ca, names, validity=LEAF_VALIDITY, now=now)
        for path in (settings.cert_file, settings.key_file):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # key first: a reloader that sees the new key with the old cert rejects the pair and waits
        _write(Path(settings.key_file), leaf.key_pem, private=True)
        _write(Path(settings.cert_file), leaf.cert_pem, private=False)
        log.info(
            "issued serving certificate",
            extra={"serial": leaf.cert.serial_number, "not_after": leaf.cert.not_valid_after_utc.isoformat()},
        )
    return CertBundle(state.ca, tuple(state.trust), leaf, leaf_reused=reused, patched=patched)


def run_renewal(
    api_client: Any,
    settings: SelfCertSettings,
    stop: threading.Event,
    interval_s: float = 3600.0,
    retry_s: float = 60.0,
    on_renewed: Callable[[CertBundle], None] | None = None,
    clock: Callable[[], dt.datetime] = utcnow,
) -> None:
    """Re-converge every ``interval_s`` until ``stop``; failures are logged and retried sooner.

    Run it in a daemon thread. The TLS reloader picks up a rewritten leaf from disk.
    """
    wait = interval_s
    while not stop.wait(wait):
        try:
            bundle = ensure_serving_cert(api_client, settings, now=clock())
        except Exception as exc:
            log.error(
                "certificate renewal failed; will retry", extra={"error": f"{type(exc).__name__}: {exc}"}
            )
            wait = retry_s
            continue
        wait = interval_s
        if on_renewed is not None and (not bundle.leaf_reused or bundle.patched):
            on_renewed(bundle)


def settings_from_config(config: Config, namespace: str) -> SelfCertSettings:
    return SelfCertSettings(
        namespace=namespace,
        cert_file=config.cert_file,
        key_file=config.key_file,
        secret_name=config.ca_secret_name,
        webhook_config_name=config.webhook_config_name,
        service=config.service_name,
    )


def start_renewal(
    api_client: Any,
    settings: SelfCertSettings,
    on_renewed: Callable[[CertBundle], None] | None = None,
    interval_s: float = 3600.0,
) -> tuple[threading.Thread, threading.Event]:
    """Start :func:`run_renewal` in a daemon thread; set the returned event to stop it."""
    stop = threading.Event()
    thread = threading.Thread(
        target=run_renewal,
        kwargs={
            "api_client": api_client,
            "settings": settings,
            "stop": stop,
            "interval_s": interval_s,
            "on_renewed": on_renewed,
        },
        name="cert-renewal",
        daemon=True,
    )
    thread.start()
    return thread, stop


__all__ = [
    "CA_RENEW_BEFORE",
    "CA_VALIDITY",
    "LEAF_RENEW_BEFORE",
    "CertBundle",
    "SelfCertError",
    "SelfCertSettings",
    "ensure_ca",
    "ensure_serving_cert",
    "publish_trust",
    "renewal_due",
    "run_renewal",
    "settings_from_config",
    "start_renewal",
]
