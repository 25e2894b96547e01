"""Request id, access log and metrics: the outermost middleware."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from bff.keys import METRICS, REQUEST_ID, SETTINGS
from bff.logs import request_id_var

access_log = logging.getLogger("bff.access")
REQUEST_ID_HEADER = "X-Request-Id"
_ACCEPTED_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    # The route's template, never the raw path: ids must not explode label cardinality.
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = incoming if _ACCEPTED_ID.fullmatch(incoming) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    token = request_id_var.set(request_id)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers[REQUEST_ID_HEADER] = request_id
        return response
    except web.HTTPException as exc:
        status = exc.status
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    finally:
        elapsed = time.perf_counter() - started
        route = _route_name(request)
        request.app[METRICS].observe(route, request.method, status, elapsed)
        if request.app[SETTINGS].server.access_log:
            access_log.info(
                "%s %s %d",
                request.method,
                request.path,
                status,
                extra={
                    "fields": {"status": status, "ms": round(elapsed * 1000, 2), "route": route}
                },
            )
        request_id_var.reset(token)
