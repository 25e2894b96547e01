"""The OpenAPI document, generated from the endpoint registry and its marshmallow schemas."""

from __future__ import annotations

from datetime import date, datetime
from http import HTTPStatus
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import fields

from bff import jsonutil
from bff.bodies import MAX_DEPTH
from bff.clock import Clock
from bff.coupons.rules import REFUSALS
from bff.openapi_examples import FLOWS, REPLY_EXAMPLES, REQUEST_EXAMPLES, resolve
from bff.protocol import MAX_HEADER_BYTES, MAX_HEADERS, MAX_URL_BYTES
from bff.routing import Endpoint
from bff.schemas import (
    MAX_CENTS,
    PAGE_PATH,
    Bool,
    Cents,
    Discriminated,
    ErrorReply,
    ImageUrl,
    Int,
    PagePath,
)

DESCRIPTION = """Coupon backend-for-frontend for mini-program storefronts.

Auth: `Authorization: Bearer <JWT>` (HS256 by default). Claims: `sub`, `role`
(`user` | `merchant` | `service`), `shop` (merchant and service), `exp`, `iss`.

Errors always have the shape
```
{"error": {"code": "SOLD_OUT", "message": "human text", "details": {}}}
```
Money is in integer cents; times are ISO-8601 with an offset.
"""

# What bff.bodies and bff.protocol refuse before any operation runs.
LIMITS = f"""A request body is `application/json` (UTF-8; `charset=utf-8` optional), or
`multipart/form-data` where an operation takes files; anything else is 415
`UNSUPPORTED_MEDIA_TYPE`. JSON nested more than {MAX_DEPTH} levels, or holding a lone
surrogate (`"\\udc00"`), is 400 `VALIDATION_FAILED`. A request URL over {MAX_URL_BYTES}
bytes is 414 `URI_TOO_LONG`; a header over {MAX_HEADER_BYTES} bytes, or more than
{MAX_HEADERS} headers, 431 `HEADERS_TOO_LARGE`; neither echoes the request.
"""

