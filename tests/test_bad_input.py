"""Bad input is a 4xx in API.md's error shape, never a 500 (issue 15, section 3).

Table-driven, through HTTP on both backends: discriminators that are not strings,
broken multipart forms, JSON nested beyond bff.bodies.MAX_DEPTH, lone surrogates,
integers beyond their columns, bodies of the wrong media type, and requests the
HTTP parser refuses (a long URL, a long header). The generic probes are sent to
every route the app registers.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from datetime import timedelta
from http import HTTPStatus
from typing import Any

import aiohttp
import pytest
from aiohttp import http_parser, web_protocol
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.test_utils import TestClient

from bff.bodies import MAX_DEPTH
from bff.protocol import MAX_HEADER_BYTES, MAX_URL_BYTES, classify
from bff.routing import Endpoint
from bff.schemas import MAX_ID
from handlers import all_endpoints
from tests.conftest import expect, iso, template_body
from tests.helpers import shop_url, template_url

SURROGATE = "\udc00"
DEEP_ARRAYS = "[" * 10_000 + "]" * 10_000
DEEP_OBJECTS = '{"a":' * 10_000 + "1" + "}" * 10_000
NOT_UNICODE = "Must be valid Unicode text"
TOO_DEEP = "Must not nest"


# --- helpers ---------------------------------------------------------------------------------
def error_of(body: Any) -> dict[str, Any]:
    """Assert API.md's error shape; return the error."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, body
    assert isinstance(error["code"], str) and isinstance(error["message"], str), body
    assert isinstance(error["details"], dict), body
    return error


async def refused(
    response: Any, status: HTTPStatus, code: str, field: str | None = None
) -> dict[str, Any]:
    """Assert a refusal with ``status`` and ``code`` (naming ``field``); return the details."""
    assert response.content_type == "application/json", await response.text()
    body = await response.json()
    error = error_of(body)
    assert response.status == status, body
    assert error["code"] == code, body
    if field is not None:
        assert field in error["details"], body
    return error["details"]


def raw_json(body: Any) -> bytes:
    """JSON with ASCII escapes: a lone surrogate is sent as the escape \\udc00."""
    return json.dumps(body, ensure_ascii=True).encode()


