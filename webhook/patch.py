"""JSON Patch operations that add our annotations, and nothing else.

Pure: no I/O. Only keys the Pod lacks are added, so a value a user set is never replaced,
and every path stays under ``/metadata/annotations``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from webhook.types import Resolution

DEFAULT_PREFIX = "workload-tagger.io/"


def escape_pointer(token: str) -> str:
    """RFC 6901: `~` becomes `~0` first, then `/` becomes `~1`."""
    return token.replace("~", "~0").replace("/", "~1")


@lru_cache(maxsize=64)
def annotation_keys(prefix: str) -> tuple[str, str, str, str, str]:
    """(workload-type, workload-name, platform, resolved-by, root-owner) keys for a prefix."""
    return (
        f"{prefix}workload-type",
        f"{prefix}workload-name",
        f"{prefix}platform",
        f"{prefix}resolved-by",
        f"{prefix}root-owner",
    )


def desired_annotations(resolution: Resolution, prefix: str = DEFAULT_PREFIX) -> dict[str, str]:
    """The annotations a resolution asks for; platform and root owner only when there is one."""
    k_type, k_name, k_platform, k_by, k_root = annotation_keys(prefix)
    wanted = {k_type: resolution.workload_type, k_name: resolution.workload_name}
    if resolution.platform:
        wanted[k_platform] = resolution.platform
    wanted[k_by] = resolution.resolved_by
    if resolution.root_owner:
        wanted[k_root] = resolution.root_owner
    return wanted


def missing_annotations(current: object, wanted: Mapping[str, str]) -> dict[str, str] | None:
    """The subset of ``wanted`` the Pod's annotations (as sent) lack; None when they are not a mapping at all."""
    if current is None:
        return dict(wanted)
    if not isinstance(current, dict):
        return None
    return {k: v for k, v in wanted.items() if k not in current}


def annotation_ops(annotations: object, wanted: Mapping[str, str], has_metadata: bool = True) -> list[dict[str, Any]]:
    """JSON Patch ops adding the wanted annotations the Pod lacks.

    ``annotations`` is the Pod's annotations value as sent; ``has_metadata`` is False when the
    object has no metadata at all. A Pod without annotations (or with ``annotations: null``) gets
    the whole map in one ``add``; otherwise one ``add`` per missing key, which never touches the
    keys already there. Annotations that are not a map get nothing.
    """
    if not wanted:
        return []
    if not has_metadata:
        return [{"op": "add", "path": "/metadata", "value": {"annotations": dict(wanted)}}]
    if annotations is None:
        return [{"op": "add", "path": "/metadata/annotations", "value": dict(wanted)}]
    missing = missing_annotations(annotations, wanted)
    if not missing:
        return []
    return [{"op": "add", "path": annotation_path(k), "value": v} for k, v in missing.items()]


@dataclass(frozen=True, slots=True)
class Patch:
    """JSON Patch ops and their wire form (base64 of the JSON), computed together once."""

    ops: tuple[dict[str, Any], ...]
    encoded: str

    @classmethod
    def of(cls, ops: list[dict[str, Any]]) -> Patch:
        return cls(tuple(ops), base64.b64encode(orjson.dumps(ops)).decode("ascii"))


# The patch of a Pod whose annotations hold none of our keys, the everyday case, keyed as such.
_NONE_PRESENT: frozenset[str] = frozenset()
_NO_METADATA, _NO_ANNOTATIONS = "no-metadata", "no-annotations"


class PatchBuilder:
    """Precomputed patches: the patch depends only on the resolution and on which of our keys the
    Pod already has, and Pods of one workload share both, so each is built and encoded once.

    Bounded: the cache is dropped whole when it reaches ``capacity`` entries (a workload's patch
    is rebuilt on its next Pod), which keeps memory flat without per-hit bookkeeping.
    """

    def __init__(self, prefix: str = DEFAULT_PREFIX, capacity: int = 4096) -> None:
        self.prefix = prefix
        self.capacity = capacity
        self._keys = frozenset(annotation_keys(prefix))
        self._cache: dict[tuple[str, str, str | None, str, str | None, object], Patch | None] = {}

    def build(self, resolution: Resolution, annotations: object, has_metadata: bool = True) -> Patch | None:
        """The patch adding this resolution's annotations, or None when there is nothing to add."""
        if not has_metadata:
            state: object = _NO_METADATA
        elif annotations is None:
            state = _NO_ANNOTATIONS
        elif type(annotations) is dict:
            keys = self._keys
            state = _NONE_PRESENT if keys.isdisjoint(annotations) else keys.intersection(annotations)
        else:
            return None  # annotations that are not a map: never patched (see annotation_ops)
        key = (resolution.workload_type, resolution.workload_name, resolution.platform, resolution.resolved_by,
               resolution.root_owner, state)
        try:
            return self._cache[key]
        except KeyError:
            pass
        ops = annotation_ops(annotations, desired_annotations(resolution, self.prefix), has_metadata)
        patch = Patch.of(ops) if ops else None
        if len(self._cache) >= self.capacity:
            self._cache.clear()
        self._cache[key] = patch
        return patch


@lru_cache(maxsize=256)
def annotation_path(key: str) -> str:
    """The JSON Pointer of one annotation; our keys are few and fixed, so each is built once."""
    return "/metadata/annotations/" + escape_pointer(key)
