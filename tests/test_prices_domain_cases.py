"""Issue 15, section 1, through the real endpoints on both backends.

The price cases the issue found against the old wording of DOMAIN.md "Post-coupon price",
signed in with held coupons: the product page (``GET /products/{id}``), list prices
(``POST /prices``) and checkout (``POST /checkout/preview``), and for the crediting case the
order system's redemption and the template statistics. Every figure is worked out by hand
from the rule (the same cases are on the engine and the oracle in test_pricing_rules.py).
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import expect
from tests.helpers import (
    claim_ok,
    confirm_order,
    grant_ok,
    items,
    put_product,
    redeem_ok,
    shop_url,
    wallet,
)

STACKS = {"with_store_promotions": True, "with_other_coupons": True}


def no_threshold(amount_off: int) -> dict[str, Any]:
    return {"type": "no_threshold", "amount_off": amount_off}


def relative(days: int) -> dict[str, Any]:
    return {"type": "relative", "effective_after_days": 0, "valid_days": days}


@pytest.fixture
def user(auth: Callable[..., dict[str, str]]) -> dict[str, str]:
    return auth("user", sub="u7")


@pytest.fixture
def service(auth: Callable[..., dict[str, str]]) -> dict[str, str]:
    return auth("service", shop="s1", sub="order-system")


async def product_price(
    client: TestClient, headers: dict[str, str], product_id: str, quantity: int = 1
) -> dict[str, Any]:
    response = await client.get(
        shop_url(f"/products/{product_id}"), params={"quantity": str(quantity)}, headers=headers
    )
    return (await expect(response, HTTPStatus.OK))["price"]


async def list_price(
    client: TestClient, headers: dict[str, str], product_id: str, quantity: int = 1
) -> dict[str, Any]:
    response = await client.post(
        shop_url("/prices"), json={"items": items((product_id, quantity))}, headers=headers
    )
    (item,) = (await expect(response, HTTPStatus.OK))["items"]
    assert item["product_id"] == product_id, item
    return item["price"]


async def preview(
    client: TestClient, headers: dict[str, str], lines: list[dict[str, Any]], **extra: Any
) -> Any:
    return await client.post(
        shop_url("/checkout/preview"), json={"items": lines, **extra}, headers=headers
    )


async def preview_ok(
    client: TestClient, headers: dict[str, str], lines: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    return await expect(await preview(client, headers, lines, **extra), HTTPStatus.OK)


def held(price: dict[str, Any]) -> dict[Any, int]:
    """A price's chosen coupons as coupon_id -> discount; every one held."""
    assert all(entry["needs_claim"] is False for entry in price["coupons"]), price
    chosen = {entry["coupon_id"]: entry["discount"] for entry in price["coupons"]}
    assert len(chosen) == len(price["coupons"]), price
    return chosen


def applied(body: dict[str, Any]) -> dict[Any, int]:
    """A preview's or redemption's coupons as coupon_id -> discount."""
    chosen = {entry["coupon_id"]: entry["discount"] for entry in body["coupons"]}
    assert len(chosen) == len(body["coupons"]), body
    return chosen


