"""The CLI as a user runs it: a real `python -m webhook` process from the project root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", *args], cwd=ROOT, input=stdin, capture_output=True, text=True,
        timeout=60, env=env,
    )
