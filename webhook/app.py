"""Assembles the parts for each door: the server (`serve`) and the offline resolver (`resolve`).

This is the only module that knows how config, resolver, plugin registry, plugin source,
metrics and the HTTPS server fit together; the parts themselves know nothing of each other.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import orjson

from webhook import logs
from webhook.admission import AdmissionRequest
from webhook.config import Config
from webhook.errors import CLIError
from webhook.inputs import PodInput, load_pods
from webhook.mutate import PodMutator
from webhook.plugins import EMPTY, PluginSet
from webhook.resolver import Resolver, ResolverSettings
from webhook.rules import user_rules
from webhook.types import UNRESOLVED_JSON

log = logging.getLogger("workload_tagger.app")


def build_resolver(config: Config) -> Resolver:
    return Resolver(
        ResolverSettings(
            plugins_first=config.plugins_first,
            allow_custom_types=config.allow_custom_types,
            extra_rules=user_rules(config.rules, config.allow_custom_types),
        )
    )


def build_mutator(config: Config, plugins: PluginSet | None = None) -> PodMutator:
    current = plugins or EMPTY
    return PodMutator(
        build_resolver(config),
        lambda: current,
        prefix=config.prefix,
        budget_seconds=config.review_budget_ms / 1000,
    )


def plugin_set_for_cli(config: Config) -> PluginSet:
    """The plugins of ``--plugins DIR`` (or none), loaded once for an offline command."""
    if not config.plugins_dir:
        return EMPTY
    from webhook.plugins.registry import PluginLimits
    from webhook.plugins.tool import plugin_set_from_dir

    limits = PluginLimits(config.plugin_instructions, config.plugin_memory_mb * 1024 * 1024)
    return plugin_set_from_dir(config.plugins_dir, limits)


def as_request(pod: PodInput) -> AdmissionRequest:
    """What `/mutate` would have been given for this Pod: the review itself, or a Pod CREATE."""
    if pod.review is not None:
        return pod.review
    return AdmissionRequest(
        api_version="admission.k8s.io/v1", uid="offline", operation="CREATE", group="", version="v1",
        kind="Pod", resource="pods", sub_resource="", namespace=pod.namespace, object=pod.obj, dry_run=True,
    )


def add_resolve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="Pod, Pod metadata, AdmissionReview or List (JSON/YAML; - for stdin)")


def run_resolve(args: argparse.Namespace, config: Config) -> int:
    """Print one JSON object per Pod, computed by exactly the handler `/mutate` uses."""
    pods = load_pods(args.file)
    mutator = build_mutator(config, plugin_set_for_cli(config))
    for pod in pods:
        decision = mutator.handle(as_request(pod))
        if decision.error:
            raise CLIError(f"{pod.label}: resolution failed: {decision.error}")
        out = decision.resolution.as_json() if decision.resolution else UNRESOLVED_JSON
        sys.stdout.write(orjson.dumps(out).decode() + "\n")
    return 0


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """`serve` takes only the shared settings (flags built from webhook.config)."""


def run_serve(args: argparse.Namespace, config: Config) -> int:
    logs.setup(config.log_level)
    from webhook import server

    try:
        server.check_tls_files(config.cert_file, config.key_file)
    except server.TLSFileError as exc:
        raise CLIError(str(exc)) from None
    if config.workers > 1:
        from webhook import workers

        return workers.supervise(config.workers, lambda: serve_process(config, reuse_port=True))
    return serve_process(config)


def serve_process(config: Config, reuse_port: bool = False) -> int:
    """One server process: its own event loop (uvloop unless configured otherwise) until SIGTERM."""
    from webhook import server

    with asyncio.Runner(loop_factory=server.event_loop_factory(config.event_loop)) as runner:
        runner.run(serve(config, reuse_port=reuse_port))
    return 0


async def serve(config: Config, stop: asyncio.Event | None = None, reuse_port: bool = False) -> None:
    """Wire registry, source, mutator and server; run until SIGTERM (or ``stop``)."""
    from webhook import server

    plugins: PluginSet = EMPTY
    readiness = server.Readiness()
    mutator = PodMutator(
        build_resolver(config),
        lambda: plugins,
        prefix=config.prefix,
        budget_seconds=config.review_budget_ms / 1000,
    )
    app = server.build_app(mutator, readiness, config.max_body_bytes)
    ctx = server.tls_context(config.cert_file, config.key_file)
    await server.serve_until_stopped(
        app, config.host, config.port, ctx, readiness, config.shutdown_grace_s, stop=stop,
        reuse_port=reuse_port, drain_s=config.shutdown_drain_s,
    )