# Every error status an operation can answer, as a reusable response: name, description.
ERROR_RESPONSES: dict[HTTPStatus, tuple[str, str]] = {
    HTTPStatus.BAD_REQUEST: (
        "BadRequest",
        "VALIDATION_FAILED (details: field -> messages); an operation with more 400 codes "
        "lists them in its own response",
    ),
    HTTPStatus.UNAUTHORIZED: (
        "Unauthenticated",
        "UNAUTHENTICATED: the bearer token is missing (where one is needed), malformed, "
        "expired, or has a wrong signature or issuer; a bad token is refused on every path",
    ),
    HTTPStatus.FORBIDDEN: (
        "Forbidden",
        "FORBIDDEN: a role that may not call this path, or a token acting for another shop; "
        "an operation with more 403 codes (NOT_ELIGIBLE, RISK_REJECTED) lists them",
    ),
    HTTPStatus.NOT_FOUND: (
        "NotFound",
        "NOT_FOUND: no such resource, or a path id outside its pattern (no route matches)",
    ),
    HTTPStatus.CONFLICT: (
        "Conflict",
        "a business rule refused the request (error.code says which; every operation that "
        "answers 409 lists its codes, each with an example)",
    ),
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: ("PayloadTooLarge", "PAYLOAD_TOO_LARGE"),
    HTTPStatus.REQUEST_URI_TOO_LONG: (
        "UriTooLong",
        "URI_TOO_LONG: the request line is over the server's limit (nothing of it is echoed)",
    ),
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: (
        "UnsupportedMediaType",
        "UNSUPPORTED_MEDIA_TYPE: the body is neither application/json nor, where the "
        "operation takes a file, multipart/form-data",
    ),
    HTTPStatus.EXPECTATION_FAILED: (
        "ExpectationFailed",
        "EXPECTATION_FAILED: an Expect header other than 100-continue",
    ),
    HTTPStatus.TOO_MANY_REQUESTS: ("RateLimited", "RATE_LIMITED; wait Retry-After seconds"),
    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE: (
        "HeadersTooLarge",
        "HEADERS_TOO_LARGE: a header is over the server's limit (nothing of it is echoed)",
    ),
    HTTPStatus.SERVICE_UNAVAILABLE: (
        "Unavailable",
        "UNAVAILABLE: a dependency is down or did not answer within its deadline; nothing was "
        "half-done; retry after Retry-After seconds",
    ),
}
# Every error code the API answers: its status, and the message and details of an example
# body (the server's own wording). Each status's first code here is its own (409 has
# none): every operation answering that status lists it; an operation names the others
# it can answer (``Endpoint.codes``). Claim refusals: their one table (bff.coupons.rules).
ERROR_CODES: dict[str, tuple[HTTPStatus, str, dict[str, Any]]] = {
    "VALIDATION_FAILED": (
        HTTPStatus.BAD_REQUEST,
        "invalid request",
        {"request_id": ["Missing data for required field."]},
    ),
    "LANDING_PAGES_IDENTICAL": (
        HTTPStatus.BAD_REQUEST,
        "claim_page and redeem_page must be different pages: the same page breaks the jump "
        "at redemption",
        {"claim_page": "pages/coupon/use", "redeem_page": "pages/coupon/use"},
    ),
    "POLICY_VIOLATION": (
        HTTPStatus.BAD_REQUEST,
        "a points coupon's amount off must be one of the points denominations",
        {"rule": "points_denomination", "amount_off": 4500, "allowed_yuan": [5, 10, 20]},
    ),
    "UNAUTHENTICATED": (HTTPStatus.UNAUTHORIZED, "token expired", {}),
    "FORBIDDEN": (HTTPStatus.FORBIDDEN, "a user token may not call this path", {}),
    "CLAIM_METHOD_NOT_ALLOWED": (
        *REFUSALS["CLAIM_METHOD_NOT_ALLOWED"],
        {"method": "code"},
    ),
    "NOT_ELIGIBLE": (*REFUSALS["NOT_ELIGIBLE"], {}),
    "RISK_REJECTED": (*REFUSALS["RISK_REJECTED"], {}),
    "NOT_FOUND": (HTTPStatus.NOT_FOUND, "resource not found", {}),
    "SOLD_OUT": (*REFUSALS["SOLD_OUT"], {}),
    "DAILY_SOLD_OUT": (*REFUSALS["DAILY_SOLD_OUT"], {}),
    "LIMIT_REACHED": (*REFUSALS["LIMIT_REACHED"], {}),
    "WALLET_FULL": (*REFUSALS["WALLET_FULL"], {}),
    "ALREADY_CLAIMED": (*REFUSALS["ALREADY_CLAIMED"], {}),
    "CLAIM_PAUSED": (*REFUSALS["CLAIM_PAUSED"], {}),
    "NOT_STARTED": (*REFUSALS["NOT_STARTED"], {}),
    "CLAIM_ENDED": (*REFUSALS["CLAIM_ENDED"], {}),
    "INSUFFICIENT_POINTS": (
        HTTPStatus.CONFLICT,
        "not enough points",
        {"balance": 200, "needed": 300},
    ),
    "COUPON_NOT_USABLE": (
        HTTPStatus.CONFLICT,
        "coupon 7 cannot be used on this order: locked",
        {"coupon_id": 7, "reason": "locked"},
    ),
    "IDEMPOTENCY_CONFLICT": (*REFUSALS["IDEMPOTENCY_CONFLICT"], {}),
    "REQUEST_IN_PROGRESS": (
        HTTPStatus.CONFLICT,
        "the same request is still being processed; retry shortly",
        {},
    ),
    "PACK_WINDOW_OVERLAP": (
        HTTPStatus.CONFLICT,
        "another active new_member pack overlaps this window",
        {"pack_id": 1, "name": "新会员礼包"},
    ),
    "LOCK_EXPIRED": (
        HTTPStatus.CONFLICT,
        "the order's coupon lock lapsed before it was confirmed; its coupons were released",
        {"order_id": "o-1001"},
    ),
    "ORDER_CANCELLED": (
        HTTPStatus.CONFLICT,
        "the order was cancelled",
        {"order_id": "o-1001"},
    ),
    "PAYLOAD_TOO_LARGE": (HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large", {}),
    "URI_TOO_LONG": (HTTPStatus.REQUEST_URI_TOO_LONG, "request URL too long", {}),
    "UNSUPPORTED_MEDIA_TYPE": (
        HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
        "unsupported media type",
        {},
    ),
    "EXPECTATION_FAILED": (
        HTTPStatus.EXPECTATION_FAILED,
        "only Expect: 100-continue is supported",
        {},
    ),
    "RATE_LIMITED": (*REFUSALS["RATE_LIMITED"], {}),
    "HEADERS_TOO_LARGE": (
        HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
        "request headers too large",
        {},
    ),
    "UNAVAILABLE": (
        HTTPStatus.SERVICE_UNAVAILABLE,
        "a dependency is unavailable, try again shortly",
        {},
    ),
}


def status_codes(status: HTTPStatus) -> list[str]:
    """The codes of one status, its own first."""
    return [code for code, (of, _, _) in ERROR_CODES.items() if of == status]


def own_codes(status: HTTPStatus) -> list[str]:
    """The code every operation answering ``status`` can answer with it (none for 409)."""
    return [] if status == HTTPStatus.CONFLICT else status_codes(status)[:1]


def error_example(code: str) -> dict[str, Any]:
    """An example body of ``code`` in API.md's error shape, as an OpenAPI example object."""
    status, message, details = ERROR_CODES[code]
    body = {"error": {"code": code, "message": message, "details": details}}
    return {"summary": f"{int(status)} {code}", "value": body}


_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 0},
    }
}
# Answered before routing (the HTTP parser's limits), so by every operation.
_ALWAYS = {
    HTTPStatus.UNAUTHORIZED,
    HTTPStatus.REQUEST_URI_TOO_LONG,
    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
    HTTPStatus.EXPECTATION_FAILED,  # bff.routing.expect_handler, before the view
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE,  # a body of another type, even where none is taken
}


