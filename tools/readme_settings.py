"""Regenerate the README's generated tables from the code (`make docs`): the settings table from
webhook.config and the OpenTelemetry mapping table from webhook.admission.otel."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from webhook.admission.otel import mapping_table
from webhook.config import settings_table

START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"
TABLES: tuple[tuple[str, Callable[[], str]], ...] = (("settings-table", settings_table), ("otel-table", mapping_table))


def render(readme: str) -> str:
    for name, table in TABLES:
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        readme = re.sub(f"{start}.*?{end}", lambda _m, s=start, e=end, t=table: f"{s}\n{t()}\n{e}", readme, flags=re.S)
    return readme


if __name__ == "__main__":
    path = Path(__file__).resolve().parent.parent / "README.md"
    path.write_text(render(path.read_text()))
