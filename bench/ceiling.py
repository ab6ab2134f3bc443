"""The ceiling of our stack: a bare aiohttp HTTPS server that answers every POST with a fixed
``allowed: true`` AdmissionReview, without parsing the body.

Same TLS settings, same event loop and the same aiohttp as the real server, so the ratio of our
numbers to its numbers is the cost of what we add (decode, resolve, patch, encode, metrics), not
the cost of HTTPS or of Python. Run as ``python -m bench.ceiling --port P --cert-file C --key-file K``.
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

from webhook.server import event_loop_factory, tls_context

ANSWER = (
    b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",'
    b'"response":{"uid":"705ab4f5-6393-11e8-b7cc-42010a800002","allowed":true}}'
)


async def answer(request: web.Request) -> web.Response:
    await request.read()  # the body must be received either way; it is not looked at
    return web.Response(body=ANSWER, content_type="application/json")


async def ok(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def serve(host: str, port: int, cert_file: str, key_file: str) -> None:
    app = web.Application(client_max_size=7 * 1024 * 1024)
    app.router.add_post("/mutate", answer)
    app.router.add_get("/readyz", ok)
    runner = web.AppRunner(app, access_log=None)
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
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=event_loop_factory(args.event_loop)) as runner:
        runner.run(serve(args.host, args.port, args.cert_file, args.key_file))


if __name__ == "__main__":
    main()
