"""Reading our JSON log lines in tests."""

from __future__ import annotations

from typing import Any

import orjson


def lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines()]
