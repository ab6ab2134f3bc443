"""Hostile clients against a real `python -m webhook serve` process over real TLS on loopback.

Each case gets the status it should (4xx for the client's mistakes, never a 5xx but the 503 of a
spent body budget), connections that misbehave are closed within the stated times, memory stays
bounded (the server's RSS read from /proc), and through all of it an ordinary review is still
answered promptly. Limits are set small on the command line so that every case is quick; their
defaults and meaning are in webhook/transport.py and the README.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.factories import owner, pod, review
from tests.support.serverproc import ServeProcess, read_response, request_head
from tests.support.servers import TLSFiles

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
IDLE_TIMEOUT = 2.5
SLACK = 3.0  # generous: the machine is shared; these are liveness bounds, not timings


def ordinary_body(uid: str = "ordinary") -> bytes:
    p = pod(generate_name="web-7d4b9c8f6d-", labels={"pod-template-hash": "7d4b9c8f6d"},
            owners=[owner("apps/v1", "ReplicaSet", "web-7d4b9c8f6d")])
    return json.dumps(review(p, uid=uid)).encode()


def body_with(field_value: bytes, where: str) -> bytes:
    """An AdmissionReview whose ``where`` field holds the raw bytes ``field_value`` (between quotes)."""
    p = pod(name="NAME", labels={"LABELKEY": "LABELVALUE"}, owners=[owner("apps/v1", "StatefulSet", "db")])
    p["spec"]["containers"][0]["image"] = "SPECVALUE"
    raw = json.dumps(review(p, uid="UIDVALUE")).encode()
    return raw.replace(where.encode(), field_value)


async def ordinary_review_answered(srv: ServeProcess, within: float = 5.0) -> None:
    """The server still does its job: an everyday review on a new connection gets its patch, promptly."""
    status, answer = await asyncio.wait_for(srv.request("POST", "/mutate", ordinary_body()), within)
    assert status == 200 and "patch" in json.loads(answer)["response"], answer[:200]


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server still sends before closing the connection; fails if it stays open."""
    got = b""
    deadline = time.monotonic() + seconds
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), max(0.01, deadline - time.monotonic())):
            got += chunk
    except (ConnectionError, ssl.SSLError):
        pass
    except TimeoutError:
        raise AssertionError(f"connection still open after {seconds} s (got {got[:100]!r})") from None
    return got