def with_value(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``body`` with ``path`` ("items.0.quantity") set to ``value``."""
    copy = json.loads(json.dumps(body))
    *parents, last = path.split(".")
    target: Any = copy
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return copy


@pytest.fixture
def service(auth: Callable[..., dict[str, str]]) -> dict[str, str]:
    return auth("service", shop="s1", sub="order-system")


@pytest.fixture
def user(auth: Callable[..., dict[str, str]]) -> dict[str, str]:
    return auth("user", sub="u7")


@pytest.fixture
def headers_for(
    merchant: dict[str, str], service: dict[str, str], user: dict[str, str]
) -> Callable[[str], dict[str, str]]:
    """The caller a route table row names: public, user, merchant or service."""
    return {"public": {}, "user": user, "merchant": merchant, "service": service}.__getitem__


def valid_bodies(clock: Any) -> dict[str, tuple[str, str, str, dict[str, Any]]]:
    """A well-formed body per JSON route: name -> (method, path, caller, body)."""
    now = clock.now()
    start, end = iso(now - timedelta(days=1)), iso(now + timedelta(days=10))
    line = {"product_id": "p1", "quantity": 1}
    return {
        "session": ("POST", "/api/v1/session", "public", {"auth_code": "dev:u1"}),
        "claim": (
            "POST",
            shop_url("/coupons/claim"),
            "user",
            {"template_id": 1, "request_id": "r1", "device": {"id": "d1"}},
        ),
        "claim_by_code": (
            "POST",
            shop_url("/coupons/claim-by-code"),
            "user",
            {"code": "CODE-1", "request_id": "r1"},
        ),
        "prices": ("POST", shop_url("/prices"), "public", {"items": [line]}),
        "checkout": (
            "POST",
            shop_url("/checkout/preview"),
            "user",
            {"items": [line], "coupon_ids": [1], "live_room_id": "room-1"},
        ),
        "auto_claim": ("POST", shop_url("/products/p1/auto-claim"), "user", {"request_id": "r1"}),
        "template": (
            "POST",
            shop_url("/admin/coupon-templates"),
            "merchant",
            template_body(
                clock,
                scope={"type": "categories", "categories": ["cups"]},
                product_code="P-1",
                cover_image="https://img.example.com/a.png",
            ),
        ),
        "patch_template": (
            "PATCH",
            template_url(1),
            "merchant",
            {
                "name": "n",
                "description": "d",
                "status": "paused",
                "claim_end": end,
                "stock": {"type": "limited", "total": 10},
            },
        ),
        "patch_pack": (
            "PATCH",
            shop_url("/admin/gift-packs/1"),
            "merchant",
            {"name": "pack", "ends_at": end, "min_level": 1, "gift": None, "status": "ended"},
        ),
        "generate_codes": ("POST", template_url(1, "/codes"), "merchant", {"count": 1}),
        "grants": (
            "POST",
            template_url(1, "/grants"),
            "merchant",
            {"user_ids": ["u1"], "request_id": "r1"},
        ),
        "product": (
            "PUT",
            shop_url("/admin/products/p1"),
            "merchant",
            {
                "title": "cup",
                "list_price": 1000,
                "promo_price": 900,
                "category": "cups",
                "auto_claim_template_ids": [1],
            },
        ),
        "member": ("PUT", shop_url("/admin/members/u1"), "merchant", {"level": 1}),
        "pack": (
            "POST",
            shop_url("/admin/gift-packs"),
            "merchant",
            {
                "kind": "member",
                "name": "pack",
                "starts_at": start,
                "ends_at": end,
                "min_level": 0,
                "coupon_template_ids": [1],
                "gift": {"template_id": 2, "quantity": 1},
            },
        ),
        "points": (
            "POST",
            shop_url("/admin/members/u1/points"),
            "merchant",
            {"delta": 5, "reason": "gift", "ref": "order:1", "request_id": "r1"},
        ),
        "offer": (
            "POST",
            shop_url("/admin/exchange-offers"),
            "merchant",
            {"template_id": 1, "points_cost": 10},
        ),
        "redemption": (
            "POST",
            shop_url("/redemptions"),
            "service",
            {"order_id": "o1", "user_id": "u1", "items": [line], "coupon_ids": [1]},
        ),
        "live_room": (
            "PUT",
            shop_url("/admin/live-rooms/room-1/prices"),
            "merchant",
            {
                "items": [
                    {"product_id": "p1", "exclusive_price": 100, "starts_at": start, "ends_at": end}
                ]
            },
        ),
        "pack_claim": ("POST", shop_url("/gift-packs/1/claim"), "user", {"request_id": "r1"}),
        "points_redeem": (
            "POST",
            shop_url("/points-exchange/1/redeem"),
            "user",
            {"request_id": "r1", "device": {"id": "d1"}},
        ),
    }


async def send(
    client: TestClient, headers: dict[str, str], method: str, path: str, raw: bytes, **kw: Any
) -> Any:
    headers = {"Content-Type": "application/json", **headers}
    return await client.request(method, path, data=raw, headers=headers, **kw)


# --- every route: deep JSON, lone surrogates, wrong media types ------------------------------
def _sample_path(endpoint: Endpoint) -> str:
    values = {"shop_id": "s1", "asset": "app.js"}

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in values:
            return values[name]
        return "1" if name.endswith("_id") and name not in _STRING_IDS else "x1"

    return re.sub(r"\{(\w+)\}", value, endpoint.openapi_path)


_STRING_IDS = {"product_id", "room_id", "user_id", "order_id"}
ENDPOINTS = all_endpoints()
FORM_ONLY = {"import_codes"}  # multipart only; grants take JSON or a form


def _caller(endpoint: Endpoint) -> str:
    roles = {str(role) for role in endpoint.auth.roles}
    if not roles:
        return "public"
    return "merchant" if "merchant" in roles else "service" if "service" in roles else "user"


def _takes_json(endpoint: Endpoint) -> bool:
    return endpoint.body is not None and endpoint.handler.__name__ not in FORM_ONLY


@pytest.mark.parametrize(
    "endpoint", ENDPOINTS, ids=[f"{e.method} {e.openapi_path}" for e in ENDPOINTS]
)
async def test_every_route_refuses_bad_bodies_in_the_error_shape(client, headers_for, endpoint):
    path, headers = _sample_path(endpoint), headers_for(_caller(endpoint))
    method = endpoint.method
    takes_json, form_only = _takes_json(endpoint), endpoint.handler.__name__ in FORM_ONLY

    # Declared as something else (or not declared): 415, whatever the route takes.
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        response = await send(
            client, {**headers, "Content-Type": content_type}, method, path, b"{}"
        )
        await refused(response, HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE")
    response = await client.request(
        method, path, data=b"{}", headers=headers, skip_auto_headers=["Content-Type"]
    )
    await refused(response, HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE")

    probes = [
        (DEEP_ARRAYS.encode(), "_body", TOO_DEEP),
        (DEEP_OBJECTS.encode(), "_body", TOO_DEEP),
        (raw_json({"x": SURROGATE}), "x", NOT_UNICODE),
        (raw_json({SURROGATE: 1}), "?", NOT_UNICODE),
        (raw_json({"x": [{"y": "a" + SURROGATE}]}), "x.0.y", NOT_UNICODE),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)).encode(),
    ]
    for probe in probes:
        raw, field, message = probe if isinstance(probe, tuple) else (probe, "_body", TOO_DEEP)
        response = await send(client, headers, method, path, raw)
        if form_only:
            await refused(response, HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE")
        elif takes_json:
            details = await refused(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED", field)
            assert details[field][0].startswith(message), details
        else:
            # A route that takes no body ignores a JSON one: never a 5xx.
            assert response.status < 500, (response.status, await response.text())
            if response.status >= 400 and response.content_type == "application/json":
                error_of(await response.json())


# --- discriminators ----------------------------------------------------------------------------
NOT_A_TYPE = [{}, [], {"type": "limited"}, ["limited"], 5, 1.5, True, None, "nope", ""]
DISCRIMINATED = ["benefit", "scope", "validity", "stock", "codes", "audience"]


@pytest.mark.parametrize("field", DISCRIMINATED)
async def test_a_discriminator_that_is_not_one_of_its_names_is_a_400_on_it(
    client, clock, merchant, field
):
    for kind in NOT_A_TYPE:
        body = template_body(clock, **{field: {"type": kind, "total": 10}})
        response = await send(
            client, merchant, "POST", shop_url("/admin/coupon-templates"), raw_json(body)
        )
        await refused(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED", f"{field}.type")


async def test_a_patched_stock_type_that_is_not_a_string_is_a_400(client, merchant, make_template):
    template = await make_template()
    for kind in NOT_A_TYPE:
        response = await client.patch(
            template_url(template["id"]),
            json={"stock": {"type": kind, "total": 10}},
            headers=merchant,
        )
        await refused(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED", "stock.type")
    for value in ([], "limited", 7):
        response = await client.patch(
            template_url(template["id"]), json={"stock": value}, headers=merchant
        )
        await refused(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED", "stock")


# --- multipart -------------------------------------------------------------------------------
PART = b'Content-Disposition: form-data; name="file"; filename="f.txt"\r\n\r\nCODE-1\r\n'
BROKEN_FORMS = [
    ("no boundary", "multipart/form-data", b"--x\r\n" + PART + b"--x--\r\n"),
    ("empty boundary", 'multipart/form-data; boundary=""', b"--\r\n" + PART),
    ("boundary too long", "multipart/form-data; boundary=" + "b" * 100, b"--" + b"b" * 100),
    ("unused boundary", "multipart/form-data; boundary=abc", b"--zzz\r\n" + PART + b"--zzz--\r\n"),
    ("truncated", "multipart/form-data; boundary=abc", b"--abc\r\n" + PART[:-12]),
    ("no closing boundary", "multipart/form-data; boundary=abc", b"--abc\r\n" + PART),
    ("empty", "multipart/form-data; boundary=abc", b""),
    ("not a form at all", "multipart/form-data; boundary=abc", b"garbage"),
    (
        "part headers beyond the limit",
        "multipart/form-data; boundary=abc",
        b"--abc\r\n" + b"X-A: b\r\n" * 300 + PART + b"--abc--\r\n",
    ),
]
FORM_ROUTES = ["/codes/import", "/grants"]


@pytest.fixture
async def code_template(make_template: Callable[..., Any]) -> dict[str, Any]:
    return await make_template(codes={"type": "imported"}, stock=None, claim_methods=["code"])


@pytest.mark.parametrize("route", FORM_ROUTES)
@pytest.mark.parametrize(
    ("content_type", "raw"),
    [(ct, raw) for _, ct, raw in BROKEN_FORMS],
    ids=[name for name, _, _ in BROKEN_FORMS],
)
async def test_a_broken_form_is_a_400_on_file(
    client, merchant, code_template, route, content_type, raw
):
    response = await client.post(
        template_url(code_template["id"], route),
        data=raw,
        headers={**merchant, "Content-Type": content_type},
    )
    details = await refused(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED", "file")
    assert b"CODE-1".decode() not in json.dumps(details)


@pytest.mark.parametrize(
    ("route", "content_type", "accepted"),
    [
        ("/codes/import", "application/json", ["multipart/form-data"]),
        ("/codes/import", "text/plain", ["multipart/form-data"]),
        ("/codes/import", "multipart/mixed; boundary=abc", ["multipart/form-data"]),
        ("/grants", "text/plain", ["application/json", "multipart/form-data"]),
        ("/grants", "multipart/mixed; boundary=abc", ["application/json", "multipart/form-data"]),
    ],
)
async def test_a_form_route_refuses_other_media_types_with_415(
    client, merchant, code_template, route, content_type, accepted
):
    raw = b"--abc\r\n" + PART + b"--abc--\r\n"
    response = await client.post(
        template_url(code_template["id"], route),
        data=raw,
        headers={**merchant, "Content-Type": content_type},
    )
    details = await refused(
        response, HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE", "accepted"
    )
    assert details["accepted"] == accepted


async def test_well_formed_forms_and_json_still_work(
    client, merchant, code_template, make_template
):
    form = aiohttp.FormData()
    form.add_field("file", b"CODE-1\nCODE-2\n", filename="codes.txt", content_type="text/plain")
    response = await client.post(
        template_url(code_template["id"], "/codes/import"), data=form, headers=merchant
    )
    assert (await expect(response, HTTPStatus.CREATED))["imported"] == 2
    template = await make_template()
    form = aiohttp.FormData()
    form.add_field("file", b"u1\nu2\n", filename="users.txt", content_type="text/plain")
    form.add_field("request_id", "grant-form-1")
    response = await client.post(
        template_url(template["id"], "/grants"), data=form, headers=merchant
    )
    assert len((await expect(response, HTTPStatus.CREATED))["granted"]) == 2
    response = await client.post(
        template_url(template["id"], "/grants"),
        data=raw_json({"user_ids": ["u3"], "request_id": "grant-json-1"}),
        headers={**merchant, "Content-Type": "application/json; charset=UTF-8"},
    )
    assert len((await expect(response, HTTPStatus.CREATED))["granted"]) == 1


async def test_a_form_field_name_that_is_not_text_is_not_echoed(client, merchant, code_template):
    raw = (
        b'--abc\r\nContent-Disposition: form-data; name="f\xffx"\r\n\r\n\xff\xfe\r\n'
        b"--abc\r\n" + PART + b"--abc--\r\n"
    )
    response = await client.post(
        template_url(code_template["id"], "/codes/import"),
        data=raw,
        headers={**merchant, "Content-Type": "multipart/form-data; boundary=abc"},
    )
    await refused(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED", "file")


# --- deep JSON -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw",
    [
        DEEP_ARRAYS,
        DEEP_OBJECTS,
        '{"items": ' + "[" * 30_000 + "]" * 30_000 + "}",
        "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1),
        '{"items": [' + '{"a": ' * MAX_DEPTH + "1" + "}" * MAX_DEPTH + "]}",
    ],
    ids=["arrays 10000", "objects 10000", "inside a field", "one too deep", "deep item"],
)
async def test_json_nested_too_deep_is_a_400_on_the_anonymous_prices(client, raw):
    response = await send(client, {}, "POST", shop_url("/prices"), raw.encode())
    details = await refused(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED", "_body")
    assert details["_body"][0].startswith(TOO_DEEP)


async def test_json_as_deep_as_allowed_reaches_the_schema(client):
    raw = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    response = await send(client, {}, "POST", shop_url("/prices"), raw.encode())
    details = await refused(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED", "_body")
    assert details["_body"] == ["Must be a JSON object."]


async def test_a_long_flat_body_is_not_mistaken_for_a_deep_one(client, merchant, clock):
    # 300 items hold 300 objects: more brackets than MAX_DEPTH, nested 3 levels.
    start, end = iso(clock.now()), iso(clock.now() + timedelta(days=1))
    items = [
        {"product_id": f"p{n}", "exclusive_price": 100, "starts_at": start, "ends_at": end}
        for n in range(300)
    ]
    for n in range(300):
        response = await client.put(
            shop_url(f"/admin/products/p{n}"),
            json={"title": "t", "list_price": 500},
            headers=merchant,
        )
        assert response.status == HTTPStatus.OK
    response = await client.put(
        shop_url("/admin/live-rooms/room-1/prices"), json={"items": items}, headers=merchant
    )
    assert len((await expect(response, HTTPStatus.OK))["items"]) == 300


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{bad", "Malformed JSON."),
        (b'{"items": NaN}', "Malformed JSON."),
        (b'{"items": Infinity}', "Malformed JSON."),
        (b'{"items": [' + b"9" * 5000 + b"]}", "Malformed JSON."),
        (b'{"items": "\xff"}', "Must be UTF-8 text."),
        (b'{"items": "\xed\xb0\x80"}', "Must be UTF-8 text."),  # a surrogate, UTF-8-encoded
        ('{"items": []}'.encode("utf-16"), "Must be UTF-8 text."),
    ],
    ids=["malformed", "NaN", "Infinity", "5000 digits", "not UTF-8", "encoded surrogate", "utf-16"],
)
async def test_a_body_that_is_not_utf8_json_is_a_400(client, raw, message):
    response = await send(client, {}, "POST", shop_url("/prices"), raw)
    details = await refused(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED", "_body")
    assert details["_body"] == [message]


# --- lone surrogates -------------------------------------------------------------------------
SURROGATE_FIELDS = [
    ("claim_by_code", "code"),
    ("claim_by_code", "request_id"),
    ("claim", "device.id"),
    ("session", "auth_code"),
    ("prices", "items.0.product_id"),
    ("checkout", "live_room_id"),
    ("template", "name"),
    ("template", "description"),
    ("template", "product_code"),
    ("template", "cover_image"),
    ("template", "claim_page"),
    ("template", "redeem_page"),
    ("template", "scope.categories.0"),
    ("template", "claim_methods.0"),
    ("patch_template", "description"),
    ("grants", "user_ids.0"),
    ("product", "title"),
    ("product", "category"),
    ("pack", "name"),
    ("points", "reason"),
    ("points", "ref"),
    ("redemption", "order_id"),
    ("redemption", "user_id"),
    ("live_room", "items.0.product_id"),
    ("pack_claim", "request_id"),
    ("points_redeem", "device.id"),
]


@pytest.mark.parametrize(("route", "field"), SURROGATE_FIELDS)
async def test_a_lone_surrogate_in_a_string_field_is_a_400_naming_it(
    client, clock, headers_for, route, field
):
    method, path, caller, body = valid_bodies(clock)[route]
    for text in (SURROGATE, "a\ud800", "\udfffz", "\ud83d"):
        raw = raw_json(with_value(body, field, text))
        response = await send(client, headers_for(caller), method, path, raw)
        details = await refused(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED", field)
        assert details[field][0].startswith(NOT_UNICODE)


async def test_a_surrogate_pair_is_text(client, clock, merchant):
    # 😀 sent as the escaped pair \ud83d\ude00 is one character, not a lone surrogate.
    raw = raw_json(template_body(clock, name="领券 😀"))
    assert b"\\ud83d\\ude00" in raw
    response = await send(client, merchant, "POST", shop_url("/admin/coupon-templates"), raw)
    assert (await expect(response, HTTPStatus.CREATED))["name"] == "领券 😀"


async def test_a_lone_surrogate_in_a_claim_by_code_writes_nothing(client, user, code_template):
    raw = raw_json({"code": SURROGATE, "request_id": "r-1"})
    response = await send(client, user, "POST", shop_url("/coupons/claim-by-code"), raw)
    await refused(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED", "code")
    response = await client.get(shop_url("/me/coupons"), headers=user)
    assert (await expect(response, HTTPStatus.OK))["items"] == []


@pytest.mark.parametrize(
    ("path", "caller", "field"),
    [
        ("/admin/coupon-templates?status=", "merchant", "status"),
        ("/admin/coupon-templates?cursor=", "merchant", "cursor"),
        ("/me/coupons?status=", "user", "status"),
        ("/claim-widget?product_id=", "public", "product_id"),
        ("/products/p1?live_room_id=", "public", "live_room_id"),
        ("/live-rooms/room-1/prices?product_ids=", "public", "product_ids"),
        ("/admin/gift-packs?kind=", "merchant", "kind"),
    ],
)
async def test_surrogates_and_bad_bytes_in_a_query_are_a_400(
    client, headers_for, path, caller, field
):
    # yarl decodes invalid UTF-8 in a query to U+FFFD: never a surrogate, always refused.
    for encoded in ("%ED%B0%80", "%FF", "%C0%AF", "%5Cudc00"):
        response = await client.get(shop_url(path) + encoded, headers=headers_for(caller))
        await refused(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED", field)


# --- integers within their columns -----------------------------------------------------------
INT_FIELDS = [
    ("template", "daily_limit"),
    ("template", "per_user_limit"),
    ("template", "stock.total"),
    ("template", "validity.valid_days"),
    ("template", "validity.effective_after_days"),
    ("template", "benefit.amount_off"),
    ("template", "benefit.threshold"),
    ("generate_codes", "count"),
    ("claim", "template_id"),
    ("prices", "items.0.quantity"),
    ("checkout", "items.0.quantity"),
    ("checkout", "coupon_ids.0"),
    ("product", "list_price"),
    ("product", "promo_price"),
    ("product", "auto_claim_template_ids.0"),
    ("member", "level"),
    ("pack", "min_level"),
    ("pack", "coupon_template_ids.0"),
    ("pack", "gift.template_id"),
    ("pack", "gift.quantity"),
    ("points", "delta"),
    ("offer", "template_id"),
    ("offer", "points_cost"),
    ("redemption", "coupon_ids.0"),
    ("redemption", "items.0.quantity"),
    ("live_room", "items.0.exclusive_price"),
]
IDS = {"template_id", "coupon_ids.0", "auto_claim_template_ids.0", "coupon_template_ids.0"}


@pytest.mark.parametrize(("route", "field"), INT_FIELDS)
async def test_an_integer_beyond_its_column_is_a_400_naming_it(
    client, clock, headers_for, route, field
):
    method, path, caller, body = valid_bodies(clock)[route]
    is_id = field in IDS or field.endswith("template_id")
    values = [2**63, 2**64, 10**30, -(2**63) - 1]
    if not is_id:
        values.append(10**12)  # every count and amount is far below; an id may be that large
    for value in values:
        raw = raw_json(with_value(body, field, value))
        response = await send(client, headers_for(caller), method, path, raw)
        await refused(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED", field)


@pytest.mark.parametrize(
    ("route", "field"), [(route, field) for route, field in INT_FIELDS if field in IDS]
)
async def test_the_largest_id_is_not_a_server_error(client, clock, headers_for, route, field):
    method, path, caller, body = valid_bodies(clock)[route]
    raw = raw_json(with_value(body, field, MAX_ID))
    response = await send(client, headers_for(caller), method, path, raw)
    assert 400 <= response.status < 500, (response.status, await response.text())
    error_of(await response.json())


@pytest.mark.parametrize("daily_limit", [10**12, 2**31, 2**63])
async def test_daily_limit_beyond_its_int_column_is_a_400(client, clock, merchant, daily_limit):
    response = await client.post(
        shop_url("/admin/coupon-templates"),
        json=template_body(clock, daily_limit=daily_limit),
        headers=merchant,
    )
    await refused(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED", "daily_limit")


async def test_the_largest_daily_limit_is_stored_and_claimed_on_both_backends(
    client, make_template, user
):
    template = await make_template(daily_limit=10**9, stock={"type": "limited", "total": 10**9})
    assert template["daily_limit"] == 10**9
    response = await client.post(
        shop_url("/coupons/claim"),
        json={"template_id": template["id"], "request_id": "r-daily"},
        headers=user,
    )
    await expect(response, HTTPStatus.CREATED)


@pytest.mark.parametrize("query", ["limit=9223372036854775808", "limit=1" + "0" * 5000, "limit=0"])
async def test_a_paging_limit_beyond_its_range_is_a_400(client, merchant, query):
    response = await client.get(shop_url("/admin/coupon-templates?") + query, headers=merchant)
    await refused(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED", "limit")


async def test_a_quantity_beyond_its_range_is_a_400(client):
    response = await client.get(shop_url("/products/p1?quantity=" + "9" * 30))
    await refused(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED", "quantity")


PATH_IDS = [
    ("GET", "/admin/coupon-templates/{}", "merchant", None),
    ("PATCH", "/admin/coupon-templates/{}", "merchant", {"name": "n"}),
    ("POST", "/admin/coupon-templates/{}/codes", "merchant", {"count": 1}),
    (
        "POST",
        "/admin/coupon-templates/{}/grants",
        "merchant",
        {"user_ids": ["u1"], "request_id": "r"},
    ),
    ("GET", "/admin/stats/coupon-templates/{}", "merchant", None),
    ("POST", "/admin/coupons/{}/revoke", "merchant", None),
    ("GET", "/admin/gift-packs/{}", "merchant", None),
    ("PATCH", "/admin/gift-packs/{}", "merchant", {"name": "n"}),
    ("GET", "/admin/exchange-offers/{}", "merchant", None),
    ("POST", "/gift-packs/{}/claim", "user", {"request_id": "r1"}),
    ("POST", "/points-exchange/{}/redeem", "user", {"request_id": "r1"}),
]


@pytest.mark.parametrize(("method", "path", "caller", "body"), PATH_IDS)
async def test_an_id_in_a_path_beyond_its_column_is_a_404(
    client, headers_for, method, path, caller, body
):
    for value in ("999999999999999999", "0", "9223372036854775808", "1" * 40, "-1"):
        raw = raw_json(body) if body is not None else None
        response = await client.request(
            method,
            shop_url(path.format(value)),
            data=raw,
            headers={
                **headers_for(caller),
                **({"Content-Type": "application/json"} if raw else {}),
            },
        )
        await refused(response, HTTPStatus.NOT_FOUND, "NOT_FOUND")


async def test_a_forged_cursor_is_a_400(client, merchant):
    import base64

    for position in ({"before": 2**64}, {"before": "\udc00"}, {"before": [[[]]]}, []):
        cursor = base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")
        response = await client.get(
            shop_url("/admin/coupon-templates"), params={"cursor": cursor}, headers=merchant
        )
        await refused(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED", "cursor")


# --- media types -----------------------------------------------------------------------------
PRICES_BODY = b'{"items": [{"product_id": "p1", "quantity": 1}]}'


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "application/octet-stream",
        "application/vnd.api+json",
        "application/merge-patch+json",
        "application/json; charset=latin-1",
        "application/json; charset=utf-16",
        "application/jsonx",
        "multipart/form-data; boundary=abc",
    ],
)
async def test_a_json_body_declared_as_something_else_is_a_415(client, content_type):
    response = await client.post(
        shop_url("/prices"), data=PRICES_BODY, headers={"Content-Type": content_type}
    )
    details = await refused(
        response, HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE", "accepted"
    )
    assert details["accepted"] == ["application/json"]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "Application/JSON",
        "application/json; charset=utf8",
    ],
)
async def test_json_with_or_without_a_utf8_charset_is_accepted(client, content_type):
    response = await client.post(
        shop_url("/prices"), data=PRICES_BODY, headers={"Content-Type": content_type}
    )
    await expect(response, HTTPStatus.OK)


async def test_a_body_without_a_content_type_is_a_415(client):
    response = await client.post(
        shop_url("/prices"), data=PRICES_BODY, skip_auto_headers=["Content-Type"]
    )
    await refused(response, HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE")


async def test_routes_that_take_no_body_need_no_content_type(client, user, service):
    # POST /membership, DELETE /membership and the order calls take no body.
    response = await client.post(
        shop_url("/membership"), headers=user, skip_auto_headers=["Content-Type"]
    )
    await expect(response, HTTPStatus.CREATED)
    response = await client.post(shop_url("/membership"), json={}, headers=user)
    await expect(response, HTTPStatus.OK)
    response = await client.post(
        shop_url("/membership"), data=b"", headers={**user, "Content-Type": "text/plain"}
    )
    await expect(response, HTTPStatus.OK)
    response = await client.post(
        shop_url("/membership"), data=b"hello", headers={**user, "Content-Type": "text/plain"}
    )
    await refused(response, HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE")
    response = await client.delete(shop_url("/membership"), headers=user)
    assert response.status == HTTPStatus.NO_CONTENT
    response = await client.post(shop_url("/redemptions/o1/confirm"), headers=service)
    await refused(response, HTTPStatus.NOT_FOUND, "NOT_FOUND")


async def test_an_empty_body_is_no_body_whatever_its_type(client, merchant, make_template):
    template = await make_template()
    for headers in ({"Content-Type": "application/json"}, {"Content-Type": "text/plain"}, {}):
        response = await client.patch(
            template_url(template["id"]), data=b"", headers={**merchant, **headers}
        )
        await refused(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED", "_schema")


# --- requests the HTTP parser refuses ----------------------------------------------------------
async def raw_request(client: TestClient, head: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``head`` (a request without a body) over a socket; the status, headers, body."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(head)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def get(path: str, *headers: bytes) -> bytes:
    return (
        b"GET "
        + path.encode()
        + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        + b"".join(header + b"\r\n" for header in headers)
        + b"\r\n"
    )


@pytest.fixture(params=["c", "python"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """aiohttp's C parser (llhttp, the default) or its pure-Python one (AIOHTTP_NO_EXTENSIONS)."""
    if request.param == "python":
        monkeypatch.setattr(web_protocol, "HttpRequestParser", http_parser.HttpRequestParserPy)
    elif web_protocol.HttpRequestParser is http_parser.HttpRequestParserPy:
        pytest.skip("aiohttp's C parser is not built here")
    return str(request.param)


WIDGET = "/api/v1/shops/s1/claim-widget"
SECRET = b"S3CRET-TOKEN-START"


@pytest.mark.parametrize(
    ("name", "head", "status", "code"),
    [
        (
            "10 kB Authorization",
            get(WIDGET, b"Authorization: Bearer " + SECRET + b"A" * 10_000),
            431,
            "HEADERS_TOO_LARGE",
        ),
        (
            "10 kB other header",
            get(WIDGET, b"X-Note: " + SECRET + b"a" * 10_000),
            431,
            "HEADERS_TOO_LARGE",
        ),
        (
            "long header name",
            get(WIDGET, SECRET + b"X" * 10_000 + b": 1"),
            431,
            "HEADERS_TOO_LARGE",
        ),
        (
            "too many headers",
            get(WIDGET, *[b"X-H%d: %s" % (n, SECRET) for n in range(200)]),
            431,
            "HEADERS_TOO_LARGE",
        ),
        (
            "10 kB URL",
            get(WIDGET + "?product_id=" + SECRET.decode() + "a" * 10_000),
            414,
            "URI_TOO_LONG",
        ),
        ("100 kB URL", get("/" + SECRET.decode() + "a" * 100_000), 414, "URI_TOO_LONG"),
        ("not HTTP", SECRET + b"\r\n\r\n", 400, "VALIDATION_FAILED"),
        (
            "bad byte in URL",
            get(WIDGET).replace(b"widget", b"widget?" + SECRET + b"\xff"),
            400,
            "VALIDATION_FAILED",
        ),
        (
            "bad byte in a query value",
            get(WIDGET).replace(b"widget", b"widget?product_id=" + SECRET + b"\xed\xb0\x80"),
            400,
            "VALIDATION_FAILED",
        ),
        ("bad header", get(WIDGET, b"X Bad" + SECRET + b": 1"), 400, "VALIDATION_FAILED"),
    ],
    ids=lambda value: value if isinstance(value, str) and " " in value else None,
)
async def test_requests_the_parser_refuses_are_answered_in_the_error_shape(
    client, parser, name, head, status, code
):
    got, headers, body = await raw_request(client, head)
    assert headers.get("content-type", "").startswith("application/json"), (got, body)
    assert SECRET not in body and b"AAAA" not in body and b"aaaa" not in body, body
    error = error_of(json.loads(body))
    assert (got, error["code"]) == (status, code), (name, body)


async def test_bad_bytes_in_a_path_are_a_4xx_in_the_error_shape(client, parser):
    # The C parser refuses them (400); the Python one lets them through to no route (404).
    for path in (b"/api/v1/shops/s\xff1/claim-widget", b"/api/v1/shops/s1/\xed\xb0\x80"):
        got, _, body = await raw_request(client, get(WIDGET).replace(WIDGET.encode(), path))
        assert got in (400, 404) and error_of(json.loads(body)), body


async def test_headers_within_the_limits_reach_the_app(client, parser):
    # A header of 8000 bytes and a URL of 8000 pass the parser: the app answers (a bad token).
    token = b"A" * 8000
    got, _, body = await raw_request(client, get(WIDGET, b"Authorization: Bearer " + token))
    assert (got, error_of(json.loads(body))["code"]) == (401, "UNAUTHENTICATED")
    assert token[:100] not in body
    got, _, body = await raw_request(client, get(WIDGET + "?product_id=" + "a" * 8000))
    assert (got, error_of(json.loads(body))["code"]) == (400, "VALIDATION_FAILED")


@pytest.mark.parametrize(
    "value", [b"Bearer \xff\xfe", b"Bearer ey\xe4\xb8\xad", b"B\xffarer x", b"Bearer \x80"]
)
async def test_an_authorization_that_is_not_ascii_is_a_401(client, value):
    got, _, body = await raw_request(client, get(WIDGET, b"Authorization: " + value))
    assert (got, error_of(json.loads(body))["code"]) == (401, "UNAUTHENTICATED")


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        # The C parser: the URL against max_line_size, a header against max_field_size.
        (LineTooLong(b"/api/v1/shops...", MAX_URL_BYTES), 414),
        (LineTooLong(b"https://x/api...", MAX_URL_BYTES), 414),
        (LineTooLong(b"Bearer eyJ...", MAX_HEADER_BYTES), 431),
        (LineTooLong(b"/looks-like-a-path...", MAX_HEADER_BYTES), 431),
        # The pure-Python parser: every line against max_line_size, the whole line quoted.
        (LineTooLong(b"GET /api/v1/shops...", MAX_URL_BYTES), 414),
        (LineTooLong(b"Authorization: Bearer eyJ...", MAX_URL_BYTES), 431),
        (BadHttpMessage("Too many headers received"), 431),
        (BadHttpMessage("Invalid method encountered"), 400),
        (None, 400),
    ],
)
def test_parser_refusals_are_classified_by_the_limit_they_hit(exc, status):
    assert classify(exc, MAX_URL_BYTES, MAX_HEADER_BYTES) == status


