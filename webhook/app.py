"""Assembles the parts for each door: the server (`serve`) and the offline resolver (`resolve`).

This is the only module that knows how config, resolver, plugin registry, plugin source,
metrics and the HTTPS server fit together; the parts themselves know nothing of each other.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import logging
import os
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING

from webhook import logs
from webhook.admission.handler import PodMutator
from webhook.cluster.owner_cache import RESOURCES, OwnerIndex
from webhook.config import Config, own_namespace
from webhook.errors import UserError
from webhook.plugins import EMPTY, PluginSet
from webhook.resolution.resolver import Resolver, ResolverSettings
from webhook.resolution.rules import user_rules

if TYPE_CHECKING:
    from webhook.cluster.informer import OwnerCaches
    from webhook.plugins.client import HostSettings
    from webhook.plugins.registry import PluginLimits

log = logging.getLogger("workload_tagger.app")


def build_resolver(config: Config, owners: OwnerIndex | None = None) -> Resolver:
    return Resolver(
        ResolverSettings(
            plugins_first=config.plugins_first,
            allow_custom_types=config.allow_custom_types,
            extra_rules=user_rules(config.rules, config.allow_custom_types),
            owner_fallback=config.owner_fallback,
        ),
        owners,
    )


def start_owner_caches(config: Config) -> OwnerCaches | None:
    """The owner caches' list+watch threads when ownerLookup is in force; they sync in the background
    (reviews answered by the rules meanwhile, counted as fallbacks)."""
    if not config.effective_owner_lookup():
        return None
    from webhook import metrics
    from webhook.cluster import client as kubeclient
    from webhook.cluster.informer import OwnerCaches

    observer = metrics.OwnerMetrics([f"{r.plural}.{r.group}" for r in RESOURCES])
    caches = OwnerCaches(kubeclient.api_client(config), observer=observer)
    observer.count_lookups(caches.index.drain_counts)
    caches.start()
    log.info("owner lookup on: listing and watching owner kinds",
             extra={"resources": [f"{r.plural}.{r.group}" for r in RESOURCES]})
    return caches


def build_mutator(config: Config, plugins: PluginSet | None = None) -> PodMutator:
    current = plugins or EMPTY
    return PodMutator(
        build_resolver(config),
        lambda: current,
        prefix=config.prefix,
        budget_seconds=config.review_budget_ms / 1000,
        otel_annotations=config.otel_annotations,
    )


def plugin_set_for_cli(config: Config) -> PluginSet:
    """The plugins of ``--plugins DIR`` (or none), loaded once for an offline command, in a plugin
    host under the same wall-clock limits as `serve` (the host dies with the command)."""
    if not config.plugins_dir:
        return EMPTY
    from webhook.plugins.loading import plugin_set_from_dir

    return plugin_set_from_dir(config.plugins_dir, host_settings(config), plugin_limits(config).quarantine,
                               config.plugin_max_input_kib * 1024)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """`serve` takes only the shared settings (flags built from webhook.config)."""


def run_serve(args: argparse.Namespace, config: Config) -> int:
    logs.setup(config.log_level)
    if config.workers > 1:
        # Before anything imports prometheus_client: every worker then writes its values to the
        # shared directory, and a scrape, answered by whichever worker, sums them all.
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="workload-tagger-metrics-"))
    from webhook.admission import server

    if config.cert_mode == "files":
        try:
            server.check_tls_files(config.cert_file, config.key_file)
        except server.TLSFileError as exc:
            raise UserError(str(exc)) from None
    if config.workers > 1:
        from webhook.admission import workers

        def worker_exited(pid: int) -> None:
            from webhook import metrics

            metrics.worker_exited(pid)

        return workers.supervise(config.workers, lambda: serve_process(config, reuse_port=True), worker_exited)
    return serve_process(config)


def serve_process(config: Config, reuse_port: bool = False) -> int:
    """One server process: its own event loop (uvloop unless configured otherwise) until SIGTERM."""
    from webhook.admission import server

    try:
        with asyncio.Runner(loop_factory=server.event_loop_factory(config.event_loop)) as runner:
            runner.run(serve(config, reuse_port=reuse_port))
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        raise UserError(f"cannot listen: {exc.strerror or exc}") from None
    return 0


def plugin_limits(config: Config) -> PluginLimits:
    from webhook.plugins.quarantine import QuarantinePolicy
    from webhook.plugins.registry import PluginLimits

    return PluginLimits(
        config.plugin_instructions,
        config.plugin_memory_mb * 1024 * 1024,
        QuarantinePolicy(config.plugin_quarantine_after, config.plugin_quarantine_seconds),
    )


def host_settings(config: Config) -> HostSettings:
    from webhook.plugins.client import HostSettings

    return HostSettings(
        config.plugin_instructions,
        config.plugin_memory_mb * 1024 * 1024,
        config.plugin_call_timeout_ms / 1000,
        config.plugin_load_timeout_ms / 1000,
    )


async def self_managed_certs(config: Config, stop: asyncio.Event) -> Callable[[], None]:
    """Converge on the shared CA Secret and our caBundle before serving; retry while the API is away.

    Returns the function that stops the renewal thread. Readiness stays false meanwhile, and the
    startup probe bounds how long a replica may take.
    """
    from webhook.certs import selfmanaged as selfcerts
    from webhook.cluster import client as kubeclient

    api = kubeclient.api_client(config)
    settings = selfcerts.settings_from_config(config, own_namespace())
    delay = 1.0
    while True:
        try:
            await asyncio.to_thread(selfcerts.ensure_serving_cert, api, settings)
            break
        except Exception as exc:
            log.error("self-managed certificates not ready; retrying",
                      extra={"error": f"{type(exc).__name__}: {exc}", "retry_in_s": delay})
        try:
            await asyncio.wait_for(stop.wait(), delay)
            raise UserError("stopped before the serving certificate was ready")
        except TimeoutError:
            delay = min(delay * 2, 30.0)
    _, renewal_stop = selfcerts.start_renewal(api, settings)
    return renewal_stop.set


async def serve(config: Config, stop: asyncio.Event | None = None, reuse_port: bool = False) -> None:
    """Wire certificates, plugin registry and source, metrics and the server; run until SIGTERM or ``stop``."""
    from webhook import metrics
    from webhook.admission import server
    from webhook.admission.transport import Limits
    from webhook.certs.reload import CertReloader
    from webhook.plugins.hosted import HostedRegistry
    from webhook.plugins.pool import HostPool
    from webhook.plugins.sources.factory import build_source

    stop = stop or asyncio.Event()
    stop_renewal = await self_managed_certs(config, stop) if config.cert_mode == "self-managed" else None
    # The server never runs Lua: plugins are compiled and evaluated in supervised host processes.
    settings = host_settings(config)
    pool = HostPool(settings, config.plugin_hosts, observer=metrics.PluginHostMetrics())
    registry = HostedRegistry(plugin_limits(config), settings, pool, observer=metrics.PluginMetrics(),
                              max_input_bytes=config.plugin_max_input_kib * 1024)
    pool.warm = registry.warm
    source_metrics = metrics.SourceMetrics()
    source = build_source(config, registry, source_metrics)
    if source is not None:
        await pool.start()  # no source, no plugins: no hosts either
        source_metrics.expect(config.effective_plugin_source())
        source.start()
    readiness = server.Readiness(plugins_synced=source.synced if source is not None else lambda: True)
    owner_caches = start_owner_caches(config)
    mutator = PodMutator(
        build_resolver(config, owner_caches.index if owner_caches is not None else None),
        lambda: registry.current,
        prefix=config.prefix,
        budget_seconds=config.review_budget_ms / 1000,
        otel_annotations=config.otel_annotations,
        owner_wait_seconds=config.owner_wait_ms / 1000,
    )
    app = server.build_app(mutator, readiness, config.max_body_bytes, Limits.of(config))
    ctx = server.tls_context(config.cert_file, config.key_file)
    # Everything built so far lives as long as the process: keep it out of the cyclic GC's
    # full collections, which otherwise rescan it all on the request path.
    gc.freeze()
    reloader = CertReloader(ctx, config.cert_file, config.key_file, on_loaded=metrics.set_cert_expiry)
    reload_task = asyncio.create_task(reloader.run(stop))
    flush_task = asyncio.create_task(metrics.flush_periodically(stop))
    metrics_runner = (
        await metrics.start_metrics_server(config.host, config.metrics_port, reuse_port=reuse_port)
        if config.metrics_port
        else None
    )
    try:
        await server.serve_until_stopped(
            app, config.host, config.port, ctx, readiness, config.shutdown_grace_s, stop=stop,
            reuse_port=reuse_port, drain_s=config.shutdown_drain_s,
        )
    finally:
        stop.set()
        await reload_task
        await flush_task
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        if source is not None:
            await asyncio.to_thread(source.stop)
        if owner_caches is not None:
            await asyncio.to_thread(owner_caches.stop)
            metrics.flush_tallies()  # the last lookups counted, then no more from these caches
            metrics.count_lookups_stop()
        await pool.close()
        if stop_renewal is not None:
            stop_renewal()
