"""Every bound and every known Lua 5.1 escape, against the real engine."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from webhook.outcomes import PluginOutcome
from webhook.plugins.dkjson import parse
from webhook.plugins.registry import PluginLimits, PluginLoadError, compile_plugin
from webhook.plugins.runtime import CallResult, PluginRuntime

META = '{"name":"web-0","namespace":"default","ownerReferences":[{"kind":"ReplicaSet","name":"web-abc"}]}'
DEFINE = "\nfunction GetWorkloadTypeAndName(s) return '', '' end"
HEADER = 'package.path = package.path..";/bin/?.lua"\nlocal dkjson = require("dkjson")\n'
SMALL = PluginLimits(instructions=200_000, memory_bytes=4 << 20)


def plugin(body: str, limits: PluginLimits = SMALL, name: str = "p") -> PluginRuntime:
    source = HEADER + "function GetWorkloadTypeAndName(metaJsonStr)\n" + body + "\nend\n"
    return compile_plugin(name, source, limits).runtime


def run(body: str, limits: PluginLimits = SMALL) -> CallResult:
    return plugin(body, limits).call(META)


def says(body: str) -> str:
    """What a plugin body computed, returned as the workload name."""
    result = run(body)
    assert result.outcome == PluginOutcome.MATCH, result
    return result.workload_name


# ---------------------------------------------------------------- bounds


def test_infinite_loop_hits_the_budget_and_the_runtime_keeps_working() -> None:
    rt = plugin('if metaJsonStr == "loop" then while true do end end\nreturn "Deployment", "ok"')
    result = rt.call("loop")
    assert (result.outcome, result.error) == (PluginOutcome.BUDGET, "instruction budget exceeded")
    assert rt.call(META).outcome == PluginOutcome.MATCH


@pytest.mark.parametrize(
    "trap",
    [
        "while true do pcall(function() while true do end end) end",
        "while true do xpcall(function() while true do end end, function(e) return 'swallowed' end) end",
        "local co = coroutine.create(function() while true do end end)\n"
        "while true do coroutine.resume(co) end",
        "coroutine.wrap(function() while true do end end)()",
        "local function f() return f() end\nwhile true do pcall(f) end",
        "while true do local ok = pcall(string.rep, 'x', 10) end",
    ],
)
def test_budget_cannot_be_swallowed_or_escaped(trap: str) -> None:
    result = run(trap + '\nreturn "Deployment", "escaped"')
    assert result.outcome == PluginOutcome.BUDGET, result


def test_native_decoding_is_charged_to_the_budget() -> None:
    body = (
        'local big = "[" .. string.rep("1,", 400000) .. "1]"\n'
        'for i = 1, 100 do dkjson.decode(big) end\nreturn "Deployment", "decoded"'
    )
    assert run(body, PluginLimits(instructions=1_000_000, memory_bytes=32 << 20)).outcome == PluginOutcome.BUDGET


def test_memory_bomb_hits_the_cap_and_the_runtime_is_rebuilt() -> None:
    rt = plugin(
        'if metaJsonStr == "bomb" then\n'
        'local t = {} while true do t[#t + 1] = string.rep("x", 65536) .. #t end end\n'
        'bombs = (bombs or 0) + 1\nreturn "Deployment", tostring(bombs)',
        PluginLimits(instructions=50_000_000, memory_bytes=4 << 20),
    )
    assert rt.call(META).workload_name == "1"
    result = rt.call("bomb")
    assert (result.outcome, result.error) == (PluginOutcome.MEMORY, "memory cap exceeded")
    assert rt.rebuilds == 1
    # a fresh runtime: the global counter started again
    assert (rt.call(META).outcome, rt.call(META).workload_name) == (PluginOutcome.MATCH, "2")


def test_memory_error_cannot_be_swallowed() -> None:
    body = (
        'local ok = pcall(function() return string.rep("x", 64 * 1024 * 1024) end)\n'
        'return "Deployment", tostring(ok)'
    )
    assert run(body).outcome == PluginOutcome.MEMORY


def test_deep_recursion_is_an_error_not_a_crash() -> None:
    rt = plugin(
        'local function f(n) return 1 + f(n + 1) end\nif metaJsonStr == "deep" then f(1) end\n'
        'return "Deployment", "fine"',
        PluginLimits(instructions=50_000_000),
    )
    result = rt.call("deep")
    assert result.outcome == PluginOutcome.ERROR and result.error is not None and "stack overflow" in result.error
    assert rt.call(META).workload_name == "fine"


@pytest.mark.parametrize(
    ("returns", "outcome"),
    [
        ('"Deployment", string.rep("n", 254)', PluginOutcome.INVALID),
        ('string.rep("T", 254), "name"', PluginOutcome.INVALID),
        ('"Deployment", string.rep("n", 253)', PluginOutcome.MATCH),
        ('"Deployment", {}', PluginOutcome.INVALID),
        ('"Deployment", 7', PluginOutcome.INVALID),
        ('"Deployment"', PluginOutcome.INVALID),
        ("nil", PluginOutcome.INVALID),
        ('"Deployment", "a\\nb"', PluginOutcome.INVALID),
        ('"Deployment", "a\\0b"', PluginOutcome.INVALID),
        ('"Dep\\127", "x"', PluginOutcome.INVALID),
        ('"Deployment", "\\255\\254"', PluginOutcome.INVALID),
        ('"", "name"', PluginOutcome.INVALID),
        ('"", ""', PluginOutcome.NO_MATCH),
        ('"Deployment", "café-日本"', PluginOutcome.MATCH),
    ],
)
def test_return_values_are_validated(returns: str, outcome: str) -> None:
    assert run("return " + returns).outcome == outcome


def test_errors_carry_the_line() -> None:
    result = run('local x = nil\nreturn x.field, "n"')
    assert result.outcome == PluginOutcome.ERROR and result.line == 5
    assert result.error == "p.lua:5: attempt to index local 'x' (a nil value)"


# ---------------------------------------------------------------- load-time rejection


@pytest.mark.parametrize(
    ("source", "fragment", "line"),
    [
        ("function GetWorkloadTypeAndName(s)\n  return 'a' 'b'\nend", "bad.lua:2:", 2),
        ("local x = 1", "does not define the global function GetWorkloadTypeAndName", None),
        ("GetWorkloadTypeAndName = 'not a function'", "does not define", None),
        ("while true do end" + DEFINE, "instruction budget exceeded", None),
        (
            "local t = {} while true do t[#t+1] = string.rep('x', 65536) .. #t end",
            "memory cap exceeded",
            None,
        ),
        ("error('broken on purpose')" + DEFINE, "bad.lua:1: broken", 1),
        ("\x1bLua\x51\x00", "binary chunks are not allowed", None),
        ("require('socket')" + DEFINE, "module 'socket' not found", 1),
    ],
)
def test_bad_plugins_are_rejected_naming_plugin_and_line(
    source: str,
    fragment: str,
    line: int | None,
) -> None:
    with pytest.raises(PluginLoadError) as caught:
        compile_plugin("bad", source, SMALL)
    assert "'bad'" in str(caught.value) and fragment in str(caught.value)
    assert caught.value.line == line


# ---------------------------------------------------------------- escapes


def test_os_is_reduced_to_time_clock_date(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    result = run(f'os.execute("touch {marker}")\nreturn "Deployment", "ran"')
    assert result.outcome == PluginOutcome.ERROR and "execute" in str(result.error)
    assert not marker.exists()
    kinds = says('return "Deployment", type(os.time()) .. type(os.clock()) .. type(os.date("%Y"))')
    assert kinds == "numbernumberstring"
    assert (
        says(
            "local n = {} for k in pairs(os) do n[#n+1] = k end table.sort(n)\n"
            'return "Deployment", table.concat(n, ",")'
        )
        == "clock,date,time"
    )


@pytest.mark.parametrize(
    "expr",
    [
        "io",
        "debug",
        "dofile",
        "loadfile",
        "module",
        "newproxy",
        "python",
        "string.dump",
        '("").dump',
        "package.loadlib",
        "package.loaders",
        "package.loaded.io",
        "package.loaded.debug",
        "package.loaded.python",
        "getfenv(0).debug",
        "getmetatable('').__index.dump",
    ],
)
def test_dangerous_globals_are_gone(expr: str) -> None:
    assert says(f'return "Deployment", type({expr})') == "nil"


def test_files_cannot_be_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.lua"
    secret.write_text("return 'secret'")
    for attempt in (
        f'io.open("{secret}")',
        f'dofile("{secret}")',
        f'loadfile("{secret}")',
        f'require("{secret.with_suffix("")}")',
    ):
        result = run(f"local x = {attempt}\nreturn 'Deployment', tostring(x)")
        assert result.outcome == PluginOutcome.ERROR, attempt


def test_binary_chunks_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "evil.lua"
    src.write_text("return 'bytecode ran'")
    out = tmp_path / "evil.luac"
    subprocess.run(["luac5.1", "-o", str(out), str(src)], check=True)
    bytecode = "".join(f"\\{b}" for b in out.read_bytes())
    assert says(
        f'local f, err = loadstring("{bytecode}")\nreturn "Deployment", tostring(f) .. ":" .. err'
    ) == ("nil:binary chunks are not allowed")
    assert (
        says(
            f'local s, done = "{bytecode}", false\n'
            "local f, err = load(function() if done then return nil end done = true return s end)\n"
            'return "Deployment", tostring(f) .. ":" .. err'
        )
        == "nil:binary chunks are not allowed"
    )
    assert says('return "Deployment", tostring(loadstring("return 6 * 7")())') == "42"


@pytest.mark.parametrize("opt", ["collect", "stop", "restart", "step", "setpause", "setstepmul", None])
def test_collectgarbage_only_counts(opt: str | None) -> None:
    arg = "" if opt is None else f'"{opt}"'
    assert run(f"collectgarbage({arg})\nreturn 'Deployment', 'x'").outcome == PluginOutcome.ERROR
    assert says('return "Deployment", type(collectgarbage("count"))') == "number"


@pytest.mark.parametrize("name", ["io", "os.execute", "debug", "python", "lfs", "socket", "cjson", "ffi"])
def test_require_offers_only_dkjson(name: str) -> None:
    result = run(f'require("{name}")\nreturn "Deployment", "loaded"')
    assert result.outcome == PluginOutcome.ERROR and f"module '{name}' not found" in str(result.error)


def test_require_dkjson_never_touches_the_filesystem(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    (tmp_path / "dkjson.lua").write_text(f'io.open("{marker}", "w"):close()\nreturn {{ version = "fake" }}')
    body = (
        f'package.path = "{tmp_path}/?.lua;" .. package.path\npackage.loaded.dkjson = nil\n'
        'local j = require("dkjson")\nreturn "Deployment", j.version .. ":" .. type(j.decode)'
    )
    assert says(body) == "dkjson 2.6:function"
    assert not marker.exists()


def test_string_metatable_and_globals_are_per_plugin() -> None:
    vandal = plugin(
        'getmetatable("").__index = function() return function() return "pwned" end end\n'
        'string.upper = nil\nipairs = nil\nshared = "from vandal"\n'
        'return "Deployment", ("x"):upper()',
        name="vandal",
    )
    victim = plugin(
        'return "Deployment", ("x"):upper() .. string.upper("y") .. type(ipairs) .. tostring(shared)',
        name="victim",
    )
    assert vandal.call(META).workload_name == "pwned"
    assert victim.call(META).workload_name == "XYfunctionnil"


def test_tampering_with_the_engine_from_inside_changes_nothing() -> None:
    rt = plugin(
        "if not tampered then tampered = true\n"
        "pcall(setfenv, dkjson.decode, {})\n"
        "string.find, string.sub, string.gsub, error, type, setmetatable, tostring = nil\n"
        "pcall, xpcall, select, pairs, next, rawget, rawset = nil\n"
        'pcall = nil\nreturn "Deployment", "tampered" end\n'
        'local t = dkjson.decode(metaJsonStr)\nreturn "Deployment", t.name .. "\\0"'
    )
    assert rt.call(META).workload_name == "tampered"
    # our own code keeps its private references: decode and result validation still work
    assert rt.call(META).outcome == PluginOutcome.INVALID


def test_python_objects_are_unreachable() -> None:
    assert (
        says(
            'local n = 0 for k, v in pairs(_G) do if type(v) == "userdata" then n = n + 1 end end\n'
            'return "Deployment", tostring(n)'
        )
        == "0"
    )


@pytest.mark.parametrize("prepared", [True, False])
def test_metadata_too_big_for_the_cap_is_a_memory_outcome(prepared: bool) -> None:
    """Never a Lua panic: lupa pushes outside protected mode, so the engine checks headroom first."""
    rt = plugin(
        'local t = dkjson.decode(metaJsonStr)\nreturn "Deployment", tostring(t.name)',
        PluginLimits(instructions=200_000_000, memory_bytes=2 << 20),
    )
    bigger_than_cap = json.dumps({"name": "big", "labels": {f"label-{i}": "v" * 40 for i in range(40_000)}})
    result = rt.call(bigger_than_cap.encode(), parse(bigger_than_cap) if prepared else None)
    assert (result.outcome, result.error, rt.rebuilds) == (PluginOutcome.MEMORY, "metadata too large for the memory cap", 0)
    # fits as text, but its tables would not: built by the Lua scanner, which fails cleanly
    many_tables = json.dumps({"name": "tables", "items": [{} for _ in range(50_000)]})
    result = rt.call(many_tables.encode(), parse(many_tables) if prepared else None)
    assert (result.outcome, rt.rebuilds) == (PluginOutcome.MEMORY, 1)
    small = '{"name":"small"}'
    assert rt.call(small.encode(), parse(small) if prepared else None).workload_name == "small"
