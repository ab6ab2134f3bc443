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

from webhook.config import Config
from webhook.errors import CLIError
from webhook.inputs import load_pods
from webhook.plugins import MATCH, NO_MATCH
from webhook.plugins.hosted import BlockingPluginSet
from webhook.plugins.registry import PluginLoadError
from webhook.resolver import plugin_input
from webhook.sources.snapshot import read_plugin_dir

FAILED_CALLS_EXIT = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("plugin", metavar="PLUGIN.lua", help="the Lua plugin to run")
    parser.add_argument(
        "files",
        metavar="FILE",
        nargs="+",
        help="Pod, Pod metadata, AdmissionReview or List (JSON/YAML; - for stdin)",
    )


def read_plugin_file(path: str | Path) -> str:
    """A plugin's source as UTF-8 text, or one clear error line (plugin test and plugin create)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CLIError(f"cannot read plugin file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CLIError(f"plugin file {path} is not UTF-8 text") from None


def run(args: argparse.Namespace, config: Config) -> int:
    from webhook.app import build_resolver, host_settings, plugin_limits

    path = Path(args.plugin)
    source = read_plugin_file(path)
    name = path.stem
    try:
        plugins = BlockingPluginSet({name: source}, host_settings(config), plugin_limits(config).quarantine)
    except PluginLoadError as exc:
        raise CLIError(str(exc)) from None
    resolver = build_resolver(config)
    failed = False
    with plugins:
        for file in args.files:
            for pod in load_pods(file):
                result, seconds, output = plugins.call(name, plugin_input(pod.meta, pod.namespace))
                matched = result.outcome == MATCH
                failed = failed or result.outcome not in (MATCH, NO_MATCH)
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


def plugin_set_from_dir(path: str, config: Config) -> BlockingPluginSet:
    """All plugins of a directory for an offline command, in a plugin host; any plugin that fails
    to load is an error."""
    from webhook.app import host_settings, plugin_limits

    directory = Path(path)
    if not directory.is_dir():
        raise CLIError(f"plugins directory {path} does not exist")
    try:
        sources = read_plugin_dir(directory, strict=True)
    except (OSError, UnicodeDecodeError) as exc:
        raise CLIError(f"cannot read plugins from {path}: {exc}") from None
    try:
        return BlockingPluginSet(sources, host_settings(config), plugin_limits(config).quarantine,
                                 max_input_bytes=config.plugin_max_input_kib * 1024)
    except PluginLoadError as exc:
        raise CLIError(f"{exc} ({directory / (exc.plugin + '.lua')})") from None
