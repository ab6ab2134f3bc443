"""How a set of files or ConfigMap keys becomes a plugin snapshot (name -> Lua source)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

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
