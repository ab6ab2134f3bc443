"""How a set of files or ConfigMap keys becomes a plugin snapshot (name -> Lua source)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger("workload_tagger.sources")

SUFFIX = ".lua"


def plugin_key(name: str) -> str:
    """The ConfigMap key (or file name) that holds plugin ``name``."""
    return name + SUFFIX


def plugins_from_data(data: Mapping[str, str] | None, where: str) -> dict[str, str]:
    """Keep the ``*.lua`` keys, named without the suffix; other keys are somebody else's business."""
    plugins: dict[str, str] = {}
    for key, value in (data or {}).items():
        if key.endswith(SUFFIX) and len(key) > len(SUFFIX):
            plugins[key[: -len(SUFFIX)]] = value
        else:
            log.debug("ignoring non-plugin key", extra={"where": where, "key": key})
    return plugins


def read_plugin_dir(
    path: str | Path, previous: Mapping[str, str] | None = None, *, strict: bool = False
) -> dict[str, str]:
    """name -> source for each ``*.lua`` file directly in ``path``, in name order.

    Hidden files and subdirectories are skipped. A file that cannot be read (permissions, not
    UTF-8, a symlink dangling mid-swap) raises when ``strict`` (offline commands must say so);
    otherwise it is logged and keeps its ``previous`` content, so a watcher's sink keeps the
    last good version instead of dropping the plugin.
    """
    plugins: dict[str, str] = {}
    for file in sorted(Path(path).glob("*" + SUFFIX)):
        name = file.name[: -len(SUFFIX)]
        if not name or name.startswith(".") or file.is_dir():
            continue
        try:
            plugins[name] = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            if strict:
                raise
            log.error(
                "cannot read plugin file; keeping its last version",
                extra={"file": str(file), "error": str(exc)},
            )
            if previous is not None and name in previous:
                plugins[name] = previous[name]
    return plugins
