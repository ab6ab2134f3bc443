"""Admission logging through the real JSON log setup and a real TLS webhook.

At the default level a healthy request writes nothing (a busy cluster admits thousands of Pods
a minute); a failed one writes exactly one JSON line that carries the request uid.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import orjson

from tests.support.logs import lines
from tests.support.running_webhook import cloneset_pod, deployment_pod, pod_review, running_webhook
from webhook import logs
from webhook.plugins import PluginAnswer


class CrashOnLabel:
    """Raises out of the plugin set for Pods labelled ``crash`` (an engine bug), answers nothing otherwise."""

    names = ("crashy",)

    def answers(self, meta_json: str, deadline: float | None = None) -> Iterator[PluginAnswer]:
        if "crash" in orjson.loads(meta_json).get("labels", {}):
            raise RuntimeError("engine bug")
        return iter(())


def test_only_failed_reviews_log_and_their_line_carries_the_uid(
    tmp_path: Path, log_stream: io.StringIO
) -> None:
    with running_webhook(tmp_path, CrashOnLabel, dt.timedelta(days=30)) as hook:
        start = log_stream.tell()
        assert "patch" in hook.review(deployment_pod("ok-mutated"))["response"]
        assert "patch" in hook.review(cloneset_pod("ok-cloneset"))["response"]
        assert "patch" not in hook.review(pod_review("ok-unchanged", name="bare"))["response"]
        update = deployment_pod("ok-skipped")
        update["request"]["operation"] = "UPDATE"
        assert "patch" not in hook.review(update)["response"]
        crash = hook.review(pod_review("uid-crash-1", labels={"crash": "1"}))["response"]
        assert crash == {"uid": "uid-crash-1", "allowed": True}
        status, _ = hook.post(b"not json at all")
        assert status == 400
        during = lines(log_stream.getvalue()[start:])

    # Every line is one JSON object with the common fields.
    for entry in during:
        assert {"ts", "level", "logger", "msg"} <= set(entry), entry
    assert not [e for e in during if str(e.get("uid", "")).startswith("ok-")], during
    errors = [e for e in during if e["level"] == "error"]
    assert len(errors) == 1, during
    assert errors[0]["uid"] == "uid-crash-1"
    assert "RuntimeError: engine bug" in errors[0]["error"]
    warnings = [e for e in during if e["level"] == "warning"]
    assert len(warnings) == 1 and "not valid JSON" in warnings[0]["error"], during
    assert len(during) == 2, during  # nothing for the four healthy reviews


def test_log_level_is_configurable(log_stream: io.StringIO) -> None:
    logs.setup("warning")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(log_stream)
    log = logging.getLogger("workload_tagger.test")
    log.info("hidden at warning", extra={"uid": "u1"})
    log.warning("shown at warning", extra={"uid": "u2"})
    logs.setup("debug")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(log_stream)
    log.debug("shown at debug", extra={"uid": "u3"})
    got = lines(log_stream.getvalue())
    assert [(e["msg"], e["uid"], e["level"]) for e in got] == [
        ("shown at warning", "u2", "warning"),
        ("shown at debug", "u3", "debug"),
    ]


def test_big_integers_in_log_fields_are_written_exactly() -> None:
    import json as _json
    import logging as _logging

    from webhook.logs import JsonFormatter

    record = _logging.LogRecord("t", _logging.INFO, __file__, 1, "serving certificate loaded", None, None)
    record.serial = 2**150 + 7
    line = JsonFormatter().format(record)
    assert _json.loads(line)["serial"] == 2**150 + 7
