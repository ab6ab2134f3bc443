"""``plugin create|list|delete`` with the real ``kubernetes`` client, reached through a kubeconfig.

kmock 0.8 serves the round trip; the aiohttp fake (tests/support/fakeapi.py) serves what kmock does
not emulate: resourceVersion conflicts (409), races on creation, 403. Plugins are checked by the
real Lua engine (``manage.engine_validator``), as ``plugin create`` does for the user.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import socket
from pathlib import Path
from typing import Any

import kmock as kmock_lib
import pytest
from kubernetes.config import kube_config

from tests.support.fakeapi import FakeConfigMapAPI, core_api, write_kubeconfig
from webhook.cluster.client import api_client as kube_api_client
from webhook.commands import plugin_manage as manage
from webhook.config import Config
from webhook.errors import UserError
from webhook.plugins.registry import PluginLoadError

NS, NAME = "tagger", "workload-tagger-plugins"
HELLO = 'function GetWorkloadTypeAndName(m) return "Deployment", "hello" end\n'
HELLO2 = 'function GetWorkloadTypeAndName(m) return "StatefulSet", "hello" end\n'
BYE = 'function GetWorkloadTypeAndName(m) return "", "" end\n'
BROKEN = "return 42\n"  # compiles, but never defines the entry function
SYNTAX = 'function GetWorkloadTypeAndName(m)\n  return "Deployment" "x"\nend\n'
FAILS = 'function GetWorkloadTypeAndName(m)\n  local owner = nil\n  return owner.kind, ""\nend\n'
# About 3 Lua 5.1 instructions per iteration: 60k iterations need ~180k instructions.
LOOPS = 'function GetWorkloadTypeAndName(m)\n  local n = 0\n  for i = 1, 60000 do n = n + i end\n  return "", ""\nend\n'
# Builds a ~4 MiB string: fits a 16 MiB cap, not a 2 MiB one.
ALLOCATES = 'function GetWorkloadTypeAndName(m)\n  local s = string.rep("x", 4 * 1024 * 1024)\n  return "", ""\nend\n'


def parse(command: str, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"workload-tagger plugin {command}")
    getattr(manage, f"add_{command}_arguments")(parser)
    return parser.parse_args(argv)


def config_for(url: str, tmp_path: Path) -> Config:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url, namespace="ignored")
    return Config(kubeconfig=str(kubeconfig), configmap_namespace=NS, configmap_name=NAME)


def plugin_file(tmp_path: Path, name: str, source: str) -> str:
    path = tmp_path / f"{name}.lua"
    path.write_text(source)
    return str(path)


def create(config: Config, tmp_path: Path, name: str, source: str, *extra: str) -> int:
    image = plugin_file(tmp_path, name, source)
    args = parse("create", ["--type", "lua", "--image", image, "--name", name, *extra])
    return manage.run_create(args, config)


def list_json(config: Config, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert manage.run_list(parse("list", ["--format", "json"]), config) == 0
    result: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return result


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_create_list_delete_round_trip(
    kmock: kmock_lib.KubernetesEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kmock.resources["v1/configmaps"] = {}
    config = config_for(str(kmock.url), tmp_path)
    api = core_api(str(kmock.url))

    def scenario() -> None:
        # The ConfigMap does not exist yet: create makes it.
        assert create(config, tmp_path, "hello", HELLO) == 0
        assert capsys.readouterr().out == f"plugin hello created in configmap {NS}/{NAME}\n"
        stored = api.read_namespaced_config_map(NAME, NS, _request_timeout=2)
        assert stored.data == {"hello.lua": HELLO}
        assert stored.metadata.labels == {"app.kubernetes.io/managed-by": "workload-tagger"}

        assert create(config, tmp_path, "bye", BYE) == 0
        assert "plugin bye added" in capsys.readouterr().out
        assert create(config, tmp_path, "hello", HELLO) == 0
        assert "plugin hello unchanged" in capsys.readouterr().out
        assert create(config, tmp_path, "hello", HELLO2) == 0
        assert "plugin hello updated" in capsys.readouterr().out
        # Someone stores a plugin that does not load, bypassing the CLI, plus an unrelated key.
        api.patch_namespaced_config_map(
            NAME, NS, {"data": {"broken.lua": BROKEN, "notes.txt": "hi"}}, _request_timeout=2
        )

        assert list_json(config, capsys) == [
            {"name": "broken", "size": len(BROKEN), "sha256": sha(BROKEN), "loads": False,
             "error": "does not define the global function GetWorkloadTypeAndName(metaJsonStr)"},
            {"name": "bye", "size": len(BYE), "sha256": sha(BYE), "loads": True, "error": ""},
            {"name": "hello", "size": len(HELLO2), "sha256": sha(HELLO2), "loads": True, "error": ""},
        ]  # fmt: skip
        assert manage.run_list(parse("list", []), config) == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0].split() == ["NAME", "SIZE", "SHA256", "LOADS", "ERROR"]
        assert table[2].split() == ["bye", str(len(BYE)), sha(BYE), "yes"]
        assert table[1].split()[:4] == ["broken", str(len(BROKEN)), sha(BROKEN), "no"]

        assert manage.run_delete(parse("delete", ["bye"]), config) == 0
        assert capsys.readouterr().out == f"plugin bye deleted from configmap {NS}/{NAME}\n"
        stored = api.read_namespaced_config_map(NAME, NS, _request_timeout=2)
        assert stored.data == {"hello.lua": HELLO2, "broken.lua": BROKEN, "notes.txt": "hi"}
        assert [p["name"] for p in list_json(config, capsys)] == ["broken", "hello"]
        with pytest.raises(UserError, match=f"not found: plugin bye is not in configmap {NS}/{NAME}"):
            manage.run_delete(parse("delete", ["bye"]), config)

    await asyncio.to_thread(scenario)
    patches = list(kmock[kmock_lib.action.UPDATE])
    assert len(kmock[kmock_lib.action.CREATE]) == 1
    assert patches[0].headers["Content-Type"] == "application/merge-patch+json"
    assert patches[-1].data == {"data": {"bye.lua": None}}


def test_create_validates_before_touching_the_cluster(tmp_path: Path) -> None:
    with FakeConfigMapAPI() as fake:
        config = config_for(fake.url, tmp_path)
        rejected = {
            "broken": "plugin broken rejected: does not define the global function GetWorkloadTypeAndName(metaJsonStr)",
            "syntax": "plugin syntax rejected: syntax.lua:2: 'end' expected (to close 'function' at line 1) "
            "near '\"x\"'",
            "fails": "plugin fails rejected: error on the sample Pod: fails.lua:3: "
            "attempt to index local 'owner' (a nil value)",
        }
        for name, source in (("broken", BROKEN), ("syntax", SYNTAX), ("fails", FAILS)):
            with pytest.raises(UserError) as caught:
                create(config, tmp_path, name, source)
            assert str(caught.value) == rejected[name]
        with pytest.raises(UserError, match="unsupported plugin type 'wasm': only lua is supported"):
            create(config, tmp_path, "hello", HELLO, "--type", "wasm")
        image = plugin_file(tmp_path, "hello", HELLO)
        for bad in ("bad/name", "-dash", "", "a" * 250):
            args = parse("create", ["--image", image, f"--name={bad}"])
            with pytest.raises(UserError, match="invalid plugin name"):
                manage.run_create(args, config)
        args = parse("create", ["--image", str(tmp_path / "missing.lua"), "--name", "x"])
        with pytest.raises(UserError, match=r"cannot read plugin file .*missing\.lua"):
            manage.run_create(args, config)
        assert fake.seen == []


def test_name_may_carry_the_lua_suffix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeConfigMapAPI() as fake:
        config = config_for(fake.url, tmp_path)
        image = plugin_file(tmp_path, "x", HELLO)
        manage.run_create(parse("create", ["--image", image, "--name", "hello.lua"]), config)
        assert fake.objects[(NS, NAME)]["data"] == {"hello.lua": HELLO}


def test_conflict_on_update_is_retried_against_the_fresh_object(tmp_path: Path) -> None:
    with FakeConfigMapAPI() as fake:
        fake.put(NS, NAME, {"other.lua": BYE})
        fake.concurrent_write = (NS, NAME, {"third.lua": BYE})  # lands between our read and our write
        config = config_for(fake.url, tmp_path)
        assert create(config, tmp_path, "hello", HELLO) == 0
        assert fake.objects[(NS, NAME)]["data"] == {"other.lua": BYE, "third.lua": BYE, "hello.lua": HELLO}
        assert [(s.method, s.status) for s in fake.seen] == [
            ("GET", 200),
            ("PATCH", 409),
            ("GET", 200),
            ("PATCH", 200),
        ]


def test_conflict_on_create_is_retried_as_an_update(tmp_path: Path) -> None:
    with FakeConfigMapAPI() as fake:
        fake.concurrent_write = (NS, NAME, {"other.lua": BYE})  # someone creates the ConfigMap first
        config = config_for(fake.url, tmp_path)
        assert create(config, tmp_path, "hello", HELLO) == 0
        assert fake.objects[(NS, NAME)]["data"] == {"other.lua": BYE, "hello.lua": HELLO}
        assert [(s.method, s.status) for s in fake.seen] == [
            ("GET", 404),
            ("POST", 409),
            ("GET", 200),
            ("PATCH", 200),
        ]


def test_endless_conflicts_give_up_with_one_line(tmp_path: Path) -> None:
    with FakeConfigMapAPI(always_conflict=True) as fake:
        fake.put(NS, NAME, {"other.lua": BYE})
        config = config_for(fake.url, tmp_path)
        with pytest.raises(UserError, match=f"configmap {NS}/{NAME} kept changing under us \\(409 Conflict 5 times\\)"):
            create(config, tmp_path, "hello", HELLO)
        assert [s.status for s in fake.seen if s.method == "PATCH"] == [409] * 5


@pytest.mark.parametrize(
    ("forbid", "command", "verb"),
    [
        ("get", "list", "get"),
        ("create", "create", "create"),
        ("patch", "create", "patch"),
        ("patch", "delete", "patch"),
    ],
)
def test_forbidden_names_verb_resource_and_namespace(tmp_path: Path, forbid: str, command: str, verb: str) -> None:
    with FakeConfigMapAPI(forbid={forbid}) as fake:
        if forbid != "create":
            fake.put(NS, NAME, {"hello.lua": HELLO})
        config = config_for(fake.url, tmp_path)
        with pytest.raises(UserError) as caught:
            if command == "create":
                create(config, tmp_path, "bye", BYE)
            elif command == "delete":
                manage.run_delete(parse("delete", ["hello"]), config)
            else:
                manage.run_list(parse("list", []), config)
        message = str(caught.value)
        assert message.startswith(f"forbidden: cannot {verb} configmaps in namespace {NS} (configmap {NS}/{NAME}): ")
        assert f'User "test" cannot {verb} resource "configmaps"' in message
        assert "\n" not in message


def test_delete_from_a_missing_configmap_is_not_found(tmp_path: Path) -> None:
    with FakeConfigMapAPI() as fake:
        config = config_for(fake.url, tmp_path)
        with pytest.raises(UserError, match=f"not found: configmap {NS}/{NAME} does not exist, so there is no plugin x"):
            manage.run_delete(parse("delete", ["x"]), config)


def test_list_of_a_missing_configmap_is_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeConfigMapAPI() as fake:
        config = config_for(fake.url, tmp_path)
        assert list_json(config, capsys) == []


def test_no_cluster_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = Config(kubeconfig=str(tmp_path / "nope"), configmap_namespace=NS)
    with pytest.raises(UserError, match=r"^cannot reach a cluster: kubeconfig .*nope: "):
        manage.run_list(parse("list", []), missing)

    # Neither in-cluster nor a default kubeconfig (this machine's own ~/.kube/config is kept out).
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "absent"))
    with pytest.raises(UserError, match=r"^cannot reach a cluster: no in-cluster config and no kubeconfig: "):
        kube_api_client(Config())

    # A kubeconfig whose server does not answer.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    closed = config_for(f"http://127.0.0.1:{port}", tmp_path)
    expected = (
        f"cannot reach a cluster at http://127.0.0.1:{port}: Connection refused (trying to get configmap {NS}/{NAME})"
    )
    with pytest.raises(UserError) as caught:
        manage.run_list(parse("list", []), closed)
    assert str(caught.value) == expected


def test_engine_validator_uses_the_configured_limits() -> None:
    roomy = manage.engine_validator(Config(plugin_instructions=1_000_000, plugin_memory_mb=16))
    roomy("loops", LOOPS)
    roomy("allocates", ALLOCATES)

    with pytest.raises(
        PluginLoadError, match=r"'loops' rejected: budget on the sample Pod: instruction budget exceeded"
    ):
        manage.engine_validator(Config(plugin_instructions=20_000))("loops", LOOPS)
    with pytest.raises(PluginLoadError, match=r"'allocates' rejected: memory on the sample Pod: memory cap exceeded"):
        manage.engine_validator(Config(plugin_memory_mb=2))("allocates", ALLOCATES)


def test_list_shows_why_a_stored_plugin_does_not_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeConfigMapAPI() as fake:
        fake.put(NS, NAME, {"hello.lua": HELLO, "syntax.lua": SYNTAX, "fails.lua": FAILS, "loops.lua": LOOPS})
        config = config_for(fake.url, tmp_path)
        errors = {p["name"]: (p["loads"], p["error"]) for p in list_json(config, capsys)}
        assert errors == {
            "fails": (False, "error on the sample Pod: fails.lua:3: attempt to index local 'owner' (a nil value)"),
            "hello": (True, ""),
            "loops": (True, ""),
            "syntax": (False, "syntax.lua:2: 'end' expected (to close 'function' at line 1) near '\"x\"'"),
        }
        tight = Config(
            kubeconfig=config.kubeconfig, configmap_namespace=NS, configmap_name=NAME, plugin_instructions=20_000
        )
        assert {p["name"]: p["error"] for p in list_json(tight, capsys)}["loops"] == (
            "budget on the sample Pod: instruction budget exceeded"
        )
