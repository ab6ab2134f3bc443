"""Per-evaluation cost of the plugin engine vs the naive way (as DeepFlow's server runs plugins).

Naive: for every evaluation, a new Lua 5.1 state, the plugin source run from scratch, and the
pure-Lua dkjson.lua loaded from disk by ``require``. Ours: compiled once per plugin in its own
sandboxed runtime, native decode shared per request. Worst case: ~1.5 KB of Pod metadata that
no plugin claims, so every plugin runs to the end. Also prints how long the default instruction
budget lasts, which is how PluginLimits.instructions was sized (~10 ms).

Run: python bench/plugins_bench.py   (make bench)
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import lupa.lua51 as lua51

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import deepflow_plugins
from bench.targets import Target
from webhook.outcomes import PluginOutcome
from webhook.plugins import dkjson
from webhook.plugins.registry import PluginLimits, PluginRegistry
from webhook.plugins.runtime import PluginRuntime
from webhook.resolution.resolver import plugin_input

DKJSON_DIR = "/usr/share/lua/5.1"




def metadata() -> str:
    """About 1.5 KB, shaped like a real Pod at admission; no plugin below claims it."""
    meta = {
        "name": "checkout-api-7d4b9c6f5-x2x9q",
        "generateName": "checkout-api-7d4b9c6f5-",
        "namespace": "shop-production",
        "uid": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
        "creationTimestamp": "2026-11-25T10:00:00Z",
        "labels": {
            "app": "checkout-api",
            "app.kubernetes.io/name": "checkout-api",
            "app.kubernetes.io/instance": "checkout-api-prod",
            "app.kubernetes.io/version": "4.12.0",
            "app.kubernetes.io/component": "backend",
            "app.kubernetes.io/part-of": "shop",
            "app.kubernetes.io/managed-by": "helm",
            "pod-template-hash": "7d4b9c6f5",
            "team": "payments",
            "tier": "api",
            "security.istio.io/tlsMode": "istio",
            "service.istio.io/canonical-name": "checkout-api",
            "service.istio.io/canonical-revision": "4.12.0",
            "topology.kubernetes.io/zone": "eu-west-1a",
        },
        "annotations": {
            "kubectl.kubernetes.io/restartedAt": "2026-11-20T08:15:00Z",
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "9090",
            "prometheus.io/path": "/metrics",
            "sidecar.istio.io/status": '{"initContainers":["istio-init"],"containers":["istio-proxy"],'
            '"volumes":["istio-envoy","istio-data","istio-podinfo","istio-token","istiod-ca-cert"]}',
            "checksum/config": "3f2a9c1e8b7d6f5a4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a2918f7e6d5c",
            "vault.hashicorp.com/agent-inject": "true",
            "vault.hashicorp.com/role": "checkout-api",
            "vault.hashicorp.com/agent-inject-secret-db": "database/creds/checkout-api",
            "cluster-autoscaler.kubernetes.io/safe-to-evict": "true",
        },
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "checkout-api-7d4b9c6f5",
                "uid": "1a2b3c4d-5e6f-7081-92a3-b4c5d6e7f809",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    return plugin_input(meta, "shop-production")


def plugins(count: int) -> dict[str, str]:
    """The server benchmark's DeepFlow-style plugins: each looks for its own CRD, none claims this Pod."""
    return {crd.name: deepflow_plugins.source(crd) for crd in deepflow_plugins.CRDS[:count]}


