"""Hot reload of the serving certificate under live TLS connections on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.net import free_port
from tests.support.waiting import eventually
from webhook.admission.handler import PodMutator
from webhook.admission.server import Readiness, build_app, serve_until_stopped, tls_context
from webhook.certs.generate import KeyPair, make_ca, make_leaf
from webhook.certs.reload import CertReloader
from webhook.plugins import EMPTY
from webhook.resolution.resolver import Resolver

NAMES = ["localhost", "127.0.0.1"]




def write_pair(directory: Path, leaf: KeyPair) -> None:
    """Write like a Secret volume: a fresh timestamped dir, then an atomic ..data symlink swap."""
    stamp = directory / f"..{os.urandom(4).hex()}"
    stamp.mkdir()
    (stamp / "tls.crt").write_bytes(leaf.cert_pem)
    (stamp / "tls.key").write_bytes(leaf.key_pem)
    data = directory / "..data"
    previous = directory / os.readlink(data) if data.is_symlink() else None
    tmp = directory / "..data_tmp"
    tmp.symlink_to(stamp.name)
    os.replace(tmp, data)
    if previous is not None:  # the kubelet removes the old generation after the swap
        shutil.rmtree(previous)
    for name in ("tls.crt", "tls.key"):
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")


@dataclass
class Live:
    port: int
    ca_file: Path
    reloader: CertReloader
    loaded: list[x509.Certificate]


class Conn:
    """One keep-alive HTTP/1.1 connection; requests are raw so the test sees exactly one socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, ca_file: Path) -> Conn:
        ctx = ssl.create_default_context(cafile=str(ca_file))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
        )
        return cls(reader, writer)

    def peer_serial(self) -> int:
        der = self.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number

    async def get(self, path: str) -> tuple[int, bytes]:
        self.writer.write(
            f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n".encode()
        )
        await self.writer.drain()
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        length = next(
            int(v) for k, _, v in (ln.partition(": ") for ln in lines[1:]) if k.lower() == "content-length"
        )
        body = await asyncio.wait_for(self.reader.readexactly(length), 5)
        return status, body

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await self.writer.wait_closed()


@pytest.fixture()
async def live(tmp_path: Path) -> AsyncIterator[tuple[Live, KeyPair, KeyPair]]:
    ca_old, ca_new = make_ca("old CA"), make_ca("new CA")
    ca_file = tmp_path / "trust.pem"
    ca_file.write_bytes(ca_old.cert_pem + ca_new.cert_pem)  # the client trusts both, like a rotated caBundle
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    write_pair(secret_dir, make_leaf(ca_old, NAMES))
    cert_file, key_file = str(secret_dir / "tls.crt"), str(secret_dir / "tls.key")
    ctx = tls_context(cert_file, key_file)
    loaded: list[x509.Certificate] = []
    reloader = CertReloader(ctx, cert_file, key_file, on_loaded=loaded.append, poll_s=30)
    stop = asyncio.Event()
    port = free_port()
    readiness = Readiness()
    app = build_app(PodMutator(Resolver(), lambda: EMPTY), readiness, 1 << 20)
    server = asyncio.create_task(serve_until_stopped(app, "127.0.0.1", port, ctx, readiness, 1.0, stop))
    watcher = asyncio.create_task(reloader.run(stop))
    for _ in range(100):
        with contextlib.suppress(OSError):
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            break
        await asyncio.sleep(0.05)
    yield Live(port, ca_file, reloader, loaded), ca_old, ca_new
    stop.set()
    await asyncio.wait_for(asyncio.gather(server, watcher), 10)




async def test_rotation_reaches_new_connections_and_keeps_old_ones(
    live: tuple[Live, KeyPair, KeyPair], tmp_path: Path
) -> None:
    srv, _, ca_new = live
    await eventually(lambda: len(srv.loaded) >= 1, timeout=10.0)
    first_serial = srv.loaded[0].serial_number
    old_conn = await Conn.open(srv.port, srv.ca_file)
    assert old_conn.peer_serial() == first_serial
    assert (await old_conn.get("/healthz")) == (200, b"ok\n")

    rotated = make_leaf(ca_new, NAMES)
    write_pair(tmp_path / "secret", rotated)
    await eventually(lambda: srv.loaded[-1].serial_number == rotated.cert.serial_number, timeout=10.0)

    new_conn = await Conn.open(srv.port, srv.ca_file)
    assert new_conn.peer_serial() == rotated.cert.serial_number
    assert (await new_conn.get("/healthz")) == (200, b"ok\n")
    # the connection opened before the rotation is still the same socket and still answers
    assert old_conn.peer_serial() == first_serial
    for _ in range(3):
        assert (await old_conn.get("/healthz")) == (200, b"ok\n")
    assert srv.reloader.reloads == 1
    await old_conn.close()
    await new_conn.close()


