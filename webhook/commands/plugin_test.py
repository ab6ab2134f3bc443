"""`workload-tagger plugin test PLUGIN.lua FILE...`: run one plugin offline.

Output: one JSON object per Pod on stdout, so it can be piped into jq or compared in CI::

    {"file": "pod.json", "pod": "default/ogtest-0", "outcome": "match", "workloadType": "statefulset",
     "workloadName": "ogtest", "accepted": "StatefulSet", "error": null, "line": null, "micros": 41.2,
     "output": ""}

``workloadType``/``workloadName`` are what the plugin returned; ``accepted`` is the type the
resolver would write (canonical spelling), or null when the resolver would reject the type.
``micros`` is the plugin's own time for that one evaluation, measured in its host. ``output`` is
what the plugin printed. The plugin runs in a plugin host under the same limits as `serve`: a
call that passes ``--plugin-call-timeout-ms`` kills the host and is reported as ``timeout``, and
the next Pod gets a fresh host.

Exit codes: 0 every call matched or did not match; 1 the plugin does not load; 2 usage or input
errors; 3 at least one call ended in error, budget, memory, invalid, timeout or crash.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from webhook.app import build_resolver, host_settings, plugin_limits
from webhook.commands.inputs import load_pods
from webhook.config import Config
from webhook.errors import UserError
from webhook.outcomes import PluginOutcome
from webhook.plugins.hosted import BlockingPluginSet
from webhook.plugins.loading import read_plugin_file
from webhook.plugins.registry import PluginLoadError
from webhook.resolution.resolver import plugin_input

FAILED_CALLS_EXIT = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("plugin", metavar="PLUGIN.lua", help="the Lua plugin to run")
    parser.add_argument(
        "files",
        metavar="FILE",
        nargs="+",
        help="Pod, Pod metadata, AdmissionReview or List (JSON/YAML; - for stdin)",
    )


def run(args: argparse.Namespace, config: Config) -> int:
    path = Path(args.plugin)
    source = read_plugin_file(path)
    name = path.stem
    try:
        plugins = BlockingPluginSet({name: source}, host_settings(config), plugin_limits(config).quarantine)
    except PluginLoadError as exc:
        raise UserError(str(exc)) from None
    resolver = build_resolver(config)
    failed = False
    with plugins:
        for file in args.files:
            for pod in load_pods(file):
                result, seconds, output = plugins.call(name, plugin_input(pod.meta, pod.namespace))
                matched = result.outcome == PluginOutcome.MATCH
                failed = failed or result.outcome not in (PluginOutcome.MATCH, PluginOutcome.NO_MATCH)
                line = {
                    "file": pod.source,
                    "pod": pod.label,
                    "outcome": result.outcome,
                    "workloadType": result.workload_type if matched else None,
                    "workloadName": result.workload_name if matched else None,
                    "accepted": resolver.accept_type(result.workload_type) if matched else None,
                    "error": result.error,
                    "line": result.line,
                    "micros": round(seconds * 1e6, 1),
                    "output": output,
                }
                sys.stdout.write(orjson.dumps(line).decode() + "\n")
                sys.stdout.flush()
    return FAILED_CALLS_EXIT if failed else 0
