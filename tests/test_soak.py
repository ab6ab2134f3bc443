"""Soak: concurrent keep-alive load over TLS against `python -m webhook serve`, with disturbances.

Zero failed or dropped reviews, and memory flat (RSS after warm-up vs at the end). Bounded:
``SOAK_SECONDS`` (default 15) of load; set it higher to soak for real (``SOAK_SECONDS=600``).

Disturbances are plain coroutines ``async def d(ctx: SoakContext) -> None`` that run beside the
load until ``ctx.stop`` is set; add one to :data:`DISTURBANCES` (plugin reload: rewrite files in
``ctx.plugins_dir``; certificate rotation: rewrite ``ctx.tls`` files) and the same assertions hold.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from bench.pods import review_body
from tests.conftest import TLSFiles
from tests.serverproc import ServeProcess

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "15"))
WARMUP_SECONDS = 3.0
CLIENTS = 16
RSS_GROWTH_LIMIT_KIB = 20 * 1024


@dataclass
class SoakContext:
    server: ServeProcess
    tls: TLSFiles
    plugins_dir: Path
    stop: asyncio.Event
    notes: list[str] = field(default_factory=list)


Disturbance = Callable[[SoakContext], Awaitable[None]]


async def readiness_prober(ctx: SoakContext) -> None:
    """What the kubelet does meanwhile: /readyz must stay 200 while nothing is wrong."""
    while not ctx.stop.is_set():
        status, _ = await ctx.server.request("GET", "/readyz")
        if status != 200:
            ctx.notes.append(f"readyz {status}")
        await asyncio.sleep(0.5)


DISTURBANCES: list[Disturbance] = [readiness_prober]


def plugin_args(plugins_dir: Path) -> list[str]:
    """How the soaked server gets its plugins. Once the directory source is merged:
    ``["--plugin-source", "directory", "--plugins-dir", str(plugins_dir)]`` (and seed plugins_dir first)."""
    return ["--plugin-source", "none"]


@dataclass
class Tally:
    ok: int = 0
    failures: list[str] = field(default_factory=list)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def client(url: str, ctx: ssl.SSLContext, bodies: list[tuple[bytes, bool]], stop: asyncio.Event,
                 tally: Tally, offset: int) -> None:
    """One keep-alive connection sending reviews back to back; every answer is checked."""
    connector = aiohttp.TCPConnector(limit=1, ssl=ctx)
    async with aiohttp.ClientSession(connector=connector) as session:
        i = offset
        while not stop.is_set():
            body, expect_patch = bodies[i % len(bodies)]
            i += 1
            try:
                async with session.post(url, data=body, headers={"Content-Type": "application/json"},
                                        timeout=aiohttp.ClientTimeout(total=10)) as resp:
                    raw = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                tally.failures.append(f"dropped: {type(exc).__name__}: {exc}")
                continue
            if status != 200:
                tally.failures.append(f"status {status}: {raw[:200]!r}")
                continue
            answer = json.loads(raw)["response"]
            if answer.get("allowed") is not True or ("patch" in answer) is not expect_patch:
                tally.failures.append(f"wrong answer: {answer}")
                continue
            tally.ok += 1


@pytest.mark.slow
async def test_soak_no_failed_reviews_and_flat_memory(tls_files: TLSFiles, tmp_path: Path) -> None:
    plugins_dir = tmp_path / "plugins"
    plugins_dir.mkdir()
    srv = ServeProcess(tls_files, tmp_path / "serve.log", ["--shutdown-drain-s", "0", "--log-level", "warning"],
                       plugin_args=plugin_args(plugins_dir))
    srv.start()
    try:
        await srv.wait_ready()
        bodies = [(review_body(kind, size), kind == "everyday")
                  for kind in ("everyday", "worst") for size in (4_000, 40_000)]
        stop = asyncio.Event()
        tally = Tally()
        ctx = SoakContext(srv, tls_files, plugins_dir, stop)
        url = f"https://localhost:{srv.port}/mutate"
        tasks = [asyncio.create_task(client(url, srv.ssl_context(), bodies, stop, tally, n)) for n in range(CLIENTS)]
        tasks += [asyncio.create_task(d(ctx)) for d in DISTURBANCES]

        await asyncio.sleep(WARMUP_SECONDS)
        rss_start = rss_kib(srv.pid)
        ok_at_start = tally.ok
        samples = [rss_start]
        deadline = time.monotonic() + SOAK_SECONDS
        while time.monotonic() < deadline:
            await asyncio.sleep(1)
            samples.append(rss_kib(srv.pid))
        rss_end = rss_kib(srv.pid)
        stop.set()
        await asyncio.gather(*tasks)

        assert tally.failures == [], tally.failures[:5]
        assert ctx.notes == []
        assert tally.ok - ok_at_start >= 50 * SOAK_SECONDS / 15, "too little load to conclude anything"
        assert rss_end - rss_start < RSS_GROWTH_LIMIT_KIB, f"RSS grew {rss_start} -> {rss_end} KiB (samples {samples})"
        srv.terminate()
        assert await asyncio.to_thread(srv.wait, 20) == 0
    finally:
        srv.kill()
