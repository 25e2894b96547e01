"""Merchant admin: products and members over HTTP."""

from datetime import datetime, timedelta
from http import HTTPStatus

import pytest

from tests.conftest import expect
from tests.helpers import field_error

CUP = {
    "title": "保温杯",
    "list_price": 19900,
    "promo_price": 16900,
    "category": "cups",
    "cover_image": "https://cdn.x.com/cup.png",
}


def product_url(product_id, shop="s1"):
    return f"/api/v1/shops/{shop}/admin/products/{product_id}"


def member_url(user_id, shop="s1"):
    return f"/api/v1/shops/{shop}/admin/members/{user_id}"


# --- products -------------------------------------------------------------------------------
async def test_put_product_creates(client, merchant):
    body = await expect(
        await client.put(product_url("p1"), json=CUP, headers=merchant), HTTPStatus.OK
    )
    assert body["product_id"] == "p1"
    assert body["title"] == "保温杯"
    assert body["list_price"] == 19900
    assert body["promo_price"] == 16900
    assert body["category"] == "cups"
    assert body["auto_claim_template_ids"] == []
    assert body["cover_image"] == "https://cdn.x.com/cup.png"


async def test_second_put_replaces(client, merchant):
    await expect(await client.put(product_url("p1"), json=CUP, headers=merchant), HTTPStatus.OK)
    replacement = {"title": "新款保温杯", "list_price": 25900}
    body = await expect(
        await client.put(product_url("p1"), json=replacement, headers=merchant), HTTPStatus.OK
    )
    assert body["product_id"] == "p1"
    assert body["title"] == "新款保温杯"
    assert body["list_price"] == 25900
    assert body["promo_price"] is None
    assert body["category"] is None
    assert body["cover_image"] is None
    assert body["auto_claim_template_ids"] == []


