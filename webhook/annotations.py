"""The annotation keys we write, and what the API server accepts as an annotation key.

Ground level: the patch builder and the configuration (a prefix is checked when it is read) both
rely on it. Pure: no I/O.
"""

from __future__ import annotations

import re
from functools import lru_cache


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


# What the API server validates about a Pod's annotations (apimachinery's ValidateAnnotations):
# each key, lower-cased, is a qualified name, and keys plus values total at most this many bytes
# of UTF-8. A patch breaking either would turn an admissible Pod into a refused creation, which
# ``failurePolicy: Ignore`` does not cover, so such a patch is never sent.
ANNOTATIONS_TOTAL_LIMIT = 256 * 1024
_QUALIFIED_NAME = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?\Z")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*\Z")


@lru_cache(maxsize=1024)
def annotation_key_problem(key: str) -> str | None:
    """Why the API server would refuse ``key`` as an annotation key; None when it accepts it."""
    parts = key.lower().split("/")
    if len(parts) > 2:
        return f"annotation key {key!r} has more than one '/'"
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            return f"annotation key {key!r} has an empty prefix before '/'"
        if len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix):
            return f"annotation key {key!r}: prefix {prefix!r} is not a DNS subdomain (RFC 1123, at most 253 chars)"
    if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
        return (f"annotation key {key!r}: name {name!r} must be 1-63 characters, alphanumerics, '-', '_' or '.', "
                "starting and ending with an alphanumeric")
    return None
