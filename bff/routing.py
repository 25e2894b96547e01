"""One registry of endpoints: routes, auth rules, request/response schemas, OpenAPI.

A handler module declares its endpoints on a :class:`Routes`::

    @routes.post("/admin/coupon-templates", auth=MERCHANT, body=TemplateIn,
                 reply=TemplateOut, status=HTTPStatus.CREATED, summary="Create a template")
    async def create_template(call: Call) -> dict: ...

The wrapper built here checks the caller's role and shop, loads the body and
query with their schemas (a failure is 400 ``VALIDATION_FAILED`` naming each
field), calls the handler once, and dumps its result with the reply schema.
The OpenAPI document is generated from the same declarations, so it cannot
drift from what is enforced.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from aiohttp import HttpVersion11, web
from marshmallow import Schema, ValidationError

from bff import fastdump, fastload, jsonutil
from bff.auth import Claims, Role
from bff.bodies import check_media_type, parse_json, query_of
from bff.errors import error_response, forbidden, unauthenticated, validation_failed
from bff.keys import CLAIMS, INVALIDATOR, RAW_CACHE_KEY, REPLY_CACHE
from bff.schemas import ID_PATTERN, flatten_errors

API_PREFIX = "/api/v1"
SHOP_PREFIX = API_PREFIX + "/shops/{shop_id:" + ID_PATTERN + "}"


@dataclass(frozen=True)
class Auth:
    """Who may call: the roles, and whether an anonymous caller is let in too."""

    roles: frozenset[Role]
    anonymous: bool = False

    @property
    def public(self) -> bool:
        return not self.roles


PUBLIC = Auth(frozenset(), anonymous=True)
USER = Auth(frozenset({Role.USER}))
USER_OR_ANONYMOUS = Auth(frozenset({Role.USER}), anonymous=True)
MERCHANT = Auth(frozenset({Role.MERCHANT}))
SERVICE = Auth(frozenset({Role.SERVICE}))


@dataclass
class Call:
    """What a handler gets: the request, the caller, and the loaded input."""

    request: web.Request
    claims: Claims | None
    body: Any
    query: Any

    @property
    def app(self) -> web.Application:
        return self.request.app

    @property
    def shop_id(self) -> str:
        return self.request.match_info["shop_id"]

    @property
    def user_id(self) -> str | None:
        return self.claims.sub if self.claims is not None else None

    def path(self, name: str) -> str:
        return self.request.match_info[name]


HandlerFn = Callable[[Call], Awaitable[Any]]
RawCacheKey = Callable[[web.Request, Claims | None, bytes], str | None]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: HandlerFn
    summary: str
    auth: Auth
    body: type[Schema] | None = None
    query: type[Schema] | None = None
    reply: type[Schema] | None = None
    status: HTTPStatus = HTTPStatus.OK
    tags: tuple[str, ...] = ()
    errors: tuple[HTTPStatus, ...] = ()
    # The error codes of the operation beyond each status's own (bff.openapi.ERROR_CODES:
    # SOLD_OUT, NOT_ELIGIBLE, ...), for the document: an example body each. Their
    # statuses count as declared errors.
    codes: tuple[str, ...] = ()
    # The route takes a file: the body is multipart/form-data, read by the handler. Its
    # form is ``form``, or ``body`` when ``form`` is None; with ``form`` set, ``body`` is
    # the JSON alternative the handler also takes (the document lists both).
    multipart: bool = False
    form: type[Schema] | None = None
    # Other success statuses answered with the same reply (POST /membership: 201 on
    # joining, 200 for a member already), for the document.
    also: tuple[HTTPStatus, ...] = ()
    # The success reply's media types, for the document (text/html for a page).
    media_types: tuple[str, ...] = ("application/json",)
    # Answered without the database or Redis: the document lists no 503.
    offline: bool = False
    description: str = ""
    example: Mapping[str, Any] | None = None
    # An admin write that changes what shoppers pay: after it succeeds, cached price
    # replies of the shop are cleared in every process (bff.cache).
    changes_prices: bool = False
    # A read answered from the reply cache (bff.cache): the key this *raw* request maps
    # to, or None when this caller's reply is not shared (say, signed in). It is looked
    # up before the body and query are loaded, so a hit skips marshmallow, which costs
    # more than the rest of a cached read; see ``cached_reply`` for when it is stored.
    raw_cache_key: RawCacheKey | None = None

    @property
    def openapi_path(self) -> str:
        """``{shop_id:[A-Za-z...]}`` -> ``{shop_id}``."""
        out, depth, skipping = [], 0, False
        for char in self.path:
            if char == "{":
                depth += 1
                if depth == 1:
                    out.append(char)
                    skipping = False
                    continue
            if char == "}":
                depth -= 1
                if depth == 0:
                    out.append(char)
                    skipping = False
                    continue
            if depth >= 1 and char == ":":
                skipping = True
                continue
            if not skipping:
                out.append(char)
        return "".join(out)


@dataclass
class Routes:
    """Endpoints declared by one handler module; paths are relative to ``prefix``."""

    prefix: str = SHOP_PREFIX
    tag: str = ""
    endpoints: list[Endpoint] = field(default_factory=list)

    def route(self, method: str, path: str, **options: Any) -> Callable[[HandlerFn], HandlerFn]:
        def register(handler: HandlerFn) -> HandlerFn:
            tags = options.pop("tags", (self.tag,) if self.tag else ())
            summary = options.pop("summary", handler.__doc__ or handler.__name__)
            self.endpoints.append(
                Endpoint(
                    method=method,
                    path=self.prefix + path,
                    handler=handler,
                    summary=summary.strip().splitlines()[0],
                    tags=tuple(tags),
                    **options,
                )
            )
            return handler

        return register

    def get(self, path: str, **options: Any) -> Callable[[HandlerFn], HandlerFn]:
        return self.route("GET", path, **options)

    def post(self, path: str, **options: Any) -> Callable[[HandlerFn], HandlerFn]:
        return self.route("POST", path, **options)

    def put(self, path: str, **options: Any) -> Callable[[HandlerFn], HandlerFn]:
        return self.route("PUT", path, **options)

    def patch(self, path: str, **options: Any) -> Callable[[HandlerFn], HandlerFn]:
        return self.route("PATCH", path, **options)

    def delete(self, path: str, **options: Any) -> Callable[[HandlerFn], HandlerFn]:
        return self.route("DELETE", path, **options)


def check_access(endpoint: Endpoint, request: web.Request) -> Claims | None:
    claims = request[CLAIMS]
    auth = endpoint.auth
    if auth.public:
        return claims
    if claims is None:
        if auth.anonymous:
            return None
        raise unauthenticated("this path needs a bearer token")
    if claims.role not in auth.roles:
        raise forbidden(f"a {claims.role} token may not call this path")
    shop_id = request.match_info.get("shop_id")
    if claims.role is not Role.USER and shop_id is not None and claims.shop != shop_id:
        raise forbidden("the token acts for another shop")
    return claims


async def read_json(request: web.Request) -> Any:
    """The request body as JSON (``{}`` when there is none); 415 when it is declared as
    something else, 400 when it is not UTF-8 JSON within bff.bodies' limits, 413 over
    the size limit."""
    if not request.body_exists:
        return {}
    check_media_type(request, multipart=False)
    raw = await request.read()
    if not raw:
        return {}
    return parse_json(raw)


def load(schema: Schema, data: Any) -> Any:
    if not isinstance(data, Mapping):
        raise validation_failed({"_body": ["Must be a JSON object."]})
    try:
        return fastload.load(schema, data)
    except ValidationError as exc:
        raise validation_failed(flatten_errors(exc.messages)) from exc


def json_response(payload: Any, status: HTTPStatus | int = HTTPStatus.OK) -> web.Response:
    return web.Response(
        body=jsonutil.dumps(payload), status=int(status), content_type="application/json"
    )


def make_view(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    body_schema = endpoint.body() if endpoint.body else None
    query_schema = endpoint.query() if endpoint.query else None
    reply_schema = endpoint.reply() if endpoint.reply else None

    async def view(request: web.Request) -> web.StreamResponse:
        claims = check_access(endpoint, request)
        # A JSON route takes JSON; one that takes nothing ignores a body, but not one
        # declared as something else; one that takes files checks in its handler.
        if not endpoint.multipart:
            check_media_type(request, multipart=False)
        if endpoint.raw_cache_key is not None:
            raw = await request.read() if request.body_exists else b""
            raw_key = endpoint.raw_cache_key(request, claims, raw)
            if raw_key is not None:
                hit = request.app[REPLY_CACHE].get(request.match_info["shop_id"], raw_key)
                if hit is not None:
                    return web.Response(body=hit, content_type="application/json")
                request[RAW_CACHE_KEY] = raw_key
        body = None
        if body_schema is not None and not endpoint.multipart:
            body = load(body_schema, await read_json(request))
        query = load(query_schema, query_of(request)) if query_schema is not None else None
        result = await endpoint.handler(Call(request, claims, body, query))
        if endpoint.changes_prices:
            await request.app[INVALIDATOR].shop_changed(request.match_info["shop_id"])
        if isinstance(result, web.StreamResponse):
            return result
        if endpoint.status == HTTPStatus.NO_CONTENT:
            return web.Response(status=HTTPStatus.NO_CONTENT)
        payload = fastdump.dump(reply_schema, result) if reply_schema is not None else result
        return json_response(payload, endpoint.status)

    view.__name__ = endpoint.handler.__name__
    return view


async def cached_reply(
    call: Call,
    key: str,
    schema: Schema,
    build: Callable[[], Awaitable[Any]],
) -> web.Response:
    """The same serialized bytes for every caller of ``key`` (see bff.cache).

    The reply is also kept under the request's raw key (``Endpoint.raw_cache_key``),
    so the next identical request is answered before any parsing. Only a request
    that loaded cleanly gets here: a raw key never maps to an error or to another
    request's reply.
    """

    async def serialized() -> bytes:
        return jsonutil.dumps(schema.dump(await build()))

    alias = call.request.get(RAW_CACHE_KEY)
    body = await call.app[REPLY_CACHE].cached(call.shop_id, key, serialized, alias=alias)
    return web.Response(body=body, content_type="application/json")


def raw_path_key(request: web.Request, claims: Claims | None, raw: bytes) -> str | None:
    """Everyone's reply, keyed by the path and query string exactly as sent."""
    return "raw|" + request.raw_path