async def refusals(srv: ServeProcess, reason: str) -> float:
    """workload_tagger_http_refused_total{reason=...} as the server exposes it on /metrics."""
    status, text = await srv.request("GET", "/metrics")
    assert status == 200
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == "workload_tagger_http_refused_total" and sample.labels["reason"] == reason:
                return float(sample.value)
    raise AssertionError(f"no refusal series for {reason}")


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@pytest.fixture(scope="module")
def server(tls_files: TLSFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One server for the protocol cases, with short timeouts."""
    srv = ServeProcess(tls_files, tmp_path_factory.mktemp("hostile") / "serve.log", [
        "--header-timeout-s", str(HEADER_TIMEOUT), "--body-timeout-s", str(BODY_TIMEOUT),
        "--idle-timeout-s", str(IDLE_TIMEOUT), "--max-body-bytes", str(1 << 20), "--body-memory-mb", "8",
    ])
    srv.start()
    try:
        asyncio.run(srv.wait_ready())
        yield srv
    finally:
        srv.kill()


@pytest.fixture
async def srv(server: ServeProcess) -> AsyncIterator[ServeProcess]:
    yield server
    await ordinary_review_answered(server)  # and after every case, the server still works
    assert server.proc is not None and server.proc.poll() is None


# --- bodies the decoder must refuse with a 400, never a 500 -----------------------------------


@pytest.mark.parametrize("where", ["UIDVALUE", "NAME", "LABELKEY", "LABELVALUE", "SPECVALUE"])
async def test_invalid_utf8_is_400_wherever_it_is(srv: ServeProcess, where: str) -> None:
    status, answer = await srv.request("POST", "/mutate", body_with(b"ab\xff\xfe", where))
    assert status == 400 and "not valid JSON" in json.loads(answer)["error"]


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity"])
async def test_non_json_numbers_are_400(srv: ServeProcess, number: bytes) -> None:
    status, _ = await srv.request("POST", "/mutate", body_with(number, '"LABELVALUE"'))
    assert status == 400


@pytest.mark.parametrize(("body", "status"), [
    (ordinary_body()[:-7], 400),  # truncated
    (b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":[]}', 400),
    (b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":7}}', 400),
    (b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","object":'
     + b"[" * 100_000 + b"]" * 100_000 + b"}}", 400),  # deep nesting: refused, never a crash
    (b"[" * 100_000, 400),
    (b"", 400),
])
async def test_malformed_bodies_get_their_status(srv: ServeProcess, body: bytes, status: int) -> None:
    got, _ = await srv.request("POST", "/mutate", body)
    assert got == status


async def test_gzip_header_on_a_body_that_is_not_gzip_is_415(srv: ServeProcess) -> None:
    before = await refusals(srv, "content-encoding")
    for body in (ordinary_body(), gzip.compress(ordinary_body())):
        reader, writer = await srv.open()
        head = request_head("POST", "/mutate", len(body), close=True).replace(
            b"\r\n\r\n", b"\r\nContent-Encoding: gzip\r\n\r\n")
        writer.write(head + body)
        status, answer = await asyncio.wait_for(read_response(reader), 5)
        writer.close()
        assert status == 415 and b"Content-Encoding" in answer
    assert await refusals(srv, "content-encoding") == before + 2


@pytest.mark.parametrize("declared", [50 << 20, 99_999_999_999])
async def test_declared_body_over_the_limit_is_413_before_it_is_sent(srv: ServeProcess, declared: int) -> None:
    before = await refusals(srv, "body-too-large")
    reader, writer = await srv.open()
    writer.write(request_head("POST", "/mutate", declared, close=True) + b'{"apiVersion":')
    status, _ = await asyncio.wait_for(read_response(reader), 5)
    writer.close()
    assert status == 413
    assert await refusals(srv, "body-too-large") == before + 1


async def test_chunked_bodies_are_read_and_limited(srv: ServeProcess) -> None:
    async def chunked(body: bytes) -> int:
        reader, writer = await srv.open()
        writer.write(b"POST /mutate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        for i in range(0, len(body), 60_000):
            part = body[i:i + 60_000]
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
        writer.write(b"0\r\n\r\n")
        try:
            status, _ = await asyncio.wait_for(read_response(reader), 5)
        finally:
            writer.close()
        return status

    assert await chunked(ordinary_body()) == 200
    huge = body_with(b"x" * (2 << 20), "SPECVALUE")
    assert await chunked(huge) == 413


async def test_broken_chunked_encoding_is_400(srv: ServeProcess) -> None:
    reader, writer = await srv.open()
    writer.write(b"POST /mutate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
    got = await closed_within(reader, 5)
    assert status_of(got) == 400


async def test_http_1_0_is_answered(srv: ServeProcess) -> None:
    body = ordinary_body()
    reader, writer = await srv.open()
    writer.write(request_head("POST", "/mutate", len(body)).replace(b"HTTP/1.1", b"HTTP/1.0") + body)
    got = await closed_within(reader, 5)  # HTTP/1.0 without keep-alive: answer, then close
    assert status_of(got) == 200 and b'"patch"' in got


@pytest.mark.parametrize("junk", [b"\x16\x03\x01\x00\x05hello", b"GET / HTTP/1.1\r\n\r\n", b"\x00" * 5000])
async def test_garbage_on_the_tls_port_is_dropped(srv: ServeProcess, junk: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(junk)
    await closed_within(reader, HEADER_TIMEOUT + SLACK)
    writer.close()


async def test_garbage_inside_tls_is_400_and_logged_once_without_traceback(srv: ServeProcess) -> None:
    before = await refusals(srv, "malformed-http")
    for _ in range(30):
        reader, writer = await srv.open()
        writer.write(b"POST /mutate HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n")
        got = await closed_within(reader, 5)
        writer.close()
        assert status_of(got) == 400
    await asyncio.sleep(0.2)
    log = srv.log.read_text()
    assert "Traceback" not in log
    malformed = [line for line in log.splitlines() if "malformed HTTP request" in line]
    assert 1 <= len(malformed) <= 2, malformed  # rate-limited: one line per period
    assert all(json.loads(line)["level"] == "warning" for line in malformed)
    assert await refusals(srv, "malformed-http") == before + 30  # every one counted, though not logged


# --- connections that do not send, or send too slowly -----------------------------------------


async def test_connection_that_never_sends_a_request_is_closed(srv: ServeProcess) -> None:
    reader, writer = await srv.open()
    started = time.monotonic()
    await closed_within(reader, HEADER_TIMEOUT + SLACK)
    assert time.monotonic() - started >= HEADER_TIMEOUT * 0.8
    writer.close()


async def test_tcp_connection_that_never_starts_tls_is_closed(srv: ServeProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    await closed_within(reader, HEADER_TIMEOUT + SLACK)
    writer.close()


async def test_headers_one_byte_at_a_time_are_cut_off(srv: ServeProcess) -> None:
    before = await refusals(srv, "head-timeout")
    reader, writer = await srv.open()
    head = request_head("POST", "/mutate", 10) + b"x" * 10
    started = time.monotonic()
    closed = False
    try:
        for byte in head:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.2)
            if reader.at_eof() or time.monotonic() - started > HEADER_TIMEOUT + SLACK:
                break
        closed = await closed_within(reader, SLACK) == b""
    except (ConnectionError, ssl.SSLError):
        closed = True
    writer.close()
    assert closed and time.monotonic() - started < HEADER_TIMEOUT + 2 * SLACK
    assert await refusals(srv, "head-timeout") >= before + 1


@pytest.mark.parametrize("how", ["slow", "short"])
async def test_body_that_does_not_arrive_in_time_is_408_and_closed(srv: ServeProcess, how: str) -> None:
    body = ordinary_body()
    before = await refusals(srv, "body-timeout")
    reader, writer = await srv.open()
    declared = len(body) if how == "slow" else 99_999
    writer.write(request_head("POST", "/mutate", declared) + body[:100])
    await writer.drain()
    started = time.monotonic()

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            for byte in body[100:] if how == "slow" else b"":
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.1)

    sending = asyncio.create_task(trickle())
    try:
        got = await closed_within(reader, BODY_TIMEOUT + SLACK)
    finally:
        sending.cancel()
        writer.close()
    assert status_of(got) == 408
    assert time.monotonic() - started < BODY_TIMEOUT + 2 * SLACK
    assert await refusals(srv, "body-timeout") == before + 1


async def test_client_leaving_mid_body_is_not_an_error(srv: ServeProcess) -> None:
    body = ordinary_body()
    for _ in range(5):
        _, writer = await srv.open()
        writer.write(request_head("POST", "/mutate", len(body)) + body[: len(body) // 2])
        await writer.drain()
        await asyncio.sleep(0.1)  # the handler is reading the body
        writer.transport.abort()  # gone, without a TLS close
    await asyncio.sleep(0.3)
    assert "Traceback" not in srv.log.read_text() and '"level":"error"' not in srv.log.read_text()


async def test_keep_alive_connection_is_reused_then_closed_when_idle(srv: ServeProcess) -> None:
    body = ordinary_body()
    reader, writer = await srv.open()
    for _ in range(2):  # a kept-alive connection serves the next review...
        writer.write(request_head("POST", "/mutate", len(body)) + body)
        status, _ = await asyncio.wait_for(read_response(reader), 5)
        assert status == 200
        await asyncio.sleep(HEADER_TIMEOUT + 0.5)  # ...also past the head timeout: idle is not a late head
    started = time.monotonic()
    await closed_within(reader, IDLE_TIMEOUT + SLACK)  # ...and is closed once idle for the idle timeout
    assert time.monotonic() - started >= IDLE_TIMEOUT - HEADER_TIMEOUT - 0.5 - 0.5
    writer.close()


# --- many connections, and memory -------------------------------------------------------------


async def open_many(srv: ServeProcess, count: int, tls: bool) -> list[asyncio.StreamWriter]:
    writers: list[asyncio.StreamWriter] = []

    async def one() -> None:
        if tls:
            _, writer = await srv.open()
        else:
            _, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writers.append(writer)

    for start in range(0, count, 100):
        results = await asyncio.gather(*(one() for _ in range(min(100, count - start))), return_exceptions=True)
        assert not [r for r in results if isinstance(r, BaseException) and not isinstance(r, OSError)], results
    return writers


def server_connections(pid: int, port: int) -> int:
    """Established TCP connections the server process holds on its port, from /proc."""
    inodes = {Path(f"/proc/{pid}/fd/{fd}").readlink().name for fd in [p.name for p in Path(f"/proc/{pid}/fd").iterdir()]}
    inodes = {i[len("socket:["):-1] for i in inodes if i.startswith("socket:[")}
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "01" and int(cols[1].split(":")[1], 16) == port and cols[9] in inodes:
                count += 1
    return count


async def test_thousands_of_idle_connections_are_capped_and_reviews_still_answered(
    tls_files: TLSFiles, tmp_path: Path
) -> None:
    cap = 300
    srv = ServeProcess(tls_files, tmp_path / "serve.log",
                       ["--max-connections", str(cap), "--header-timeout-s", "60"])
    srv.start()
    try:
        await srv.wait_ready()
        idle = await open_many(srv, 1200, tls=True)
        bare = await open_many(srv, 1000, tls=False)  # TCP only, not even a handshake
        await asyncio.sleep(0.5)
        assert server_connections(srv.pid, srv.port) <= cap + 1000 + 5  # TLS ones capped; bare ones still in handshake
        started = time.monotonic()
        await ordinary_review_answered(srv)
        assert time.monotonic() - started < 5
        for w in idle + bare:
            w.close()
        await ordinary_review_answered(srv)
        assert "Traceback" not in srv.log.read_text()
        assert await refusals(srv, "connection-cap") >= 1200 - cap
    finally:
        srv.kill()


def upload_stopped_short(port: int, ctx: ssl.SSLContext, size: int) -> ssl.SSLSocket:
    """A connection that sends a ``size``-byte review but one byte, then waits (blocking socket, in a thread)."""
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30), server_hostname="localhost")
    sock.sendall(request_head("POST", "/mutate", size))
    chunk = b"x" * 65536
    sent = 0
    try:
        while sent < size - 1:
            n = min(len(chunk), size - 1 - sent)
            sock.sendall(chunk[:n])
            sent += n
    except OSError:
        pass  # refused (503) and closed, or lingering-closed: the server let go
    return sock


async def test_uploads_stopped_one_byte_short_do_not_pin_memory(tls_files: TLSFiles, tmp_path: Path) -> None:
    """The issue's case: 40 uploads of 7 MB, one byte short. The body budget (default 48 MiB) holds."""
    srv = ServeProcess(tls_files, tmp_path / "serve.log", ["--body-timeout-s", "20"])
    srv.start()
    try:
        await srv.wait_ready()
        await ordinary_review_answered(srv)
        baseline = rss_kib(srv.pid)
        ctx = srv.ssl_context()
        uploads = [asyncio.to_thread(upload_stopped_short, srv.port, ctx, 7_000_000) for _ in range(40)]
        gathering = asyncio.gather(*uploads, return_exceptions=True)
        peak = baseline
        answered = 0
        deadline = time.monotonic() + 25
        while not gathering.done() and time.monotonic() < deadline:
            await ordinary_review_answered(srv, within=5)  # reviews keep being answered meanwhile
            answered += 1
            peak = max(peak, rss_kib(srv.pid))
            await asyncio.sleep(0.1)
        socks = await gathering
        for _ in range(10):  # the held bodies stay held a while: measure during that too
            peak = max(peak, rss_kib(srv.pid))
            await asyncio.sleep(0.1)
        hwm = rss_kib(srv.pid, "VmHWM")
        for s in socks:
            if isinstance(s, ssl.SSLSocket):
                s.close()
        assert answered >= 1
        growth_mib = (max(peak, hwm) - baseline) / 1024
        assert growth_mib < 48 + 64, f"RSS grew by {growth_mib:.0f} MiB from {baseline / 1024:.0f} MiB"
        assert max(peak, hwm) / 1024 < 200, f"peak RSS {max(peak, hwm) / 1024:.0f} MiB"
        await ordinary_review_answered(srv)  # after the uploads were dropped mid-body too
        assert "body memory budget spent" in srv.log.read_text()
        assert "Traceback" not in srv.log.read_text()
        assert await refusals(srv, "body-budget") >= 1
        await ordinary_review_answered(srv)
    finally:
        srv.kill()


def test_serve_on_a_port_in_use_is_one_line_and_a_failure(tls_files: TLSFiles) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--cert-file", str(tls_files.cert), "--key-file", str(tls_files.key), "--plugin-source", "none"],
            cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("{")]  # JSON lines are the log
    assert errors == [f"workload-tagger: error: cannot listen: error while attempting to bind on address "
                      f"('127.0.0.1', {port}): address already in use"], proc.stderr


