"""System endpoints: liveness, readiness, metrics, the OpenAPI document and its page."""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from importlib import resources

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bff.errors import error_response, is_unavailable
from bff.keys import DB, GATE, METRICS, OPENAPI, SETTINGS
from bff.routing import API_PREFIX, PUBLIC, Call, Routes, json_response

routes = Routes(prefix="", tag="system")
READY_TIMEOUT_SECONDS = 2.0


@routes.get("/healthz", auth=PUBLIC, offline=True)
async def healthz(call: Call) -> web.Response:
    """200 while the process lives."""
    return json_response({"status": "ok"})


@routes.get("/readyz", auth=PUBLIC, errors=(HTTPStatus.SERVICE_UNAVAILABLE,))
async def readyz(call: Call) -> web.Response:
    """200 when the database (and Redis, when configured) answer, else 503."""
    app = call.app
    checks: dict[str, str] = {}
    for name, ping in (("database", app[DB].ping), (app[GATE].name, app[GATE].ping)):
        try:
            await asyncio.wait_for(ping(), READY_TIMEOUT_SECONDS)
            checks[name] = "ok"
        except Exception as exc:
            if not is_unavailable(exc) and not isinstance(exc, asyncio.TimeoutError):
                raise
            checks[name] = "unavailable"
    if all(state == "ok" for state in checks.values()):
        return json_response({"status": "ready", "checks": checks})
    retry_after = str(app[SETTINGS].http.retry_after_seconds)
    return error_response(
        HTTPStatus.SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        "a dependency is unavailable",
        {"checks": checks},
        headers={"Retry-After": retry_after},
    )


@routes.get(API_PREFIX + "/ping", auth=PUBLIC, offline=True)
async def ping(call: Call) -> web.Response:
    """A minimal JSON reply through the full middleware stack.

    The benchmark's baseline B (bench/run.py): every other route's rate is given as a
    ratio to this one, measured in the same run, so the figures say what each route
    costs beyond aiohttp and our middlewares rather than how fast the machine is.
    """
    return json_response({"pong": True})


@routes.get("/metrics", auth=PUBLIC, offline=True, media_types=("text/plain",))
async def metrics(call: Call) -> web.Response:
    """Prometheus text: requests by route, method and status; latency histogram."""
    response = web.Response(body=call.app[METRICS].render())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


@routes.get(API_PREFIX + "/openapi.json", auth=PUBLIC, offline=True)
async def openapi(call: Call) -> web.Response:
    """The machine-readable contract, generated from the schemas that validate requests."""
    return web.Response(body=call.app[OPENAPI].body(), content_type="application/json")


_DOCS_PAGE = resources.files("bff").joinpath("static/docs.html")


@routes.get("/docs", auth=PUBLIC, offline=True, media_types=("text/html",))
async def docs(call: Call) -> web.Response:
    """The OpenAPI document rendered for people, with try-it-out (nothing from the internet)."""
    return web.Response(body=_DOCS_PAGE.read_bytes(), content_type="text/html", charset="utf-8")


_FAVICON = resources.files("bff").joinpath("static/favicon.svg").read_bytes()


@routes.get("/favicon.ico", auth=PUBLIC, offline=True, media_types=("image/svg+xml",))
async def favicon(call: Call) -> web.Response:
    """The icon of /docs, where browsers also look for one on their own (an SVG)."""
    return web.Response(
        body=_FAVICON, content_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"}
    )
