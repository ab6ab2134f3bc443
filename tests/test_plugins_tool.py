"""`plugin test` and the directory loader used by `resolve --plugins DIR`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from webhook.app import host_settings, plugin_limits
from webhook.commands.plugin_test import FAILED_CALLS_EXIT, add_arguments, run
from webhook.config import Config
from webhook.errors import UserError
from webhook.plugins.hosted import BlockingPluginSet
from webhook.plugins.loading import plugin_set_from_dir
from webhook.resolution.resolver import Resolver


def load_dir(path: str) -> BlockingPluginSet:
    """What `--plugins DIR` loads for an offline command (app.plugin_set_for_cli), with the default settings."""
    config = Config()
    return plugin_set_from_dir(path, host_settings(config), plugin_limits(config).quarantine,
                               config.plugin_max_input_kib * 1024)

EXAMPLES = Path(__file__).parent.parent / "examples" / "plugins"
DATA = Path(__file__).parent / "data"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_plugin_test_prints_one_json_line_per_pod(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    obj = json.loads((DATA / "og-pod.json").read_text())
    obj["metadata"].pop("namespace")
    request = {
        "uid": "1",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE",
        "namespace": "prod",
        "object": obj,
    }
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    (tmp_path / "review.json").write_text(json.dumps(review))
    (tmp_path / "other.json").write_text(json.dumps({"metadata": {"name": "x", "namespace": "n"}}))
    code = run(
        parse(
            [
                str(EXAMPLES / "opengauss.lua"),
                str(DATA / "og-pod.json"),
                str(tmp_path / "review.json"),
                str(tmp_path / "other.json"),
            ]
        ),
        Config(),
    )
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(x["pod"], x["outcome"], x["workloadType"], x["workloadName"], x["accepted"]) for x in lines] == [
        ("default/ogtest-0", "match", "statefulset", "ogtest", "StatefulSet"),
        ("prod/ogtest-0", "match", "statefulset", "ogtest", "StatefulSet"),
        ("n/x", "no-match", None, None, None),
    ]
    assert all(x["micros"] > 0 and x["error"] is None for x in lines)


def test_plugin_test_reports_runtime_errors_with_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin = tmp_path / "oops.lua"
    plugin.write_text(
        'function GetWorkloadTypeAndName(s)\n  print("looking at", #s)\n  return nil .. "x"\nend\n'
    )
    assert run(parse([str(plugin), str(DATA / "og-pod.json")]), Config()) == FAILED_CALLS_EXIT  # a failed call exits non-zero
    line = json.loads(capsys.readouterr().out)
    assert (
        line["outcome"] == "error"
        and line["line"] == 3
        and line["error"].startswith("oops.lua:3: attempt to concat")
    )
    assert line["output"].startswith("looking at\t")


def test_plugin_that_does_not_load_is_one_error(tmp_path: Path) -> None:
    plugin = tmp_path / "bad.lua"
    plugin.write_text("function GetWorkloadTypeAndName(s)\n  return 'a' 'b'\nend\n")
    with pytest.raises(UserError, match=r"plugin 'bad' rejected: bad.lua:2:"):
        run(parse([str(plugin), str(DATA / "og-pod.json")]), Config())
    with pytest.raises(UserError, match="cannot read plugin"):
        run(parse([str(tmp_path / "missing.lua"), str(DATA / "og-pod.json")]), Config())


def test_plugin_set_from_dir(tmp_path: Path) -> None:
    plugins = load_dir(str(EXAMPLES))
    assert plugins.names == ("acme-pipeline", "opengauss", "team-label")
    meta = {
        "name": "r-1",
        "ownerReferences": [
            {"apiVersion": "acme.io/v1", "kind": "PipelineRun", "name": "nightly-run-3", "uid": "u"}
        ],
    }
    found = Resolver().resolve(meta, "ci", plugins)
    assert found is not None and (found.workload_type, found.workload_name, found.resolved_by) == (
        "Job",
        "nightly",
        "plugin:acme-pipeline",
    )
    (tmp_path / "good.lua").write_text('function GetWorkloadTypeAndName(s) return "", "" end')
    (tmp_path / "zbad.lua").write_text("function GetWorkloadTypeAndName(s)")
    with pytest.raises(UserError, match=r"plugin 'zbad' rejected: zbad.lua:1: .*zbad.lua\)$"):
        load_dir(str(tmp_path))
    with pytest.raises(UserError, match="does not exist"):
        load_dir(str(tmp_path / "nope"))
    (tmp_path / "zbad.lua").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(UserError, match=f"^cannot read plugins from {tmp_path}: 'utf-8' codec can't decode"):
        load_dir(str(tmp_path))