def test_body_budget_keeps_a_quarter_for_small_bodies() -> None:
    from webhook.admission.transport import SMALL_BODY, BodyBudget

    budget = BodyBudget(16 * SMALL_BODY)
    big = 2 * SMALL_BODY
    taken = 0
    while budget.take(big, big):  # big uploads stop at three quarters
        taken += 1
    assert taken == 6 and budget.used == 12 * SMALL_BODY
    small = SMALL_BODY // 2
    assert sum(budget.take(small, small) for _ in range(10)) == 8  # the last quarter is for small bodies
    assert budget.used == budget.total and not budget.take(1, 1)
    budget.give(small)
    assert budget.take(small, small)


@pytest.mark.parametrize(("flags", "message"), [
    ({"body_memory_mb": 8}, "bodyMemoryMb"),  # three quarters of 8 MiB cannot hold one 7 MiB body
    ({"max_connections": 0}, "maxConnections"),
    ({"idle_timeout_s": 0}, "idleTimeoutSeconds"),
    ({"header_timeout_s": -1}, "headerTimeoutSeconds"),
    ({"body_timeout_s": 0}, "bodyTimeoutSeconds"),
])
def test_limit_settings_are_checked(flags: dict[str, object], message: str) -> None:
    from webhook import config

    with pytest.raises(config.ConfigError, match=message):
        config.load(flags=flags, environ={})
    assert config.load(flags={"body_memory_mb": 10}, environ={}).body_memory_mb == 10
