"""Settings precedence and validation, and the README table generated from the same declarations."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tools.readme_settings import render
from webhook.config import ConfigError, load

ROOT = Path(__file__).resolve().parent.parent


def test_flag_beats_env_beats_file_beats_default(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"port": 9000, "prefix": "file.io/", "logLevel": "debug", "pluginsFirst": True}))
    env = {"WORKLOAD_TAGGER_PORT": "9100", "WORKLOAD_TAGGER_PREFIX": "env.io/"}
    cfg = load(str(f), {"port": "9200"}, env)
    assert (cfg.port, cfg.prefix, cfg.log_level, cfg.plugins_first, cfg.workers) == (9200, "env.io/", "debug", True, 1)


def test_config_file_named_by_env(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("port: 9443\n")
    assert load(None, {}, {"WORKLOAD_TAGGER_CONFIG": str(f)}).port == 9443


@pytest.mark.parametrize("env,message", [
    ({"WORKLOAD_TAGGER_PORT": "http"}, "WORKLOAD_TAGGER_PORT: invalid value for port"),
    ({"WORKLOAD_TAGGER_PORT": "70000"}, "out of range"),
    ({"WORKLOAD_TAGGER_PLUGINS_FIRST": "maybe"}, "not a boolean"),
    ({"WORKLOAD_TAGGER_PLUGIN_SOURCE": "s3"}, "pluginSource must be"),
    ({"WORKLOAD_TAGGER_PLUGIN_SOURCE": "directory"}, "needs pluginsDir"),
    ({"WORKLOAD_TAGGER_LOG_LEVEL": "loud"}, "logLevel"),
])
def test_bad_values_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(None, {}, env)


@pytest.mark.parametrize("content,message", [("- a\n", "must hold a mapping"), ("a: [", "not valid YAML"),
                                             ("port: [1]\n", "invalid value for port")])
def test_bad_files_are_named(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load(str(f), {}, {})


def test_plugin_source_auto() -> None:
    assert load(None, {}, {}).effective_plugin_source() in {"none", "configmap"}
    assert load(None, {"plugins_dir": "x"}, {}).plugins_dir == "x"


def test_readme_settings_table_is_current() -> None:
    readme = (ROOT / "README.md").read_text()
    assert render(readme) == readme, "run `make docs` to regenerate the README settings table"
