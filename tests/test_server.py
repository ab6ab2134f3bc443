"""The real HTTPS server on loopback, driven with realistic AdmissionReviews."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import ssl
from typing import Any

import jsonpatch
import pytest

from tests.support.cases import CASES, OTEL_EXPECTED, Case
from tests.support.factories import owner, pod, review
from tests.support.serverproc import read_response, request_head
from tests.support.servers import ServerFactory, TLSFiles
from webhook.admission.handler import PodMutator
from webhook.admission.server import tls_context
from webhook.plugins import EMPTY
from webhook.resolution.resolver import Resolver

PREFIX = "workload-tagger.io/"
OTEL_PREFIX = "resource.opentelemetry.io/"


def patched(review_body: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """Apply the response's JSONPatch to the object sent, as the apiserver would."""
    obj = copy.deepcopy(review_body["request"]["object"])
    if "patch" not in response:
        return obj
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    for op in ops:
        assert op["path"].startswith("/metadata/annotations") or op["path"] == "/metadata", op
        assert op["op"] == "add", op
    return jsonpatch.apply_patch(obj, ops)


async def send(srv: Any, body: dict[str, Any]) -> dict[str, Any]:
    status, raw = await srv.post("/mutate", json.dumps(body).encode())
    assert status == 200, raw
    out = json.loads(raw)
    assert out["apiVersion"] == body["apiVersion"]
    assert out["kind"] == "AdmissionReview"
    assert out["response"]["uid"] == body["request"]["uid"]
    assert out["response"]["allowed"] is True
    return out["response"]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_every_rule_row_over_tls(start_server: ServerFactory, case: Case) -> None:
    srv = await start_server()
    body = review(case.pod)
    resp = await send(srv, body)
    annotations = patched(body, resp)["metadata"].get("annotations", {})
    if case.expected is None:
        assert "patch" not in resp
        assert annotations == (case.pod["metadata"].get("annotations") or {})
        return
    wtype, name, platform, by = case.expected
    want = {PREFIX + "workload-type": wtype, PREFIX + "workload-name": name, PREFIX + "resolved-by": by}
    if platform:
        want[PREFIX + "platform"] = platform
    want.update({OTEL_PREFIX + k: v for k, v in OTEL_EXPECTED[case.id].items()})
    original = case.pod["metadata"].get("annotations") or {}
    assert annotations == {**original, **want}


