"""`serve --workers N`: N processes, each with its own listening socket on the one port (SO_REUSEPORT)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

from tests.support.factories import owner, pod, review
from tests.support.serverproc import ServeProcess
from tests.support.servers import TLSFiles
from webhook import metrics
from webhook.admission import workers


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on 127.0.0.1:port, from /proc/net/tcp."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        local, state, inode = cols[1], cols[3], cols[9]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            inodes.add(inode)
    return inodes


def socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


async def wait_listeners(port: int, n: int) -> set[str]:
    """Listening sockets on ``port`` once ``n`` exist (a worker forked may not have bound yet), else those seen."""
    for _ in range(100):
        found = listening_inodes(port)
        if len(found) >= n:
            return found
        await asyncio.sleep(0.1)
    return listening_inodes(port)


async def wait_children(pid: int, n: int) -> list[int]:
    for _ in range(100):
        kids = children(pid)
        if len(kids) == n:
            return kids
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {n} workers, found {children(pid)}")


async def test_workers_share_the_port_and_stop_together(tls_files: TLSFiles, tmp_path: Path) -> None:
    srv = ServeProcess(tls_files, tmp_path / "serve.log", ["--workers", "2", "--shutdown-drain-s", "0"])
    srv.start()
    try:
        await srv.wait_ready()
        kids = await wait_children(srv.pid, 2)
        listeners = await wait_listeners(srv.port, 2)
        assert len(listeners) == 2, "each worker binds its own socket with SO_REUSEPORT"
        assert all(socket_inodes(k) & listeners for k in kids)
        assert not socket_inodes(srv.pid) & listeners, "the supervisor itself does not serve"
        body = json.dumps(review(pod(name="db-0", owners=[owner("apps/v1", "StatefulSet", "db")]))).encode()
        answers = await asyncio.gather(*(srv.request("POST", "/mutate", body) for _ in range(20)))
        assert all(status == 200 and "patch" in json.loads(raw)["response"] for status, raw in answers)

        srv.terminate()
        assert await asyncio.to_thread(srv.wait, 15) == 0
        assert not any(Path(f"/proc/{k}").exists() and "zombie" not in Path(f"/proc/{k}/status").read_text()
                       for k in kids)
    finally:
        srv.kill()


async def test_a_worker_dying_on_its_own_stops_the_replica_non_zero(tls_files: TLSFiles, tmp_path: Path) -> None:
    srv = ServeProcess(tls_files, tmp_path / "serve.log", ["--workers", "2", "--shutdown-drain-s", "0"])
    srv.start()
    try:
        await srv.wait_ready()
        kids = await wait_children(srv.pid, 2)
        os.kill(kids[0], signal.SIGKILL)
        assert await asyncio.to_thread(srv.wait, 15) == 1
        assert "worker exited" in (tmp_path / "serve.log").read_text()
    finally:
        srv.kill()


def test_supervise_returns_zero_only_when_every_child_succeeds() -> None:
    assert workers.supervise(3, lambda: 0) == 0
    assert workers.supervise(2, lambda: 3) == 1


def test_supervise_forwards_sigterm_to_children() -> None:
    def child() -> int:
        received: list[int] = []
        signal.signal(signal.SIGTERM, lambda signum, _frame: received.append(signum))
        os.kill(os.getppid(), signal.SIGTERM)  # as if the kubelet signalled the supervisor
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            time.sleep(0.01)
        return 0 if received and set(received) == {signal.SIGTERM} else 7

    assert workers.supervise(2, child) == 0


async def test_metrics_sum_every_worker_whichever_answers_the_scrape(tls_files: TLSFiles, tmp_path: Path) -> None:
    srv = ServeProcess(tls_files, tmp_path / "serve.log", ["--workers", "2", "--shutdown-drain-s", "0"])
    srv.start()
    try:
        await srv.wait_ready()
        await wait_children(srv.pid, 2)
        body = json.dumps(review(pod(name="db-0", owners=[owner("apps/v1", "StatefulSet", "db")]))).encode()
        sent = 30
        answers = await asyncio.gather(*(srv.request("POST", "/mutate", body) for _ in range(sent)))
        assert all(status == 200 for status, _ in answers)
        # Each worker adds its counts to the shared files at least every FLUSH_SECONDS (the one
        # answering a scrape also right before it), so wait that long for the other worker's.
        await asyncio.sleep(metrics.FLUSH_SECONDS + 1.0)
        series = 'workload_tagger_admission_requests_total{operation="CREATE",outcome="mutated"}'
        seen = []
        for _ in range(8):  # each scrape is a new connection: the kernel hands it to either worker
            status, raw = await srv.request("GET", "/metrics")
            assert status == 200
            values = [line.split()[-1] for line in raw.decode().splitlines() if line.startswith(series + " ")]
            seen.append(float(values[0]))
        assert seen == [float(sent)] * 8
        srv.terminate()
        assert await asyncio.to_thread(srv.wait, 15) == 0
    finally:
        srv.kill()
