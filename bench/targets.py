"""The issue's targets as rows every benchmark can hand back, printed together at the end of `make bench`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    met: bool


def render(targets: Sequence[Target]) -> str:
    width = max((len(t.name) for t in targets), default=10)
    mwidth = max((len(t.measured) for t in targets), default=10)
    lines = ["targets", f"{'target':{width}} | {'measured':{mwidth}} | met", f"{'-' * width}-+-{'-' * mwidth}-+----"]
    lines += [f"{t.name:{width}} | {t.measured:{mwidth}} | {'yes' if t.met else 'NO'}" for t in targets]
    return "\n".join(lines)
