"""Dead plugin runtimes are freed at once by reference counting, not left to Python's full GC.

Each runtime owns up to its memory cap of Lua memory that Python's GC cannot see; had the
runtime sat in a reference cycle, every reload and every memory-cap rebuild would leave megabytes
behind until a full collection (the soak test saw RSS climb ~20 MiB a minute under reloads).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from webhook.outcomes import PluginOutcome
from webhook.plugins.registry import PluginLimits, PluginRegistry
from webhook.plugins.runtime import PluginRuntime

DECODES = """package.path = package.path..";/bin/?.lua"
local dkjson = require("dkjson")
function GetWorkloadTypeAndName(metaJsonStr)
    local meta = dkjson.decode(metaJsonStr, 1, nil)
    return "", ""
end
"""
BOMB = 'function GetWorkloadTypeAndName(m) local t = {} while true do t[#t + 1] = string.rep("x", 65536) .. #t end end'
META = '{"ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"a-1"}],"labels":{"a":"b"}}'


@pytest.fixture
def garbage() -> Iterator[list[object]]:
    """What the cyclic GC would have had to collect (kept for inspection instead of freed)."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.collect()


def lua_runtimes(objects: list[object]) -> list[str]:
    return [type(o).__name__ for o in objects if type(o).__name__ in ("LuaRuntime", "PluginRuntime")]


def test_a_dropped_runtime_is_not_left_in_a_cycle(garbage: list[object]) -> None:
    rt = PluginRuntime("decodes", DECODES, 5_000_000, 8 << 20)
    assert rt.call(META).outcome == PluginOutcome.NO_MATCH  # the dkjson bridge (the former cycle) has been used
    del rt
    gc.collect()
    assert lua_runtimes(garbage) == []


def test_a_runtime_rebuilt_after_the_memory_cap_frees_the_old_one(garbage: list[object]) -> None:
    rt = PluginRuntime("bomb", BOMB, 5_000_000, 8 << 20)
    assert rt.call(META).outcome == PluginOutcome.MEMORY and rt.rebuilds == 1
    gc.collect()
    assert lua_runtimes(garbage) == []


def test_replaced_plugin_sets_are_freed_on_reload(garbage: list[object]) -> None:
    registry = PluginRegistry(PluginLimits())
    for i in range(6):
        registry.apply({"p": DECODES + f"-- version {i}\n"}, origin="test")
        assert list(registry.current.answers(META)) == []
    gc.collect()
    assert lua_runtimes(garbage) == []
