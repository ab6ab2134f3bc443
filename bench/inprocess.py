"""The webhook as it was before plugin hosts: plugins evaluated inside the server's process.

Only for `make bench` (bench/host_bench.py), to put the process boundary's cost next to the
in-process figure in the same run. Same server, handler, resolver and plugin engine as `serve`;
the plugins of ``--plugins-dir`` are loaded once with the in-process registry, and the handler's
awaited step runs them in place on the event loop. Never use it to serve: nothing bounds a plugin
stuck inside one C call here.

Its plugin histogram records each call's CPU time (the thread's), not wall time, so the bench
can tell the server's CPU spent in the Lua itself from the rest on a machine shared with others.

Run: python -m bench.inprocess --port P --cert-file C --key-file K --plugins-dir DIR
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
import types

from webhook import metrics
from webhook.admission import server
from webhook.admission.handler import PodMutator
from webhook.app import build_resolver, plugin_limits
from webhook.config import Config
from webhook.plugins import registry as engine
from webhook.plugins.registry import PluginRegistry
from webhook.plugins.sources.snapshot import read_plugin_dir


async def serve(config: Config) -> None:
    engine.time = types.SimpleNamespace(perf_counter=time.thread_time, monotonic=time.monotonic)  # type: ignore[attr-defined]
    registry = PluginRegistry(plugin_limits(config), observer=metrics.PluginMetrics())
    registry.apply(read_plugin_dir(config.plugins_dir, strict=True), origin="bench")
    mutator = PodMutator(build_resolver(config), lambda: registry.current, prefix=config.prefix,
                         budget_seconds=config.review_budget_ms / 1000)
    readiness = server.Readiness()
    app = server.build_app(mutator, readiness, config.max_body_bytes)
    ctx = server.tls_context(config.cert_file, config.key_file)
    gc.freeze()
    stop = asyncio.Event()
    flush = asyncio.create_task(metrics.flush_periodically(stop))
    try:
        await server.serve_until_stopped(app, config.host, config.port, ctx, readiness, 5.0, stop=stop)
    finally:
        stop.set()
        await flush


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert-file", required=True)
    parser.add_argument("--key-file", required=True)
    parser.add_argument("--plugins-dir", required=True)
    parser.add_argument("--event-loop", default="auto")
    args = parser.parse_args()
    config = Config(host="127.0.0.1", port=args.port, cert_file=args.cert_file, key_file=args.key_file,
                    plugins_dir=args.plugins_dir, log_level="warning")
    with asyncio.Runner(loop_factory=server.event_loop_factory(args.event_loop)) as runner:
        runner.run(serve(config))


if __name__ == "__main__":
    main()
