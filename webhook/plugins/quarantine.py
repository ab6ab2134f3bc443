"""Quarantine: a per-plugin circuit breaker for plugins that keep running into their bounds.

Why: each call is bounded (instruction budget, memory cap, wall-clock limit), but a plugin that
loops, bombs memory or hangs on every Pod still spends its whole bound on every review that
reaches the plugins (a hang also costs a plugin host), and those reviews wait for it. After
``after`` consecutive *costly* failures (budget or memory: the outcomes that cost the full bound;
a timeout or a crash of the plugin host: both kill a process; an error or an invalid return is
cheap) the plugin is skipped for ``seconds``; then one call is
let through as a trial: a costly failure again doubles the quarantine (up to
:data:`MAX_SECONDS`), anything else lifts it and resets the length.

What it costs the cluster: while a plugin is quarantined, Pods it would have claimed are not
tagged by it (the next plugin may still answer). Both are counted (outcome ``quarantined`` and
the ``plugin_quarantined`` gauge), and `audit`/`backfill` repair the Pods afterwards. A plugin
whose source changes gets a fresh breaker with its new runtime.

Not locked: the server records plugin outcomes on its one event-loop thread; elsewhere (offline
commands) a race can at worst let one extra trial call through.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from webhook.outcomes import PluginOutcome

# The outcomes that cost the whole bound of a call: instructions, memory, wall-clock time (the host
# was killed), or the host itself (it died during the call and had to be replaced).
COSTLY = frozenset({PluginOutcome.BUDGET, PluginOutcome.MEMORY, PluginOutcome.TIMEOUT, PluginOutcome.CRASH})
MAX_SECONDS = 600.0

# What a recorded outcome changed, for the log line and the gauge.
ENTERED, LIFTED = "entered", "lifted"


@dataclass(frozen=True)
class QuarantinePolicy:
    """``after`` 0 turns quarantine off."""

    after: int = 5
    seconds: float = 30.0


class Breaker:
    __slots__ = ("clock", "failures", "length", "policy", "until")

    def __init__(self, policy: QuarantinePolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.clock = clock
        self.failures = 0  # consecutive costly failures
        self.until: float | None = None  # quarantined until this clock() value; None: closed
        self.length = policy.seconds

    def allows(self) -> bool:
        """Whether the next call may run: always when closed, else once the quarantine is over (the trial)."""
        until = self.until
        return until is None or self.clock() >= until

    @property
    def quarantined(self) -> bool:
        """True while calls are being skipped (the trial window, once reached, is not)."""
        return not self.allows()

    def record(self, outcome: PluginOutcome) -> str | None:
        """Account for one call's outcome; returns :data:`ENTERED` or :data:`LIFTED` on a change."""
        if outcome not in COSTLY:
            self.failures = 0
            if self.until is None:
                return None
            self.until, self.length = None, self.policy.seconds  # the trial went well
            return LIFTED
        self.failures += 1
        if self.until is not None:  # the trial failed: quarantine again, for longer
            self.length = min(self.length * 2, max(MAX_SECONDS, self.policy.seconds))
            self.until = self.clock() + self.length
            return ENTERED
        if self.policy.after and self.failures >= self.policy.after:
            self.until = self.clock() + self.length
            return ENTERED
        return None
