"""Soak: concurrent keep-alive load over TLS against `python -m webhook serve`, with disturbances.

Zero failed or dropped reviews, and memory flat (RSS after warm-up vs at the end). Bounded:
``SOAK_SECONDS`` (default 15) of load; set it higher to soak for real (``SOAK_SECONDS=600``).

Disturbances are plain coroutines ``async def d(ctx: SoakContext) -> None`` that run beside the
load until ``ctx.stop`` is set; each in :data:`DISTURBANCES` runs in the same soak and the same
assertions hold: every review answered 200, allowed, with its own uid and the expected patch.

* plugin reload: the plugins directory alternates between two valid sets (files rewritten, added
  and removed, each write atomic as a ConfigMap volume or an editor's rename would be); one
  plugin is in both sets, so the Pods it claims must be patched whatever set is loading;
* certificate rotation: a new serving leaf from the same CA (clients trust the CA) replaces
  tls.key then tls.crt, each atomically, as the self-managed renewal does; fresh connections
  must then see the new certificate, while the keep-alive load carries on;
* a readiness prober: /readyz stays 200 throughout.

The server gets its own certificate directory (the session's is shared with other tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import pytest
from cryptography import x509

from bench import deepflow_plugins
from bench.pods import review_body
from tests.support.serverproc import ServeProcess
from tests.support.servers import TLSFiles
from webhook.certs import generate as certs

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "15"))
WARMUP_SECONDS = 3.0
CLIENTS = 16
RECONNECT_EVERY = 40  # requests per keep-alive connection before it closes: new handshakes during rotations
RSS_GROWTH_LIMIT_KIB = 8 * 1024  # leaked plugin runtimes grew ~12 MiB in 15 s; TLS session cache ~2 MiB
RELOAD_EVERY_S = 1.0
ROTATE_EVERY_S = 2.0
EFFECT_TIMEOUT_S = 10.0  # a reload or rotation must be in force this long after the write

# Two valid plugin sets: different sizes (so /metrics tells which one is in force), one plugin in both.
SHARED = deepflow_plugins.CRDS[0]  # claims Elasticsearch-owned Pods in either set; no built-in rule does
SET_A = {c.name: deepflow_plugins.source(c) for c in deepflow_plugins.CRDS[:4]}
SET_B = {c.name: f"-- set B\n{deepflow_plugins.source(c)}"
         for c in (SHARED, *deepflow_plugins.CRDS[4:10])}
SERVER_UID = b"705ab4f5-6393-11e8-b7cc-42010a800002"  # the uid in bench.pods reviews, replaced per request


@dataclass
class SoakContext:
    server: ServeProcess
    tls: TLSFiles
    plugins_dir: Path
    stop: asyncio.Event
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


Disturbance = Callable[[SoakContext], Awaitable[None]]


async def readiness_prober(ctx: SoakContext) -> None:
    """What the kubelet does meanwhile: /readyz must stay 200 while nothing is wrong."""
    while not ctx.stop.is_set():
        status, _ = await ctx.server.request("GET", "/readyz")
        if status != 200:
            ctx.notes.append(f"readyz {status}")
        await asyncio.sleep(0.5)


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")  # hidden: the directory source skips it
    tmp.write_bytes(data)
    os.replace(tmp, path)


def install_plugins(plugins_dir: Path, plugins: dict[str, str]) -> None:
    """Make the directory hold exactly ``plugins``: write (atomically) then remove the others."""
    for name, source in plugins.items():
        atomic_write(plugins_dir / f"{name}.lua", source.encode())
    for file in plugins_dir.glob("*.lua"):
        if file.stem not in plugins:
            file.unlink()


async def metric_value(server: ServeProcess, name: str) -> float | None:
    status, body = await server.request("GET", "/metrics")
    if status != 200:
        return None
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{}"):
            return float(line.rsplit(" ", 1)[1])
    return None


async def effect_seen(check: Callable[[], Awaitable[bool]], stop: asyncio.Event) -> bool:
    """Poll ``check`` until true or EFFECT_TIMEOUT_S; once the soak is over, give up after 2 s (not counted)."""
    started = time.monotonic()
    while time.monotonic() - started < EFFECT_TIMEOUT_S:
        if await check():
            return True
        if stop.is_set() and time.monotonic() - started > 2:
            return False
        await asyncio.sleep(0.1)
    return False


async def plugin_reloader(ctx: SoakContext) -> None:
    """Alternate the plugin directory between SET_A and SET_B; each switch must take effect."""
    sets = [SET_B, SET_A]
    i = 0
    while not ctx.stop.is_set():
        wanted = sets[i % 2]
        await asyncio.to_thread(install_plugins, ctx.plugins_dir, wanted)

        async def loaded(wanted: dict[str, str] = wanted) -> bool:
            return await metric_value(ctx.server, "workload_tagger_plugins_loaded") == len(wanted)

        if await effect_seen(loaded, ctx.stop):
            ctx.counts["plugin reloads"] = ctx.counts.get("plugin reloads", 0) + 1
        elif not ctx.stop.is_set():
            ctx.notes.append(f"plugin set of {len(wanted)} not in force {EFFECT_TIMEOUT_S:g} s after the write")
        i += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.stop.wait(), RELOAD_EVERY_S)


def rotate_leaf(tls: TLSFiles) -> int:
    """A new leaf from the same CA into tls.key then tls.crt (each atomic); returns its serial."""
    ca = certs.load_keypair(tls.ca.read_bytes(), (tls.dir / "ca.key").read_bytes())
    leaf = certs.make_leaf(ca, [*certs.service_names("workload-tagger", "workload-tagger"), "localhost",
                                "127.0.0.1"])
    atomic_write(tls.key, leaf.key_pem)
    atomic_write(tls.cert, leaf.cert_pem)
    return int(leaf.cert.serial_number)


async def served_serial(server: ServeProcess) -> int:
    """Serial of the certificate a fresh connection is served (verified against the CA)."""
    _, writer = await server.open()
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return int(x509.load_der_x509_certificate(der).serial_number)
    finally:
        writer.close()


async def cert_rotator(ctx: SoakContext) -> None:
    """Rotate the serving certificate; new handshakes must present the new one."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.stop.wait(), ROTATE_EVERY_S)
        if ctx.stop.is_set():
            return
        serial = await asyncio.to_thread(rotate_leaf, ctx.tls)

        async def served(serial: int = serial) -> bool:
            return await served_serial(ctx.server) == serial

        if await effect_seen(served, ctx.stop):
            ctx.counts["certificate rotations"] = ctx.counts.get("certificate rotations", 0) + 1
        elif not ctx.stop.is_set():
            ctx.notes.append(f"rotated certificate not served {EFFECT_TIMEOUT_S:g} s after the write")


