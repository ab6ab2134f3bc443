"""Reading Pods from files for the CLI doors (resolve, plugin test, recommend, audit).

Accepts JSON or YAML (several YAML documents too), `-` for stdin, and any of: a Pod, a Pod's
bare metadata, an AdmissionReview, or a List (`kubectl get pods -o json`). Everything is
normalised to :class:`PodInput`, which is what the admission path would have seen.
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
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
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
    pods = [pod for doc in parse_documents(read_text(path), source) for pod in classify(doc, source)]
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
