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

from webhook.admission import otel as otel_keys
from webhook.annotations import ANNOTATIONS_TOTAL_LIMIT, annotation_key_problem, annotation_keys
from webhook.resolution.model import Resolution

DEFAULT_PREFIX = "workload-tagger.io/"


def escape_pointer(token: str) -> str:
    """RFC 6901: `~` becomes `~0` first, then `/` becomes `~1`."""
    return token.replace("~", "~0").replace("/", "~1")


def desired_annotations(resolution: Resolution, prefix: str = DEFAULT_PREFIX, otel: bool = True) -> dict[str, str]:
    """The annotations a resolution asks for: ours (platform and root owner only when there is one), then,
    with ``otel``, the OpenTelemetry resource annotations it determines (see :mod:`webhook.admission.otel`)."""
    k_type, k_name, k_platform, k_by, k_root = annotation_keys(prefix)
    wanted = {k_type: resolution.workload_type, k_name: resolution.workload_name}
    if resolution.platform:
        wanted[k_platform] = resolution.platform
    wanted[k_by] = resolution.resolved_by
    if resolution.root_owner:
        wanted[k_root] = resolution.root_owner
    if otel:
        wanted.update(otel_keys.otel_annotations(resolution))
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


def _text_bytes(value: str) -> int:
    return len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))


def annotations_size(annotations: object) -> int:
    """Bytes of UTF-8 the API server counts for an annotations map (keys plus values)."""
    if type(annotations) is not dict:
        return 0
    return sum(_text_bytes(k) + (_text_bytes(v) if type(v) is str else 0) for k, v in annotations.items())


_ANNOTATION_PATH = "/metadata/annotations/"


def _added_annotations(ops: list[dict[str, Any]]) -> dict[str, Any]:
    """The annotations a patch of ours adds, read back from its ops (whatever built them)."""
    added: dict[str, Any] = {}
    for op in ops:
        path, value = op["path"], op.get("value", {})
        if path == "/metadata":
            added.update(value.get("annotations") or {})
        elif path == "/metadata/annotations":
            added.update(value)
        elif path.startswith(_ANNOTATION_PATH):  # an op elsewhere (none today) adds no annotation
            added[path[len(_ANNOTATION_PATH):].replace("~1", "/").replace("~0", "~")] = value
    return added


@dataclass(frozen=True, slots=True)
class Patch:
    """JSON Patch ops and their wire form (base64 of the JSON), computed together once, with what
    the API server will check of the result: the bytes the added annotations weigh and, if one of
    their keys or values is not admissible at all, why."""

    ops: tuple[dict[str, Any], ...]
    encoded: str
    added_bytes: int = 0
    problem: str | None = None

    @classmethod
    def of(cls, ops: list[dict[str, Any]]) -> Patch:
        added = _added_annotations(ops)
        problem = next((p for p in map(annotation_key_problem, added) if p), None)
        if problem is None and not all(type(v) is str for v in added.values()):
            problem = "an annotation value is not a string"
        return cls(tuple(ops), base64.b64encode(orjson.dumps(ops)).decode("ascii"), annotations_size(added), problem)

    def refusal(self, annotations: object) -> str | None:
        """Why the API server would refuse the Pod once patched (given its annotations as sent), or None.

        The Pod's own keys the patch adds to are counted once: a key of ours the Pod already has
        is not in the patch. Cheap for everyday Pods: their annotations' characters, times the
        four bytes a character can take, are already far below the limit.
        """
        if self.problem is not None:
            return self.problem
        room = ANNOTATIONS_TOTAL_LIMIT - self.added_bytes
        if type(annotations) is dict and annotations:
            if 4 * sum(len(k) + (len(v) if type(v) is str else 0) for k, v in annotations.items()) <= room:
                return None
            total = annotations_size(annotations) + self.added_bytes
        else:
            total = self.added_bytes
        if total > ANNOTATIONS_TOTAL_LIMIT:
            return (f"annotations would total {total} bytes, over the API server's limit of "
                    f"{ANNOTATIONS_TOTAL_LIMIT}")
        return None


# The patch of a Pod whose annotations hold none of our keys, the everyday case, keyed as such.
_NONE_PRESENT: frozenset[str] = frozenset()
_NO_METADATA, _NO_ANNOTATIONS = "no-metadata", "no-annotations"


class PatchBuilder:
    """Precomputed patches: the patch depends only on the resolution and on which of the keys we
    may write the Pod already has, and Pods of one workload share both, so each is built and
    encoded once.

    With ``otel`` the key also holds the resolution's owner reference, whose name and uid the
    OpenTelemetry annotations carry: Pods of one ReplicaSet, StatefulSet or DaemonSet still share
    a patch, a CronJob's Pods share one per Job. Without it the owner changes nothing and is left
    out of the key.

    Bounded: the cache is dropped whole when it reaches ``capacity`` entries (a workload's patch
    is rebuilt on its next Pod), which keeps memory flat without per-hit bookkeeping.
    """

    def __init__(self, prefix: str = DEFAULT_PREFIX, capacity: int = 4096, otel: bool = True) -> None:
        self.prefix = prefix
        self.capacity = capacity
        self.otel = otel
        self._keys = frozenset(annotation_keys(prefix)) | (otel_keys.ALL_KEYS if otel else frozenset())
        self._cache: dict[tuple[str, str, str | None, str, str | None, object, object], Patch | None] = {}

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
        owner = resolution.owner if self.otel else None
        key = (resolution.workload_type, resolution.workload_name, resolution.platform, resolution.resolved_by,
               resolution.root_owner, owner, state)
        try:
            return self._cache[key]
        except KeyError:
            pass
        ops = annotation_ops(annotations, desired_annotations(resolution, self.prefix, self.otel), has_metadata)
        patch = Patch.of(ops) if ops else None
        if len(self._cache) >= self.capacity:
            self._cache.clear()
        self._cache[key] = patch
        return patch


@lru_cache(maxsize=256)
def annotation_path(key: str) -> str:
    """The JSON Pointer of one annotation; our keys are few and fixed, so each is built once."""
    return "/metadata/annotations/" + escape_pointer(key)