DISTURBANCES: list[Disturbance] = [readiness_prober, plugin_reloader, cert_rotator]


def plugin_args(plugins_dir: Path) -> list[str]:
    """The soaked server reads its plugins from ``plugins_dir`` (seeded with SET_A)."""
    install_plugins(plugins_dir, SET_A)
    return ["--plugin-source", "directory", "--plugins-dir", str(plugins_dir)]


def claimed_review(target_bytes: int) -> bytes:
    """A worst-case review whose owner is the shared plugin's CRD: only that plugin resolves it."""
    review = orjson.loads(review_body("worst", target_bytes))
    owner = review["request"]["object"]["metadata"]["ownerReferences"][0]
    owner["apiVersion"], owner["kind"] = f"{SHARED.group}/v1", SHARED.kind
    return orjson.dumps(review)


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
    """A keep-alive connection sending reviews back to back, reconnecting now and then; every answer is checked."""
    connector = aiohttp.TCPConnector(limit=1, ssl=ctx)
    async with aiohttp.ClientSession(connector=connector) as session:
        i = offset
        while not stop.is_set():
            body, expect_patch = bodies[i % len(bodies)]
            i += 1
            uid = str(uuid.uuid4())
            headers = {"Content-Type": "application/json"}
            if i % RECONNECT_EVERY == 0:
                headers["Connection"] = "close"
            try:
                async with session.post(url, data=body.replace(SERVER_UID, uid.encode()), headers=headers,
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
            if (answer.get("allowed") is not True or answer.get("uid") != uid
                    or ("patch" in answer) is not expect_patch):
                tally.failures.append(f"wrong answer (uid {uid}, patch expected: {expect_patch}): {answer}")
                continue
            tally.ok += 1


@pytest.mark.slow
async def test_soak_no_failed_reviews_and_flat_memory(tmp_path: Path) -> None:
    paths = certs.generate_files(tmp_path / "certs", "workload-tagger", "workload-tagger", ["localhost", "127.0.0.1"])
    tls_files = TLSFiles(tmp_path / "certs", paths["ca.crt"], paths["tls.crt"], paths["tls.key"])
    plugins_dir = tmp_path / "plugins"
    plugins_dir.mkdir()
    srv = ServeProcess(tls_files, tmp_path / "serve.log", ["--shutdown-drain-s", "0", "--log-level", "warning"],
                       plugin_args=plugin_args(plugins_dir))
    srv.start()
    try:
        await srv.wait_ready()
        bodies = [(review_body(kind, size), kind == "everyday")
                  for kind in ("everyday", "worst") for size in (4_000, 40_000)]
        bodies += [(claimed_review(size), True) for size in (4_000, 40_000)]
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

        print(f"soak: {tally.ok - ok_at_start} reviews in {SOAK_SECONDS:g} s, {ctx.counts}, "
              f"RSS {rss_start} -> {rss_end} KiB, samples {samples}")
        assert tally.failures == [], tally.failures[:5]
        assert ctx.notes == []
        expected = max(1, int(SOAK_SECONDS / 8))  # each disturbance must really have happened, more than once
        assert ctx.counts.get("plugin reloads", 0) >= 2 * expected, ctx.counts
        assert ctx.counts.get("certificate rotations", 0) >= expected, ctx.counts
        assert tally.ok - ok_at_start >= 50 * SOAK_SECONDS / 15, "too little load to conclude anything"
        assert rss_end - rss_start < RSS_GROWTH_LIMIT_KIB, f"RSS grew {rss_start} -> {rss_end} KiB (samples {samples})"
        srv.terminate()
        assert await asyncio.to_thread(srv.wait, 20) == 0
    finally:
        srv.kill()
