"""Plugin fakes shared by the engine, registry, resolver and quarantine tests: small plugins in
source form, an observer that records what the engine reports, a plugin set that answers from a list."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from webhook.outcomes import PluginOutcome
from webhook.plugins import PluginAnswer
from webhook.plugins.registry import PluginLimits

META = '{"name":"w-0","namespace":"default","ownerReferences":[{"kind":"Widget","name":"w"}]}'
LIMITS = PluginLimits(instructions=200_000, memory_bytes=4 << 20)


def answering(wtype: str, name: str) -> str:
    return f'function GetWorkloadTypeAndName(s) return "{wtype}", "{name}" end'


NOT_MINE = 'function GetWorkloadTypeAndName(s) return "", "" end'
BROKEN = "function GetWorkloadTypeAndName(s)\n  return 'a' 'b'\nend"


class Recorder:
    def __init__(self) -> None:
        self.evaluations: list[tuple[str, str]] = []
        self.failures: list[tuple[str, str]] = []
        self.sets: list[dict[str, str]] = []
        self.quarantines: list[tuple[str, bool]] = []

    def evaluated(self, plugin: str, outcome: str, seconds: float) -> None:
        assert seconds >= 0
        self.evaluations.append((plugin, outcome))

    def skipped(self, plugin: str) -> None:
        self.evaluations.append((plugin, PluginOutcome.QUARANTINED))

    def quarantine_changed(self, plugin: str, quarantined: bool) -> None:
        self.quarantines.append((plugin, quarantined))

    def load_failed(self, plugin: str, error: str) -> None:
        self.failures.append((plugin, error))

    def set_loaded(self, plugins: Mapping[str, str]) -> None:
        self.sets.append(dict(plugins))


class Recording:
    """A PluginSet that answers from a list and remembers what it was asked and how far it got."""

    def __init__(self, answers: list[tuple[str, str, str]]) -> None:
        self._answers = answers
        self.names = tuple(a[0] for a in answers)
        self.inputs: list[str] = []
        self.consumed = 0

    def answers(self, meta_json: str, deadline: float | None = None) -> Iterator[PluginAnswer]:
        self.inputs.append(meta_json)
        for name, wtype, wname in self._answers:
            self.consumed += 1
            yield PluginAnswer(name, wtype, wname)
