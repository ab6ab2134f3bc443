"""The one vocabulary of outcomes: what the handler, the plugin engine and the metrics say happened.

Each is a ``StrEnum``, so a member is its label value: the metrics use members as Prometheus
label values directly, and a test or a log line compares them with plain strings. Adding a
member here is the whole change for the metrics too: their label sets are built from these.
"""

from __future__ import annotations

from enum import StrEnum


class ReviewOutcome(StrEnum):
    """How one AdmissionReview was answered (every answer but ``INVALID`` is "allowed")."""

    MUTATED = "mutated"  # a patch was sent
    UNCHANGED = "unchanged"  # a Pod we looked at, with nothing to add
    SKIPPED = "skipped"  # not a Pod CREATE: not looked at
    ERROR = "error"  # our own failure: allowed without a patch
    TIMEOUT = "timeout"  # the review budget ran out: allowed without a patch
    UNPATCHABLE = "unpatchable"  # the patched Pod would be refused by the API server: allowed without a patch
    INVALID = "invalid"  # not an AdmissionReview we can answer: HTTP 400


class PluginOutcome(StrEnum):
    """What one plugin call came to."""

    MATCH = "match"  # a non-empty (type, name)
    NO_MATCH = "no-match"  # ("", ""): not this plugin's Pod
    ERROR = "error"  # a Lua error
    BUDGET = "budget"  # out of its instruction budget
    MEMORY = "memory"  # out of its memory limit
    INVALID = "invalid"  # a return value outside the contract
    TIMEOUT = "timeout"  # past its wall-clock limit: the plugin host was killed (webhook/plugins/host.py)
    CRASH = "crash"  # the plugin host died during the call and was replaced
    QUARANTINED = "quarantined"  # not called: the plugin is quarantined (counted, not evaluated)
