"""Client-side rate limits for the commands that write to (or list from) a live cluster."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class Limiter(Protocol):
    def acquire(self) -> None: ...


class NoLimit:
    def acquire(self) -> None:
        pass


class TokenBucket:
    """At most ``burst`` requests at once, refilled at ``qps`` per second (client-go's limiter)."""

    def __init__(
        self,
        qps: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError("qps must be > 0 and burst >= 1")
        self.qps, self.burst = qps, burst
        self.clock, self.sleep = clock, sleep
        self.tokens = float(burst)
        self.stamp = clock()

    def acquire(self) -> None:
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.qps)
        self.stamp = now
        if self.tokens < 1.0:
            wait = (1.0 - self.tokens) / self.qps
            self.sleep(wait)
            self.stamp = self.clock()
            self.tokens = 1.0
        self.tokens -= 1.0
