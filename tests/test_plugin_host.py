"""No plugin can stall the webhook: plugins run in supervised host processes with hard time bounds.

Real processes throughout: `python -m webhook serve` over TLS with its plugin hosts, and the
offline doors' blocking host. Each server scenario loads one bad plugin (``a-bad``, first in name
order, so it runs before the good one on every Pod that reaches the plugins) beside ``z-good``
(it claims Pods owned by an AcmeDatabase). While the bad plugin does its worst, concurrent everyday
reviews and /healthz must answer promptly, no review may get an error status, the bad plugin must
be charged and quarantined, Pods that need plugins must then get z-good's answer, and SIGTERM must
stop the server and its hosts within the grace period.

Latency bounds here are liveness bounds (generous); `make bench` measures the real figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from bench.pods import review_body
from tests.support.hostile import GOOD, UID, check, claimed_review, evaluations, samples
from tests.support.serverproc import ServeProcess
from tests.support.servers import TLSFiles
from tests.support.waiting import eventually, eventually_async
from webhook.config import Config
from webhook.outcomes import PluginOutcome
from webhook.plugins.client import HostSettings
from webhook.plugins.hosted import BlockingPluginSet
from webhook.plugins.quarantine import QuarantinePolicy
from webhook.resolution.resolver import Resolver

PROMPT_S = 1.0  # everyday reviews and probes: far above their real latency, far below a stalled loop
GRACE_S = 4.0
DEFINE = "function GetWorkloadTypeAndName(metaJsonStr)\n{body}\nreturn '', ''\nend\n"
HANG_FIND = 'string.find(string.rep("a", 40), string.rep("a-", 30) .. "b")'
# The patterns of the issue, one per string function that runs Lua's backtracking matcher.
PATHOLOGICAL = {
    "find": HANG_FIND,
    "match": 'string.match(string.rep("a", 40), string.rep("a-", 30) .. "b")',
    "gmatch": 'for _ in string.gmatch(string.rep("a", 40), string.rep("a-", 30) .. "b") do end',
    "gsub": 'string.gsub(string.rep("a", 40), string.rep("a-", 30) .. "b", "")',
    "rep": 'local s = string.rep("", 2^31 - 1)',  # finite, but seconds inside one C call
}
NOMATCH = "function GetWorkloadTypeAndName(metaJsonStr) return '', '' end\n"


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


@dataclass
class Traffic:
    """What the background load saw."""

    everyday: list[float] = field(default_factory=list)
    health: list[float] = field(default_factory=list)
    claimed: list[tuple[float, bool]] = field(default_factory=list)  # (finished at, patched by z-good)
    failures: list[str] = field(default_factory=list)


async def _post(session: aiohttp.ClientSession, url: str, kind: str, body: bytes) -> tuple[str | None, bool]:
    uid = str(uuid.uuid4())
    async with session.post(url, data=body.replace(UID, uid.encode()), headers={"Content-Type": "application/json"},
                            timeout=aiohttp.ClientTimeout(total=10)) as resp:
        raw, status = await resp.read(), resp.status
    if kind == "claimed":
        if status != 200:
            return f"claimed: status {status}", False
        answer = json.loads(raw)["response"]
        if answer.get("allowed") is not True or answer.get("uid") != uid:
            return f"claimed: {answer}", False
        return None, check("claimed", status, raw, uid) is None
    return check(kind, status, raw, uid), False


async def load(server: ServeProcess, stop: asyncio.Event, traffic: Traffic, claimed: bool = True) -> None:
    """Everyday reviews on two connections, /healthz on a third, plugin-bound reviews on a fourth."""
    url = f"https://localhost:{server.port}"
    everyday = review_body("everyday", 4_000)
    bound = claimed_review()

    async def loop(kind: str) -> None:
        connector = aiohttp.TCPConnector(limit=1, ssl=server.ssl_context())
        async with aiohttp.ClientSession(connector=connector) as session:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    if kind == "health":
                        async with session.get(url + "/healthz", timeout=aiohttp.ClientTimeout(total=10)) as resp:
                            problem = None if resp.status == 200 else f"healthz {resp.status}"
                        traffic.health.append(time.perf_counter() - started)
                    else:
                        problem, patched = await _post(session, url + "/mutate", kind,
                                                       everyday if kind == "everyday" else bound)
                        if kind == "everyday":
                            traffic.everyday.append(time.perf_counter() - started)
                        else:
                            traffic.claimed.append((time.monotonic(), patched))
                except (aiohttp.ClientError, TimeoutError) as exc:
                    problem = f"{kind}: {type(exc).__name__}: {exc}"
                if problem:
                    traffic.failures.append(problem)
                if kind == "health":
                    await asyncio.sleep(0.05)

    kinds = ["everyday", "everyday", "health", *(["claimed"] if claimed else [])]
    await asyncio.gather(*(loop(k) for k in kinds))


def start(tls: TLSFiles, tmp: Path, plugins: dict[str, str], *args: str) -> tuple[ServeProcess, Path]:
    plugins_dir = tmp / "plugins"
    plugins_dir.mkdir(exist_ok=True)
    for name, source in plugins.items():
        (plugins_dir / f"{name}.lua").write_text(source)
    srv = ServeProcess(tls, tmp / "serve.log",
                       ["--shutdown-drain-s", "0", "--shutdown-grace-s", str(GRACE_S), "--log-level", "warning", *args],
                       plugin_args=["--plugin-source", "directory", "--plugins-dir", str(plugins_dir)])
    srv.start()
    return srv, plugins_dir


async def metrics_of(server: ServeProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = await server.request("GET", "/metrics")
    assert status == 200
    return samples(body)


def metric(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)




async def stop_in_time(server: ServeProcess) -> None:
    """SIGTERM while plugin work may be in flight: the server and its hosts are gone within the grace."""
    hosts = children(server.pid)
    started = time.monotonic()
    server.terminate()
    code = await asyncio.to_thread(server.wait, GRACE_S + 5)
    took = time.monotonic() - started
    assert code == 0, server.log.read_text()[-2000:]
    assert took < GRACE_S + 2, f"SIGTERM took {took:.1f} s"
    await asyncio.sleep(0.2)
    assert not [h for h in hosts if alive(h)], "plugin hosts outlived the server"


def check_traffic(traffic: Traffic) -> None:
    assert traffic.failures == [], traffic.failures[:5]
    assert len(traffic.everyday) > 20 and len(traffic.health) > 10, (len(traffic.everyday), len(traffic.health))
    assert max(traffic.everyday) < PROMPT_S, f"an everyday review took {max(traffic.everyday):.2f} s"
    assert max(traffic.health) < PROMPT_S, f"/healthz took {max(traffic.health):.2f} s"


@pytest.mark.parametrize("pattern", sorted(PATHOLOGICAL))
async def test_a_plugin_stuck_in_one_c_call_is_killed_charged_and_quarantined(
    tls_files: TLSFiles, tmp_path: Path, pattern: str
) -> None:
    server, _ = start(tls_files, tmp_path, {"a-bad": DEFINE.format(body=PATHOLOGICAL[pattern]), "z-good": GOOD},
                      "--plugin-quarantine-after", "3", "--plugin-quarantine-seconds", "600")
    try:
        await server.wait_ready()
        traffic, stop = Traffic(), asyncio.Event()
        running = asyncio.create_task(load(server, stop, traffic))

        async def quarantined() -> bool:
            return metric(await metrics_of(server), "workload_tagger_plugin_quarantined", plugin="a-bad") == 1

        await eventually_async(quarantined, what="a-bad quarantined")
        # The hosts its last calls killed are being replaced meanwhile (reviews then go on without
        # plugins: counted, not waited for); from then on z-good answers every Pod that needs it.
        await eventually_async(lambda: _hosts_up(server, 2), what="hosts replaced")
        since = time.monotonic()
        await asyncio.sleep(1.5)
        stop.set()
        await running
        check_traffic(traffic)
        after = [patched for finished, patched in traffic.claimed if finished > since]
        assert after and all(after), "Pods that need plugins must get z-good's answer once a-bad is quarantined"
        values = await metrics_of(server)
        assert evaluations(values, "a-bad", PluginOutcome.TIMEOUT) == 3
        assert evaluations(values, "a-bad", PluginOutcome.QUARANTINED) > 0
        assert evaluations(values, "z-good", PluginOutcome.MATCH) >= len(after)
        assert metric(values, "workload_tagger_plugin_host_exits_total", reason=PluginOutcome.TIMEOUT) == 3
        await stop_in_time(server)
    finally:
        server.kill()


async def _hosts_up(server: ServeProcess, count: int) -> bool:
    return metric(await metrics_of(server), "workload_tagger_plugin_hosts_up") == count


async def test_a_host_killed_from_outside_mid_call_is_replaced_and_the_review_goes_on(
    tls_files: TLSFiles, tmp_path: Path
) -> None:
    # The call limit is long, so the test's SIGKILL, not the watchdog, ends the call.
    server, _ = start(tls_files, tmp_path, {"a-bad": DEFINE.format(body=HANG_FIND), "z-good": GOOD},
                      "--plugin-call-timeout-ms", "20000", "--review-budget-ms", "20000")
    try:
        await server.wait_ready()
        traffic, stop = Traffic(), asyncio.Event()
        everyday = asyncio.create_task(load(server, stop, traffic, claimed=False))
        connector = aiohttp.TCPConnector(ssl=server.ssl_context())
        async with aiohttp.ClientSession(connector=connector) as session:
            review = asyncio.create_task(_post(session, f"https://localhost:{server.port}/mutate", "claimed",
                                               claimed_review()))
            await asyncio.sleep(1.0)  # a-bad is now spinning inside string.find in one host
            hosts = children(server.pid)
            busy = max(hosts, key=cpu_ticks)
            os.kill(busy, signal.SIGKILL)
            problem, patched = await asyncio.wait_for(review, 10)
        assert problem is None and patched, "the review must go on with z-good on another host"
        await asyncio.sleep(1.0)
        stop.set()
        await everyday
        check_traffic(traffic)
        values = await metrics_of(server)
        assert evaluations(values, "a-bad", PluginOutcome.CRASH) == 1
        assert metric(values, "workload_tagger_plugin_host_exits_total", reason=PluginOutcome.CRASH) == 1
        assert "exited unexpectedly" in server.log.read_text()
        await eventually_async(lambda: _hosts_up(server, 2), what="host replaced")
        await stop_in_time(server)
    finally:
        server.kill()


async def test_a_plugin_that_hangs_while_loading_is_rejected_by_name_and_the_rest_loads(
    tls_files: TLSFiles, tmp_path: Path
) -> None:
    server, plugins_dir = start(tls_files, tmp_path, {"a-bad": NOMATCH, "z-good": GOOD},
                                "--plugin-load-timeout-ms", "500")
    try:
        await server.wait_ready()
        first = await metrics_of(server)
        good_sha = next(dict(k[1])["sha256"] for k in first
                        if k[0] == "workload_tagger_plugin_info" and dict(k[1])["plugin"] == "a-bad")
        traffic, stop = Traffic(), asyncio.Event()
        running = asyncio.create_task(load(server, stop, traffic))
        # A new version whose top level never returns: rejected by name, the last good version stays.
        (plugins_dir / "a-bad.lua").write_text(HANG_FIND + "\n" + NOMATCH)

        async def rejected() -> bool:
            return metric(await metrics_of(server), "workload_tagger_plugin_load_errors_total", plugin="a-bad") == 1

        await eventually_async(rejected, what="a-bad's hanging version rejected")
        values = await metrics_of(server)
        assert metric(values, "workload_tagger_plugins_loaded") == 2
        assert metric(values, "workload_tagger_plugin_info", plugin="a-bad", sha256=good_sha) == 1
        assert "'a-bad' rejected: loading took longer than 0.5 s" in server.log.read_text()
        # Later changes are still applied.
        (plugins_dir / "b-new.lua").write_text(NOMATCH)

        async def applied() -> bool:
            return metric(await metrics_of(server), "workload_tagger_plugins_loaded") == 3

        await eventually_async(applied, what="a later change applied")
        stop.set()
        await running
        check_traffic(traffic)
        assert traffic.claimed and all(patched for _, patched in traffic.claimed)
        await stop_in_time(server)
    finally:
        server.kill()


async def test_start_up_is_ready_whatever_one_plugin_does_at_its_top_level(tls_files: TLSFiles, tmp_path: Path) -> None:
    """The loader host is killed from outside while it loads a plugin that hangs: reported, not waited for."""
    server, _ = start(tls_files, tmp_path, {"a-bad": HANG_FIND + "\n" + NOMATCH, "z-good": GOOD},
                      "--plugin-load-timeout-ms", "60000")
    try:
        async def loader_running() -> bool:
            return len(children(server.pid)) == 3  # two hosts in the pool, and the loader

        await eventually_async(loader_running, what="the loader host is loading a-bad")

        async def not_ready() -> bool:
            try:
                return (await server.request("GET", "/readyz"))[0] == 503  # serving; the source not synced yet
            except OSError:
                return False

        await eventually_async(not_ready, what="serving, not ready")
        loader = max(children(server.pid), key=lambda pid: int(Path(f"/proc/{pid}/stat").read_text()
                                                                .rsplit(")", 1)[1].split()[19]))

        async def spinning() -> bool:  # past its imports (a fraction of a second) and inside a-bad's top level
            return cpu_ticks(loader) > 150

        await eventually_async(spinning, what="the loader spins in a-bad's top level")
        os.kill(loader, signal.SIGKILL)
        await server.wait_ready(10)
        values = await metrics_of(server)
        assert metric(values, "workload_tagger_plugin_load_errors_total", plugin="a-bad") == 1
        assert metric(values, "workload_tagger_plugins_loaded") == 1
        assert "'a-bad' rejected: the plugin host died while loading it" in server.log.read_text()
        traffic, stop = Traffic(), asyncio.Event()
        running = asyncio.create_task(load(server, stop, traffic))
        await asyncio.sleep(1.5)
        stop.set()
        await running
        check_traffic(traffic)
        assert traffic.claimed and all(patched for _, patched in traffic.claimed)
        await stop_in_time(server)
    finally:
        server.kill()


# --- the offline doors: one blocking host ----------------------------------------------------------

SETTINGS = HostSettings(instructions=5_000_000, memory_bytes=8 << 20, call_timeout_s=0.2, load_timeout_s=1.0)
CLAIMED_META = {"name": "db-0", "ownerReferences": [{"apiVersion": "db.acme.io/v1", "kind": "AcmeDatabase",
                                                     "name": "ogtest", "uid": "u", "controller": True}]}


def test_offline_doors_carry_on_past_a_hanging_plugin() -> None:
    with BlockingPluginSet({"a-bad": DEFINE.format(body=HANG_FIND), "z-good": GOOD}, SETTINGS,
                           QuarantinePolicy(after=2, seconds=600)) as plugins:
        resolver = Resolver()
        found = [resolver.resolve(CLAIMED_META, "db", plugins) for _ in range(4)]
        assert all(f is not None and f.resolved_by == "plugin:z-good" for f in found)
        outcomes = [plugins.call("a-bad", "{}")[0].outcome, plugins.call("z-good", "{}")[0].outcome]
        assert outcomes == [PluginOutcome.TIMEOUT, PluginOutcome.NO_MATCH]


def test_inputs_above_the_size_limit_reach_no_plugin_and_charge_none() -> None:
    seen: list[str] = []

    class Observer:
        def evaluated(self, plugin: str, outcome: str, seconds: float) -> None:
            seen.append(outcome)

        def skipped(self, plugin: str) -> None:
            seen.append(PluginOutcome.QUARANTINED)

        def quarantine_changed(self, plugin: str, quarantined: bool) -> None:
            seen.append("quarantine")

        def oversized(self) -> None:
            seen.append("oversized")

        def load_failed(self, plugin: str, error: str) -> None:
            pass

        def set_loaded(self, plugins: object) -> None:
            pass

    loop = "function GetWorkloadTypeAndName(s) for k in string.gmatch(s, '.') do end return '', '' end"
    with BlockingPluginSet({"a-scan": loop, "z-good": GOOD}, SETTINGS, QuarantinePolicy(after=1),
                           observer=Observer(), max_input_bytes=4096) as plugins:  # type: ignore[arg-type]
        huge = dict(CLAIMED_META, labels={f"k{i}": "v" * 60 for i in range(100)})
        assert all(Resolver().resolve(huge, "db", plugins) is None for _ in range(5))
        assert seen == ["oversized"] * 5
        found = Resolver().resolve(CLAIMED_META, "db", plugins)
        assert found is not None and found.resolved_by == "plugin:z-good"


def test_plugin_test_reports_timeout_and_exits_non_zero(tmp_path: Path) -> None:
    import subprocess
    import sys

    plugin = tmp_path / "stuck.lua"
    plugin.write_text(DEFINE.format(body=HANG_FIND))
    pod = tmp_path / "pod.json"
    pod.write_text(json.dumps({"metadata": CLAIMED_META}))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "webhook", "plugin", "test", str(plugin), str(pod), str(pod)],
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent)
    assert done.returncode == 3, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["outcome"] for line in lines] == [PluginOutcome.TIMEOUT, PluginOutcome.TIMEOUT]
    assert "wall-clock limit" in lines[0]["error"]
    assert time.monotonic() - started < 30
    assert Config().plugin_call_timeout_ms < Config().review_budget_ms


class HostEvents:
    def __init__(self) -> None:
        self.exits: list[str] = []
        self.up: list[int] = []
        self.no_hosts = 0

    def host_exited(self, reason: str) -> None:
        self.exits.append(reason)

    def hosts_up(self, count: int) -> None:
        self.up.append(count)

    def no_host(self) -> None:
        self.no_hosts += 1


async def test_while_no_host_is_up_reviews_go_on_without_plugins_and_hosts_come_back() -> None:
    from webhook.plugins.hosted import HostedRegistry
    from webhook.plugins.pool import HostPool
    from webhook.plugins.registry import PluginLimits
    from webhook.resolution.model import PodMeta
    from webhook.resolution.resolver import plugin_input

    events = HostEvents()
    pool = HostPool(SETTINGS, 1, events)  # type: ignore[arg-type]
    registry = HostedRegistry(PluginLimits(), SETTINGS, pool)
    pool.warm = registry.warm
    await pool.start()
    try:
        await asyncio.to_thread(registry.apply, {"z-good": GOOD}, origin="test")
        text = plugin_input(PodMeta.of(CLAIMED_META), "db")
        accept = Resolver().accept_type
        found = await registry.current.first_answer(text, time.monotonic() + 5, accept)
        assert found is not None and found[1] == "StatefulSet"
        (host,) = [h for h in pool._ready]
        os.kill(host.proc.pid, signal.SIGKILL)  # a host that dies by itself: replaced after a pause
        await eventually(lambda: pool.up == 0, timeout=20.0, what="the death seen")
        started = time.monotonic()
        assert await registry.current.first_answer(text, time.monotonic() + 5, accept) is None
        assert time.monotonic() - started < 0.5, "a review must not wait out its budget for a host in backoff"
        assert events.exits == [PluginOutcome.CRASH] and events.no_hosts == 1
        await eventually(lambda: pool.up == 1, timeout=20.0, what="replaced")
        found = await registry.current.first_answer(text, time.monotonic() + 5, accept)
        assert found is not None and found[0].plugin == "z-good"
    finally:
        await pool.close()


def _async(check_: object) -> object:
    async def wrapped() -> bool:
        return bool(check_())  # type: ignore[operator]

    return wrapped


def test_audit_carries_on_past_a_hanging_plugin_with_the_same_report(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    root = Path(__file__).parent.parent
    plugins = tmp_path / "plugins"
    shutil.copytree(root / "examples" / "plugins", plugins)
    (plugins / "a-hang.lua").write_text(DEFINE.format(body=HANG_FIND))

    def audit(plugin_dir: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "webhook", "audit", "examples/cluster-pods.json", "--format", "json",
                               "--plugins", str(plugin_dir)], capture_output=True, text=True, timeout=120, cwd=root)

    hurt, clean = audit(plugins), audit(root / "examples" / "plugins")
    assert hurt.returncode == clean.returncode == 0, hurt.stderr
    assert json.loads(hurt.stdout) == json.loads(clean.stdout)
    assert "plugin a-hang quarantined" in hurt.stderr