def _discriminated_properties(
    plugin: MarshmallowPlugin, field: fields.Field, **_: Any
) -> dict[str, Any]:
    """``oneOf`` the member schemas, with the ``type`` value -> member ``mapping``.

    Without the mapping, OpenAPI says the wire value is the member schema's name
    (``ThresholdBenefit``), so a generated client could not decode ``threshold``.
    Each member declares ``type`` as required with an enum of its one value.
    """
    if not isinstance(field, Discriminated):
        return {}
    refs, mapping = [], {}
    for kind, schema in field.schemas.items():
        name = f"{schema.__name__.removesuffix('Schema')}"
        if name not in plugin.spec.components.schemas:
            plugin.spec.components.schema(name, schema=schema)
            component = plugin.spec.components.schemas[name]
            component.setdefault("properties", {})["type"] = {"type": "string", "enum": [kind]}
            component.setdefault("required", []).insert(0, "type")
        declared = plugin.spec.components.schemas[name]["properties"]["type"]
        if declared.get("enum") != [kind]:  # one member schema under two type values
            raise RuntimeError(f"{name} is the member for {declared.get('enum')} and {kind!r}")
        ref = f"#/components/schemas/{name}"
        refs.append({"$ref": ref})
        mapping[kind] = ref
    return {"oneOf": refs, "discriminator": {"propertyName": "type", "mapping": mapping}}


def _nullable_nested(field: fields.Field, ret: dict[str, Any]) -> dict[str, Any]:
    """A nested object or null: ``nullable`` around an ``allOf`` of its one ``$ref``.

    apispec spells it ``anyOf: [$ref, {type: object, nullable: true}]`` for 3.0, whose
    second branch accepts *any* object: a generated client would type it as a union.
    """
    branches = ret.get("anyOf")
    if not field.allow_none or not isinstance(branches, list) or len(branches) != 2:
        return {}
    refs = [branch for branch in branches if set(branch) == {"$ref"}]
    if len(refs) != 1 or {"type": "object", "nullable": True} not in branches:
        return {}
    del ret["anyOf"]
    return {"nullable": True, "allOf": refs}


# The checks of our field classes the document can state (their messages stay the API's).
_IMAGE_URL = r"^[hH][tT][tT][pP][sS]?://[^/?#]+/[^?#]*\.([pP][nN][gG]|[jJ][pP][eE]?[gG])([?#].*)?$"


def _field_bounds(field: fields.Field, ret: dict[str, Any]) -> dict[str, Any]:
    if isinstance(field, Cents):
        return {"maximum": min(ret.get("maximum", MAX_CENTS), MAX_CENTS)}
    if isinstance(field, PagePath):
        return {"pattern": PAGE_PATH.pattern, "maxLength": 256}
    if isinstance(field, ImageUrl):
        return {"pattern": _IMAGE_URL, "maxLength": 512, "format": "uri"}
    return {}


