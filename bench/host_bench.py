"""Plugin hosts: what the process boundary costs the server, and what it buys.

1. Worst case (every plugin runs, DeepFlow-style plugins that return "",""): server CPU per review
   with 0, 1 and 10 plugins, for `serve` (plugins in hosts) and for the in-process engine
   (bench/inprocess.py: today's figure before hosts), measured in the same run, alternating, two
   rounds, median per server. Derived: server CPU per plugin (the 1 -> 10 slope) and per review
   reaching plugins (the rest of the 1-plugin figure over the 0-plugin one). The boundary's cost:
   the hosted server's CPU per review with 10 plugins minus the in-process server's, from which
   the plugin calls' own time (the Lua, which moved to the hosts; from the server's histogram) is
   set aside first; the same from the 1-plugin servers is printed too. Host CPU beside it.
2. Isolation: everyday Pods' p99 (wrk, keep-alive) on a server whose plugin-bound traffic (a paced
   background client) runs a legal plugin that spends nearly its whole instruction budget and one
   that hangs in a backtracking pattern on every call (quarantine off, so every such review kills
   a host), against the same everyday load and background traffic on a server without plugins.
3. A hanging plugin with the default quarantine: time from the first review that reaches it to
   that review's answer, and to the plugin being quarantined.
4. Resident memory of the server plus its hosts with 10 plugins, after the worst-case load.
5. The boundary again in a loop, without HTTP: one review after another through the resolver, in
   this process, in-process engine against hosts (steadier than 1 on a shared machine).

Environment: ``BENCH_SECONDS`` (per cell, default 4).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import deepflow_plugins
from bench.pods import review_bodies, review_body
from bench.server_bench import (
    WRK_SCRIPT,
    PluginDimension,
    ServerProcess,
    free_port,
    ours_cmd,
    pick_cores,
    run_wrk,
    running,
)
from bench.targets import Target
from webhook.certs import generate as certs
from webhook.config import Config

TARGET_BOUNDARY_US = 40.0
TARGET_PER_PLUGIN_US = 15.0
TARGET_ISOLATION = 1.5
TARGET_RSS_MIB = 150.0
ROUNDS = 2
PACE_S = 0.05  # the background client's pause between plugin-bound reviews, per thread
BACKGROUND_THREADS = 2

HANG = ('function GetWorkloadTypeAndName(m)\n'
        '  string.find(string.rep("a", 40), string.rep("a-", 30) .. "b")\n  return "", ""\nend\n')
# Legal: a loop that stops a little short of the default instruction budget.
SLOW = ('function GetWorkloadTypeAndName(m)\n  local x = 0\n'
        '  for i = 1, 2300000 do x = x + i end\n  return "", ""\nend\n')
GOOD = ('local dkjson = require("dkjson")\nfunction GetWorkloadTypeAndName(s)\n'
        '  local meta = dkjson.decode(s)\n'
        '  for _, o in ipairs(meta.ownerReferences or {}) do\n'
        '    if o.kind == "AcmeDatabase" then return "statefulset", o.name end\n  end\n'
        '  return "", ""\nend\n')


def claimed_review() -> bytes:
    review = json.loads(review_body("worst", 4_000))
    owner = review["request"]["object"]["metadata"]["ownerReferences"][0]
    owner["apiVersion"], owner["kind"], owner["name"] = "db.acme.io/v1", "AcmeDatabase", "ogtest"
    return json.dumps(review).encode()


def tree(pid: int) -> list[int]:
    """The process and its children (the plugin hosts)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kib(pid: int, key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def metric(port: int, name: str, labels: str = "") -> float:
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", context=ctx, timeout=5) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith(name + (labels or " ")) or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def plugin_seconds(port: int) -> float:
    """Plugin time so far, as the server's histogram has it (in-process: Lua run on the server's own CPU)."""
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", context=ctx, timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("workload_tagger_plugin_evaluation_duration_seconds_sum"))


def plugins_dir(root: Path, name: str, plugins: dict[str, str]) -> str:
    path = root / name
    path.mkdir()
    for plugin, source in plugins.items():
        (path / f"{plugin}.lua").write_text(source)
    return str(path)


def inprocess_cmd(port: int, cert: Path, key: Path, plugins: str) -> list[str]:
    return [sys.executable, "-m", "bench.inprocess", "--port", str(port), "--cert-file", str(cert),
            "--key-file", str(key), "--plugins-dir", plugins]


def worst_case(work: Path, cert: Path, key: Path, script: Path, seconds: float) -> tuple[list[str], list[Target]]:
    server_cpu, load_cpu = pick_cores()
    body = work / "worst.jsonl"
    body.write_bytes(b"\n".join(review_bodies("worst", 4_000, 64)) + b"\n")
    dirs = {n: str(deepflow_plugins.write(work / f"df{n}", n)) for n in (1, 10)}
    servers: dict[str, ServerProcess] = {}
    servers["none"] = ServerProcess("ours", [], free_port(), server_cpu)
    servers["none"].cmd = ours_cmd(servers["none"].port, cert, key, PluginDimension("0", 0), "auto")
    for n, path in dirs.items():
        for mode in ("in-process", "hosted"):
            srv = ServerProcess("ours", [], free_port(), server_cpu)
            srv.cmd = (inprocess_cmd(srv.port, cert, key, path) if mode == "in-process"
                       else ours_cmd(srv.port, cert, key, PluginDimension(str(n), n, path), "auto"))
            servers[f"{mode} {n}"] = srv
    server_us: dict[str, list[float]] = {k: [] for k in servers}
    host_us: dict[str, list[float]] = {k: [] for k in servers}
    plugin_us: dict[str, list[float]] = {k: [] for k in servers}
    rss = (0, 0)
    with running(list(servers.values())):
        for srv in servers.values():
            run_wrk(srv.port, script, body, 8, 1, load_cpu)
        for _ in range(ROUNDS):
            for name, srv in servers.items():
                pids = tree(srv.pid)
                evaluated = plugin_seconds(srv.port)
                before = [cpu_s(p) for p in pids]
                r = run_wrk(srv.port, script, body, 8, seconds, load_cpu)
                spent = [cpu_s(p) - b for p, b in zip(pids, before, strict=True)]
                requests = max(r["requests"], 1)
                plugin_us[name].append((plugin_seconds(srv.port) - evaluated) * 1e6 / requests)
                server_us[name].append(spent[0] * 1e6 / requests)
                host_us[name].append(sum(spent[1:]) * 1e6 / requests)
        hosted10 = servers["hosted 10"]
        pids = tree(hosted10.pid)
        rss = (sum(status_kib(p, "VmRSS") for p in pids), sum(status_kib(p, "VmHWM") for p in pids))
        rss_parts = [status_kib(p, "VmRSS") // 1024 for p in pids]
    med = {k: statistics.median(v) for k, v in server_us.items()}
    hmed = {k: statistics.median(v) for k, v in host_us.items()}
    pmed = {k: statistics.median(v) for k, v in plugin_us.items()}
    lines = ["worst case (every plugin runs), 4 KB reviews, wrk c=8, server CPU per review (median of "
             f"{ROUNDS} rounds, {seconds:g} s each); hosts' CPU, and the plugin calls' own time, beside it",
             f"{'server':14} {'server us/review':>16} {'hosts us/review':>16} {'plugin calls us':>16}"]
    lines += [f"{k:14} {med[k]:>16.1f} {hmed[k]:>16.1f} {pmed[k]:>16.1f}" for k in servers]
    out: list[Target] = []
    per: dict[str, float] = {}
    fixed: dict[str, float] = {}
    for mode in ("in-process", "hosted"):
        per[mode] = (med[f"{mode} 10"] - med[f"{mode} 1"]) / 9
        fixed[mode] = med[f"{mode} 1"] - med["none"] - per[mode]
        lines.append(f"{mode}: per plugin {per[mode]:.1f} us, per review reaching plugins {fixed[mode]:.1f} us "
                     f"(10 plugins: {med[f'{mode} 10'] - med['none']:.1f} us over no plugins)")
    # What the server pays beyond what it paid in-process once the Lua itself (the plugin calls'
    # own time, which now runs in the hosts) is set aside: 10 plugins, every one runs.
    boundary = med["hosted 10"] - (med["in-process 10"] - pmed["in-process 10"])
    lines.append(f"process boundary, 10 plugins: hosted {med['hosted 10']:.1f} us vs in-process "
                 f"{med['in-process 10']:.1f} us of which {pmed['in-process 10']:.1f} us in the plugin calls: "
                 f"{boundary:+.1f} us per review reaching plugins; from the 1-plugin servers: "
                 f"{fixed['hosted'] - fixed['in-process']:+.1f} us")
    out.append(Target(f"plugin hosts: boundary adds <= {TARGET_BOUNDARY_US:g} us server CPU per review reaching plugins",
                      f"{boundary:+.1f} us (10 plugins, Lua time set aside; total {med['hosted 10'] - med['in-process 10']:+.1f})",
                      boundary <= TARGET_BOUNDARY_US))
    out.append(Target(f"plugin hosts: server CPU per plugin <= {TARGET_PER_PLUGIN_US:g} us",
                      f"{per['hosted']:.1f} us (in-process {per['in-process']:.1f} us, Lua included)",
                      per["hosted"] <= TARGET_PER_PLUGIN_US))
    lines.append(f"RSS, server + {len(rss_parts) - 1} hosts with 10 plugins: {rss[0] / 1024:.1f} MiB now "
                 f"({' + '.join(str(p) for p in rss_parts)} MiB), peaks summed {rss[1] / 1024:.1f} MiB")
    out.append(Target(f"plugin hosts: RSS of server + hosts with 10 plugins <= {TARGET_RSS_MIB:g} MiB",
                      f"{rss[0] / 1024:.1f} MiB (peaks summed {rss[1] / 1024:.1f})", rss[1] / 1024 <= TARGET_RSS_MIB))
    return lines, out


def in_a_loop(work: Path) -> tuple[list[str], float]:
    """The same comparison without HTTP or a loaded server: one review after another through
    ``Resolver.resolve_slow`` in this process, the in-process engine against a pool of hosts;
    this process's CPU per review (the hosts' is theirs). Less noise, no batching either."""
    import asyncio

    from webhook.plugins.client import HostSettings
    from webhook.plugins.hosted import HostedRegistry
    from webhook.plugins.pool import HostPool
    from webhook.plugins.registry import PluginLimits, PluginRegistry
    from webhook.plugins.sources.snapshot import read_plugin_dir
    from webhook.resolution.model import PodMeta
    from webhook.resolution.resolver import Resolver

    meta = PodMeta.of(json.loads(review_body("worst", 4_000))["request"]["object"]["metadata"])
    config = Config()
    settings = HostSettings(config.plugin_instructions, config.plugin_memory_mb << 20,
                            config.plugin_call_timeout_ms / 1000, config.plugin_load_timeout_ms / 1000)
    reviews = 2000

    async def measure() -> dict[tuple[str, int], list[float]]:
        resolver = Resolver()
        sets: dict[tuple[str, int], Any] = {}
        pools = []
        for n in (1, 10):
            sources = read_plugin_dir(deepflow_plugins.write(work / f"loop{n}", n))
            local = PluginRegistry(PluginLimits())
            local.apply(sources, origin="bench")
            sets["in-process", n] = local.current
            pool = HostPool(settings, 2)
            hosted = HostedRegistry(PluginLimits(), settings, pool)
            pool.warm = hosted.warm
            await pool.start()
            pools.append(pool)
            await asyncio.to_thread(hosted.apply, sources, origin="bench")
            sets["hosted", n] = hosted.current
        found: dict[tuple[str, int], list[float]] = {k: [] for k in sets}
        try:
            for _ in range(3):
                for key, plugins in sets.items():
                    for _ in range(200):
                        await resolver.resolve_slow(meta, "default", plugins, None)
                    started = time.process_time()
                    for _ in range(reviews):
                        await resolver.resolve_slow(meta, "default", plugins, None)
                    found[key].append((time.process_time() - started) * 1e6 / reviews)
        finally:
            for pool in pools:
                await pool.close()
        return found

    from webhook.admission.server import event_loop_factory

    with asyncio.Runner(loop_factory=event_loop_factory("auto")) as runner:  # the server's loop (uvloop)
        found = runner.run(measure())
    med = {k: statistics.median(v) for k, v in found.items()}
    lines = [f"in a loop (no HTTP; {reviews} reviews one after another, median of 3), this process's CPU per review:"]
    fixed = {}
    for mode in ("in-process", "hosted"):
        per = (med[mode, 10] - med[mode, 1]) / 9
        fixed[mode] = med[mode, 1] - per
        lines.append(f"  {mode}: 1 plugin {med[mode, 1]:.1f} us, 10 plugins {med[mode, 10]:.1f} us: per plugin "
                     f"{per:.1f} us, per review reaching plugins {fixed[mode]:.1f} us")
    boundary = fixed["hosted"] - fixed["in-process"]
    lines.append(f"  process boundary: {boundary:+.1f} us per review reaching plugins")
    return lines, boundary


def background(srv: ServerProcess, body: bytes, stop: threading.Event, counts: dict[str, int]) -> None:
    while not stop.is_set():
        try:
            status, _ = srv.post(body)
            counts["ok" if status == 200 else "bad"] = counts.get("ok" if status == 200 else "bad", 0) + 1
        except OSError:
            counts["bad"] = counts.get("bad", 0) + 1
        stop.wait(PACE_S)


def isolation(work: Path, cert: Path, key: Path, script: Path, seconds: float) -> tuple[list[str], list[Target]]:
    body = work / "everyday.jsonl"
    body.write_bytes(b"\n".join(review_bodies("everyday", 4_000, 64)) + b"\n")
    busy = plugins_dir(work, "busy", {"a-hang": HANG, "b-slow": SLOW, "z-good": GOOD})
    plain = ServerProcess("ours", [], free_port(), None)
    plain.cmd = ours_cmd(plain.port, cert, key, PluginDimension("0", 0), "auto")
    loaded = ServerProcess("ours", [], free_port(), None)
    loaded.cmd = [*ours_cmd(loaded.port, cert, key, PluginDimension("3", 3, busy), "auto"),
                  "--plugin-quarantine-after", "0"]
    claimed = claimed_review()
    # The control row: the server without plugins measured while the other server's hosts are kept
    # busy. A rise there is the machine's (cores, the VM's CPU quota), not a review waiting for plugins.
    control = "without, hosts busy"
    p99: dict[str, list[float]] = {"without plugins": [], "plugins busy": [], control: []}
    counts: dict[str, dict[str, int]] = {k: {} for k in p99}
    with running([plain, loaded]):
        for srv in (plain, loaded):
            run_wrk(srv.port, script, body, 4, 1, None)
        for _ in range(ROUNDS):
            for name, srv, loader in (("without plugins", plain, plain), ("plugins busy", loaded, loaded),
                                      (control, plain, loaded)):
                stop = threading.Event()
                threads = [threading.Thread(target=background, args=(loader, claimed, stop, counts[name]))
                           for _ in range(BACKGROUND_THREADS)]
                for t in threads:
                    t.start()
                time.sleep(0.5)
                r = run_wrk(srv.port, script, body, 4, seconds, None)
                stop.set()
                for t in threads:
                    t.join()
                p99[name].append(r["p99_us"] / 1000)
        exits = metric(loaded.port, "workload_tagger_plugin_host_exits_total", '{reason="timeout"}')
    med = {k: statistics.median(v) for k, v in p99.items()}
    ratio = med["plugins busy"] / med["without plugins"]
    lines = [f"isolation: everyday p99 (wrk c=4, {seconds:g} s, median of {ROUNDS}) while {BACKGROUND_THREADS} "
             "clients send plugin-bound reviews (a plugin near its budget + one that hangs, quarantine off)",
             *(f"{k:16} p99 {med[k]:.2f} ms  (rounds {', '.join(f'{v:.2f}' for v in p99[k])}; background "
               f"{counts[k]})" for k in p99),
             f"hosts killed for overrunning meanwhile: {exits:.0f}",
             f"control: the plugin server's p99 is x{med['plugins busy'] / med[control]:.2f} that of a server without "
             "plugins beside the same busy hosts (what the busy CPU costs any process here is in the control row)"]
    return lines, [Target(f"plugin hosts: everyday p99 with busy/hanging plugins <= {TARGET_ISOLATION:g} x without",
                          f"x{ratio:.2f} ({med['plugins busy']:.2f} vs {med['without plugins']:.2f} ms)",
                          ratio <= TARGET_ISOLATION)]


def hanging(work: Path, cert: Path, key: Path) -> list[str]:
    path = plugins_dir(work, "hang", {"a-hang": HANG, "z-good": GOOD})
    srv = ServerProcess("ours", [], free_port(), None)
    srv.cmd = ours_cmd(srv.port, cert, key, PluginDimension("2", 2, path), "auto")
    claimed = claimed_review()
    latencies: list[float] = []
    quarantined_after = None
    with running([srv]):
        everyday = review_body("everyday", 4_000)
        srv.post(everyday)
        t = time.monotonic()
        srv.post(everyday)
        client = time.monotonic() - t  # what this client's fresh TLS connection and an everyday review take
        start = time.monotonic()
        while time.monotonic() - start < 30:
            t = time.monotonic()
            srv.post(claimed)
            latencies.append(time.monotonic() - t)
            if metric(srv.port, "workload_tagger_plugin_quarantined", '{plugin="a-hang"}') == 1:
                quarantined_after = time.monotonic() - start
                break
        t = time.monotonic()
        srv.post(claimed)
        after = time.monotonic() - t
    call = Config().plugin_call_timeout_ms
    return [f"hanging plugin (call limit {call} ms, quarantine after {Config().plugin_quarantine_after}): first review "
            f"answered in {latencies[0] * 1e3:.0f} ms (z-good's answer); quarantined "
            + (f"{quarantined_after:.2f} s after the first review ({len(latencies)} reviews, "
               f"p50 {statistics.median(latencies) * 1e3:.0f} ms)" if quarantined_after is not None else "NOT within 30 s")
            + f"; then a review takes {after * 1e3:.1f} ms (client-side times; an everyday review takes "
            f"{client * 1e3:.1f} ms with this client: a new TLS connection each)"]


def main() -> list[Target]:
    seconds = float(os.environ.get("BENCH_SECONDS", "4"))
    with tempfile.TemporaryDirectory(prefix="wt-host-bench-") as tmp:
        work = Path(tmp)
        paths = certs.generate_files(work, "workload-tagger", "workload-tagger", ["localhost", "127.0.0.1"])
        cert, key = paths["tls.crt"], paths["tls.key"]
        script = work / "post.lua"
        script.write_text(WRK_SCRIPT)
        lines, targets = worst_case(work, cert, key, script, seconds)
        more, _ = in_a_loop(work)
        lines += more
        more, found = isolation(work, cert, key, script, seconds)
        lines += more
        targets += found
        lines += hanging(work, cert, key)
    print("\n".join(lines), flush=True)
    for t in targets:
        print(f"{t.name}: {t.measured} [{'ok' if t.met else 'MISS'}]", flush=True)
    return targets


if __name__ == "__main__":
    main()
