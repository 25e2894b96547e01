"""The served OpenAPI document is one a code generator can use (issue 15, section 4).

Checked on the document as served (``GET /api/v1/openapi.json``), and where it says a
route answers a status, by calling the route.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from http import HTTPStatus
from typing import Any

import aiohttp
import pytest
from schemathesis.specs.openapi.definitions import OPENAPI_30_VALIDATOR

from bff.coupons.rules import REFUSALS
from bff.openapi import ERROR_CODES, statuses
from handlers import all_endpoints
from tests.conftest import expect, template_body
from tests.helpers import claim, claim_ok, new_request_id, put_product, shop_url, template_url

BASE = "/api/v1/shops/{shop_id}"
# Routes that answer without the database or Redis: no 503.
OFFLINE = {
    "/healthz",
    "/api/v1/ping",
    "/metrics",
    "/api/v1/openapi.json",
    "/docs",
    "/favicon.ico",
    "/demo",
    "/demo/config.json",
    "/demo/{asset}",
}


@pytest.fixture
async def doc(client) -> dict[str, Any]:
    return await expect(await client.get("/api/v1/openapi.json"), HTTPStatus.OK)


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


async def test_the_document_is_valid_openapi_3_0(doc):
    errors = [str(error) for error in OPENAPI_30_VALIDATOR.iter_errors(doc)]
    assert errors == []
    ids = [operation["operationId"] for _, _, operation in operations(doc)]
    assert len(ids) == len(set(ids))


async def test_every_discriminator_maps_each_type_value_to_its_member(doc):
    discriminated = [node for node in walk(doc) if "discriminator" in node]
    assert len(discriminated) >= 19
    for node in discriminated:
        discriminator = node["discriminator"]
        assert discriminator["propertyName"] == "type"
        mapping = discriminator["mapping"]
        assert sorted(mapping.values()) == sorted(ref["$ref"] for ref in node["oneOf"]), node
        for value, ref in mapping.items():
            member = resolve(doc, {"$ref": ref})
            assert member["properties"]["type"] == {"type": "string", "enum": [value]}, ref
            assert "type" in member["required"], ref
    benefit = doc["components"]["schemas"]["Coupon"]["properties"]["benefit"]
    assert benefit["discriminator"]["mapping"]["threshold"] == (
        "#/components/schemas/ThresholdBenefit"
    )


async def test_grants_document_the_json_body_and_the_multipart_form(doc, client, merchant, clock):
    operation = doc["paths"][BASE + "/admin/coupon-templates/{template_id}/grants"]["post"]
    content = operation["requestBody"]["content"]
    as_json = resolve(doc, content["application/json"]["schema"])
    as_form = resolve(doc, content["multipart/form-data"]["schema"])
    assert set(as_json["required"]) == {"user_ids", "request_id"}
    assert set(as_form["required"]) == {"file", "request_id"}
    assert as_form["properties"]["file"]["format"] == "binary"
    # Both are answered as documented.
    created = await client.post(
        shop_url("/admin/coupon-templates"),
        json=template_body(clock, per_user_limit=5),
        headers=merchant,
    )
    template_id = (await expect(created, HTTPStatus.CREATED))["id"]
    as_json_reply = await client.post(
        template_url(template_id, "/grants"),
        json={"user_ids": ["u1"], "request_id": new_request_id()},
        headers=merchant,
    )
    assert len((await expect(as_json_reply, HTTPStatus.CREATED))["granted"]) == 1
    form = aiohttp.FormData()
    form.add_field("file", b"u2\nu3\n", filename="users.txt", content_type="text/plain")
    form.add_field("request_id", new_request_id())
    as_form_reply = await client.post(
        template_url(template_id, "/grants"), data=form, headers=merchant
    )
    assert len((await expect(as_form_reply, HTTPStatus.CREATED))["granted"]) == 2


@pytest.mark.parametrize(
    ("method", "path", "url"),
    [
        ("put", "/admin/products/{product_id}", "/admin/products/bad.id"),
        ("put", "/admin/members/{user_id}", "/admin/members/bad.id"),
        ("get", "/live-rooms/{room_id}/prices", "/live-rooms/bad.id/prices?product_ids=p1"),
        ("put", "/admin/live-rooms/{room_id}/prices", "/admin/live-rooms/bad.id/prices"),
    ],
)
async def test_an_id_outside_its_pattern_is_a_documented_404(
    doc, client, merchant, method, path, url
):
    operation = doc["paths"][BASE + path][method]
    assert "404" in operation["responses"]
    for parameter in operation["parameters"]:
        if parameter["in"] == "path":
            assert parameter["schema"]["pattern"] == "^[A-Za-z0-9_-]{1,64}$"
    response = await getattr(client, method)(shop_url(url), json={}, headers=merchant)
    await expect(response, HTTPStatus.NOT_FOUND, "NOT_FOUND")


async def test_membership_documents_201_on_joining_and_200_for_a_member(doc, client, auth):
    operation = doc["paths"][BASE + "/membership"]["post"]
    assert operation["responses"]["201"]["content"] == operation["responses"]["200"]["content"]
    user = auth("user", sub="u7")
    await expect(await client.post(shop_url("/membership"), headers=user), HTTPStatus.CREATED)
    again = await expect(await client.post(shop_url("/membership"), headers=user), HTTPStatus.OK)
    assert again["new_member"] is True and again["member"]["user_id"] == "u7"


async def test_every_operation_documents_the_errors_it_can_answer(doc):
    for path, method, operation in operations(doc):
        responses = operation["responses"]
        where = f"{method.upper()} {path}"
        # A bad token is refused on every path; the URL and header limits apply to all.
        assert {"401", "414", "431"} <= set(responses), where
        assert ("503" in responses) is (path not in OFFLINE), where
        if "requestBody" in operation:
            assert {"400", "413", "415"} <= set(responses), where
        if operation.get("security"):
            assert "403" in responses, where
        if "{" in path:
            assert "404" in responses, where
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                schema = resolve(doc, response)["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, where
    for name in ("RateLimited", "Unavailable"):
        assert "Retry-After" in doc["components"]["responses"][name]["headers"]


async def test_a_nullable_nested_object_is_that_object_or_null(doc):
    device = doc["components"]["schemas"]["ClaimIn"]["properties"]["device"]
    assert device["nullable"] is True
    assert device["allOf"] == [{"$ref": "#/components/schemas/Device"}]
    for node in walk(doc):
        # apispec's 3.0 spelling, whose second branch accepts any object at all.
        assert {"type": "object", "nullable": True} not in node.get("anyOf", []), node


async def test_bounds_the_server_checks_are_in_the_document(doc, client, merchant):
    product = doc["components"]["schemas"]["ProductIn"]["properties"]
    assert product["list_price"]["maximum"] == 10_000_000_000
    assert product["cover_image"]["maxLength"] == 512
    template = doc["components"]["schemas"]["TemplateIn"]["properties"]
    assert template["claim_page"]["maxLength"] == 256 and "pattern" in template["claim_page"]
    await put_product(client, merchant, "p1", 10_000_000_000)
    over = await client.put(
        shop_url("/admin/products/p1"),
        json={"title": "x", "list_price": 10_000_000_001},
        headers=merchant,
    )
    await expect(over, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")


async def test_every_error_response_has_an_example_body_per_code_it_can_answer(doc):
    """Issue 19 item 5: each error code an operation can answer, with a body in the shape."""
    for path, method, operation in operations(doc):
        for status, response in operation["responses"].items():
            if not status.startswith(("4", "5")):
                continue
            where = f"{method.upper()} {path} {status}"
            examples = resolve(doc, response)["content"]["application/json"]["examples"]
            assert examples, where
            for code, example in examples.items():
                body = example["value"]
                assert set(body) == {"error"} and set(body["error"]) == {
                    "code",
                    "message",
                    "details",
                }
                assert body["error"]["code"] == code, where
                assert ERROR_CODES[code][0] == int(status), where
    claim = doc["paths"][BASE + "/coupons/claim"]["post"]["responses"]
    assert {"SOLD_OUT", "LIMIT_REACHED", "IDEMPOTENCY_CONFLICT"} <= set(
        claim["409"]["content"]["application/json"]["examples"]
    )
    assert {"FORBIDDEN", "NOT_ELIGIBLE", "RISK_REJECTED"} <= set(
        claim["403"]["content"]["application/json"]["examples"]
    )
    assert "LOCK_EXPIRED" in str(doc["paths"][BASE + "/redemptions/{order_id}/confirm"])


def test_every_declared_code_and_claim_refusal_has_its_status_in_the_table():
    for endpoint in all_endpoints():
        assert set(endpoint.codes) <= set(ERROR_CODES), endpoint.path
        if HTTPStatus.CONFLICT in statuses(endpoint):
            assert any(ERROR_CODES[c][0] == HTTPStatus.CONFLICT for c in endpoint.codes), (
                f"{endpoint.method} {endpoint.path} answers 409: name its codes"
            )
    for code, (status, message) in REFUSALS.items():
        assert ERROR_CODES[code][0] == status, code
        # NOT_FOUND is every resource's: its example says "resource", not "coupon template".
        assert code == "NOT_FOUND" or ERROR_CODES[code][1] == message, code


async def test_the_documented_example_is_what_the_server_answers(doc, client, make_template, auth):
    template = await make_template(stock={"type": "limited", "total": 1})
    await claim_ok(client, auth("user", sub="u1"), template["id"], device={"id": "d1"})
    refused = await claim(client, auth("user", sub="u2"), template["id"], device={"id": "d2"})
    body = await expect(refused, HTTPStatus.CONFLICT, "SOLD_OUT")
    examples = doc["paths"][BASE + "/coupons/claim"]["post"]["responses"]["409"]["content"]
    documented = examples["application/json"]["examples"]["SOLD_OUT"]["value"]
    assert body["error"]["message"] == documented["error"]["message"]


INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")
DAY = re.compile(r"\b(20\d{2}-\d{2}-\d{2})\b")


async def test_example_times_are_relative_to_the_day_the_document_is_read(client, clock, auth):
    """Issue 19: an example's claim window is open on the day it is read, not in Nov 2026."""
    for _ in range(2):
        doc = await expect(await client.get("/api/v1/openapi.json"), HTTPStatus.OK)
        instants = [
            datetime.fromisoformat(value)
            for node in walk(doc)
            for value in node.values()
            if isinstance(value, str) and INSTANT.match(value)
        ]
        assert len(instants) >= 10
        assert all(abs(instant - clock.now()) <= timedelta(days=31) for instant in instants)
        # No fixed day inside another string either (a request_id such as "grant-2026-11-23").
        days = {
            day
            for node in walk(doc)
            for value in node.values()
            if isinstance(value, str)
            for day in DAY.findall(value)
        }
        stale = [day for day in days if abs(date.fromisoformat(day) - clock.now().date()).days > 31]
        assert stale == [], stale
        operation = doc["paths"]["/api/v1/shops/{shop_id}/admin/coupon-templates"]["post"]
        example = operation["requestBody"]["content"]["application/json"]["example"]
        start, end = (datetime.fromisoformat(example[key]) for key in ("claim_start", "claim_end"))
        assert start < clock.now() < end, example
        created = await client.post(
            shop_url("/admin/coupon-templates"), json=example, headers=auth("merchant", shop="s1")
        )
        assert (await expect(created, HTTPStatus.CREATED))["status"] == "active"
        clock.advance(timedelta(days=45))