async def test_same_product_id_in_two_shops_is_two_products(client, merchant, auth):
    s2 = auth("merchant", shop="s2", sub="m2")
    await expect(await client.put(product_url("p1"), json=CUP, headers=merchant), HTTPStatus.OK)
    other = {"title": "别家的杯子", "list_price": 5000}
    body = await expect(
        await client.put(product_url("p1", shop="s2"), json=other, headers=s2), HTTPStatus.OK
    )
    assert body["title"] == "别家的杯子"
    again = await expect(
        await client.put(product_url("p1"), json=CUP, headers=merchant), HTTPStatus.OK
    )
    assert again["title"] == "保温杯"


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"promo_price": 19900}, "promo_price"),
        ({"promo_price": 20000}, "promo_price"),
        ({"promo_price": 0}, "promo_price"),
        ({"list_price": 0, "promo_price": None}, "list_price"),
        ({"list_price": -1, "promo_price": None}, "list_price"),
        ({"list_price": "19900"}, "list_price"),
        ({"list_price": 199.5}, "list_price"),
        ({"title": "   "}, "title"),
        ({"cover_image": "https://cdn.x.com/cup.gif"}, "cover_image"),
        ({"auto_claim_template_ids": ["1"]}, "auto_claim_template_ids.0"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_bad_product(client, merchant, overrides, field):
    response = await client.put(product_url("p1"), json={**CUP, **overrides}, headers=merchant)
    await field_error(response, field)


async def test_missing_list_price(client, merchant):
    response = await client.put(product_url("p1"), json={"title": "杯子"}, headers=merchant)
    await field_error(response, "list_price")


async def test_auto_claim_template_without_auto_method(client, merchant, make_template):
    widget_only = await make_template(claim_methods=["widget"])
    body = {**CUP, "auto_claim_template_ids": [widget_only["id"]]}
    await field_error(
        await client.put(product_url("p1"), json=body, headers=merchant), "auto_claim_template_ids"
    )


async def test_auto_claim_template_of_another_shop(client, merchant, make_template):
    foreign = await make_template(shop="s2", claim_methods=["auto"])
    body = {**CUP, "auto_claim_template_ids": [foreign["id"]]}
    await field_error(
        await client.put(product_url("p1"), json=body, headers=merchant), "auto_claim_template_ids"
    )


async def test_auto_claim_template_unknown(client, merchant):
    body = {**CUP, "auto_claim_template_ids": [999999]}
    await field_error(
        await client.put(product_url("p1"), json=body, headers=merchant), "auto_claim_template_ids"
    )


async def test_rejected_put_keeps_previous_product(client, merchant, make_template):
    await expect(await client.put(product_url("p1"), json=CUP, headers=merchant), HTTPStatus.OK)
    widget_only = await make_template(claim_methods=["widget"])
    bad = {**CUP, "title": "改名", "auto_claim_template_ids": [widget_only["id"]]}
    await field_error(
        await client.put(product_url("p1"), json=bad, headers=merchant), "auto_claim_template_ids"
    )
    body = await expect(
        await client.put(product_url("p1"), json=CUP, headers=merchant), HTTPStatus.OK
    )
    assert body["title"] == "保温杯"


async def test_auto_claim_templates_accepted(client, merchant, make_template):
    first = await make_template(claim_methods=["auto"])
    second = await make_template(claim_methods=["widget", "auto"])
    body = {**CUP, "auto_claim_template_ids": [second["id"], first["id"]]}
    reply = await expect(
        await client.put(product_url("p1"), json=body, headers=merchant), HTTPStatus.OK
    )
    assert reply["auto_claim_template_ids"] == [second["id"], first["id"]]


@pytest.mark.parametrize("product_id", ["a%20b", "a.b", "x" * 65])
async def test_bad_product_id_in_path(client, merchant, product_id):
    response = await client.put(product_url(product_id), json=CUP, headers=merchant)
    await expect(response, HTTPStatus.NOT_FOUND, "NOT_FOUND")


# --- members --------------------------------------------------------------------------------
async def test_put_member_enrols(client, merchant, clock):
    body = await expect(
        await client.put(member_url("u7"), json={"level": 3}, headers=merchant), HTTPStatus.OK
    )
    assert body["user_id"] == "u7"
    assert body["level"] == 3
    assert datetime.fromisoformat(body["first_joined_at"]) == clock.now()
    assert datetime.fromisoformat(body["joined_at"]) == clock.now()
    assert body["rejoined"] is False


async def test_second_put_member_keeps_first_join(client, merchant, clock):
    first = await expect(
        await client.put(member_url("u7"), json={"level": 3}, headers=merchant), HTTPStatus.OK
    )
    clock.advance(timedelta(hours=1))  # tokens live 2 hours
    second = await expect(
        await client.put(member_url("u7"), json={"level": 5}, headers=merchant), HTTPStatus.OK
    )
    assert second["level"] == 5
    assert second["first_joined_at"] == first["first_joined_at"]
    assert second["joined_at"] == first["joined_at"]
    assert second["rejoined"] is False


async def test_put_member_same_level_twice(client, merchant):
    for _ in range(2):
        body = await expect(
            await client.put(member_url("u7"), json={"level": 3}, headers=merchant), HTTPStatus.OK
        )
        assert body["level"] == 3


@pytest.mark.parametrize("level", [-1, "3", True, 2.5, None, 101])
async def test_bad_member_level(client, merchant, level):
    response = await client.put(member_url("u7"), json={"level": level}, headers=merchant)
    await field_error(response, "level")


# --- access ---------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ["user", "service"])
async def test_user_and_service_tokens_forbidden(client, auth, role):
    headers = auth(role, shop="s1" if role == "service" else None)
    response = await client.put(product_url("p1"), json=CUP, headers=headers)
    await expect(response, HTTPStatus.FORBIDDEN, "FORBIDDEN")
    response = await client.put(member_url("u7"), json={"level": 3}, headers=headers)
    await expect(response, HTTPStatus.FORBIDDEN, "FORBIDDEN")


async def test_merchant_of_another_shop_forbidden(client, merchant):
    response = await client.put(product_url("p1", shop="s2"), json=CUP, headers=merchant)
    await expect(response, HTTPStatus.FORBIDDEN, "FORBIDDEN")
    response = await client.put(member_url("u7", shop="s2"), json={"level": 3}, headers=merchant)
    await expect(response, HTTPStatus.FORBIDDEN, "FORBIDDEN")


async def test_no_token_unauthenticated(client):
    response = await client.put(product_url("p1"), json=CUP)
    await expect(response, HTTPStatus.UNAUTHORIZED, "UNAUTHENTICATED")
