"""Regenerate the README's settings table from webhook.config (`make docs`)."""

from __future__ import annotations

import re
from pathlib import Path

from webhook.config import settings_table

START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def render(readme: str) -> str:
    return re.sub(f"{START}.*?{END}", f"{START}\n{settings_table()}\n{END}", readme, flags=re.S)


if __name__ == "__main__":
    path = Path(__file__).resolve().parent.parent / "README.md"
    path.write_text(render(path.read_text()))
