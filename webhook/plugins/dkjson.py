"""The native half of the `dkjson` module plugins ``require``: a fast decode path.

The Lua half (in sandbox.lua) implements dkjson's whole API and grammar, so a plugin never
loads dkjson.lua from disk. This module only answers the common case — valid, strict JSON
decoded from position 1 with ``nullval == nil`` — with orjson, and returns ``None`` for
everything else, which sends the Lua half down its own scanner. That keeps results identical
to dkjson while the hot path costs one orjson parse per *request* (shared by every plugin
through :data:`_CACHE`) plus one ``table_from`` per plugin: each plugin still gets fresh tables
it may mutate freely.

Cases the fast path refuses, because orjson's Python value cannot be turned into the very
Lua value dkjson would build:

* an array that is empty or starts with ``null``: an empty Lua table would be tagged as an
  object by the metatable pass (we tell arrays from objects by their first key);
* integers of 19 digits or more: beyond a C long, lupa cannot push them (dkjson gives a double);
* ``-0``: orjson yields the integer 0, dkjson the double -0 (``tostring`` prints ``-0``);
* a top-level ``null``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

import orjson

# The refusals, searched so that typical metadata costs little: each request's metadata is a new
# document, so no regex may branch at every ``:`` and ``,`` of it. Each pattern below starts with a literal
# the regex engine scans for quickly; the value-position test ("ogtest-0" in a string does not
# count) is made only at the rare places found.
_EMPTY_OR_NULL_FIRST = re.compile(r"\[\s*(?:\]|null)")
_NEGATIVE_ZERO = re.compile(r"-0(?![\d.eE])")
_LONG_INTEGER = re.compile(r"(?:^|[:\[,])\s*-?\d{19}")  # only run when the digits are there at all
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= i <= 0x39 else 0x2E for i in range(256))  # digits -> "0", else "."
_NINETEEN_DIGITS = b"0" * 19


def refused(text: str) -> bool:
    """Whether the fast path must leave ``text`` to the Lua scanner (see the module docstring)."""
    if _EMPTY_OR_NULL_FIRST.search(text):
        return True
    for found in _NEGATIVE_ZERO.finditer(text):
        if _in_value_position(text, found.start()):
            return True
    return _NINETEEN_DIGITS in text.encode().translate(_DIGITS_AS_ZERO) and _LONG_INTEGER.search(text) is not None


def _in_value_position(text: str, at: int) -> bool:
    """After ``:``, ``[`` or ``,`` (JSON whitespace aside), or at the very start."""
    at -= 1
    while at >= 0 and text[at] in _WHITESPACE:
        at -= 1
    return at < 0 or text[at] in ":[,"
_WHITESPACE = " \t\n\r"
_CACHE_SIZE = 32
_CACHE_MAX_TEXT = 256 * 1024  # bigger documents are parsed each time rather than kept (bounds memory)

# Parsed documents by their text: the Pod metadata is decoded once per request, not per plugin.
_CACHE: dict[str, tuple[Any, int] | None] = {}
_LOCK = threading.Lock()


def parse(text: str) -> tuple[Any, int] | None:
    """orjson's value and dkjson's "next position" (1-based byte offset), or None: use the Lua scanner."""
    try:
        return _CACHE[text]
    except KeyError:
        pass
    found: tuple[Any, int] | None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        found = None
    else:
        if value is None or refused(text):
            found = None
        else:
            end = len(text.rstrip(_WHITESPACE))
            if not text.isascii():
                end = len(text[:end].encode())
            found = (value, end + 1)
    if len(text) > _CACHE_MAX_TEXT:
        return found
    with _LOCK:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.clear()
        _CACHE[text] = found
    return found


def make_bridge(table_from: Any, fits: Callable[[int], bool]) -> Any:
    """The function the Lua half calls: (value, next position) with Lua tables, or None.

    ``fits(json_bytes)`` says whether tables for that much JSON can be built without reaching the
    runtime's memory cap; when not, the Lua scanner does the work, where running out of memory
    is an ordinary, catchable Lua error rather than a panic in unprotected code.
    """

    def bridge(text: str) -> tuple[Any, int] | None:
        if not fits(len(text)):
            return None
        found = parse(text)
        if found is None:
            return None
        value, end = found
        if isinstance(value, (dict, list)):
            return table_from(value, recursive=True), end
        return value, end

    return bridge