def line_figures(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    keys = ("product_id", "quantity", "unit_price", "amount", "discount", "payable")
    return [tuple(line[key] for key in keys) for line in body["lines"]]


async def coupon_of(client: TestClient, headers: dict[str, str], template_id: int) -> Any:
    (coupon,) = [c for c in await wallet(client, headers) if c["template_id"] == template_id]
    return coupon["coupon_id"]


# --- the narrower amount-off first, each split by the lines' amounts -------------------------
async def test_issue15_shop_wide_product_and_discount_coupons(
    client, merchant, make_template, user
):
    """P1, P2 at 1000; held and stackable: T1 1000 off shop-wide, T2 500 off P2, T3 pays
    50 % on P1. T2 takes P2 to 500; T1 splits 500 / 500 by the lines' amounts (P1 500, P2 0);
    T3 halves the 500 left of P1: 250 (the service answered 334)."""
    await put_product(client, merchant, "p1", 1000)
    await put_product(client, merchant, "p2", 1000)
    t1 = await make_template(name="T1", benefit=no_threshold(1000), stacking=STACKS)
    t2 = await make_template(
        name="T2",
        benefit=no_threshold(500),
        scope={"type": "products", "product_ids": ["p2"]},
        stacking=STACKS,
    )
    t3 = await make_template(
        name="T3",
        benefit={"type": "discount", "rate_permille": 500},
        scope={"type": "products", "product_ids": ["p1"]},
        stacking=STACKS,
    )
    c1, c2, c3 = [(await claim_ok(client, user, t["id"]))["coupon_id"] for t in (t1, t2, t3)]

    cart = items(("p1", 1), ("p2", 1))
    expected_lines = [("p1", 1, 1000, 1000, 750, 250), ("p2", 1, 1000, 1000, 1000, 0)]
    body = await preview_ok(client, user, cart)
    assert (body["total"], body["discount"], body["payable"]) == (2000, 1750, 250), body
    assert line_figures(body) == expected_lines, body
    assert applied(body) == {c1: 1000, c2: 500, c3: 250}, body
    # Naming the three gives the same figures.
    named = await preview_ok(client, user, cart, coupon_ids=[c3, c2, c1])
    assert line_figures(named) == expected_lines and applied(named) == applied(body), named

    # Two units of P1 alone: T1 1000 off 2000, then T3 halves the 1000 left: 500.
    for price in (
        await product_price(client, user, "p1", 2),
        await list_price(client, user, "p1", 2),
    ):
        assert (price["final_price"], price["saving"]) == (500, 1500), price
        assert held(price) == {c1: 1000, c3: 500}, price
    # P2 alone: T1 alone makes it 0; T2 with it would be spent for nothing.
    for price in (await product_price(client, user, "p2"), await list_price(client, user, "p2")):
        assert price["final_price"] == 0, price
        assert held(price) == {c1: 1000}, price


# --- a coupon that could be dropped is never in the best --------------------------------------
@pytest.mark.parametrize("small_first", [True, False], ids=["small-first", "large-first"])
async def test_issue15_no_coupon_spent_for_nothing(
    client, merchant, make_template, user, small_first
):
    """P1 at 999, held 100 off (expiring earlier) and 6777 off, stackable: the 6777 coupon
    alone makes it 0, whichever template was created first."""
    await put_product(client, merchant, "p1", 999)
    specs = [("100", 100, 3), ("6777", 6777, 6)]
    if not small_first:
        specs.reverse()
    coupons = {}
    for name, amount, days in specs:
        template = await make_template(
            name=f"立减{name}",
            benefit=no_threshold(amount),
            stacking=STACKS,
            validity=relative(days),
        )
        coupons[amount] = (await claim_ok(client, user, template["id"]))["coupon_id"]
    large = coupons[6777]

    for price in (await product_price(client, user, "p1"), await list_price(client, user, "p1")):
        assert (price["final_price"], price["saving"]) == (0, 999), price
        assert held(price) == {large: 999}, price
    body = await preview_ok(client, user, items(("p1", 1)))
    assert (body["total"], body["discount"], body["payable"]) == (999, 999, 0), body
    assert applied(body) == {large: 999}, body
    assert line_figures(body) == [("p1", 1, 999, 999, 999, 0)], body


# --- two fixed prices never share one unit ----------------------------------------------------
@pytest.mark.parametrize("gift_first", [True, False], ids=["gift-first", "exchange-first"])
async def test_issue15_gift_and_exchange_on_one_unit(
    client, merchant, make_template, user, gift_first
):
    """P2 at 19900 with a held gift (1 cent) and an exchange at 16297: 1 cent for one unit
    (the service priced it 0 through both on the same unit); with two units both apply:
    1 + 16297 = 16298."""
    await put_product(client, merchant, "p2", 19900)

    async def make_gift() -> Any:
        template = await make_template(
            name="赠品 p2",
            benefit={"type": "gift", "product_id": "p2"},
            claim_methods=["gift_pack"],
            stacking=STACKS,
        )
        await grant_ok(client, merchant, template["id"], ["u7"])
        return await coupon_of(client, user, template["id"])

    async def make_exchange() -> Any:
        template = await make_template(
            name="162.97元兑换",
            benefit={"type": "exchange", "product_id": "p2", "price": 16297},
            stacking=STACKS,
        )
        return (await claim_ok(client, user, template["id"]))["coupon_id"]

    if gift_first:
        gift, exchange = await make_gift(), await make_exchange()
    else:
        exchange, gift = await make_exchange(), await make_gift()

    for price in (await product_price(client, user, "p2"), await list_price(client, user, "p2")):
        assert (price["final_price"], price["saving"]) == (1, 19899), price
        assert held(price) == {gift: 19899}, price
    body = await preview_ok(client, user, items(("p2", 1)))
    assert (body["total"], body["discount"], body["payable"]) == (19900, 19899, 1), body
    assert applied(body) == {gift: 19899}, body

    for price in (
        await product_price(client, user, "p2", 2),
        await list_price(client, user, "p2", 2),
    ):
        assert (price["final_price"], price["saving"]) == (16298, 23502), price
        assert held(price) == {gift: 19899, exchange: 3603}, price
    body = await preview_ok(client, user, items(("p2", 2)))
    assert (body["total"], body["discount"], body["payable"]) == (39800, 23502, 16298), body
    assert applied(body) == {gift: 19899, exchange: 3603}, body

    # Named together on one unit: refused with a 4xx naming one of them, never priced.
    response = await preview(client, user, items(("p2", 1)), coupon_ids=[gift, exchange])
    refusal = await expect(response, HTTPStatus.CONFLICT, "COUPON_NOT_USABLE")
    assert refusal["error"]["details"]["coupon_id"] in (gift, exchange), refusal


# --- crediting below zero follows the named order ---------------------------------------------
async def test_issue15_crediting_below_zero_in_checkout_redemption_and_statistics(
    client, merchant, make_template, user, service
):
    """p1, p2 at 1000; held and stackable: S 1500 off shop-wide (created first, the lower id)
    and P 800 off p1. P (narrower) first: p1 -> 200. S takes at most the 1200 left: split
    600 / 600 by the amounts, p1 stops at zero after 200, the rest goes to p2. Credited:
    P 800, S 1200 (S first would have credited S 1500, P 250)."""
    await put_product(client, merchant, "p1", 1000)
    await put_product(client, merchant, "p2", 1000)
    shop_wide = await make_template(name="S", benefit=no_threshold(1500), stacking=STACKS)
    product = await make_template(
        name="P",
        benefit=no_threshold(800),
        scope={"type": "products", "product_ids": ["p1"]},
        stacking=STACKS,
    )
    s = (await claim_ok(client, user, shop_wide["id"]))["coupon_id"]
    p = (await claim_ok(client, user, product["id"]))["coupon_id"]
    cart = items(("p1", 1), ("p2", 1))

    body = await preview_ok(client, user, cart)
    assert applied(body) == {s: 1200, p: 800}, body
    assert line_figures(body) == [("p1", 1, 1000, 1000, 1000, 0), ("p2", 1, 1000, 1000, 1000, 0)]
    assert body["payable"] == 0, body

    order = await redeem_ok(client, service, "o-issue15", "u7", cart, [s, p])
    assert applied(order) == {s: 1200, p: 800}, order
    assert order["payable"] == 0, order
    await expect(await confirm_order(client, service, "o-issue15"), HTTPStatus.OK)
    for template, discount in ((shop_wide, 1200), (product, 800)):
        response = await client.get(
            shop_url(f"/admin/stats/coupon-templates/{template['id']}"), headers=merchant
        )
        stats = await expect(response, HTTPStatus.OK)
        assert (stats["used"], stats["discount_total"]) == (1, discount), stats
