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
    path: str | Path, previous: Mapping[str, str] | None = None, *, strict: bool = False,
    unreadable: dict[str, object] | None = None,
) -> dict[str, str]:
    """name -> source for each ``*.lua`` file directly in ``path``, in name order.

    Hidden files and subdirectories are skipped. A file that cannot be read (permissions, not
    UTF-8, a symlink dangling mid-swap) raises when ``strict`` (offline commands must say so);
    otherwise it is logged and keeps its ``previous`` content, so a watcher's sink keeps the
    last good version instead of dropping the plugin. A watcher rescans every few seconds, so it
    passes ``unreadable`` (file -> the version last reported, kept by the caller between scans):
    an unreadable file is then logged once per version (its mtime, size, inode and error), not on
    every rescan.
    """
    plugins: dict[str, str] = {}
    seen_unreadable: set[str] = set()
    for file in sorted(Path(path).glob("*" + SUFFIX)):
        name = file.name[: -len(SUFFIX)]
        if not name or name.startswith(".") or file.is_dir():
            continue
        try:
            plugins[name] = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            if strict:
                raise
            key = str(file)
            seen_unreadable.add(key)
            version = (_file_version(file), str(exc))
            if unreadable is None or unreadable.get(key) != version:
                log.error(
                    "cannot read plugin file; keeping its last version",
                    extra={"file": key, "error": str(exc)},
                )
                if unreadable is not None:
                    unreadable[key] = version
            if previous is not None and name in previous:
                plugins[name] = previous[name]
    if unreadable is not None:
        for key in set(unreadable) - seen_unreadable:  # readable again, or gone: report its next failure
            del unreadable[key]
    return plugins


def _file_version(file: Path) -> tuple[int, int, int] | None:
    try:
        st = file.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)
