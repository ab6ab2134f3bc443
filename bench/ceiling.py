"""The ceiling of our stack: a bare aiohttp HTTPS server that answers every POST with a fixed
``allowed: true`` AdmissionReview, without parsing the body.

Same TLS settings, same event loop and the very same aiohttp layer as the real server: the
low-level ``web.Server`` built by :meth:`webhook.admission.server.WebhookApp.runner`, with our route table
and request factory (body limit), only the handlers differ. So the ratio of our numbers to its
numbers is the cost of what we add (decode, resolve, patch, encode, metrics, in-flight tracking),
not the cost of HTTPS, of Python or of aiohttp. Had the ceiling stayed on ``web.Application``
while we moved off it, the ratios would flatter us by the Application layer's cost (several µs
per request). Run as ``python -m bench.ceiling --port P --cert-file C --key-file K``.

``--answer uid`` makes it the *floor* of any correct webhook instead: it reads the review just far
enough to echo its apiVersion and uid (msgspec, everything else skipped) and answers allowed, no
patch. The API server rejects an answer with another uid, so no webhook can do less; its ratio to
the ceiling shows how much of a target is spent before any resolution starts.
"""

from __future__ import annotations

import argparse
import asyncio

import msgspec
import orjson
from aiohttp import web

from webhook.admission.server import InFlight, WebhookApp, dispatcher, event_loop_factory, route_table, tls_context
from webhook.config import Config

ANSWER = (
    b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",'
    b'"response":{"uid":"705ab4f5-6393-11e8-b7cc-42010a800002","allowed":true}}'
)


async def answer(request: web.BaseRequest) -> web.Response:
    await request.read()  # the body must be received either way; it is not looked at
    return web.Response(body=ANSWER, content_type="application/json")


class _UidRequest(msgspec.Struct):
    uid: str


class _UidReview(msgspec.Struct, rename="camel"):
    api_version: str
    request: _UidRequest


_UID_ONLY = msgspec.json.Decoder(_UidReview)


async def answer_uid(request: web.BaseRequest) -> web.Response:
    review = _UID_ONLY.decode(await request.read())
    body = {"apiVersion": review.api_version, "kind": "AdmissionReview",
            "response": {"uid": review.request.uid, "allowed": True}}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


ANSWERS = {"fixed": answer, "uid": answer_uid}


async def ok(_: web.BaseRequest) -> web.Response:
    return web.Response(text="ok\n")


def ceiling_app(mode: str = "fixed") -> WebhookApp:
    """Our server's shape with nothing of ours inside: same routing and request factory, fixed answers."""
    table = route_table(post={"/mutate": ANSWERS[mode]}, get={"/readyz": ok})
    return WebhookApp(dispatcher(table), InFlight(), Config().max_body_bytes)  # the server's default limit


async def serve(host: str, port: int, cert_file: str, key_file: str, mode: str) -> None:
    runner = ceiling_app(mode).runner()
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=tls_context(cert_file, key_file)).start()
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert-file", required=True)
    parser.add_argument("--key-file", required=True)
    parser.add_argument("--event-loop", default="auto", choices=["auto", "uvloop", "asyncio"])
    parser.add_argument("--answer", default="fixed", choices=sorted(ANSWERS),
                        help="fixed: the ceiling; uid: the floor (echo the review's uid)")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=event_loop_factory(args.event_loop)) as runner:
        runner.run(serve(args.host, args.port, args.cert_file, args.key_file, args.answer))


if __name__ == "__main__":
    main()
