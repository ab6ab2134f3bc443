"""SIGTERM on a real `python -m webhook serve`: readiness false first, drain, finish in-flight, exit in time.

A review is made "slow" honestly, without plugins: the client sends the headers and half of a
large AdmissionReview, and the rest only after SIGTERM. The handler is running (it awaits the
body) the whole time, exactly like a review whose bytes are still on the wire.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from tests.support.factories import owner, pod, review
from tests.support.serverproc import ServeProcess, read_response, request_head
from tests.support.servers import TLSFiles


def big_review() -> bytes:
    p = pod(name="db-0", owners=[owner("apps/v1", "StatefulSet", "db")], annotations={"blob": "x" * 200_000})
    return json.dumps(review(p)).encode()


async def test_sigterm_drains_then_finishes_in_flight_review(tls_files: TLSFiles, tmp_path: Path) -> None:
    srv = ServeProcess(tls_files, tmp_path / "serve.log", ["--shutdown-grace-s", "8", "--shutdown-drain-s", "1.5"])
    srv.start()
    try:
        await srv.wait_ready()
        body = big_review()
        reader, writer = await srv.open()
        writer.write(request_head("POST", "/mutate", len(body)) + body[: len(body) // 2])
        await writer.drain()
        await asyncio.sleep(0.3)  # the handler has started and waits for the rest of the body

        signalled = time.monotonic()
        srv.terminate()
        await asyncio.sleep(0.2)
        status, text = await srv.request("GET", "/readyz")
        assert status == 503 and b"shutting down" in text
        # during the drain delay a new review on a new connection is still answered
        small = json.dumps(review(pod(name="db-1", owners=[owner("apps/v1", "StatefulSet", "db")]))).encode()
        status, answer = await srv.request("POST", "/mutate", small)
        assert status == 200 and "patch" in json.loads(answer)["response"]

        await asyncio.sleep(max(0.0, 1.5 + 0.5 - (time.monotonic() - signalled)))
        try:  # after the drain the listening socket is closed
            await srv.request("GET", "/healthz")
            refused = False
        except OSError:
            refused = True
        assert refused, "new connections must be refused once draining is over"

        rest = body[len(body) // 2:]
        for i in range(0, len(rest), 32_768):  # the in-flight review's remaining bytes, slowly
            writer.write(rest[i:i + 32_768])
            await writer.drain()
            await asyncio.sleep(0.05)
        status, raw = await read_response(reader)
        writer.close()
        assert status == 200
        out = json.loads(raw)
        assert out["response"]["allowed"] is True and "patch" in out["response"]

        assert await asyncio.to_thread(srv.wait, 10) == 0
        assert time.monotonic() - signalled < 8 + 1
        log = (tmp_path / "serve.log").read_text()
        assert log.index("readiness false") < log.index("stopped accepting") < log.index('"stopped"')
    finally:
        srv.kill()


async def test_a_stalled_review_cannot_hold_shutdown_past_the_grace_period(tls_files: TLSFiles, tmp_path: Path) -> None:
    srv = ServeProcess(tls_files, tmp_path / "serve.log", ["--shutdown-grace-s", "2", "--shutdown-drain-s", "0.5"])
    srv.start()
    try:
        await srv.wait_ready()
        body = big_review()
        _, writer = await srv.open()
        writer.write(request_head("POST", "/mutate", len(body)) + body[:1000])  # and never the rest
        await writer.drain()
        await asyncio.sleep(0.2)
        signalled = time.monotonic()
        srv.terminate()
        code = await asyncio.to_thread(srv.wait, 10)
        elapsed = time.monotonic() - signalled
        writer.close()
        assert code == 0
        assert 0.5 <= elapsed < 2 + 1.5, elapsed
    finally:
        srv.kill()


async def test_idle_keep_alive_connections_do_not_delay_exit(tls_files: TLSFiles, tmp_path: Path) -> None:
    srv = ServeProcess(tls_files, tmp_path / "serve.log", ["--shutdown-grace-s", "10", "--shutdown-drain-s", "0"])
    srv.start()
    try:
        await srv.wait_ready()
        reader, writer = await srv.open()
        writer.write(request_head("GET", "/healthz", 0))
        assert (await read_response(reader))[0] == 200  # connection stays open, idle
        signalled = time.monotonic()
        srv.terminate()
        assert await asyncio.to_thread(srv.wait, 10) == 0
        assert time.monotonic() - signalled < 5
        writer.close()
    finally:
        srv.kill()