async def test_half_written_pair_is_ignored_until_whole(
    live: tuple[Live, KeyPair, KeyPair], tmp_path: Path
) -> None:
    srv, ca_old, _ = live
    await eventually(lambda: len(srv.loaded) >= 1, timeout=10.0)
    served = srv.loaded[-1].serial_number
    secret_dir = tmp_path / "secret"
    # plain files replacing the symlinks: new key first, the old cert still in place
    nxt = make_leaf(ca_old, NAMES)
    cert_text = (secret_dir / "tls.crt").read_bytes()
    (secret_dir / "tls.crt").unlink()
    (secret_dir / "tls.key").unlink()
    (secret_dir / "tls.crt").write_bytes(cert_text)
    (secret_dir / "tls.key").write_bytes(nxt.key_pem)
    await eventually(lambda: srv.reloader.failures >= 1, timeout=10.0)
    conn = await Conn.open(srv.port, srv.ca_file)
    assert conn.peer_serial() == served  # still the old, valid pair
    assert (await conn.get("/readyz"))[0] == 200
    await conn.close()
    (secret_dir / "tls.crt").write_bytes(nxt.cert_pem)
    await eventually(lambda: srv.loaded[-1].serial_number == nxt.cert.serial_number, timeout=10.0)
    conn = await Conn.open(srv.port, srv.ca_file)
    assert conn.peer_serial() == nxt.cert.serial_number
    await conn.close()


async def test_plain_files_rewritten_in_place_by_self_managed_mode(tmp_path: Path) -> None:
    """The self-managed loop rewrites tls.key then tls.crt with os.replace in a plain directory."""
    from webhook.certs.generate import _write

    ca = make_ca()
    d = tmp_path / "certs"
    d.mkdir()
    first = make_leaf(ca, NAMES)
    _write(d / "tls.key", first.key_pem, private=True)
    _write(d / "tls.crt", first.cert_pem, private=False)
    ctx = tls_context(str(d / "tls.crt"), str(d / "tls.key"))
    seen: list[int] = []
    reloader = CertReloader(
        ctx,
        str(d / "tls.crt"),
        str(d / "tls.key"),
        on_loaded=lambda c: seen.append(c.serial_number),
        poll_s=30,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(reloader.run(stop))
    await eventually(lambda: seen == [first.cert.serial_number], timeout=10.0)
    second = make_leaf(ca, NAMES)
    _write(d / "tls.key", second.key_pem, private=True)
    _write(d / "tls.crt", second.cert_pem, private=False)
    await eventually(lambda: seen[-1] == second.cert.serial_number, timeout=10.0)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert seen == [first.cert.serial_number, second.cert.serial_number]


async def test_directory_appearing_later_is_picked_up_by_polling(tmp_path: Path) -> None:
    """A volume mounted after start (no directory to watch yet): the poll fallback finds it."""
    from webhook.certs.generate import _write

    ca = make_ca()
    boot = make_leaf(ca, NAMES)
    boot_dir = tmp_path / "boot"
    boot_dir.mkdir()
    _write(boot_dir / "tls.crt", boot.cert_pem, private=False)
    _write(boot_dir / "tls.key", boot.key_pem, private=True)
    ctx = tls_context(str(boot_dir / "tls.crt"), str(boot_dir / "tls.key"))
    later = tmp_path / "later"
    seen: list[int] = []
    reloader = CertReloader(
        ctx,
        str(later / "tls.crt"),
        str(later / "tls.key"),
        on_loaded=lambda c: seen.append(c.serial_number),
        poll_s=0.1,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(reloader.run(stop))
    await asyncio.sleep(0.3)
    assert seen == [] and reloader.failures >= 1  # nothing to load yet: the context keeps the boot pair
    later.mkdir()
    leaf = make_leaf(ca, NAMES)
    _write(later / "tls.key", leaf.key_pem, private=True)
    _write(later / "tls.crt", leaf.cert_pem, private=False)
    await eventually(lambda: seen == [leaf.cert.serial_number], timeout=10.0)
    stop.set()
    await asyncio.wait_for(task, 5)
