"""One sandboxed Lua 5.1 runtime per plugin: compile once, then call the cached function.

Why one runtime each: a plugin can then never see or change another's globals, the string
metatable or the shared libraries, and a runtime that hit its memory cap can be thrown away
and rebuilt without touching the others. DeepFlow runs plugins on gopher-lua (Lua 5.1), so we
use lupa's ``lua51`` runtime, where the count hook works.

Bounds per call: a count hook set once per runtime (every :data:`HOOK_EVERY` instructions; the
call only resets a counter in Lua, so there is no per-call hook setup) and lupa's
``max_memory``. Returned values are checked in Lua (cheap) before they cross to Python.

Known limit: the count hook only fires between Lua instructions, so time spent inside one C
function is not counted. Allocation-heavy ones (``string.rep``, ``table.concat``) are bounded by
the memory cap and our native decode is charged by input size, but a pathological pattern
(Lua 5.1's matcher backtracks, e.g. ``("a"):rep(40):find(("a?"):rep(40) .. ("a"):rep(40))``)
can run long inside ``string.find``. That is why `serve` and every offline door run this engine
only inside a plugin host (webhook/plugins/host.py), which is killed when a call passes its
wall-clock limit.

Returned strings are capped at :data:`MAX_VALUE_BYTES` bytes: workload names are Kubernetes
object names (DNS subdomains, at most 253 characters) and types are short kind names, so
anything longer is a plugin bug, not a workload — and it would bloat every Pod's annotations.
"""

from __future__ import annotations

import contextlib
import re
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Any

import lupa.lua51 as lua51

from webhook.outcomes import PluginOutcome
from webhook.plugins.dkjson import make_bridge

HOOK_EVERY = 1000
MAX_VALUE_BYTES = 253
MAX_PRINTED_LINES = 50
ENTRY = "GetWorkloadTypeAndName"

# lupa pushes arguments and builds tables outside Lua's protected mode: running out of memory
# there is a Lua panic that aborts the process. So before pushing anything we check headroom,
# allowing TABLE_BYTES_PER_JSON_BYTE for tables built from JSON (chosen with margin above the
# worst case, "[{},{},...]") plus a fixed slack for the call itself.
TABLE_BYTES_PER_JSON_BYTE = 40
PUSH_SLACK = 64 * 1024

_SANDBOX = resources.files("webhook.plugins").joinpath("sandbox.lua").read_text(encoding="utf-8")
_DKJSON = resources.files("webhook.plugins").joinpath("dkjson.lua").read_text(encoding="utf-8")
_LINE = re.compile(r"^[^:\n]*:(\d+):")
_OUTCOMES = {
    "match": PluginOutcome.MATCH,
    "nomatch": PluginOutcome.NO_MATCH,
    "error": PluginOutcome.ERROR,
    "budget": PluginOutcome.BUDGET,
    "memory": PluginOutcome.MEMORY,
    "invalid": PluginOutcome.INVALID,
}


class CompileError(Exception):
    """The plugin did not compile, failed while loading, or lacks the entry function."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True, slots=True)
class CallResult:
    """What one evaluation produced; ``workload_type``/``workload_name`` only for PluginOutcome.MATCH."""

    outcome: PluginOutcome
    workload_type: str = ""
    workload_name: str = ""
    error: str | None = None
    line: int | None = None


NO_MATCH_RESULT = CallResult(PluginOutcome.NO_MATCH)  # the commonest result: immutable, so one is shared


def error_line(message: str) -> int | None:
    """The line number Lua puts in front of an error raised in the plugin's chunk."""
    found = _LINE.match(message)
    return int(found.group(1)) if found else None


def chunk_name(name: str) -> str:
    return "@" + (name if name.endswith(".lua") else name + ".lua")


def _attribute_denied(obj: Any, name: Any, *rest: Any) -> Any:
    raise AttributeError("Python objects are not accessible from plugins")


