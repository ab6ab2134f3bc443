"""Plugins read from files for the offline doors (`resolve --plugins`, `plugin test`, `plugin create`,
audit, backfill): all or nothing, each failure one line naming the file."""

from __future__ import annotations

from pathlib import Path

from webhook.errors import UserError
from webhook.plugins.client import HostSettings
from webhook.plugins.hosted import BlockingPluginSet
from webhook.plugins.quarantine import QuarantinePolicy
from webhook.plugins.registry import PluginLoadError
from webhook.plugins.sources.snapshot import read_plugin_dir


def read_plugin_file(path: str | Path) -> str:
    """A plugin's source as UTF-8 text, or one clear error line (plugin test and plugin create)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read plugin file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"plugin file {path} is not UTF-8 text") from None


def plugin_set_from_dir(
    path: str, settings: HostSettings, quarantine: QuarantinePolicy, max_input_bytes: int
) -> BlockingPluginSet:
    """All plugins of a directory for an offline command, in a plugin host under the same limits as
    `serve`; any plugin that fails to load is an error."""
    directory = Path(path)
    if not directory.is_dir():
        raise UserError(f"plugins directory {path} does not exist")
    try:
        sources = read_plugin_dir(directory, strict=True)
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read plugins from {path}: {exc}") from None
    try:
        return BlockingPluginSet(sources, settings, quarantine, max_input_bytes=max_input_bytes)
    except PluginLoadError as exc:
        raise UserError(f"{exc} ({directory / (exc.plugin + '.lua')})") from None
