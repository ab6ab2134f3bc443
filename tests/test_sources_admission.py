"""Admission reviews served while the plugin ConfigMap changes underneath: each answer comes from
the old set or the new set, never from a mix; ``/readyz`` waits for the first sync.

The registry here is a stand-in (``ToyRegistry``: a reference swap, answers read from the
``return "T", "N"`` line) because the Lua engine is built in another branch; after the merge
this test must use the real registry (webhook.plugins.registry) and real Lua plugins.
The two sets are built so that any mix of them answers nothing at all: a source that applied
keys one by one, or a registry that swapped plugin by plugin, would be caught.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import jsonpatch
import kmock as kmock_lib
from aiohttp.test_utils import TestClient, TestServer

from tests.sources_fakes import core_api, eventually
from webhook.mutate import PodMutator
from webhook.plugins import PluginAnswer
from webhook.resolver import Resolver
from webhook.server import Readiness, build_app
from webhook.sources.backoff import Backoff
from webhook.sources.configmap import ConfigMapSource

NS, NAME = "tagger", "workload-tagger-plugins"
NAME_KEY = "workload-tagger.io/workload-name"
RETURN = re.compile(r'return\s+"([^"]*)"\s*,\s*"([^"]*)"')


def plugin(wtype: str, wname: str) -> str:
    return f'function GetWorkloadTypeAndName(metaJsonStr)\n  return "{wtype}", "{wname}"\nend\n'


# Old set: p1 is silent, p2 answers A.  New set: p1 answers B, p2 is silent.
# Mixed (p1 old + p2 new): nothing answers.  Mixed the other way: B from p1 only if p1 is new.
SET_A = {"p1.lua": plugin("", ""), "p2.lua": plugin("Deployment", "set-a")}
SET_B = {"p1.lua": plugin("Deployment", "set-b"), "p2.lua": plugin("", "")}


class ToyPluginSet:
    def __init__(self, sources: Mapping[str, str]) -> None:
        self.names = tuple(sorted(sources))
        self._answers = {}
        for name in self.names:
            found = RETURN.search(sources[name])
            self._answers[name] = found.groups() if found else ("", "")

    def answers(self, meta_json: str, deadline: float | None = None) -> Iterator[PluginAnswer]:
        for name in self.names:
            wtype, wname = self._answers[name]
            if wtype and wname:
                yield PluginAnswer(name, wtype, wname)


class ToyRegistry:
    def __init__(self) -> None:
        self._current = ToyPluginSet({})

    def apply(self, sources: Mapping[str, str], *, origin: str) -> None:
        self._current = ToyPluginSet(sources)  # one reference assignment: the swap is atomic

    def current(self) -> ToyPluginSet:
        return self._current


def review(uid: int) -> dict[str, Any]:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"pod-{uid}", "namespace": "default"}}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": f"uid-{uid}",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": "default",
            "object": pod,
        },
    }


def workload_name(request: dict[str, Any], answer: dict[str, Any]) -> str | None:
    response = answer["response"]
    assert response["allowed"] is True
    if "patch" not in response:
        return None
    ops = json.loads(base64.b64decode(response["patch"]))
    pod = jsonpatch.apply_patch(request["request"]["object"], ops)
    name: str | None = pod["metadata"].get("annotations", {}).get(NAME_KEY)
    return name


async def test_every_answer_comes_from_one_whole_set(kmock: kmock_lib.KubernetesEmulator) -> None:
    kmock.resources["v1/configmaps"] = {}
    api = core_api(str(kmock.url))
    body = {"metadata": {"name": NAME, "namespace": NS, "resourceVersion": "1"}, "data": SET_A}
    await asyncio.to_thread(api.create_namespaced_config_map, NS, body, _request_timeout=2)

    registry = ToyRegistry()
    source = ConfigMapSource(
        api, NS, NAME, registry, backoff=Backoff(0.05, 0.2), watch_timeout_s=1, request_timeout_s=1.0
    )
    readiness = Readiness(certs_loaded=True, plugins_synced=source.synced)
    app = build_app(PodMutator(Resolver(), registry.current), readiness, max_body_bytes=1 << 20)
    async with TestClient(TestServer(app, host="127.0.0.1")) as http:
        ready = await http.get("/readyz")
        assert ready.status == 503 and "plugin source not synced yet" in await ready.text()
        source.start()
        try:
            await eventually(source.synced, what="first sync")
            assert (await http.get("/readyz")).status == 200

            seen: list[str | None] = []
            flipping = True

            async def admit() -> None:
                uid = 0
                while flipping:
                    uid += 1
                    request = review(uid)
                    answer = await (await http.post("/mutate", json=request)).json()
                    seen.append(workload_name(request, answer))

            clients = [asyncio.create_task(admit()) for _ in range(4)]
            for flip in range(12):
                data = SET_B if flip % 2 == 0 else SET_A
                patch = {"data": data}
                await asyncio.to_thread(api.patch_namespaced_config_map, NAME, NS, patch, _request_timeout=2)
                await asyncio.sleep(0.05)
            flipping = False
            await asyncio.gather(*clients)
            assert len(seen) > 50
            assert set(seen) == {"set-a", "set-b"}  # both sets served, and nothing else: no mix, no gap
            # The last change (back to the old set) wins once it has arrived.
            for uid in range(1000, 1100):
                request = review(uid)
                if workload_name(request, await (await http.post("/mutate", json=request)).json()) == "set-a":
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the last ConfigMap change never reached the admission path")
        finally:
            await asyncio.to_thread(source.stop)
