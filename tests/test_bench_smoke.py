"""`make bench` in miniature: the server benchmark's real servers, wrk and table, with short cells.

Not a speed test (no number is compared with a target here): it keeps the benchmark from rotting
between the rare `make bench` runs — every server answers correctly under wrk, the ratios are
computed against the ceiling measured in the same cell, and the targets table is produced.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import deepflow_plugins, server_bench
from bench.targets import render

pytestmark = pytest.mark.needs("wrk")


@pytest.mark.slow
def test_server_benchmark_runs_every_server_and_reports_ratios(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_CONCURRENCY", "8")
    one = server_bench.PluginDimension("1 plugin", 1, str(deepflow_plugins.write(tmp_path / "p1", 1)))
    dims = [server_bench.NO_PLUGINS, one]
    results, peaks = server_bench.run(dims, 1, "auto")  # wrk takes whole seconds

    cells = {(m.server, m.plugins, m.traffic, m.size) for m in results}
    for size in server_bench.SIZES:
        assert ("ceiling", "-", "-", size) in cells
        assert ("floor", "-", "everyday", size) in cells
        for dim in dims:
            for traffic in server_bench.TRAFFIC:
                assert ("ours", dim.label, traffic, size) in cells
    assert all(m.requests > 0 and m.errors == 0 for m in results), results
    assert all(m.throughput_ratio and m.p99_ratio and m.cpu_ratio for m in results if m.server != "ceiling")
    assert set(peaks) == {"ceiling", "ours (0 plugins)", "ours (1 plugin)"} and all(v > 0 for v in peaks.values())

    table = server_bench.render(results, peaks, 1, "auto", dims)
    assert "floor (a webhook that only echoes the uid" in table
    shares = server_bench.of_floor(results, one)  # one share per everyday cell of the top plugin set
    assert shares is not None and shares.count(" c=8)") == len(server_bench.SIZES)
    assert "everyday, as ratios of the floor in the same cell" in table
    targets = server_bench.targets(results, peaks, dims)
    names = [t.name for t in targets]
    assert any("throughput >= 0.75 x ceiling" in n for n in names)
    assert "no failed requests during the benchmark" in render(targets)


def test_owner_bench_runs_in_miniature(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The owner-lookup bench end to end at 3,000 ReplicaSets, in-process part only (no wrk cells)."""
    from bench import owners_bench

    monkeypatch.setenv("BENCH_OWNERS_SERVER", "0")
    targets = owners_bench.main(3_000)
    counts = owners_bench.cluster_counts(3_000)
    out = capsys.readouterr().out
    assert f"{sum(counts.values()) + 2:,}" in out  # every object cached, plus the everyday Pod's owners
    names = [t.name for t in targets]
    assert any("RSS <=" in n for n in names) and any("lookup per review" in n for n in names)
    assert "review path, everyday 4 KB, lookup on" in out


@pytest.mark.slow
def test_host_benchmark_runs_every_section(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """bench/host_bench.py in miniature: in-process and hosted servers, isolation, the hanging plugin."""
    from bench import host_bench

    monkeypatch.setenv("BENCH_SECONDS", "1")
    targets = host_bench.main()
    out = capsys.readouterr().out
    names = [t.name for t in targets]
    assert len(names) == 4 and all(n.startswith("plugin hosts: ") for n in names), names
    for row in ("none", "in-process 1", "hosted 1", "in-process 10", "hosted 10"):
        assert f"\n{row} " in out, out
    assert "process boundary, 10 plugins" in out and "in a loop (no HTTP" in out
    assert "hosts killed for overrunning meanwhile" in out
    assert "hanging plugin (call limit" in out and "quarantined NOT" not in out