def anonymous_raw_path_key(request: web.Request, claims: Claims | None, raw: bytes) -> str | None:
    """The shared reply of anonymous callers, keyed by the path and query as sent."""
    return None if claims is not None else "raw|" + request.raw_path


def anonymous_raw_body_key(request: web.Request, claims: Claims | None, raw: bytes) -> str | None:
    """The shared reply of anonymous callers, keyed by the path and a digest of the body
    (a digest: bodies may be padded up to the size limit, keys must stay small)."""
    if claims is not None:
        return None
    return f"raw|{request.raw_path}|{hashlib.blake2b(raw, digest_size=16).hexdigest()}"


async def expect_handler(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue`` as aiohttp answers it; any other expectation is a 417 in
    the error shape. aiohttp's own handler raises before the middlewares, which answered
    ``417 text/plain`` quoting the header."""
    if request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the body has not started: as aiohttp does
        return None
    if request.version < HttpVersion11:
        return None  # HTTP/1.0 has no Expect: ignored, as aiohttp does
    return error_response(
        HTTPStatus.EXPECTATION_FAILED,
        "EXPECTATION_FAILED",
        "only Expect: 100-continue is supported",
    )


def add_routes(app: web.Application, endpoints: list[Endpoint]) -> None:
    for endpoint in endpoints:
        app.router.add_route(
            endpoint.method, endpoint.path, make_view(endpoint), expect_handler=expect_handler
        )