def per_call(fn: Callable[[], object], rounds: int, repeat: int = 7) -> float:
    """Seconds per call, the fastest of ``repeat`` runs, as timeit reports: on a shared machine
    noise only ever adds time, so the minimum is the steadiest estimate (one noisy run once put a
    median at 18 µs where quiet runs give 11). Ours and the naive way are measured alike."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(rounds):
            fn()
        samples.append((time.perf_counter() - started) / rounds)
    return min(samples)


def naive_call(source: str, meta: str) -> tuple[str, str]:
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.execute(f'package.path = "{DKJSON_DIR}/?.lua;" .. package.path')
    lua.execute(source)
    result: tuple[str, str] = lua.globals().GetWorkloadTypeAndName(meta)
    return result


def budget_ms(instructions: int) -> float:
    runtime = PluginRuntime(
        "spin",
        "function GetWorkloadTypeAndName(s) local i = 0 while true do i = i + 1 end end",
        instructions,
        8 << 20,
    )
    started = time.perf_counter()
    result = runtime.call("{}")
    assert result.outcome == PluginOutcome.BUDGET
    return (time.perf_counter() - started) * 1e3


TARGET_US_PER_EVAL = 15.0
TARGET_NAIVE_RATIO = 40.0
LINEAR_TOLERANCE = 1.3  # per-evaluation cost at 10 plugins within 30 % of that at 1 plugin


def main() -> list[Target]:
    meta = metadata()
    print(f"metadata: {len(meta.encode())} bytes; no plugin matches, so every plugin runs to the end\n")
    rows = []
    for count in (1, 5, 10):
        sources = plugins(count)
        registry = PluginRegistry(PluginLimits())
        registry.apply(sources, origin="bench")
        current = registry.current
        assert list(current.answers(meta)) == []
        ours = per_call(lambda current=current: list(current.answers(meta)), 2000 // count) / count
        naive = (
            per_call(lambda sources=sources: [naive_call(s, meta) for s in sources.values()], 40 // count)
            / count
        )
        rows.append((count, ours, naive))
    print(f"{'plugins':>7} | {'ours µs/eval':>12} | {'naive µs/eval':>13} | {'naive/ours':>10}")
    print(f"{'-' * 7}-+-{'-' * 12}-+-{'-' * 13}-+-{'-' * 10}")
    for count, ours, naive in rows:
        print(f"{count:>7} | {ours * 1e6:>12.1f} | {naive * 1e6:>13.1f} | {naive / ours:>9.0f}x")
    print("\ntargets: <= 15 µs per plugin evaluation, >= 40x cheaper than naive")
    worst_us = max(ours for _, ours, _ in rows) * 1e6
    worst_ratio = min(naive / ours for _, ours, naive in rows)
    linear = rows[-1][1] / rows[0][1]
    targets = [
        Target("worst case: µs per plugin evaluation (1.5 KB metadata, engine)",
               f"{worst_us:.1f} µs (worst of 1/5/10 plugins)", worst_us <= TARGET_US_PER_EVAL),
        Target("worst case: cost linear in plugin count (engine)",
               f"per-eval cost at 10 plugins = {linear:.2f} x at 1", linear <= LINEAR_TOLERANCE),
        Target(f"worst case: >= {TARGET_NAIVE_RATIO:g}x cheaper than DeepFlow's naive way",
               f"{worst_ratio:.0f}x (worst of 1/5/10 plugins)", worst_ratio >= TARGET_NAIVE_RATIO),
    ]

    slow = meta.replace('"labels":{', '"finalizers":[],"labels":{')
    registry = PluginRegistry(PluginLimits())
    registry.apply(plugins(1), origin="bench")
    current = registry.current
    cost = per_call(lambda: list(current.answers(slow)), 300)
    print(
        "\nfor comparison, metadata the fast path refuses (an empty array -> our Lua scanner): "
        f"{cost * 1e6:.1f} µs/eval"
    )

    # Every Pod's metadata is a new document, so the per-request parse (shared by all plugins) is paid
    # each time in production; the rows above reuse one document, whose parse is cached.
    variants = [meta.replace("x2x9q", f"{i:05d}") for i in range(2000)]
    it = iter(variants * 8)
    fresh = per_call(lambda: dkjson.parse(next(it)), 2000)
    print(f"once per request, not per plugin: parsing a new metadata document for the plugins: {fresh * 1e6:.1f} µs")

    default = PluginLimits().instructions
    spent = statistics.median(budget_ms(default) for _ in range(5))
    print(f"instruction budget: {default:,} instructions of a tight loop take {spent:.1f} ms here")
    return targets


if __name__ == "__main__":
    main()
