"""Retry pacing for watches (plugin sources, owner caches): exponential, capped, jittered so replicas do not retry in lock-step."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry number ``attempt`` (0-based): ``initial_s * factor**attempt``, capped, ±jitter."""

    initial_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2

    def delay(self, attempt: int) -> float:
        base = min(self.max_s, self.initial_s * self.factor ** min(attempt, 64))
        return max(0.0, base * (1.0 + random.uniform(-self.jitter, self.jitter)))
