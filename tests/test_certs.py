"""`certs generate`: chain, SANs, key type, validity, file modes, and a real TLS handshake."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from webhook.certs import generate as certs
from webhook.commands import certs as certs_command
from webhook.config import Config
from webhook.errors import UserError

LEAD_ARGV = [
    "--service",
    "workload-tagger",
    "--namespace",
    "workload-tagger",
    "--out",
    "OUT",
    "--san",
    "localhost",
    "--san",
    "127.0.0.1",
    "--san",
    "::1",
]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    certs_command.add_arguments(parser)
    return parser.parse_args(argv)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_make_certs_command_writes_a_valid_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "certs"
    args = parse([str(out) if a == "OUT" else a for a in LEAD_ARGV])
    assert certs_command.run(args, Config()) == 0
    ca, leaf = load(out / "ca.crt"), load(out / "tls.crt")
    leaf.verify_directly_issued_by(ca)
    assert certs.san_names(leaf) == [
        "workload-tagger",
        "workload-tagger.workload-tagger",
        "workload-tagger.workload-tagger.svc",
        "workload-tagger.workload-tagger.svc.cluster.local",
        "localhost",
        "127.0.0.1",
        "::1",
    ]
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    assert leaf.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert (
        ExtendedKeyUsageOID.SERVER_AUTH
        in leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    life = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert dt.timedelta(days=365) <= life <= dt.timedelta(days=365, minutes=5)
    assert ca.not_valid_after_utc - leaf.not_valid_after_utc > dt.timedelta(days=3000)
    for private in ("ca.key", "tls.key"):
        assert (out / private).stat().st_mode & 0o777 == 0o600
    assert "valid until" in capsys.readouterr().out


def test_days_and_key_type(tmp_path: Path) -> None:
    certs_command.run(
        parse(["--out", str(tmp_path), "--days", "30", "--ca-days", "90", "--key-type", "ecdsa-p384"]),
        Config(),
    )
    leaf = load(tmp_path / "tls.crt")
    assert leaf.public_key().curve.name == "secp384r1"  # type: ignore[union-attr]
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days == 30
    assert (load(tmp_path / "ca.crt").not_valid_after_utc - leaf.not_valid_before_utc).days == 90


def test_bad_flags_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["--san", "not a name!"])
    assert "not a DNS name or IP address" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["--days", "0"])
    with pytest.raises(UserError, match="cannot exceed --ca-days"):
        certs_command.run(parse(["--out", str(tmp_path), "--days", "400", "--ca-days", "300"]), Config())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write certificates"):
        certs_command.run(parse(["--out", str(blocker / "sub")]), Config())


async def test_generated_pair_serves_tls_for_the_service_name(tmp_path: Path) -> None:
    certs_command.run(parse(["--out", str(tmp_path), "--san", "127.0.0.1"]), Config())
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hi")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    for host in ("workload-tagger.workload-tagger.svc", "127.0.0.1"):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname=host
        )
        assert await reader.read() == b"hi"
        writer.close()
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname="evil.example")
    server.close()
    await server.wait_closed()


def test_load_keypair_rejects_a_foreign_key() -> None:
    a, b = certs.make_ca(), certs.make_ca()
    assert certs.load_keypair(a.cert_pem, a.key_pem).cert == a.cert
    with pytest.raises(ValueError, match="does not belong"):
        certs.load_keypair(a.cert_pem, b.key_pem)
