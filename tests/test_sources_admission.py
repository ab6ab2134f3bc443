"""Admission reviews served while the plugin ConfigMap changes underneath: each answer comes from
the old set or the new set, never from a mix; ``/readyz`` waits for the first sync.

The real registry (webhook.plugins.registry) compiles real Lua plugins. With first-answer-wins
no pair of independent plugins can make *every* mix visible, so the sets are built so that every
key-by-key path between them passes through a visible mix, whichever order the keys are taken in:

- old set: ``p`` answers StatefulSet/old; ``q`` does not exist;
- new set: ``p`` answers nothing; ``q`` answers DaemonSet/new.

Old -> new with ``p`` changed before ``q`` is added leaves no answer at all; new -> old with ``q``
removed before ``p`` changes does the same. The test flips both ways, so a source that applied
keys one by one, or a registry that swapped plugin by plugin, would leave an unpatched Pod. Every
response must carry exactly one of the two whole answers, including which plugin gave it.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import jsonpatch
import kmock as kmock_lib
from aiohttp import web
from aiohttp.test_utils import RawTestServer, TestClient

from tests.support.fakeapi import core_api
from tests.support.waiting import eventually
from webhook.admission.handler import PodMutator
from webhook.admission.server import Readiness, build_app
from webhook.annotations import annotation_keys
from webhook.cluster.backoff import Backoff
from webhook.plugins.registry import PluginLimits, PluginRegistry
from webhook.plugins.sources.configmap import ConfigMapSource
from webhook.resolution.resolver import Resolver

NS, NAME = "tagger", "workload-tagger-plugins"
TYPE_KEY, NAME_KEY, _, BY_KEY, _ = annotation_keys("workload-tagger.io/")

# A DeepFlow-style plugin: decodes the metadata with dkjson and answers for Pods of namespace "default".
PLUGIN = """package.path = package.path..";/bin/?.lua"
local dkjson = require("dkjson")
function GetWorkloadTypeAndName(metaJsonStr)
  local meta = dkjson.decode(metaJsonStr)
  if meta.namespace ~= "default" then return "", "" end
  return "{type}", "{name}"
end
"""
SILENT = 'function GetWorkloadTypeAndName(metaJsonStr)\n  return "", ""\nend\n'
OLD_SET: dict[str, str | None] = {"p.lua": PLUGIN.format(type="StatefulSet", name="old"), "q.lua": None}
NEW_SET: dict[str, str | None] = {"p.lua": SILENT, "q.lua": PLUGIN.format(type="DaemonSet", name="new")}
OLD = ("StatefulSet", "old", "plugin:p")
NEW = ("DaemonSet", "new", "plugin:q")


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


def workload(request: dict[str, Any], answer: dict[str, Any]) -> tuple[str, ...] | None:
    """(type, name, resolved-by) written by the patch, ``None`` when the Pod was left alone."""
    response = answer["response"]
    assert response["allowed"] is True
    if "patch" not in response:
        return None
    ops = json.loads(base64.b64decode(response["patch"]))
    pod = jsonpatch.apply_patch(request["request"]["object"], ops)
    annotations = pod["metadata"].get("annotations", {})
    return tuple(annotations.get(key) for key in (TYPE_KEY, NAME_KEY, BY_KEY))


async def test_every_answer_comes_from_one_whole_set(kmock: kmock_lib.KubernetesEmulator) -> None:
    kmock.resources["v1/configmaps"] = {}
    api = core_api(str(kmock.url))
    old_data = {k: v for k, v in OLD_SET.items() if v is not None}
    body = {"metadata": {"name": NAME, "namespace": NS, "resourceVersion": "1"}, "data": old_data}
    await asyncio.to_thread(api.create_namespaced_config_map, NS, body, _request_timeout=2)

    registry = PluginRegistry(PluginLimits())
    source = ConfigMapSource(
        api, NS, NAME, registry, backoff=Backoff(0.05, 0.2), watch_timeout_s=1, request_timeout_s=1.0
    )
    readiness = Readiness(certs_loaded=True, plugins_synced=source.synced)
    app = build_app(PodMutator(Resolver(), lambda: registry.current), readiness, max_body_bytes=1 << 20)
    raw = RawTestServer(app.handler, host="127.0.0.1")
    await raw.start_server(request_factory=app.make_request, access_log=None)  # how app.runner() serves it
    async with TestClient[web.BaseRequest, None](raw) as http:
        ready = await http.get("/readyz")
        assert ready.status == 503 and "plugin source not synced yet" in await ready.text()
        source.start()
        try:
            await eventually(source.synced, what="first sync")
            assert (await http.get("/readyz")).status == 200

            seen: list[tuple[str, ...] | None] = []
            flipping = True

            async def admit() -> None:
                uid = 0
                while flipping:
                    uid += 1
                    request = review(uid)
                    answer = await (await http.post("/mutate", json=request)).json()
                    seen.append(workload(request, answer))

            clients = [asyncio.create_task(admit()) for _ in range(4)]
            for flip in range(12):
                data = NEW_SET if flip % 2 == 0 else OLD_SET
                patch = {"data": data}
                await asyncio.to_thread(api.patch_namespaced_config_map, NAME, NS, patch, _request_timeout=2)
                await asyncio.sleep(0.05)
            flipping = False
            await asyncio.gather(*clients)
            assert len(seen) > 50
            assert set(seen) == {OLD, NEW}  # both sets served, and nothing else: no mix, no gap
            # The last change (back to the old set) wins once it has arrived.
            for uid in range(1000, 1100):
                request = review(uid)
                if workload(request, await (await http.post("/mutate", json=request)).json()) == OLD:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the last ConfigMap change never reached the admission path")
        finally:
            await asyncio.to_thread(source.stop)
