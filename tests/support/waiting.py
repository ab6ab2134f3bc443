"""Waiting for something that happens in another thread, process or task, with a bound."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


def wait_for(
    predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition", interval: float = 0.01
) -> None:
    """Return once ``predicate()`` is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Like :func:`wait_for` but yields to the event loop (servers under test may run on it)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


async def eventually_async(
    check: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = "condition", interval: float = 0.1
) -> None:
    """Like :func:`eventually` for a check that must itself await (an HTTP call to the server under test)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
