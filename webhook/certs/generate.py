"""CA and serving certificates (cryptography), for dev certs and self-managed mode.

ECDSA P-256: small, fast handshakes, accepted by every apiserver. The CA outlives the leaf
so leaf renewals never need a caBundle change.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = dt.timedelta(days=3650)
LEAF_VALIDITY = dt.timedelta(days=365)
# Curves offered by `certs generate --key-type`; P-256 is the default everywhere.
CURVES: dict[str, ec.EllipticCurve] = {"ecdsa-p256": ec.SECP256R1(), "ecdsa-p384": ec.SECP384R1()}


@dataclass(frozen=True)
class KeyPair:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def service_names(service: str, namespace: str) -> list[str]:
    qualified = f"{service}.{namespace}"
    return [service, qualified, f"{qualified}.svc", f"{qualified}.svc.cluster.local"]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def load_keypair(cert_pem: bytes, key_pem: bytes) -> KeyPair:
    """Parse a PEM pair (as stored in a Secret); ValueError if it is not an EC pair that belongs together."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("key is not an ECDSA key")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise ValueError("key does not belong to the certificate")
    return KeyPair(cert, key)


def make_ca(
    common_name: str = "workload-tagger CA",
    validity: dt.timedelta = CA_VALIDITY,
    curve: ec.EllipticCurve | None = None,
    now: dt.datetime | None = None,
) -> KeyPair:
    key = ec.generate_private_key(curve or ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = now or _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert, key)


def _san_entry(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_leaf(
    ca: KeyPair,
    names: Sequence[str],
    validity: dt.timedelta = LEAF_VALIDITY,
    curve: ec.EllipticCurve | None = None,
    now: dt.datetime | None = None,
) -> KeyPair:
    if not names:
        raise ValueError("a serving certificate needs at least one name")
    key = ec.generate_private_key(curve or ec.SECP256R1())
    now = now or _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + validity, ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([_san_entry(n) for n in dict.fromkeys(names)]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return KeyPair(cert, key)


def _write(path: Path, data: bytes, private: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)  # atomic: a watching server never reads half a file


def generate_files(
    out: Path,
    service: str,
    namespace: str,
    extra_sans: Iterable[str] = (),
    leaf_validity: dt.timedelta = LEAF_VALIDITY,
    ca_validity: dt.timedelta = CA_VALIDITY,
    curve: ec.EllipticCurve | None = None,
) -> dict[str, Path]:
    """Write ca.crt, ca.key, tls.crt, tls.key into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    ca = make_ca(validity=ca_validity, curve=curve)
    names = [*service_names(service, namespace), *extra_sans]
    leaf = make_leaf(ca, names, validity=leaf_validity, curve=curve)
    paths = {name: out / name for name in ("ca.crt", "ca.key", "tls.crt", "tls.key")}
    _write(paths["ca.crt"], ca.cert_pem, private=False)
    _write(paths["ca.key"], ca.key_pem, private=True)
    _write(paths["tls.key"], leaf.key_pem, private=True)
    _write(paths["tls.crt"], leaf.cert_pem, private=False)
    return paths


def san_names(cert: x509.Certificate) -> list[str]:
    """DNS and IP SANs as text, in certificate order."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in ext.get_values_for_type(x509.DNSName)] + [
        str(v) for v in ext.get_values_for_type(x509.IPAddress)
    ]
