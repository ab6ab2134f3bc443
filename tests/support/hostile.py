"""What the hostile-plugin tests and the plugin-host tests share: a good plugin, the review it
claims, checking an answer, and reading plugin counters from an exposition."""

from __future__ import annotations

import base64
import json

import orjson
from prometheus_client.parser import text_string_to_metric_families

from bench.pods import review_body

UID = b"705ab4f5-6393-11e8-b7cc-42010a800002"  # in bench.pods reviews; replaced per request
PREFIX = "workload-tagger.io/"

GOOD = """package.path = package.path..";/bin/?.lua"
local dkjson = require("dkjson")
function GetWorkloadTypeAndName(metaJsonStr)
    local meta = dkjson.decode(metaJsonStr, 1, nil)
    for _, owner in ipairs(meta and meta.ownerReferences or {}) do
        if owner.kind == "AcmeDatabase" then
            return "statefulset", owner.name
        end
    end
    return "", ""
end
"""


def claimed_review() -> bytes:
    review = orjson.loads(review_body("worst", 4_000))
    owner = review["request"]["object"]["metadata"]["ownerReferences"][0]
    owner["apiVersion"], owner["kind"], owner["name"] = "db.acme.io/v1", "AcmeDatabase", "ogtest"
    return orjson.dumps(review)


def check(kind: str, status: int, raw: bytes, uid: str) -> str | None:
    if status != 200:
        return f"{kind}: status {status}: {raw[:200]!r}"
    answer = json.loads(raw)["response"]
    if answer.get("allowed") is not True or answer.get("uid") != uid:
        return f"{kind}: not allowed or wrong uid: {answer}"
    if kind == "worst":
        return None if "patch" not in answer else f"worst: unexpected patch {answer}"
    if "patch" not in answer:
        return f"{kind}: no patch: {answer}"
    ops = json.loads(base64.b64decode(answer["patch"]))
    values = {op["path"]: op["value"] for op in ops}
    if kind == "claimed":
        wanted = {"workload-type": "StatefulSet", "workload-name": "ogtest", "resolved-by": "plugin:z-good"}
        got = {k: values.get("/metadata/annotations/" + PREFIX.replace("/", "~1") + k) for k in wanted}
        if got != wanted:
            return f"claimed: wrong annotations {values}"
    return None


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def evaluations(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], plugin: str, outcome: str) -> float:
    key = ("workload_tagger_plugin_evaluations_total", (("outcome", outcome), ("plugin", plugin)))
    return metrics.get(key, 0.0)
