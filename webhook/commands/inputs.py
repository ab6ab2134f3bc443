"""Reading Pods from files for the CLI doors (resolve, plugin test, recommend, audit).

Accepts JSON or YAML (several YAML documents too), `-` for stdin, and any of: a Pod, a Pod's
bare metadata, an AdmissionReview, or a List (`kubectl get pods -o json`). Everything is
normalised to :class:`PodInput`, which is what the admission path would have seen.

Hostile files are refused with one :class:`InputError` line in bounded time and memory: nesting
too deep for the parsers, a YAML alias that refers to itself, and YAML aliases that would expand
past :data:`MAX_ALIAS_NODES` nodes (a "billion laughs" of a few hundred bytes would otherwise be
walked as millions of Pods). Size alone is not limited: a 100,000-Pod `kubectl get pods -A -o json`
is read like any List.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from webhook.admission import review as admission
from webhook.errors import UserError

# Nodes that YAML aliases may bring in, counted as expanded (an alias to a 10-node mapping counts
# 10). Pod files use anchors rarely and small; expansion bombs need millions.
MAX_ALIAS_NODES = 100_000


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing self-referencing aliases and alias expansion past MAX_ALIAS_NODES."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._alias_nodes = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            node = self.anchors.get(event.anchor)  # type: ignore[attr-defined]
            if node is not None:
                if node.end_mark is None:  # still being composed: the alias is inside its own anchor
                    raise yaml.composer.ComposerError(None, None, f"alias *{event.anchor} refers to itself",
                                                      event.start_mark)
                self._alias_nodes += self._size(node)
                if self._alias_nodes > MAX_ALIAS_NODES:
                    raise yaml.composer.ComposerError(
                        None, None, f"aliases expand to more than {MAX_ALIAS_NODES} nodes", event.start_mark)
        return super().compose_node(parent, index)

    def _size(self, node: yaml.Node) -> int:
        """Nodes in ``node`` once expanded; memoised, each node is counted once per distinct node."""
        known = self._sizes.get(id(node))
        if known is not None:
            return known
        size = 1
        if isinstance(node, yaml.SequenceNode):
            size += sum(self._size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            size += sum(self._size(k) + self._size(v) for k, v in node.value)
        self._sizes[id(node)] = size
        return size


class InputError(ValueError):
    """The file cannot be read or holds nothing we recognise; the message names the file."""


@dataclass(frozen=True, slots=True)
class PodInput:
    """One Pod as the webhook would see it: its object, and the request namespace if any."""

    source: str
    obj: dict[str, Any]
    namespace: str | None = None
    review: admission.AdmissionRequest | None = None

    @property
    def meta(self) -> dict[str, Any]:
        meta = self.obj.get("metadata")
        return meta if isinstance(meta, dict) else {}

    @property
    def label(self) -> str:
        meta = self.meta
        ns = meta.get("namespace") or self.namespace or ""
        name = meta.get("name") or meta.get("generateName") or "?"
        return f"{ns}/{name}" if ns else str(name)


def read_text(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text") from None


def parse_documents(text: str, source: str) -> list[Any]:
    """JSON first (fast, exact); YAML (a superset, multi-document) when JSON fails."""
    stripped = text.lstrip()
    if not stripped:
        raise InputError(f"{source} is empty")
    if stripped[0] in "{[":
        try:
            return [admission.loads(text)]
        except ValueError:
            pass
    try:
        docs = [d for d in yaml.load_all(text, Loader=_BoundedLoader) if d is not None]
    except yaml.YAMLError as exc:
        raise InputError(f"{source} is neither valid JSON nor YAML: {exc}".splitlines()[0]) from None
    if not docs:
        raise InputError(f"{source} holds no document")
    return docs


def classify(doc: Any, source: str) -> Iterator[PodInput]:
    """Yield the Pods a document holds, whatever its shape."""
    if isinstance(doc, list):
        for item in doc:
            yield from classify(item, source)
        return
    if not isinstance(doc, dict):
        raise InputError(f"{source}: expected a Pod, Pod metadata, AdmissionReview or List, got {type(doc).__name__}")
    kind = doc.get("kind")
    if kind == "AdmissionReview":
        try:
            req = admission.decode(orjson.dumps(doc))
        except admission.AdmissionError as exc:
            raise InputError(f"{source}: {exc}") from None
        except orjson.JSONEncodeError as exc:  # YAML can hold what JSON cannot: non-string keys, deep nesting
            raise InputError(f"{source}: AdmissionReview cannot be read as JSON: {exc}") from None
        obj = doc["request"].get("object")  # decode() checked that the request is a mapping
        yield PodInput(source, obj if isinstance(obj, dict) else {}, req.namespace, req)
    elif isinstance(doc.get("items"), list) and (kind is None or str(kind).endswith("List")):
        for item in doc["items"]:
            yield from classify(item, source)
    elif "metadata" in doc:
        if kind not in (None, "Pod"):
            raise InputError(f"{source}: expected a Pod, got kind {kind!r}")
        yield PodInput(source, doc)
    elif any(k in doc for k in ("ownerReferences", "labels", "annotations", "name", "generateName", "namespace")):
        yield PodInput(source, {"metadata": doc})
    else:
        raise InputError(f"{source}: not a Pod, Pod metadata, AdmissionReview or List")


def load_pods(path: str) -> list[PodInput]:
    source = "stdin" if path == "-" else path
    text = read_text(path)
    try:
        pods = [pod for doc in parse_documents(text, source) for pod in classify(doc, source)]
    except RecursionError:
        raise InputError(f"{source} is nested too deeply to read") from None
    if not pods:
        raise InputError(f"{source} holds no Pod")
    return pods


def file_pods(path: str, namespace: str | None) -> Iterator[PodInput]:
    """Pods from a file (``-`` for stdin), optionally only one namespace's."""
    try:
        pods = load_pods(path)
    except InputError as exc:
        raise UserError(str(exc), 2) from None
    for pod in pods:
        if namespace is None or (pod.meta.get("namespace") or pod.namespace) == namespace:
            yield pod


def cluster_pods(pods: Iterable[dict[str, Any]]) -> Iterator[PodInput]:
    """Pods listed from the API (:class:`webhook.cluster.pods.LiveLister`) as the other doors see Pods."""
    for obj in pods:
        yield PodInput("cluster", obj)
