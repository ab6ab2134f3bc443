"""Which event loop `serve` runs on: uvloop when installed (the bench shows ~10 us less CPU per review)."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from webhook.admission.server import event_loop_factory
from webhook.config import ConfigError, load


def test_auto_and_uvloop_choose_uvloop_asyncio_chooses_the_default() -> None:
    for choice in ("auto", "uvloop"):
        factory = event_loop_factory(choice)
        assert factory is not None
        loop = factory()
        try:
            assert isinstance(loop, uvloop.Loop)
        finally:
            loop.close()
    assert event_loop_factory("asyncio") is None
    with asyncio.Runner(loop_factory=event_loop_factory("asyncio")) as runner:
        assert not isinstance(runner.get_loop(), uvloop.Loop)


def test_config_rejects_unknown_loops_and_negative_drain() -> None:
    with pytest.raises(ConfigError, match="eventLoop"):
        load(flags={"event_loop": "trio"}, environ={})
    with pytest.raises(ConfigError, match="shutdownDrainSeconds"):
        load(flags={"shutdown_drain_s": -1}, environ={})
    assert load(environ={"WORKLOAD_TAGGER_SHUTDOWN_DRAIN_S": "0.5"}).shutdown_drain_s == 0.5
