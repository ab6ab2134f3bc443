"""System tools some tests use as references (real Lua 5.1 + dkjson, Prometheus, wrk).

`make test` installs them all. On a developer's machine without one, the tests that need it skip
with a reason (``@pytest.mark.needs("lua5.1")``); under ``CI=true`` they run regardless and fail
loudly, so CI can never pass by skipping them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

DKJSON = Path("/usr/share/lua/5.1/dkjson.lua")

TOOLS: dict[str, Callable[[], bool]] = {
    "lua5.1": lambda: shutil.which("lua5.1") is not None and DKJSON.is_file(),
    "prometheus": lambda: shutil.which("prometheus") is not None and shutil.which("promtool") is not None,
    "wrk": lambda: shutil.which("wrk") is not None,
}
INSTALL = "`make system-deps` installs it (Debian packages lua5.1 lua-dkjson prometheus wrk)"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing(tools: tuple[str, ...]) -> list[str]:
    """The named tools that are not on this machine (an unknown name is a mistake in the test)."""
    return [tool for tool in tools if not TOOLS[tool]()]
