"""Running plugins both ways: in our engine and in Debian's real lua5.1 + lua-dkjson."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from webhook.outcomes import PluginOutcome
from webhook.plugins.dkjson import parse
from webhook.plugins.runtime import MAX_VALUE_BYTES, CallResult, PluginRuntime, chunk_name

DATA = Path(__file__).parent.parent / "data"
REFERENCE = DATA / "reference.lua"
DUMP = DATA / "dump.lua"
LUA = "lua5.1"


@dataclass(frozen=True)
class Outcome:
    """A result both engines can be compared on."""

    outcome: str
    workload_type: str = ""
    workload_name: str = ""
    error: str | None = None


def _unhex(field: str) -> bytes:
    return bytes.fromhex(field[1:])


def expected_outcome(line: str) -> Outcome:
    """What our engine must report for one raw reference result, by the issue's rules."""
    parts = line.split(" ")
    if parts[0] == "error":
        message = _unhex(parts[1]).decode("utf-8", "replace") if parts[1].startswith("x") else None
        return Outcome(PluginOutcome.ERROR, error=message)
    _, type_a, type_b, hex_a, hex_b = parts
    if type_a != "string" or type_b != "string":
        return Outcome(PluginOutcome.INVALID)
    a, b = _unhex(hex_a), _unhex(hex_b)
    if a == b"" and b == b"":
        return Outcome(PluginOutcome.NO_MATCH)
    if a == b"" or b == b"" or len(a) > MAX_VALUE_BYTES or len(b) > MAX_VALUE_BYTES:
        return Outcome(PluginOutcome.INVALID)
    if any(c < 32 or c == 127 for c in a + b):
        return Outcome(PluginOutcome.INVALID)
    try:
        return Outcome(PluginOutcome.MATCH, a.decode(), b.decode())
    except UnicodeDecodeError:
        return Outcome(PluginOutcome.INVALID)


def reference_results(plugin: Path, inputs: list[str], tmp: Path) -> list[Outcome]:
    """One real lua5.1 process per plugin, so global state carries across calls as in our runtime."""
    assert all("\n" not in text for text in inputs)
    feed = tmp / f"{plugin.stem}.inputs"
    feed.write_text("".join(text + "\n" for text in inputs), encoding="utf-8")
    done = subprocess.run(
        [LUA, str(REFERENCE), str(plugin), chunk_name(plugin.stem), str(feed)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert len(lines) == len(inputs), done.stderr
    return [expected_outcome(line) for line in lines]


def our_outcome(result: CallResult) -> Outcome:
    if result.outcome == PluginOutcome.MATCH:
        return Outcome(PluginOutcome.MATCH, result.workload_type, result.workload_name)
    if result.outcome == PluginOutcome.ERROR:
        return Outcome(PluginOutcome.ERROR, error=result.error)
    return Outcome(result.outcome)


def our_results(plugin: Path, inputs: list[str], prepared: bool = True) -> list[Outcome]:
    """``prepared``: the request path (document parsed once, tables built before the call);
    otherwise the plugin's decode reaches Python through the bridge."""
    runtime = PluginRuntime(plugin.stem, plugin.read_text(encoding="utf-8"), 2_000_000, 8 << 20)
    return [our_outcome(runtime.call(text.encode(), parse(text) if prepared else None)) for text in inputs]


def lua_reference(script: str, inputs: list[str], tmp: Path) -> list[str]:
    """Run a Lua script with real lua5.1; it gets the path of a file of hex-encoded inputs as arg[1]."""
    feed = tmp / "hex.inputs"
    feed.write_text("".join(text.encode().hex() + "\n" for text in inputs), encoding="ascii")
    prog = tmp / "prog.lua"
    prog.write_text(script, encoding="utf-8")
    done = subprocess.run([LUA, str(prog), str(feed)], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.splitlines()
