"""AdmissionReview decoding and encoding (admission.k8s.io v1 and v1beta1).

Transport-free, like controller-runtime's admission package: the server hands bytes in and
gets bytes out. A malformed review raises :class:`AdmissionError` (HTTP 400 with the message);
a well-formed one is always answered ``allowed: true``.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import orjson

from webhook.admission.patch import Patch
from webhook.resolution.model import NO_METADATA, PodMeta

SUPPORTED_API_VERSIONS = frozenset({"admission.k8s.io/v1", "admission.k8s.io/v1beta1"})


class AdmissionError(ValueError):
    """The body is not an AdmissionReview we can answer; the message is sent back as-is."""


# The values built once per review on the hot path are msgspec Structs rather than dataclasses:
# same shape and typing, but a C __init__ instead of generated Python (a tenth of the bytecode an
# everyday review ran). Not GC-tracked: they hold JSON values and each other, never a cycle.
class AdmissionRequest(msgspec.Struct, gc=False):
    api_version: str
    uid: str
    operation: str
    group: str
    version: str
    kind: str
    resource: str
    sub_resource: str
    namespace: str | None
    object: PodObject | None  # None: no object, or one whose metadata is not a mapping
    dry_run: bool

    @property
    def is_pod(self) -> bool:
        return self.group == "" and self.kind == "Pod" and not self.sub_resource


class AdmissionResponse(msgspec.Struct, gc=False):
    api_version: str
    uid: str
    patch: Patch | None = None
    warnings: tuple[str, ...] = ()


class PodObject(msgspec.Struct, gc=False):
    """A Pod as mutation reads it: the metadata fields anyone reads (:class:`PodMeta`), and whether
    the object has metadata at all (the patch adds ``/metadata`` when it has none)."""

    meta: PodMeta  # NO_METADATA when the object has none
    has_metadata: bool

    @classmethod
    def of(cls, obj: dict[str, Any]) -> PodObject | None:
        """From a decoded object (the full decoder, the CLI); None when its metadata is not a mapping."""
        meta = obj.get("metadata")
        if meta is None:
            return cls(NO_METADATA, False)
        if not isinstance(meta, dict):
            return None
        return cls(PodMeta.of(meta), True)


def _pod_object(obj: object) -> PodObject | None:
    return PodObject.of(obj) if isinstance(obj, dict) else None


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


def loads(body: bytes | str) -> Any:
    """orjson first (fast path); the stdlib for what orjson refuses but JSON allows (numbers past
    double range such as ``1e400``). Text must be strict UTF-8 either way, and ``NaN``/``Infinity``,
    which the stdlib would read but are not JSON, are refused as orjson refuses them."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as fast_error:
        try:
            text = body.decode("utf-8") if isinstance(body, bytes) else body
            return json.loads(text, parse_constant=_not_json)
        except (ValueError, RecursionError):
            raise fast_error from None


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def decode(body: bytes) -> AdmissionRequest:
    if not body:
        raise AdmissionError("empty request body: expected an AdmissionReview")
    try:
        review = loads(body)
    except (ValueError, RecursionError) as exc:
        raise AdmissionError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(review, dict):
        raise AdmissionError("AdmissionReview must be a JSON object")
    kind = review.get("kind")
    if kind != "AdmissionReview":
        raise AdmissionError(f"kind must be 'AdmissionReview', got {kind!r}")
    api_version = review.get("apiVersion")
    if not isinstance(api_version, str) or api_version not in SUPPORTED_API_VERSIONS:
        raise AdmissionError(
            f"unsupported apiVersion {api_version!r}: expected admission.k8s.io/v1 or admission.k8s.io/v1beta1"
        )
    request = review.get("request")
    if not isinstance(request, dict):
        raise AdmissionError("AdmissionReview has no 'request' object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise AdmissionError("request.uid must be a non-empty string")
    gvk = request.get("kind")
    gvk = gvk if isinstance(gvk, dict) else {}
    resource = request.get("resource")
    resource = resource if isinstance(resource, dict) else {}
    namespace = request.get("namespace")
    return AdmissionRequest(
        api_version=api_version,
        uid=uid,
        operation=_str(request.get("operation")),
        group=_str(gvk.get("group")),
        version=_str(gvk.get("version")),
        kind=_str(gvk.get("kind")),
        resource=_str(resource.get("resource")),
        sub_resource=_str(request.get("subResource")),
        namespace=namespace if isinstance(namespace, str) and namespace else None,
        object=_pod_object(request.get("object")),
        dry_run=request.get("dryRun") is True,
    )


class _Object(msgspec.Struct, gc=False):
    metadata: PodMeta | None = None  # None when absent or null; not an object: the full decoder says so


# Typed as the API server sends them. A value of another type (``"operation": 5``, a null kind)
# fails validation here and the review goes to decode(), which reads it as "" like any absent
# field, so typing the fields changes no answer and saves the hot path the checks.
class _GroupVersionKind(msgspec.Struct, gc=False):
    group: str = ""
    version: str = ""
    kind: str = ""


class _Resource(msgspec.Struct, gc=False):
    resource: str = ""


class _Request(msgspec.Struct, rename="camel", gc=False):
    uid: str = ""
    kind: _GroupVersionKind = msgspec.field(default_factory=_GroupVersionKind)
    resource: _Resource = msgspec.field(default_factory=_Resource)
    sub_resource: str = ""
    namespace: str = ""
    operation: str = ""
    dry_run: bool = False
    object: _Object | None = None


class _Review(msgspec.Struct, rename="camel", gc=False):
    api_version: str = ""
    kind: str = ""
    request: _Request | None = None


_SKIMMER = msgspec.json.Decoder(_Review)


def decode_for_mutation(body: bytes) -> AdmissionRequest:
    """:func:`decode` for the webhook's hot path: same checks, same answers, but ``object`` is a
    :class:`PodObject`: the metadata fields rules and plugins read, decoded in the same pass.

    The rest of the review (the Pod spec: 90% of a 40 KB body) and the rest of the metadata
    (managedFields and the like) are syntax-checked and skipped instead of being built into
    Python objects. Any body
    the schema does not fit (a non-object ``request``, ``kind`` or ``metadata``, a number out of
    range, broken JSON) goes to :func:`decode`, so edge cases and error messages have exactly one
    implementation.
    """
    try:
        review = _SKIMMER.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError):
        # deep nesting, or bad UTF-8 inside a string the skimmer builds (uid, a label...): decode() says 400
        return decode(body)
    if not body.isascii():
        try:  # the skimmer does not check the UTF-8 of strings it skips; decode() rejects bad UTF-8
            body.decode("utf-8")
        except UnicodeDecodeError:
            return decode(body)
    request = review.request
    api_version = review.api_version
    if review.kind != "AdmissionReview" or request is None or api_version not in SUPPORTED_API_VERSIONS:
        return decode(body)  # rejected: let the full decoder say why
    if not request.uid:
        return decode(body)
    obj = request.object
    if obj is None:
        pod = None
    elif obj.metadata is None:
        pod = PodObject(NO_METADATA, False)
    else:
        pod = PodObject(obj.metadata, True)
    gvk = request.kind
    return AdmissionRequest(
        api_version,
        request.uid,
        request.operation,
        gvk.group,
        gvk.version,
        gvk.kind,
        request.resource.resource,
        request.sub_resource,
        request.namespace or None,
        pod,
        request.dry_run,
    )


def encode(response: AdmissionResponse) -> bytes:
    body: dict[str, Any] = {"uid": response.uid, "allowed": True}
    if response.patch is not None:
        body["patchType"] = "JSONPatch"
        body["patch"] = response.patch.encoded
    if response.warnings:
        body["warnings"] = list(response.warnings)
    return orjson.dumps({"apiVersion": response.api_version, "kind": "AdmissionReview", "response": body})
