"""`python -m webhook serve` as a real subprocess on loopback, for shutdown, workers and soak tests."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.net import free_port
from tests.support.servers import TLSFiles


@dataclass
class ServeProcess:
    tls: TLSFiles
    log: Path
    extra: list[str] = field(default_factory=list)
    plugin_args: list[str] = field(default_factory=lambda: ["--plugin-source", "none"])
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--cert-file", str(self.tls.cert), "--key-file", str(self.tls.key), *self.plugin_args,
               "--log-level", "info", *self.extra]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.tls.ca))

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port, ssl=self.ssl_context(),
                                             server_hostname="localhost")

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """One request on a fresh connection, read to the end."""
        reader, writer = await self.open()
        try:
            writer.write(request_head(method, path, len(body), close=True) + body)
            await writer.drain()
            return await read_response(reader)
        finally:
            writer.close()

    async def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            try:
                status, _ = await self.request("GET", "/readyz")
                if status == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"server not ready:\n{self.log.read_text()}")

    def terminate(self) -> None:
        os.kill(self.pid, signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def request_head(method: str, path: str, length: int, close: bool = False) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n"
    if close:
        head += "Connection: close\r\n"
    return (head + "\r\n").encode()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError("connection closed before a response")
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode().partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return status, await reader.readexactly(length)
