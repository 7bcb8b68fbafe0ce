"""The lab's Fleet gateway: the one port hospitals reach. In Flower 1.41 the SuperLink serves the Fleet API
(SuperNodes), the Control API (`flwr run`, `flwr ls`, `flwr supernode register`) and the Runtime API on one HTTP
port, and the Control API has no login of its own: anyone holding the study's CA certificate could list runs,
register a SuperNode key or submit an app. So the SuperLink listens on loopback only, and this gateway, a
TLS-terminating reverse proxy, forwards exactly the Fleet API's paths (`/v1/fleet/...`) to it and answers
everything else with 403. Flower's own transport and authentication are untouched: requests and their signed
SuperNode headers pass through byte for byte.

A lab that prefers nginx can do the same with `location /v1/fleet/ { proxy_pass https://127.0.0.1:<port>; }` and
`location / { return 403; }` (README, "Threat model").

    python -m cardiacfl.fleet_gateway --listen 0.0.0.0:9092 --upstream 127.0.0.1:9091 \
        --ca ca.crt --cert superlink.pem --key superlink.key
"""

from __future__ import annotations

import argparse
import contextlib
import ssl

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

FLEET_PREFIX = "/v1/fleet/"
MAX_BODY = 512 * 1024 * 1024  # above Flower's own FAB and object size limits
HOP_BY_HOP = {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer",
              "proxy-authorization", "proxy-authenticate"}


def make_app(upstream: str, ca_file: str | None) -> Starlette:
    """The gateway as an ASGI app: Fleet API paths go to `upstream` (host:port, TLS unless ca_file is None)."""
    scheme = "https" if ca_file else "http"
    client = httpx.AsyncClient(base_url=f"{scheme}://{upstream}", verify=ssl.create_default_context(cafile=ca_file)
                               if ca_file else False, timeout=httpx.Timeout(600.0, connect=10.0))

    async def forward(request: Request) -> Response:
        path = request.url.path
        if not path.startswith(FLEET_PREFIX) or ".." in path:
            return PlainTextResponse("forbidden: only the Fleet API is served on this port\n", status_code=403)
        body = await request.body()
        if len(body) > MAX_BODY:
            return PlainTextResponse("request too large\n", status_code=413)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            reply = await client.request(request.method, path, params=request.query_params, content=body, headers=headers)
        except httpx.TransportError as err:
            return PlainTextResponse(f"SuperLink unreachable: {type(err).__name__}\n", status_code=502)
        return Response(reply.content, status_code=reply.status_code,
                        headers={k: v for k, v in reply.headers.items() if k.lower() not in HOP_BY_HOP | {"content-encoding"}})

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        await client.aclose()

    return Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])],
                     lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description="Forward only the Fleet API to a SuperLink on loopback.")
    parser.add_argument("--listen", required=True, help="host:port hospitals connect to")
    parser.add_argument("--upstream", required=True, help="the SuperLink's loopback host:port")
    parser.add_argument("--ca", help="study CA (verifies the SuperLink); omit only with --insecure")
    parser.add_argument("--cert", help="TLS certificate presented to hospitals (the SuperLink's, SANs for the lab's address)")
    parser.add_argument("--key", help="its private key")
    parser.add_argument("--insecure", action="store_true", help="plain HTTP on both sides (debugging only)")
    args = parser.parse_args()
    if not args.insecure and not (args.ca and args.cert and args.key):
        parser.error("--ca, --cert and --key are required unless --insecure")
    host, _, port = args.listen.rpartition(":")
    uvicorn.run(make_app(args.upstream, None if args.insecure else args.ca), host=host, port=int(port),
                ssl_certfile=None if args.insecure else args.cert, ssl_keyfile=None if args.insecure else args.key,
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
