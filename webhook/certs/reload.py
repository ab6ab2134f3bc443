"""Reload the serving certificate when its files change, without a restart or a dropped connection.

Why it works: ``SSLContext.load_cert_chain`` on the context the server already listens with
changes what *new* handshakes present; established TLS sessions keep their own state. So a
rotation (cert-manager renewing a Secret, the self-managed renewal loop rewriting the leaf)
only needs us to notice and call it again.

How we notice: Kubernetes Secret volumes swap a ``..data`` symlink atomically, so the file
path never changes but its target does. We watch the *directories* (watchfiles) and, on any
event or every ``poll_s`` at the latest, compare the bytes we would load with those we did
load. A pair is validated (both parse, the key belongs to the certificate) before it touches
the live context, so a half-written rotation (new key, old cert) is ignored until it is whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from webhook.certs.generate import load_keypair

log = logging.getLogger("workload_tagger.tlsreload")


@dataclass(frozen=True)
class LoadedPair:
    cert: x509.Certificate
    digest: str


class CertReloader:
    """Keeps ``ctx`` serving what ``cert_file``/``key_file`` hold now."""

    def __init__(
        self,
        ctx: ssl.SSLContext,
        cert_file: str,
        key_file: str,
        on_loaded: Callable[[x509.Certificate], None] | None = None,
        poll_s: float = 10.0,
    ) -> None:
        self.ctx = ctx
        self.cert_file = cert_file
        self.key_file = key_file
        self.on_loaded = on_loaded
        self.poll_s = poll_s
        self.loaded: LoadedPair | None = None
        self.reloads = 0
        self.failures = 0
        self._last_failure = ""

    def _read(self) -> tuple[bytes, bytes]:
        return Path(self.cert_file).read_bytes(), Path(self.key_file).read_bytes()

    def check(self) -> bool:
        """Load the files into the context if they changed and form a valid pair; True if loaded now."""
        for _ in range(3):  # the files may change between validating and loading: go round again
            try:
                cert_pem, key_pem = self._read()
            except OSError as exc:
                self._failed(f"cannot read: {exc.strerror or exc}")
                return False
            digest = hashlib.sha256(cert_pem + b"\0" + key_pem).hexdigest()
            if self.loaded is not None and self.loaded.digest == digest:
                return False
            try:
                pair = load_keypair(cert_pem, key_pem)
            except ValueError as exc:
                self._failed(f"not a usable pair yet: {exc}")
                return False
            try:
                self.ctx.load_cert_chain(self.cert_file, self.key_file)
            except (ssl.SSLError, OSError) as exc:
                self._failed(f"context refused the pair: {exc}")
                continue
            try:
                unchanged = self._read() == (cert_pem, key_pem)
            except OSError:
                unchanged = False
            if not unchanged:
                continue
            first = self.loaded is None
            self._last_failure = ""
            self.loaded = LoadedPair(pair.cert, digest)
            self.reloads += 0 if first else 1
            log.info(
                "serving certificate loaded" if first else "serving certificate reloaded",
                extra={
                    "serial": pair.cert.serial_number,
                    "not_after": pair.cert.not_valid_after_utc.isoformat(),
                },
            )
            if self.on_loaded is not None:
                self.on_loaded(pair.cert)
            return True
        return False

    def _failed(self, why: str) -> None:
        self.failures += 1
        if why != self._last_failure:  # once per distinct problem, not once per poll
            log.warning("certificate reload skipped", extra={"cert_file": self.cert_file, "reason": why})
        self._last_failure = why

    def _dirs(self) -> list[str]:
        # the directory holding the names, not their resolved targets: a Secret volume's
        # ..data swap happens there, and the old timestamped target directory is deleted after it
        return sorted({str(Path(p).absolute().parent) for p in (self.cert_file, self.key_file)})

    async def run(self, stop: asyncio.Event) -> None:
        """Watch until ``stop`` is set. Start it as a task next to the server."""
        from watchfiles import awatch

        self.check()
        while not stop.is_set():
            dirs = [d for d in self._dirs() if Path(d).is_dir()]
            if not dirs:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_s)
                self.check()
                continue
            watch_stop = asyncio.Event()
            tick = asyncio.create_task(self._tick(stop, watch_stop))
            try:
                async for _ in awatch(*dirs, stop_event=watch_stop, debounce=200, step=50, recursive=False):
                    self.check()
            except (OSError, RuntimeError) as exc:  # the directory went away: poll until it is back
                log.warning("certificate watch failed; polling", extra={"error": str(exc)})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_s)
            finally:
                watch_stop.set()
                tick.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await tick
            self.check()

    async def _tick(self, stop: asyncio.Event, watch_stop: asyncio.Event) -> None:
        """Fallback poll (some volume types emit no events), and stop propagation into awatch."""
        while not watch_stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_s)
            if stop.is_set():
                watch_stop.set()
                return
            self.check()