def build_openapi(
    endpoints: list[Endpoint], *, now: datetime, version: str = "0.1.0"
) -> dict[str, Any]:
    """The document; the examples' times (``openapi_examples.At``) relative to ``now``."""
    plugin = MarshmallowPlugin(schema_name_resolver=lambda schema: _schema_name(schema))
    spec = APISpec(
        title="Coupon BFF",
        version=version,
        openapi_version="3.0.2",
        plugins=[plugin],
        info={"description": DESCRIPTION + "\n" + LIMITS + "\n" + FLOWS},
    )
    if plugin.converter is None:  # set by APISpec.__init__; a plugin change would break here
        raise RuntimeError("apispec MarshmallowPlugin has no converter")
    plugin.converter.field_mapping[Int] = ("integer", None)
    plugin.converter.field_mapping[Bool] = ("boolean", None)
    plugin.converter.add_attribute_function(
        lambda self, field, **kw: _discriminated_properties(plugin, field, **kw)
    )
    plugin.converter.add_attribute_function(
        lambda self, field, ret, **kw: _nullable_nested(field, ret)
    )
    plugin.converter.add_attribute_function(
        lambda self, field, ret, **kw: _field_bounds(field, ret)
    )
    spec.components.security_scheme(
        "bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )
    spec.components.schema("Error", schema=ErrorReply)
    for status, (name, description) in ERROR_RESPONSES.items():
        spec.components.response(
            name, _error_response(status, description, own_codes(status) or status_codes(status))
        )
    for endpoint in endpoints:
        spec.path(
            path=endpoint.openapi_path, operations={endpoint.method.lower(): _operation(endpoint)}
        )
    document: dict[str, Any] = resolve(spec.to_dict(), now)
    return document


def render_openapi(endpoints: list[Endpoint], now: datetime) -> bytes:
    return jsonutil.dumps(build_openapi(endpoints, now=now))


class OpenApiDocument:
    """The served document as bytes, rendered at start and again on the first request of
    each new day (UTC), so its example dates stay relative to the day it is read."""

    def __init__(self, endpoints: list[Endpoint], clock: Clock) -> None:
        self.endpoints = endpoints
        self.clock = clock
        self._day: date | None = None
        self._body = b""
        self.body()  # a schema the document cannot describe fails the start, not a request

    def body(self) -> bytes:
        now = self.clock.now()
        if now.date() != self._day:
            self._body = render_openapi(self.endpoints, now)
            self._day = now.date()
        return self._body


def _schema_name(schema: Any) -> str:
    cls = schema if isinstance(schema, type) else type(schema)
    name = cls.__name__.removesuffix("Schema")
    modifiers = []
    if not isinstance(schema, type):
        if schema.only:
            modifiers.append("Only" + "".join(sorted(schema.only)))
        if schema.exclude:
            modifiers.append("Ex" + "".join(sorted(schema.exclude)))
        if schema.partial:
            modifiers.append("Partial")
    return name + "".join(modifiers)


# Path parameters as in the demo shop (``run.py --demo``), which /docs's try-it-out fills in.
PATH_EXAMPLES = {
    "shop_id": "demo",
    "product_id": "cup-1",
    "room_id": "room-1",
    "template_id": "1",
    "coupon_id": "1",
    "pack_id": "1",
    "offer_id": "1",
    "user_id": "u1",
    "order_id": "o-1001",
    "asset": "app.js",
}


def path_patterns(path: str) -> dict[str, str]:
    """``/shops/{shop_id:[A-Za-z0-9_-]{1,64}}`` -> ``{"shop_id": "^[A-Za-z0-9_-]{1,64}$"}``."""
    out: dict[str, str] = {}
    depth, current = 0, ""
    for char in path:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        if depth >= 1:
            current += char
        elif current:
            name, _, pattern = current.removeprefix("{").partition(":")
            out[name] = "^" + (pattern or "[^{}/]+") + "$"
            current = ""
    return out


def statuses(endpoint: Endpoint) -> set[HTTPStatus]:
    """Every error status the endpoint can answer (see ``_operation``)."""
    found = set(endpoint.errors) | _ALWAYS | {ERROR_CODES[code][0] for code in endpoint.codes}
    if not endpoint.offline:
        found.add(HTTPStatus.SERVICE_UNAVAILABLE)
    if endpoint.body is not None or endpoint.form is not None or endpoint.query is not None:
        found.add(HTTPStatus.BAD_REQUEST)
    if endpoint.body is not None or endpoint.form is not None:
        found.add(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    if path_patterns(endpoint.path):
        # An id outside its pattern matches no route: 404, like an unknown id.
        found.add(HTTPStatus.NOT_FOUND)
    if not endpoint.auth.public:
        found.add(HTTPStatus.FORBIDDEN)
    return found


def _request_body(endpoint: Endpoint) -> dict[str, Any] | None:
    content: dict[str, Any] = {}
    example = endpoint.example or REQUEST_EXAMPLES.get(endpoint.handler.__name__)
    if endpoint.body is not None and not (endpoint.multipart and endpoint.form is None):
        content["application/json"] = {"schema": endpoint.body}
        if example is not None:
            content["application/json"]["example"] = example
    if endpoint.multipart:
        content["multipart/form-data"] = {"schema": endpoint.form or endpoint.body}
    if not content:
        return None
    return {"required": True, "content": content}


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    """One operation: parameters, body, the success reply and every error status.

    The errors: 401, 414 and 431 everywhere (a bad token is refused on every path; the
    URL and header limits apply before routing); 503 unless the endpoint is offline;
    400 with a body or query; 413 and 415 with a body; 404 with a path parameter; 403
    with a role; and what the endpoint declares (404, 409, 429, ...).
    """
    operation: dict[str, Any] = {
        "summary": endpoint.summary,
        "operationId": endpoint.handler.__name__,
        "tags": list(endpoint.tags),
        "responses": {},
    }
    if endpoint.description:
        operation["description"] = endpoint.description
    if not endpoint.auth.public:
        roles = ", ".join(sorted(str(role) for role in endpoint.auth.roles))
        note = f"Roles: {roles}" + (" (or anonymous)" if endpoint.auth.anonymous else "")
        operation["description"] = (operation.get("description", "") + "\n\n" + note).strip()
        operation["security"] = [{"bearer": []}] + ([{}] if endpoint.auth.anonymous else [])
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": p}}
        | ({"example": PATH_EXAMPLES[name]} if name in PATH_EXAMPLES else {})
        for name, p in path_patterns(endpoint.path).items()
    ]
    if endpoint.query is not None:
        parameters.append({"in": "query", "schema": endpoint.query})
    if parameters:
        operation["parameters"] = parameters
    body = _request_body(endpoint)
    if body is not None:
        operation["requestBody"] = body
    for status in (endpoint.status, *endpoint.also):
        operation["responses"][str(int(status))] = _success(endpoint, status)
    for status in sorted(statuses(endpoint)):
        operation["responses"][str(int(status))] = _error(endpoint, status)
    return operation


def _error_response(status: HTTPStatus, description: str, codes: list[str]) -> dict[str, Any]:
    media = {
        "schema": {"$ref": "#/components/schemas/Error"},
        "examples": {code: error_example(code) for code in codes},
    }
    response: dict[str, Any] = {"description": description, "content": {"application/json": media}}
    if status in (HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.SERVICE_UNAVAILABLE):
        response["headers"] = _RETRY_AFTER
    return response


def _error(endpoint: Endpoint, status: HTTPStatus) -> dict[str, Any]:
    """The shared response of ``status`` (an example of its own code), or, where the
    endpoint answers more codes with it, one of its own with an example of each."""
    name, _ = ERROR_RESPONSES[status]
    own = own_codes(status)
    more = [code for code in endpoint.codes if ERROR_CODES[code][0] == status]
    if not more:
        return {"$ref": f"#/components/responses/{name}"}
    codes = [*dict.fromkeys([*own, *more])]  # in order, once each
    description = f"{HTTPStatus(status).phrase}: " + ", ".join(codes)
    return _error_response(status, description, codes)


def _success(endpoint: Endpoint, status: HTTPStatus) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": HTTPStatus(status).phrase}
    if status in (HTTPStatus.NO_CONTENT, HTTPStatus.NOT_MODIFIED):
        return ok
    if endpoint.reply is not None:
        media: dict[str, Any] = {"schema": endpoint.reply}
        if endpoint.handler.__name__ in REPLY_EXAMPLES:
            media["example"] = REPLY_EXAMPLES[endpoint.handler.__name__]
        ok["content"] = {"application/json": media}
    elif endpoint.media_types == ("application/json",):
        ok["content"] = {"application/json": {"schema": {"type": "object"}}}
    else:
        ok["content"] = {kind: {"schema": {"type": "string"}} for kind in endpoint.media_types}
    return ok
