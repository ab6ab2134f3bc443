"""Our engine against Debian's real lua5.1 + lua-dkjson: same plugins, same Pods, same answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.plugins_support import DATA, Outcome, our_results, reference_results
from webhook.outcomes import PluginOutcome
from webhook.resolution.resolver import plugin_input

pytestmark = pytest.mark.needs("lua5.1")

EXAMPLES = Path(__file__).parent.parent / "examples" / "plugins"
PLUGINS = sorted([*DATA.joinpath("plugins").glob("*.lua"), *EXAMPLES.glob("*.lua")])


def pods() -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = json.loads((DATA / "pods.json").read_text(encoding="utf-8"))
    return loaded


def plugin_inputs() -> list[str]:
    """What plugins get: DeepFlow's shape of each test Pod's metadata."""
    return [plugin_input(p["metadata"], p["namespace"]) for p in pods()]


def corpus() -> list[str]:
    """The plugin inputs and, to keep every JSON shape of the test Pods in play for the engine
    (finalizers, nulls, odd values that DeepFlow's shape leaves out), the whole metadata as well."""
    shaped = plugin_inputs()
    whole = [json.dumps(p["metadata"], ensure_ascii=False, separators=(",", ":")) for p in pods()]
    return shaped + [text for text in whole if text not in shaped]


@pytest.mark.parametrize("prepared", [True, False], ids=["prepared", "bridge"])
@pytest.mark.parametrize("plugin", PLUGINS, ids=[p.stem for p in PLUGINS])
def test_same_results_as_real_lua(plugin: Path, prepared: bool, tmp_path: Path) -> None:
    inputs = corpus()
    ours = our_results(plugin, inputs, prepared)
    reference = reference_results(plugin, inputs, tmp_path)
    for text, mine, theirs in zip(inputs, ours, reference, strict=True):
        if theirs.outcome == PluginOutcome.ERROR and theirs.error is None:  # error object was not a string
            assert mine.outcome == PluginOutcome.ERROR, text
            assert mine.error is not None and "error object is a" in mine.error, text
        else:
            assert mine == theirs, text


def test_corpus_covers_every_outcome(tmp_path: Path) -> None:
    """The differential corpus is only worth something if it exercises all the result kinds."""
    inputs = corpus()
    seen: set[str] = set()
    for plugin in PLUGINS:
        seen.update(o.outcome for o in reference_results(plugin, inputs, tmp_path))
    assert {PluginOutcome.MATCH, PluginOutcome.NO_MATCH, PluginOutcome.ERROR, PluginOutcome.INVALID} <= seen


def test_documentation_example_resolves_opengauss() -> None:
    inputs = plugin_inputs()
    results = our_results(EXAMPLES / "opengauss.lua", inputs)
    assert results[0] == Outcome(PluginOutcome.MATCH, "statefulset", "ogtest")
    assert all(r.outcome == PluginOutcome.NO_MATCH for r in results[1:])
