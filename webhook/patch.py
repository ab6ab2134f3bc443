"""JSON Patch operations that add our annotations, and nothing else.

Pure: no I/O. Only keys the Pod lacks are added, so a value a user set is never replaced,
and every path stays under ``/metadata/annotations``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from webhook.types import Resolution

DEFAULT_PREFIX = "workload-tagger.io/"


def escape_pointer(token: str) -> str:
    """RFC 6901: `~` becomes `~0` first, then `/` becomes `~1`."""
    return token.replace("~", "~0").replace("/", "~1")


@lru_cache(maxsize=64)
def annotation_keys(prefix: str) -> tuple[str, str, str, str]:
    """(workload-type, workload-name, platform, resolved-by) keys for a prefix."""
    return (
        f"{prefix}workload-type",
        f"{prefix}workload-name",
        f"{prefix}platform",
        f"{prefix}resolved-by",
    )


def desired_annotations(resolution: Resolution, prefix: str = DEFAULT_PREFIX) -> dict[str, str]:
    """The annotations a resolution asks for; platform only when there is one."""
    k_type, k_name, k_platform, k_by = annotation_keys(prefix)
    wanted = {k_type: resolution.workload_type, k_name: resolution.workload_name}
    if resolution.platform:
        wanted[k_platform] = resolution.platform
    wanted[k_by] = resolution.resolved_by
    return wanted


def missing_annotations(meta: Mapping[str, Any], wanted: Mapping[str, str]) -> dict[str, str] | None:
    """The subset of ``wanted`` the Pod lacks; None when its annotations are not a mapping at all."""
    current = meta.get("annotations")
    if current is None:
        return dict(wanted)
    if not isinstance(current, dict):
        return None
    return {k: v for k, v in wanted.items() if k not in current}


def annotation_ops(meta: Mapping[str, Any] | None, wanted: Mapping[str, str]) -> list[dict[str, Any]]:
    """JSON Patch ops adding the wanted annotations the Pod lacks.

    ``meta`` is None when the object has no metadata at all. A Pod without annotations (or
    with ``annotations: null``) gets the whole map in one ``add``; otherwise one ``add`` per
    missing key, which never touches the keys already there.
    """
    if not wanted:
        return []
    if meta is None:
        return [{"op": "add", "path": "/metadata", "value": {"annotations": dict(wanted)}}]
    current = meta.get("annotations")
    if current is None:
        return [{"op": "add", "path": "/metadata/annotations", "value": dict(wanted)}]
    missing = missing_annotations(meta, wanted)
    if not missing:
        return []
    return [{"op": "add", "path": annotation_path(k), "value": v} for k, v in missing.items()]


@lru_cache(maxsize=256)
def annotation_path(key: str) -> str:
    """The JSON Pointer of one annotation; our keys are few and fixed, so each is built once."""
    return "/metadata/annotations/" + escape_pointer(key)
