"""The one front door: `workload-tagger` / `python -m webhook`.

Each subcommand's own flags live beside its code (``add_arguments``/``run`` in its module);
this file only assembles them and turns every expected failure into one error line and a
non-zero exit code. Settings shared with the server come from :mod:`webhook.config`, so a
flag, its environment variable and its config-file key always mean the same thing.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

from webhook import __version__
from webhook.config import Config, ConfigError, env_name, load

PROG = "workload-tagger"

# Which Config settings each command exposes as flags (all of them also read env and file).
RESOLVE_SETTINGS = (
    "prefix", "plugins_dir", "plugins_first", "allow_custom_types",
    "plugin_instructions", "plugin_memory_mb", "plugin_call_timeout_ms", "plugin_load_timeout_ms",
    "plugin_max_input_kib", "log_level", "otel_annotations", "owner_fallback",
)
CLUSTER_SETTINGS = ("kubeconfig",)
CONFIGMAP_SETTINGS = ("configmap_namespace", "configmap_name", "kubeconfig", "plugin_instructions", "plugin_memory_mb")
FLAG_ALIASES = {"plugins_dir": ("--plugins",), "configmap_name": ("--configmap",)}

Runner = Callable[[argparse.Namespace, Config], int]


def add_config_flags(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    parser.add_argument("--config", metavar="FILE", help=f"YAML config file (env {env_name('config')})")
    by_name = {f.name: f for f in fields(Config)}
    group = parser.add_argument_group("settings (flag > environment > config file > default)")
    for name in names:
        f = by_name[name]
        flag = "--" + name.replace("_", "-")
        helptext = f"{f.metadata['help']} (env {env_name(name)}, file key {f.metadata['key']})"
        opts = (flag, *FLAG_ALIASES.get(name, ()))
        if f.type in ("bool", bool):
            group.add_argument(*opts, dest=name, action=argparse.BooleanOptionalAction, default=None, help=helptext)
        else:
            group.add_argument(*opts, dest=name, default=None, metavar=name.split("_")[-1].upper(), help=helptext)


def _lazy(module: str, func: str = "run", adder: str = "add_arguments") -> tuple[Callable[..., None], Runner]:
    """A command implemented in ``webhook.<module>``; imported only when it is parsed or run."""
    mod = importlib.import_module(f"webhook.{module}")
    return getattr(mod, adder), getattr(mod, func)


class _Builder:
    """Adds subcommands; imports a command's module only when that command was asked for.

    A command module may pull in heavy libraries (the kubernetes client alone is large), and
    `serve` must not carry what `audit` needs, so the parser is built for the command in argv.
    """

    def __init__(self, argv: Sequence[str]) -> None:
        self.words = tuple(a for a in argv if not a.startswith("-"))[:2]

    def command(
        self, sub: Any, path: tuple[str, ...], help_text: str, target: tuple[str, str, str],
        settings: Sequence[str] = (),
    ) -> None:
        parser: argparse.ArgumentParser = sub.add_parser(path[-1], help=help_text, description=help_text)
        if self.words[: len(path)] != path:
            return
        module, func, adder = target
        add, _ = _lazy(module, func, adder)
        add(parser)
        if settings:
            add_config_flags(parser, settings)
        parser.set_defaults(_target=target)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    b = _Builder(argv)
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Annotate Pods with their workload type and name (mutating admission webhook).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve_settings = [f.name for f in fields(Config) if not f.metadata.get("file_only")]
    b.command(sub, ("serve",), "run the HTTPS admission webhook", ("app", "run_serve", "add_serve_arguments"),
              serve_settings)
    b.command(sub, ("resolve",), "resolve the workload of a Pod, Pod metadata or AdmissionReview file",
              ("commands.resolve", "run", "add_arguments"), RESOLVE_SETTINGS)

    plugin = sub.add_parser("plugin", help="test and manage Lua plugins", description="test and manage Lua plugins")
    psub = plugin.add_subparsers(dest="plugin_command", metavar="ACTION", required=True)
    b.command(psub, ("plugin", "test"), "run one plugin offline against Pod files",
              ("commands.plugin_test", "run", "add_arguments"), RESOLVE_SETTINGS)
    b.command(psub, ("plugin", "create"), "validate a plugin and store it in the plugins ConfigMap",
              ("commands.plugin_manage", "run_create", "add_create_arguments"), CONFIGMAP_SETTINGS)
    b.command(psub, ("plugin", "list"), "list the plugins in the ConfigMap",
              ("commands.plugin_manage", "run_list", "add_list_arguments"), CONFIGMAP_SETTINGS)
    b.command(psub, ("plugin", "delete"), "remove a plugin from the ConfigMap",
              ("commands.plugin_manage", "run_delete", "add_delete_arguments"), CONFIGMAP_SETTINGS)

    certs = sub.add_parser("certs", help="certificates", description="certificates")
    csub = certs.add_subparsers(dest="certs_command", metavar="ACTION", required=True)
    b.command(csub, ("certs", "generate"), "write a CA and a serving certificate", ("commands.certs", "run", "add_arguments"))

    b.command(sub, ("recommend",), "DeepFlow Agent config and ClusterRole for the platforms your Pods run on",
              ("commands.recommend", "run", "add_arguments"), CLUSTER_SETTINGS)
    b.command(sub, ("audit",), "report how many Pods are tagged, stale or unresolved",
              ("commands.audit", "run", "add_arguments"), (*RESOLVE_SETTINGS, *CLUSTER_SETTINGS))
    b.command(sub, ("backfill",), "annotate Pods that already run", ("commands.backfill", "run", "add_arguments"),
              (*RESOLVE_SETTINGS, *CLUSTER_SETTINGS))
    return parser


def _fail(message: str, code: int) -> int:
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    print(f"{PROG}: error: {first}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    from webhook.commands.inputs import InputError
    from webhook.errors import UserError
    from webhook.resolution.rules import RuleConfigError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    flags = {f.name: getattr(args, f.name) for f in fields(Config) if hasattr(args, f.name)}
    try:
        config = load(getattr(args, "config", None), flags)
        module, func, adder = args._target
        _, run = _lazy(module, func, adder)
        return run(args, config)
    except UserError as exc:
        return _fail(str(exc), exc.code)
    except (ConfigError, RuleConfigError) as exc:
        return _fail(str(exc), 2)
    except InputError as exc:
        return _fail(str(exc), 2)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
