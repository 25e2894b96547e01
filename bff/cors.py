"""CORS for browser front ends on other origins (``cors.origins``, ``BFF_CORS_ORIGINS``).

Off by default, and then nothing is installed: no middleware, no hook, no work per
request. On, two small pieces:

* a middleware that answers the preflight (``OPTIONS`` with ``Origin`` and
  ``Access-Control-Request-Method``) for paths under ``/api/`` from a listed origin:
  204 with the methods, the request headers the API reads and a max-age. Anything
  else goes on to the router as before (a preflight from another origin gets the
  usual 405 and no CORS header, so the browser refuses the call);
* an ``on_response_prepare`` hook that gives every reply, errors and 5xx included
  (the router's 404 and 405 too), ``Access-Control-Allow-Origin`` and the headers a
  front end reads (``Retry-After``, the request id) when the origin is listed, and
  ``Vary: Origin`` always, since the reply then depends on that header. Only the HTTP
  parser's refusals (400, 414, 431: bff/protocol.py) go without: they are answered
  before there is a request to match, and a browser reports them as a CORS failure.

Callers send bearer tokens, never cookies: ``Access-Control-Allow-Credentials`` is
never sent, so even ``*`` (any origin) is safe and is answered literally.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import hdrs, web

from bff.middlewares import REQUEST_ID_HEADER, observe_middleware
from bff.routing import API_PREFIX
from config.loader import CorsSettings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE"
# What the API reads from a request; writes carry their idempotency key (request_id,
# order_id) in the body, so there is no idempotency header to allow.
ALLOWED_HEADERS = f"Authorization, Content-Type, {REQUEST_ID_HEADER}"
EXPOSED_HEADERS = f"Retry-After, {REQUEST_ID_HEADER}"
ANY_ORIGIN = "*"


def install(app: web.Application, settings: CorsSettings) -> None:
    """Add the preflight middleware and the reply hook, unless no origin is listed."""
    origins = settings.origin_set
    if not origins:
        return
    any_origin = ANY_ORIGIN in origins
    preflight_headers = {
        hdrs.ACCESS_CONTROL_ALLOW_METHODS: ALLOWED_METHODS,
        hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ALLOWED_HEADERS,
        hdrs.ACCESS_CONTROL_MAX_AGE: str(settings.max_age_seconds),
    }
    api_paths = API_PREFIX + "/"

    def allowed(origin: str | None) -> bool:
        return origin is not None and (any_origin or origin in origins)

    @web.middleware
    async def preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            request.method == hdrs.METH_OPTIONS
            and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
            and request.path.startswith(api_paths)
            and allowed(request.headers.get(hdrs.ORIGIN))
        ):
            return web.Response(status=HTTPStatus.NO_CONTENT, headers=preflight_headers)
        return await handler(request)

    async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        vary = headers.get(hdrs.VARY)
        headers[hdrs.VARY] = f"{vary}, Origin" if vary else "Origin"
        origin = request.headers.get(hdrs.ORIGIN)
        if allowed(origin):
            headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = ANY_ORIGIN if any_origin else origin
            headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSED_HEADERS

    # Inside the observing middleware (a preflight is counted and logged like any
    # request), before the error and auth middlewares (a preflight carries no token).
    app.middlewares.insert(app.middlewares.index(observe_middleware) + 1, preflight)
    app.on_response_prepare.append(on_response_prepare)
