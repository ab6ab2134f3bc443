"""`workload-tagger plugin test PLUGIN.lua FILE...`: run one plugin offline.

Output: one JSON object per Pod on stdout, so it can be piped into jq or compared in CI::

    {"file": "pod.json", "pod": "default/ogtest-0", "outcome": "match", "workloadType": "statefulset",
     "workloadName": "ogtest", "accepted": "StatefulSet", "error": null, "line": null, "micros": 41.2,
     "output": ""}

``workloadType``/``workloadName`` are what the plugin returned; ``accepted`` is the type the
resolver would write (canonical spelling), or null when the resolver would reject the type.
``micros`` is the wall time of that one evaluation (the first call of a fresh runtime, so a
little above steady state). ``output`` is what the plugin printed. A plugin that does not load
is one error line and exit code 1; the exit code is 0 otherwise, whatever the outcomes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson

from webhook.app import build_resolver, plugin_limits
from webhook.commands.inputs import load_pods
from webhook.config import Config
from webhook.errors import UserError
from webhook.outcomes import PluginOutcome
from webhook.plugins.loading import read_plugin_file
from webhook.plugins.registry import (
    PluginLoadError,
    compile_plugin,
)
from webhook.resolution.resolver import plugin_input


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
    try:
        plugin = compile_plugin(path.stem, source, plugin_limits(config))
    except PluginLoadError as exc:
        raise UserError(str(exc)) from None
    resolver = build_resolver(config)
    for file in args.files:
        for pod in load_pods(file):
            meta_json = plugin_input(pod.meta, pod.namespace)
            started = time.perf_counter()
            result = plugin.runtime.call(meta_json.encode())
            micros = (time.perf_counter() - started) * 1e6
            matched = result.outcome == PluginOutcome.MATCH
            line = {
                "file": pod.source,
                "pod": pod.label,
                "outcome": result.outcome,
                "workloadType": result.workload_type if matched else None,
                "workloadName": result.workload_name if matched else None,
                "accepted": resolver.accept_type(result.workload_type) if matched else None,
                "error": result.error,
                "line": result.line,
                "micros": round(micros, 1),
                "output": plugin.runtime.output(),
            }
            sys.stdout.write(orjson.dumps(line).decode() + "\n")
    return 0