# --- every field of every JSON route, with values of every JSON type --------------------------
def _paths(value: Any, prefix: str = "") -> list[str]:
    """Every field path of a body: "benefit", "benefit.amount_off", "items.0", ..."""
    out: list[str] = []
    children = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in children:
        path = f"{prefix}.{key}" if prefix else str(key)
        out.append(path)
        if isinstance(item, (dict, list)) and item:
            out.extend(_paths(item, path))
    return out


WRONG_VALUES = [{}, [], None, True, 1.5, -1, 0, 2**70, "", "x" * 70_000, {"type": {}}, [[[]]]]


JSON_ROUTES = [
    "session", "claim", "claim_by_code", "prices", "checkout", "auto_claim", "template",
    "patch_template", "patch_pack", "generate_codes", "grants", "product", "member", "pack",
    "points", "offer", "redemption", "live_room", "pack_claim", "points_redeem",
]  # fmt: skip


@pytest.mark.parametrize("route", JSON_ROUTES)
async def test_any_value_in_any_field_is_never_a_server_error(client, clock, headers_for, route):
    method, path, caller, body = valid_bodies(clock)[route]
    for field in _paths(body):
        for value in WRONG_VALUES:
            raw = raw_json(with_value(body, field, value))
            response = await send(client, headers_for(caller), method, path, raw)
            assert response.status < 500, (field, value, await response.text())
            if response.status >= 400:
                error_of(await response.json())


# --- a trailing newline is not part of an id ------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("product_code", "SKU-1\n"),
        ("redeem_page", "pages/coupon/use\n"),
        ("claim_page", "pages/index/index\n"),
    ],
)
async def test_a_trailing_newline_in_a_template_field_is_a_400(
    client, clock, merchant, field, value
):
    body = template_body(clock, **{field: value})
    if field == "product_code":
        body["cover_image"] = "https://img.example.com/cup.png"
    response = await client.post(shop_url("/admin/coupon-templates"), json=body, headers=merchant)
    reply = await expect(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")
    assert field in reply["error"]["details"], reply


async def test_a_trailing_newline_in_a_request_id_is_a_400(client, clock, merchant, auth):
    created = await expect(
        await client.post(
            shop_url("/admin/coupon-templates"), json=template_body(clock), headers=merchant
        ),
        HTTPStatus.CREATED,
    )
    body = {"template_id": created["id"], "request_id": "r-1\n", "device": {"id": "d1"}}
    response = await client.post(shop_url("/coupons/claim"), json=body, headers=auth("user"))
    reply = await expect(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")
    assert "request_id" in reply["error"]["details"], reply