class PluginRuntime:
    """A compiled plugin. ``call`` is thread-safe (lupa locks the runtime; the rebuild is locked here)."""

    def __init__(
        self,
        name: str,
        source: str,
        instructions: int,
        memory_bytes: int,
        max_value_bytes: int = MAX_VALUE_BYTES,
    ) -> None:
        self.name = name
        self.max_value_bytes = max_value_bytes
        self.source = source
        self.instructions = instructions
        self.memory_bytes = memory_bytes
        self._rebuild_lock = threading.Lock()
        self.rebuilds = 0
        self._holder: list[Any] = []
        if len(source.encode()) * 4 + PUSH_SLACK > memory_bytes:
            raise CompileError("source too large for the memory cap", None)
        self._call, self._output, self._lua, self._holder = self._build()

    def __del__(self) -> None:
        self._holder.clear()  # break the Lua <-> bridge cycle: the runtime is freed now, not at a full GC

    def _build(self) -> tuple[Any, Any, Any, list[Any]]:
        """A fresh runtime with the plugin loaded, and the holder through which the bridge reaches it.

        The dkjson bridge lives inside the Lua state and needs the runtime back: referenced directly,
        that is a reference cycle, which only Python's full GC collects, late and blind to the
        megabytes of Lua memory behind it (plugin reloads and memory-cap rebuilds would pile up dead
        runtimes). The holder is emptied when the runtime is dropped, so plain refcounting frees it.
        """
        lua = lua51.LuaRuntime(
            register_eval=False,
            register_builtins=False,
            unpack_returned_tuples=True,
            max_memory=self.memory_bytes,
            attribute_handlers=(_attribute_denied, _attribute_denied),
        )
        setup = lua.execute(_SANDBOX)

        holder: list[Any] = [lua]
        cap = self.memory_bytes  # not ``self``: the closure must not reach back to this object either

        def fits_tables(json_bytes: int) -> bool:
            return bool(holder) and (
                int(holder[0].get_memory_used()) + json_bytes * TABLE_BYTES_PER_JSON_BYTE + PUSH_SLACK <= cap
            )

        def table_from(value: Any, recursive: bool = False) -> Any:
            return holder[0].table_from(value, recursive=recursive)

        install = setup(
            lua.execute(_DKJSON),
            make_bridge(table_from, fits_tables),
            HOOK_EVERY,
            max(1, self.instructions // HOOK_EVERY),
            self.max_value_bytes,
            MAX_PRINTED_LINES,
        )
        try:
            call, output = install(self.source, chunk_name(self.name))
        except lua51.LuaMemoryError:
            raise CompileError("memory cap exceeded while loading", None) from None
        except lua51.LuaError as exc:
            raise CompileError(str(exc), error_line(str(exc))) from None
        if call is None:
            message = str(output)
            if message == "not enough memory":
                message = "memory cap exceeded while loading"
            raise CompileError(message, error_line(message))
        return call, output, lua, holder

    def call(self, meta_json: bytes | str, prepared: tuple[Any, int] | None = None) -> CallResult:
        """Evaluate once. Never raises for anything the plugin does.

        ``prepared`` is :func:`webhook.plugins.dkjson.parse` of ``meta_json`` when the caller
        already has it: its tables are then built before the call and handed to the plugin's
        first ``dkjson.decode(metaJsonStr)``, saving a Lua -> Python round trip.
        """
        size = len(meta_json) if isinstance(meta_json, bytes) else len(meta_json.encode())
        # What may still be allocated in this runtime before its cap, with slack for the call itself.
        room = self.memory_bytes - PUSH_SLACK - int(self._lua.get_memory_used())
        if size > room:
            return CallResult(PluginOutcome.MEMORY, error="metadata too large for the memory cap")
        try:
            if (
                prepared is not None
                and isinstance(prepared[0], (dict, list))
                and size * (TABLE_BYTES_PER_JSON_BYTE + 1) <= room
            ):
                tables = self._lua.table_from(prepared[0], recursive=True)
                result = self._call(meta_json, tables, prepared[1])
            else:
                result = self._call(meta_json)
        except lua51.LuaMemoryError:
            result = ("memory", "not enough memory")
        except lua51.LuaError as exc:  # raised outside the plugin's pcall, e.g. while returning
            result = ("error", str(exc))
        except UnicodeDecodeError:
            result = ("invalid", "returned a value that is not UTF-8")
        if not isinstance(result, tuple):
            result = (result,)
        outcome = _OUTCOMES[result[0]]
        if outcome == PluginOutcome.MATCH:
            return CallResult(PluginOutcome.MATCH, result[1], result[2])
        if outcome == PluginOutcome.NO_MATCH:
            return NO_MATCH_RESULT
        message = str(result[1])
        if outcome == PluginOutcome.MEMORY:
            self.rebuild()
            message = "memory cap exceeded"
        return CallResult(outcome, error=message, line=error_line(message))

    def output(self) -> str:
        """What the plugin printed during the last call (for `plugin test`)."""
        return str(self._output())

    def rebuild(self) -> None:
        """A runtime that hit its memory cap is unusable: replace it by a fresh one."""
        with self._rebuild_lock:
            # It compiled before, so only a cap too low for a fresh load can fail here; the
            # next call then reports PluginOutcome.MEMORY again and retries.
            with contextlib.suppress(CompileError):
                old = self._holder
                self._call, self._output, self._lua, self._holder = self._build()
                old.clear()  # the dead runtime is freed as soon as nothing uses it
            self.rebuilds += 1