@pytest.mark.parametrize("api_version", ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"])
async def test_response_version_follows_request(start_server: ServerFactory, api_version: str) -> None:
    srv = await start_server()
    body = review(CASES[0].pod, api_version=api_version)
    resp = await send(srv, body)
    assert "patch" in resp


async def test_existing_annotations_kept_and_user_values_win(start_server: ServerFactory) -> None:
    srv = await start_server()
    p = pod(generate_name="web-abc-", labels={"pod-template-hash": "abc"},
            annotations={"team": "payments", PREFIX + "workload-name": "user-chosen", "a/b~c": "x"},
            owners=[owner("apps/v1", "ReplicaSet", "web-abc")])
    body = review(p)
    resp = await send(srv, body)
    ops = json.loads(base64.b64decode(resp["patch"]))
    assert all(op["op"] == "add" for op in ops)
    assert {op["path"] for op in ops} == {
        "/metadata/annotations/workload-tagger.io~1workload-type",
        "/metadata/annotations/workload-tagger.io~1resolved-by",
        "/metadata/annotations/resource.opentelemetry.io~1k8s.deployment.name",
        "/metadata/annotations/resource.opentelemetry.io~1k8s.replicaset.name",
        "/metadata/annotations/resource.opentelemetry.io~1k8s.replicaset.uid",
    }
    annotations = patched(body, resp)["metadata"]["annotations"]
    assert annotations["team"] == "payments"
    assert annotations["a/b~c"] == "x"
    assert annotations[PREFIX + "workload-name"] == "user-chosen"
    assert annotations[PREFIX + "workload-type"] == "Deployment"


async def test_fully_annotated_pod_gets_no_patch(start_server: ServerFactory) -> None:
    srv = await start_server()
    sts = owner("apps/v1", "StatefulSet", "db")
    p = pod(name="db-0", owners=[sts], annotations={
        PREFIX + "workload-type": "StatefulSet", PREFIX + "workload-name": "db", PREFIX + "resolved-by": "x",
        OTEL_PREFIX + "k8s.statefulset.name": "db", OTEL_PREFIX + "k8s.statefulset.uid": "user-set"})
    assert "patch" not in await send(srv, review(p))


async def test_custom_prefix_slashes_are_escaped(start_server: ServerFactory) -> None:
    # A prefix may hold one '/' only, and no '~': '/' is the one character a key of ours escapes.
    prefix = "acme.io/x."
    srv = await start_server(PodMutator(Resolver(), lambda: EMPTY, prefix=prefix))
    p = pod(name="db-0", owners=[owner("apps/v1", "StatefulSet", "db")], annotations={"k": "v"})
    body = review(p)
    resp = await send(srv, body)
    ops = json.loads(base64.b64decode(resp["patch"]))
    assert "/metadata/annotations/acme.io~1x.workload-type" in {op["path"] for op in ops}
    assert patched(body, resp)["metadata"]["annotations"][prefix + "workload-type"] == "StatefulSet"


async def test_prefix_making_keys_the_api_server_refuses_sends_no_patch(start_server: ServerFactory) -> None:
    """The config refuses such a prefix; a mutator built with one anyway still never sends the patch."""
    srv = await start_server(PodMutator(Resolver(), lambda: EMPTY, prefix="acme.io~x/"))
    p = pod(name="db-0", owners=[owner("apps/v1", "StatefulSet", "db")], annotations={"k": "v"})
    assert "patch" not in await send(srv, review(p))


async def test_null_annotations_are_created(start_server: ServerFactory) -> None:
    srv = await start_server()
    p = pod(name="db-0", owners=[owner("apps/v1", "StatefulSet", "db")])
    p["metadata"]["annotations"] = None
    body = review(p)
    assert patched(body, await send(srv, body))["metadata"]["annotations"][PREFIX + "workload-name"] == "db"


async def test_namespace_from_request_when_object_has_none(start_server: ServerFactory) -> None:
    srv = await start_server()
    p = pod(generate_name="web-abc-", namespace=None, labels={"pod-template-hash": "abc"},
            owners=[owner("apps/v1", "ReplicaSet", "web-abc")])
    resp = await send(srv, review(p, namespace="prod"))
    assert "patch" in resp


@pytest.mark.parametrize("variant", ["update", "delete", "connect", "subresource", "other-kind", "dry-run"])
async def test_only_pod_create_is_mutated(start_server: ServerFactory, variant: str) -> None:
    srv = await start_server()
    p = CASES[0].pod
    body = {
        "update": lambda: review(p, operation="UPDATE"),
        "delete": lambda: review(p, operation="DELETE"),
        "connect": lambda: review(p, operation="CONNECT"),
        "subresource": lambda: review(p, sub_resource="status"),
        "other-kind": lambda: review(p, kind={"group": "apps", "version": "v1", "kind": "Deployment"}),
        "dry-run": lambda: review(p, dry_run=True),
    }[variant]()
    resp = await send(srv, body)
    assert ("patch" in resp) is (variant == "dry-run")


async def test_unicode_names_survive(start_server: ServerFactory) -> None:
    srv = await start_server()
    p = pod(name="数据库-0", owners=[owner("apps/v1", "StatefulSet", "数据库-ü")], annotations={"note": "☃"})
    body = review(p)
    ann = patched(body, await send(srv, body))["metadata"]["annotations"]
    assert ann[PREFIX + "workload-name"] == "数据库-ü" and ann["note"] == "☃"


@pytest.mark.parametrize("obj", [None, "pod", 7, [], {"metadata": None}, {"metadata": "x"}, {"metadata": {"annotations": "x",
                         "ownerReferences": [owner("apps/v1", "StatefulSet", "db")]}},
                         {"metadata": {"ownerReferences": {"kind": "StatefulSet"}}},
                         {"metadata": {"ownerReferences": [None, 3, {"kind": None}]}}])
async def test_odd_objects_are_allowed_without_patch(start_server: ServerFactory, obj: Any) -> None:
    srv = await start_server()
    resp = await send(srv, review(obj))
    assert "patch" not in resp


async def test_object_without_metadata_gets_metadata(start_server: ServerFactory) -> None:
    srv = await start_server()
    body = review({"kind": "Pod", "spec": {}})
    resp = await send(srv, body)
    assert "patch" not in resp  # no owner: nothing to say, but it must not fail


@pytest.mark.parametrize("raw,message", [
    (b"not json", "not valid JSON"),
    (b"", "empty request body"),
    (b"[1,2]", "must be a JSON object"),
    (b'{"apiVersion":"admission.k8s.io/v1","kind":"Pod"}', "kind must be 'AdmissionReview'"),
    (b'{"apiVersion":"v1","kind":"AdmissionReview","request":{"uid":"u"}}', "unsupported apiVersion"),
    (b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}', "no 'request' object"),
    (b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":null}', "no 'request' object"),
    (b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}', "request.uid"),
    (b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":5}}', "request.uid"),
    (b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":""}}', "request.uid"),
    ('{"a":"\udcff"}'.encode("utf-8", "surrogatepass"), "not valid JSON"),
])
async def test_malformed_reviews_get_400_with_a_clear_message(start_server: ServerFactory, raw: bytes, message: str) -> None:
    srv = await start_server()
    status, body = await srv.post("/mutate", raw)
    assert status == 400
    assert message in json.loads(body)["error"]


async def test_body_over_limit_is_413(start_server: ServerFactory) -> None:
    srv = await start_server(max_body_bytes=64 * 1024)
    p = pod(name="big", annotations={"blob": "x" * 100_000})
    status, _ = await srv.post("/mutate", json.dumps(review(p)).encode())
    assert status == 413
    ok_status, _ = await srv.post("/mutate", json.dumps(review(CASES[0].pod)).encode())
    assert ok_status == 200


async def test_body_limit_is_ours_not_the_low_level_default(start_server: ServerFactory) -> None:
    """aiohttp's low-level requests default to 1 MiB; a 2 MiB review fits our 7 MiB limit."""
    srv = await start_server(max_body_bytes=7 * 1024 * 1024)
    p = pod(name="db-0", owners=[owner("apps/v1", "StatefulSet", "db")])
    p["spec"]["blob"] = "x" * (2 << 20)  # in the spec: annotations that large would make the Pod invalid
    resp = await send(srv, review(p))
    assert "patch" in resp


async def test_in_flight_counts_a_review_until_it_is_answered(start_server: ServerFactory, tls_files: TLSFiles) -> None:
    srv = await start_server()
    body = json.dumps(review(pod(name="db-0", owners=[owner("apps/v1", "StatefulSet", "db")],
                                 annotations={"blob": "x" * 100_000}))).encode()
    reader, writer = await raw_tls(srv, tls_files)
    try:
        writer.write(request_head("POST", "/mutate", len(body), close=True) + body[:1000])
        await writer.drain()
        for _ in range(100):
            if srv.app.in_flight.count == 1:
                break
            await asyncio.sleep(0.01)
        assert srv.app.in_flight.count == 1  # headers in, body still on the wire
        writer.write(body[1000:])
        status, _ = await asyncio.wait_for(read_response(reader), 5)
        assert status == 200
        assert srv.app.in_flight.count == 0
        assert await srv.app.in_flight.wait_idle(0.1)
    finally:
        writer.close()


async def test_huge_integers_are_valid_json(start_server: ServerFactory) -> None:
    srv = await start_server()
    body = review(pod(name="db-0", owners=[owner("apps/v1", "StatefulSet", "db")]))
    body["request"]["object"]["spec"]["big"] = 10**40
    resp = await send(srv, body)
    assert "patch" in resp


async def test_health_and_readiness(start_server: ServerFactory) -> None:
    srv = await start_server(synced=False)
    async with srv.session.get(srv.url + "/healthz", ssl=srv.client_ssl) as r:
        assert r.status == 200
    async with srv.session.get(srv.url + "/readyz", ssl=srv.client_ssl) as r:
        assert r.status == 503
        assert "plugin source not synced" in await r.text()
    srv.readiness.plugins_synced = lambda: True
    async with srv.session.get(srv.url + "/readyz", ssl=srv.client_ssl) as r:
        assert r.status == 200
    srv.readiness.shutting_down = True
    async with srv.session.get(srv.url + "/readyz", ssl=srv.client_ssl) as r:
        assert r.status == 503


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
async def test_tls_1_2_and_1_3_are_served(start_server: ServerFactory, tls_files: TLSFiles, version: str) -> None:
    srv = await start_server()
    ctx = ssl.create_default_context(cafile=str(tls_files.ca))
    ctx.minimum_version = ctx.maximum_version = getattr(ssl.TLSVersion, version)
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port, ssl=ctx, server_hostname="localhost")
    assert writer.get_extra_info("ssl_object").version() == version.replace("_", ".")
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    writer.close()
    assert tls_context(str(tls_files.cert), str(tls_files.key)).minimum_version == ssl.TLSVersion.TLSv1_2


async def test_internal_failure_allows_without_patch(start_server: ServerFactory) -> None:
    class Broken:
        names = ("boom",)

        def answers(self, meta_json: str, deadline: float | None = None) -> Any:
            raise RuntimeError("engine exploded")

    srv = await start_server(PodMutator(Resolver(), lambda: Broken()))
    resp = await send(srv, review(pod(name="x", owners=[owner("example.com/v1", "Widget", "w")])))
    assert "patch" not in resp


# --- routing and HTTP edges: what the apiserver, probes, scrapers and curl see -----------------


@pytest.mark.parametrize("method,path", [
    ("GET", "/"), ("POST", "/"), ("GET", "/nope"), ("POST", "/mutate/"), ("POST", "/validate"), ("GET", "/healthz/"),
])
async def test_unknown_paths_are_404(start_server: ServerFactory, method: str, path: str) -> None:
    srv = await start_server()
    status, _, body = await srv.request(method, path)
    assert status == 404
    assert body == b"404: Not Found"


@pytest.mark.parametrize("method,path,allow", [
    ("GET", "/mutate", "POST"),
    ("PUT", "/mutate", "POST"),
    ("HEAD", "/mutate", "POST"),
    ("POST", "/healthz", "GET,HEAD"),
    ("DELETE", "/readyz", "GET,HEAD"),
    ("POST", "/metrics", "GET,HEAD"),
    ("OPTIONS", "/metrics", "GET,HEAD"),
])
async def test_wrong_method_is_405_with_allow(start_server: ServerFactory, method: str, path: str, allow: str) -> None:
    srv = await start_server()
    status, headers, _ = await srv.request(method, path)
    assert status == 405
    assert headers["Allow"] == allow


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_head_answers_like_get_without_a_body(start_server: ServerFactory, path: str) -> None:
    srv = await start_server()
    get_status, _, get_body = await srv.request("GET", path)
    head_status, _, head_body = await srv.request("HEAD", path)
    assert get_status == head_status == 200
    assert get_body and head_body == b""


async def test_query_strings_do_not_change_the_route(start_server: ServerFactory) -> None:
    srv = await start_server()
    status, _, body = await srv.request("GET", "/healthz?verbose=1")
    assert (status, body) == (200, b"ok\n")
    status, raw = await srv.post("/mutate?timeout=10s", json.dumps(review(CASES[0].pod)).encode())
    assert status == 200 and "patch" in json.loads(raw)["response"]


async def test_metrics_are_exposed_on_the_serving_port(start_server: ServerFactory) -> None:
    srv = await start_server()
    await send(srv, review(CASES[0].pod))
    status, headers, body = await srv.request("GET", "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    assert b"workload_tagger_admission_requests_total" in body


async def test_shutting_down_asks_keep_alive_clients_to_reconnect(start_server: ServerFactory) -> None:
    srv = await start_server()
    status, headers, _ = await srv.request("POST", "/mutate", json.dumps(review(CASES[0].pod)).encode())
    assert status == 200 and headers.get("Connection") != "close"
    srv.readiness.shutting_down = True
    status, headers, _ = await srv.request("POST", "/mutate", json.dumps(review(CASES[0].pod)).encode())
    assert status == 200 and headers["Connection"] == "close"


async def raw_tls(srv: Any, tls_files: TLSFiles) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    ctx = ssl.create_default_context(cafile=str(tls_files.ca))
    return await asyncio.open_connection("127.0.0.1", srv.port, ssl=ctx, server_hostname="localhost")


async def test_expect_100_continue_is_honoured(start_server: ServerFactory, tls_files: TLSFiles) -> None:
    """curl sends large bodies only after "100 Continue" (or after waiting a second for it)."""
    srv = await start_server()
    body = json.dumps(review(CASES[0].pod)).encode()
    reader, writer = await raw_tls(srv, tls_files)
    try:
        writer.write(request_head("POST", "/mutate", len(body), close=True).replace(
            b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n"))
        assert await asyncio.wait_for(reader.readline(), 5) == b"HTTP/1.1 100 Continue\r\n"
        assert await reader.readline() == b"\r\n"
        writer.write(body)
        status, raw = await asyncio.wait_for(read_response(reader), 5)
        assert status == 200 and "patch" in json.loads(raw)["response"]
    finally:
        writer.close()


async def test_unknown_expectation_is_417(start_server: ServerFactory, tls_files: TLSFiles) -> None:
    srv = await start_server()
    reader, writer = await raw_tls(srv, tls_files)
    try:
        writer.write(request_head("POST", "/mutate", 2, close=True).replace(
            b"\r\n\r\n", b"\r\nExpect: 200-ok\r\n\r\n") + b"{}")
        status, _ = await asyncio.wait_for(read_response(reader), 5)
        assert status == 417
    finally:
        writer.close()
