"""Our `dkjson` against Debian's real dkjson.lua: decode of hard JSON, byte for byte."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.plugins_support import DUMP, lua_reference
from webhook.outcomes import PluginOutcome
from webhook.plugins.dkjson import parse, refused
from webhook.plugins.runtime import PluginRuntime

pytestmark = pytest.mark.needs("lua5.1")

HARD = [
    '{"a":"\\u00e9\\u65e5\\ud83d\\ude80","b":"\\ud800x","c":"\\udc00","d":"\\u0000","e":"\\/\\b\\f\\n\\r\\t\\q"}',
    "[[[[[]]]],[[]],[null,null],[1,null,3],[null],{},[{}]]",
    '{"big":12345678901234567890,"bigger":1e400,"neg":-1e400,"tiny":5e-324,"max":9007199254740993,'
    '"i64":9223372036854775807,"u64":18446744073709551615,"negzero":-0,"negzerof":-0.0,"exp":1E+2,"frac":0.1}',
    '{"n":null,"a":[1,2,null],"o":{"x":null}}',
    "null",
    "true",
    " false ",
    '"str"',
    "42",
    "-0",
    '  {"a":1}  \n',
    '{"a":1} trailing',
    "[1,2,]",
    '{"a" 1}',
    '{"a":1,"a":2,"a":null}',
    "[1 2 3]",
    '{"1":"one","2":"two"}',
    "{1:2}",
    '// comment\n{"a": /* inline */ 1}',
    '\ufeff{"bom":true}',
    '{"a":',
    "[1,2",
    '"unterminated',
    '{"a":tru}',
    "",
    "   ",
    '{"x":NaN}',
    "[.5, -.5, 1., 01, 1.2.3]",
    '{"a":1}\n{"b":2}',
    '{"deep":' + "[" * 60 + "]" * 60 + "}",
    '{"k":"' + "x" * 3000 + '"}',
    '{"labels":{"app":"web","tier":"front"},"ownerReferences":[{"kind":"ReplicaSet","name":"web-1","controller":true}]}',
    '{"name":"ogtest-0","n":-0.5,"z":0,"e":[0,-1,2.5e-3]}',
    '{"emoji":"🚀","raw":"日本語","mixed":"a\\u0000b"}',
    '{"ctl":"tab\there"}',
    '[true,false,null,"null"]',
    '{"":"empty key"}',
]

REAL = f"""
package.path = "/usr/share/lua/5.1/?.lua;" .. package.path
dofile("{DUMP}")
local dkjson = require("dkjson")
for line in io.lines(arg[1]) do
  local text = (string.gsub(line, "%x%x", function(h) return string.char(tonumber(h, 16)) end))
  io.write(DumpDecode(dkjson, text), "\\n")
end
"""


def ours(texts: list[str], prepared: bool = False) -> list[str]:
    """Through the bridge (the plugin's decode calls Python), or, ``prepared``, as on the request
    path: the document laid out once and its tables built before the call."""
    source = DUMP.read_text() + (
        'local dkjson = require("dkjson")\n'
        "function GetWorkloadTypeAndName(text)\n"
        '  return "dump", (string.gsub(DumpDecode(dkjson, text), "%c", "?"))\n'
        "end\n"
    )
    runtime = PluginRuntime("dump", source, 50_000_000, 64 << 20, max_value_bytes=1 << 20)
    out = []
    for text in texts:
        result = runtime.call(text.encode(), parse(text) if prepared else None)
        assert result.outcome == PluginOutcome.MATCH, result
        out.append(result.workload_name)
    return out


def reference(texts: list[str], tmp: Path) -> list[str]:
    return [line.replace("\t", "?") for line in lua_reference(REAL, texts, tmp)]


def test_hard_json_decodes_exactly_like_real_dkjson(tmp_path: Path) -> None:
    expected = reference(HARD, tmp_path)
    assert ours(HARD) == expected
    assert ours(HARD, prepared=True) == expected


def test_the_fast_path_is_really_taken_for_plain_metadata() -> None:
    """Otherwise the differential test above would only be comparing the Lua scanner."""
    fast = [t for t in HARD if parse(t) is not None]
    assert len(fast) >= 8
    assert parse('{"name":"ogtest-0","ownerReferences":[{"kind":"X"}]}') is not None


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=st.lists(json_values, min_size=1, max_size=20))
def test_random_documents_decode_like_real_dkjson(docs: list[object], tmp_path: Path) -> None:
    texts = [json.dumps(d, ensure_ascii=ascii_) for d in docs for ascii_ in (True, False)]
    expected = reference(texts, tmp_path)
    assert ours(texts) == expected
    assert ours(texts, prepared=True) == expected


ENCODE = DUMP.parent / "encode_cases.lua"


def test_encode_matches_real_dkjson(tmp_path: Path) -> None:
    source = ENCODE.read_text() + (
        'local dkjson = require("dkjson")\n'
        'function GetWorkloadTypeAndName(text) return "encode", EncodeCases(dkjson) end\n'
    )
    runtime = PluginRuntime("encode", source, 50_000_000, 64 << 20, max_value_bytes=1 << 20)
    result = runtime.call("{}")
    assert result.outcome == PluginOutcome.MATCH, result
    real = f"""
package.path = "/usr/share/lua/5.1/?.lua;" .. package.path
dofile("{ENCODE}")
io.write(EncodeCases(require("dkjson")), "\\n")
"""
    assert [result.workload_name] == lua_reference(real, [], tmp_path)


# The single regex the refusal checks replaced (it cost ~20 µs per new document): the specification.
SINGLE_REGEX = re.compile(r"\[\s*(?:\]|null)|(?:^|[:\[,])\s*(?:-?\d{19}|-0(?![\d.eE]))")
tricky_numbers = st.sampled_from([0, -0.0, 1234567890123456789, -1234567890123456789, 10**19, -(10**25), 0.5, -0.5])
spaced = st.sampled_from(["", " ", "\n\t ", "\r"])


@settings(max_examples=300, deadline=None)
@given(doc=st.recursive(json_values | tricky_numbers | st.sampled_from(["web-0", "-0", "x:-0", "[]", "1234567890123456789"]),
                        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
                        max_leaves=15),
       indent=spaced)
def test_refusals_agree_with_the_single_regex_they_replaced(doc: object, indent: str) -> None:
    """ASCII text (as the API server sends, non-ASCII escaped): the fast checks refuse exactly what the
    old regex refused, including numbers after JSON whitespace and "-0" inside strings."""
    text = json.dumps(doc, ensure_ascii=True, separators=("," + indent, ":" + indent))
    assert refused(text) == (SINGLE_REGEX.search(text) is not None), text
