"""What a long command shows while it runs: a progress bar on a terminal, periodic lines elsewhere."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import TextIO


class Progress:
    """A one-line bar with counts and ETA on a terminal; plain lines (every ``every`` Pods) otherwise."""

    def __init__(
        self,
        out: TextIO,
        tty: bool | None = None,
        every: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.every = every
        self.clock = clock
        self.start = clock()
        self.drawn = False

    def line(self, text: str) -> None:
        """A per-Pod line; on a terminal it goes above the bar."""
        if self.tty and self.drawn:
            self.out.write("\r\x1b[2K")
            self.drawn = False
        self.out.write(text + "\n")

    def update(self, counts: Counter[str], seen: int, remaining: int | None) -> None:
        if not self.tty and seen % self.every:
            return
        elapsed = self.clock() - self.start
        rate = seen / elapsed if elapsed >= 0.1 else 0.0
        total = seen + remaining if remaining is not None else None
        eta = f"ETA {remaining / rate:.0f}s" if remaining is not None and rate > 0 else "ETA ?"
        done = f"{seen}/{total}" if total is not None else f"{seen}"
        summary = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        if self.tty:
            width = 24
            filled = int(width * seen / total) if total else 0
            bar = "#" * filled + "-" * (width - filled)
            self.out.write(f"\r\x1b[2K[{bar}] {done} Pods  {rate:.0f}/s  {eta}  {summary}".rstrip())
            self.drawn = True
        else:
            self.out.write(
                ", ".join(p for p in (f"progress: {done} Pods", f"{rate:.0f}/s", eta, summary) if p) + "\n"
            )
        self.out.flush()

    def finish(self) -> None:
        if self.tty and self.drawn:
            self.out.write("\r\x1b[2K")
            self.drawn = False
        self.out.flush()
