"""Post-coupon prices (券后价) over HTTP: product detail, list prices, checkout preview, auto-claim.

Every amount is exact cents, worked out by hand from the rules in DOMAIN.md
("Post-coupon price") and the engine's docstring: amount-off coupons first,
then a discount coupon on what is left (floored, capped by max_off); each
coupon's discount split over the lines in its scope by largest remainder.
Live-room exclusive prices are in test_live_rooms.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from http import HTTPStatus
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import expect, iso
from tests.helpers import claim_ok, enrol, new_request_id, put_product, set_status, shop_url, wallet

MAN_299_50 = {"type": "threshold", "amount_off": 5000, "threshold": 29900}
MAN_200_20 = {"type": "threshold", "amount_off": 2000, "threshold": 20000}


# --- helpers ---------------------------------------------------------------------------------
def no_threshold(amount_off: int) -> dict[str, Any]:
    return {"type": "no_threshold", "amount_off": amount_off}


def stacking(*, promo: bool = True, others: bool = False) -> dict[str, bool]:
    return {"with_store_promotions": promo, "with_other_coupons": others}


def lines(*pairs: tuple[str, int]) -> list[dict[str, Any]]:
    return [{"product_id": product_id, "quantity": quantity} for product_id, quantity in pairs]


async def get_product(
    client: TestClient,
    product_id: str,
    headers: dict[str, str] | None = None,
    shop: str = "s1",
    **params: Any,
) -> Any:
    query = {key: str(value) for key, value in params.items()}
    return await client.get(
        shop_url(f"/products/{product_id}", shop), params=query, headers=headers or {}
    )


async def price_of(
    client: TestClient, product_id: str, headers: dict[str, str] | None = None, **params: Any
) -> dict[str, Any]:
    """GET /products/{id} and assert 200; return its ``price``."""
    body = await expect(await get_product(client, product_id, headers, **params), HTTPStatus.OK)
    return body["price"]


def assert_price(
    price: dict[str, Any],
    *,
    list_price: int,
    final: int,
    quantity: int = 1,
    promo: int | None = None,
) -> None:
    assert price["list_price"] == list_price, price
    assert price["promo_price"] == promo, price
    assert price["exclusive_price"] is None, price
    assert price["final_price"] == final, price
    assert price["saving"] == list_price * quantity - final, price


def assert_claimable(entry: dict[str, Any], template_id: int, discount: int) -> None:
    assert entry["needs_claim"] is True, entry
    assert entry["template_id"] == template_id, entry
    assert entry.get("coupon_id") is None, entry
    assert entry["discount"] == discount, entry


def assert_held(entry: dict[str, Any], coupon_id: Any, discount: int) -> None:
    assert entry["needs_claim"] is False, entry
    assert entry["coupon_id"] == coupon_id, entry
    assert entry["discount"] == discount, entry


async def grant_ok(
    client: TestClient, merchant: dict[str, str], template_id: int, user_ids: list[str]
) -> None:
    response = await client.post(
        shop_url(f"/admin/coupon-templates/{template_id}/grants"),
        json={"user_ids": user_ids, "request_id": new_request_id()},
        headers=merchant,
    )
    body = await expect(response, HTTPStatus.CREATED)
    assert body["failed"] == [], body


async def held_coupon(
    client: TestClient, headers: dict[str, str], template_id: int
) -> dict[str, Any]:
    items = [item for item in await wallet(client, headers) if item["template_id"] == template_id]
    assert len(items) == 1, items
    return items[0]


async def revoke_ok(client: TestClient, merchant: dict[str, str], coupon_id: Any) -> None:
    response = await client.post(shop_url(f"/admin/coupons/{coupon_id}/revoke"), headers=merchant)
    await expect(response, HTTPStatus.OK)


async def post_prices(
    client: TestClient, items: list[dict[str, Any]], headers: dict[str, str] | None = None
) -> Any:
    return await client.post(shop_url("/prices"), json={"items": items}, headers=headers or {})


async def preview(
    client: TestClient, headers: dict[str, str], items: list[dict[str, Any]], **extra: Any
) -> Any:
    return await client.post(
        shop_url("/checkout/preview"), json={"items": items, **extra}, headers=headers
    )


async def preview_ok(
    client: TestClient, headers: dict[str, str], items: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    body = await expect(await preview(client, headers, items, **extra), HTTPStatus.OK)
    assert_preview_consistent(body)
    return body


def assert_preview_consistent(body: dict[str, Any]) -> None:
    """Every line adds up, the coupons add up to the discount, and the totals agree."""
    for line in body["lines"]:
        assert line["amount"] == line["unit_price"] * line["quantity"], line
        assert 0 <= line["discount"] <= line["amount"], line
        assert line["payable"] == line["amount"] - line["discount"], line
    assert body["total"] == sum(line["amount"] for line in body["lines"]), body
    assert body["discount"] == sum(line["discount"] for line in body["lines"]), body
    assert body["discount"] == sum(coupon["discount"] for coupon in body["coupons"]), body
    assert body["total"] - body["discount"] == body["payable"], body


def applied(body: dict[str, Any]) -> dict[Any, int]:
    """A preview's coupons as coupon_id -> discount (each coupon once)."""
    coupons = {coupon["coupon_id"]: coupon["discount"] for coupon in body["coupons"]}
    assert len(coupons) == len(body["coupons"]), body
    return coupons


def line_view(line: dict[str, Any]) -> tuple[Any, ...]:
    """(product_id, quantity, unit_price, amount, discount, payable)."""
    keys = ("product_id", "quantity", "unit_price", "amount", "discount", "payable")
    return tuple(line[key] for key in keys)


def skipped(body: dict[str, Any]) -> list[tuple[int, str]]:
    """An auto-claim's skipped templates as sorted (template_id, reason)."""
    return sorted((item["template_id"], item["reason"]) for item in body["skipped"])


async def refused_coupon(response: Any, coupon_id: Any) -> dict[str, Any]:
    """A 409 COUPON_NOT_USABLE naming ``coupon_id``; returns the details."""
    body = await expect(response, HTTPStatus.CONFLICT, "COUPON_NOT_USABLE")
    details = body["error"]["details"]
    assert details["coupon_id"] == coupon_id, body
    assert isinstance(details.get("reason"), str) and details["reason"], body
    return details


@pytest.fixture
def user(auth: Callable[..., dict[str, str]]) -> dict[str, str]:
    return auth("user", sub="u7")


# --- GET /products/{id}: the product and its price -----------------------------------------
@pytest.mark.parametrize("signed_in", [False, True])
async def test_unknown_product_is_not_found(client, merchant, user, signed_in):
    await put_product(client, merchant, "p1", 10000)
    headers = user if signed_in else None
    await expect(await get_product(client, "p1", headers), HTTPStatus.OK)
    await expect(await get_product(client, "nope", headers), HTTPStatus.NOT_FOUND, "NOT_FOUND")


async def test_product_of_another_shop_is_not_found(client, auth):
    s2 = auth("merchant", shop="s2", sub="m2")
    await put_product(client, s2, "p1", 10000, shop="s2")
    await expect(await get_product(client, "p1"), HTTPStatus.NOT_FOUND, "NOT_FOUND")
    await expect(await get_product(client, "p1", shop="s2"), HTTPStatus.OK)


async def test_product_and_price_without_coupons(client, merchant):
    await put_product(
        client,
        merchant,
        "p1",
        12900,
        title="保温杯",
        promo_price=9900,
        category="cups",
        cover_image="https://cdn.x.com/cup.png",
    )
    body = await expect(await get_product(client, "p1"), HTTPStatus.OK)
    product = body["product"]
    assert product["product_id"] == "p1", product
    assert product["title"] == "保温杯", product
    assert product["list_price"] == 12900, product
    assert product["promo_price"] == 9900, product
    assert product["category"] == "cups", product
    assert product["cover_image"] == "https://cdn.x.com/cup.png", product
    price = body["price"]
    assert_price(price, list_price=12900, promo=9900, final=9900)
    assert price["saving"] == 3000, price
    assert price["coupons"] == [], price


async def test_quantity_defaults_to_one(client, merchant, make_template):
    await put_product(client, merchant, "p1", 30000)
    await make_template()
    assert await price_of(client, "p1") == await price_of(client, "p1", quantity=1)


async def test_price_is_for_the_quantity(client, merchant, make_template):
    await put_product(client, merchant, "p1", 15000)
    template = await make_template()  # 满299减50
    one = await price_of(client, "p1", quantity=1)
    assert_price(one, list_price=15000, final=15000)
    assert one["coupons"] == [], one
    two = await price_of(client, "p1", quantity=2)
    assert_price(two, list_price=15000, quantity=2, final=25000)
    assert two["saving"] == 5000, two
    (entry,) = two["coupons"]
    assert_claimable(entry, template["id"], 5000)


@pytest.mark.parametrize("quantity", ["0", "-1", "x"])
async def test_bad_quantity(client, merchant, quantity):
    await put_product(client, merchant, "p1", 10000)
    response = await get_product(client, "p1", quantity=quantity)
    await expect(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")


# --- exact-cents scenarios ------------------------------------------------------------------
async def test_threshold_met(client, merchant, make_template):
    await put_product(client, merchant, "p1", 30000)
    template = await make_template()  # 满299减50
    price = await price_of(client, "p1")
    assert_price(price, list_price=30000, final=25000)
    assert price["saving"] == 5000, price
    (entry,) = price["coupons"]
    assert_claimable(entry, template["id"], 5000)


async def test_threshold_not_met(client, merchant, make_template):
    await put_product(client, merchant, "p1", 29800)
    await make_template()  # 满299减50
    price = await price_of(client, "p1")
    assert_price(price, list_price=29800, final=29800)
    assert price["saving"] == 0, price
    assert price["coupons"] == [], price


async def test_store_promotion_price_is_the_base(client, merchant, make_template):
    await put_product(client, merchant, "p1", 30000, promo_price=29000)
    template = await make_template(name="满200减20", benefit=MAN_200_20)
    price = await price_of(client, "p1")
    assert_price(price, list_price=30000, promo=29000, final=27000)
    assert price["saving"] == 3000, price
    (entry,) = price["coupons"]
    assert_claimable(entry, template["id"], 2000)


async def test_threshold_is_checked_on_the_promotion_price(client, merchant, make_template):
    # 满299减50 on list 30000: the promotion price 29000 is the base and misses the threshold.
    await put_product(client, merchant, "p1", 30000, promo_price=29000)
    await make_template()
    price = await price_of(client, "p1")
    assert_price(price, list_price=30000, promo=29000, final=29000)
    assert price["coupons"] == [], price


async def test_coupon_refusing_promotions_loses_to_the_promotion(client, merchant, make_template):
    await put_product(client, merchant, "p1", 10000, promo_price=8000)
    await make_template(benefit=no_threshold(1500), stacking=stacking(promo=False))
    price = await price_of(client, "p1")  # 10000 - 1500 = 8500 > 8000
    assert_price(price, list_price=10000, promo=8000, final=8000)
    assert price["coupons"] == [], price


async def test_coupon_refusing_promotions_beats_the_promotion(client, merchant, make_template):
    await put_product(client, merchant, "p1", 10000, promo_price=8000)
    template = await make_template(benefit=no_threshold(2500), stacking=stacking(promo=False))
    price = await price_of(client, "p1")  # 10000 - 2500 = 7500 < 8000
    assert_price(price, list_price=10000, promo=8000, final=7500)
    assert price["saving"] == 2500, price
    (entry,) = price["coupons"]
    assert_claimable(entry, template["id"], 2500)


async def test_discount_with_cap(client, merchant, make_template):
    await put_product(client, merchant, "p1", 10000)
    benefit = {"type": "discount", "rate_permille": 800, "max_off": 1000}
    template = await make_template(name="8折最高减10", benefit=benefit)
    price = await price_of(client, "p1", quantity=2)  # 20% of 20000 = 4000, capped at 1000
    assert_price(price, list_price=10000, quantity=2, final=19000)
    (entry,) = price["coupons"]
    assert_claimable(entry, template["id"], 1000)


async def test_discount_without_cap(client, merchant, make_template):
    await put_product(client, merchant, "p1", 10000)
    template = await make_template(name="8折", benefit={"type": "discount", "rate_permille": 800})
    price = await price_of(client, "p1", quantity=2)
    assert_price(price, list_price=10000, quantity=2, final=16000)
    (entry,) = price["coupons"]
    assert_claimable(entry, template["id"], 4000)


async def test_discount_is_floored(client, merchant, make_template):
    await put_product(client, merchant, "p1", 9999)
    template = await make_template(name="85折", benefit={"type": "discount", "rate_permille": 850})
    price = await price_of(client, "p1")  # floor(9999 * 150 / 1000) = 1499
    assert_price(price, list_price=9999, final=8500)
    (entry,) = price["coupons"]
    assert_claimable(entry, template["id"], 1499)


async def test_discount_threshold_not_met(client, merchant, make_template):
    await put_product(client, merchant, "p1", 10000)
    benefit = {"type": "discount", "rate_permille": 800, "threshold": 10001}
    await make_template(name="满100.01打8折", benefit=benefit)
    price = await price_of(client, "p1")
    assert_price(price, list_price=10000, final=10000)
    assert price["coupons"] == [], price


async def test_discount_applies_after_amount_off(client, merchant, make_template):
    await put_product(client, merchant, "p1", 10000)
    cash = await make_template(
        name="立减10", benefit=no_threshold(1000), stacking=stacking(others=True)
    )
    rate = await make_template(
        name="9折",
        benefit={"type": "discount", "rate_permille": 900},
        stacking=stacking(others=True),
    )
    price = await price_of(client, "p1")  # 10000 - 1000 = 9000; 10% of 9000 = 900
    assert_price(price, list_price=10000, final=8100)
    by_template = {entry["template_id"]: entry for entry in price["coupons"]}
    assert set(by_template) == {cash["id"], rate["id"]}, price
    assert_claimable(by_template[cash["id"]], cash["id"], 1000)
    assert_claimable(by_template[rate["id"]], rate["id"], 900)


async def test_two_stackable_coupons_add_up(client, merchant, make_template):
    await put_product(client, merchant, "p1", 20000)
    small = await make_template(
        name="立减10", benefit=no_threshold(1000), stacking=stacking(others=True)
    )
    large = await make_template(
        name="立减20", benefit=no_threshold(2000), stacking=stacking(others=True)
    )
    price = await price_of(client, "p1")
    assert_price(price, list_price=20000, final=17000)
    by_template = {entry["template_id"]: entry for entry in price["coupons"]}
    assert set(by_template) == {small["id"], large["id"]}, price
    assert_claimable(by_template[small["id"]], small["id"], 1000)
    assert_claimable(by_template[large["id"]], large["id"], 2000)


@pytest.mark.parametrize("large_first", [False, True])
async def test_best_single_among_non_stackables(client, merchant, make_template, large_first):
    await put_product(client, merchant, "p1", 20000)
    amounts = [2500, 1000] if large_first else [1000, 2500]
    made = {
        amount: await make_template(name=f"立减{amount // 100}", benefit=no_threshold(amount))
        for amount in amounts
    }
    price = await price_of(client, "p1")
    assert_price(price, list_price=20000, final=17500)
    (entry,) = price["coupons"]
    assert_claimable(entry, made[2500]["id"], 2500)


async def test_stackable_does_not_combine_with_non_stackable(client, merchant, make_template):
    await put_product(client, merchant, "p1", 20000)
    await make_template(name="立减10", benefit=no_threshold(1000), stacking=stacking(others=True))
    lone = await make_template(name="立减25", benefit=no_threshold(2500))
    await make_template(name="立减12", benefit=no_threshold(1200), stacking=stacking(others=True))
    price = await price_of(client, "p1")  # 2500 alone beats 1000 + 1200 = 2200
    assert_price(price, list_price=20000, final=17500)
    (entry,) = price["coupons"]
    assert_claimable(entry, lone["id"], 2500)


async def test_exchange_coupon_one_unit_at_the_fixed_price(client, merchant, make_template):
    await put_product(client, merchant, "p1", 3000)
    benefit = {"type": "exchange", "product_id": "p1", "price": 990}
    template = await make_template(name="9.9元兑换", benefit=benefit)
    price = await price_of(client, "p1", quantity=2)  # 3000 + 990
    assert_price(price, list_price=3000, quantity=2, final=3990)
    (entry,) = price["coupons"]
    assert_claimable(entry, template["id"], 2010)


async def test_exchange_coupon_for_another_product(client, merchant, make_template):
    await put_product(client, merchant, "p1", 3000)
    await make_template(
        name="9.9元兑换", benefit={"type": "exchange", "product_id": "p2", "price": 990}
    )
    price = await price_of(client, "p1")
    assert_price(price, list_price=3000, final=3000)
    assert price["coupons"] == [], price


async def test_product_scope(client, merchant, make_template):
    await put_product(client, merchant, "p1", 10000)
    await put_product(client, merchant, "p2", 10000)
    template = await make_template(
        benefit=no_threshold(1000), scope={"type": "products", "product_ids": ["p1"]}
    )
    (entry,) = (await price_of(client, "p1"))["coupons"]
    assert_claimable(entry, template["id"], 1000)
    other = await price_of(client, "p2")
    assert_price(other, list_price=10000, final=10000)
    assert other["coupons"] == [], other


async def test_category_scope(client, merchant, make_template):
    await put_product(client, merchant, "p1", 10000, category="cups")
    await put_product(client, merchant, "p2", 10000, category="bowls")
    await put_product(client, merchant, "p3", 10000)
    template = await make_template(
        benefit=no_threshold(1000), scope={"type": "categories", "categories": ["cups"]}
    )
    price = await price_of(client, "p1")
    assert_price(price, list_price=10000, final=9000)
    (entry,) = price["coupons"]
    assert_claimable(entry, template["id"], 1000)
    for product_id in ("p2", "p3"):
        assert (await price_of(client, product_id))["coupons"] == [], product_id


async def test_templates_of_another_shop_do_not_apply(client, merchant, make_template):
    await put_product(client, merchant, "p1", 30000)
    await make_template(shop="s2", benefit=no_threshold(5000))
    price = await price_of(client, "p1")
    assert_price(price, list_price=30000, final=30000)
    assert price["coupons"] == [], price


# --- the price follows changes ---------------------------------------------------------------
async def test_anonymous_price_follows_merchant_writes_at_once(client, merchant, make_template):
    await put_product(client, merchant, "p1", 30000)
    template = await make_template()  # 满299减50
    assert (await price_of(client, "p1"))["final_price"] == 25000
    await put_product(client, merchant, "p1", 29800)
    price = await price_of(client, "p1")
    assert (price["list_price"], price["final_price"], price["coupons"]) == (29800, 29800, [])
    await put_product(client, merchant, "p1", 30000)
    assert (await price_of(client, "p1"))["final_price"] == 25000
    await set_status(client, merchant, template["id"], "paused")
    price = await price_of(client, "p1")
    assert (price["final_price"], price["coupons"]) == (30000, []), price
    await set_status(client, merchant, template["id"], "active")
    assert (await price_of(client, "p1"))["final_price"] == 25000
    larger = await make_template(name="立减60", benefit=no_threshold(6000))
    price = await price_of(client, "p1")
    assert price["final_price"] == 24000, price
    (entry,) = price["coupons"]
    assert_claimable(entry, larger["id"], 6000)


async def test_anonymous_price_follows_the_clock(client, merchant, make_template, clock):
    await put_product(client, merchant, "p1", 30000)
    now = clock.now()
    await make_template(
        claim_start=iso(now - timedelta(days=1)), claim_end=iso(now + timedelta(hours=1))
    )
    assert (await price_of(client, "p1"))["final_price"] == 25000
    clock.advance(timedelta(hours=2))  # the claim window has closed
    price = await price_of(client, "p1")
    assert (price["final_price"], price["coupons"]) == (30000, []), price


async def test_anonymous_price_after_the_last_unit_is_claimed(
    client, merchant, make_template, auth, clock
):
    await put_product(client, merchant, "p1", 30000)
    template = await make_template(stock={"type": "limited", "total": 1})
    assert (await price_of(client, "p1"))["final_price"] == 25000
    await claim_ok(client, auth("user", sub="u9"), template["id"])
    clock.advance(timedelta(seconds=5))  # past any short reply cache
    price = await price_of(client, "p1")
    assert (price["final_price"], price["coupons"]) == (30000, []), price


async def test_signed_in_price_follows_revocation_at_once(client, merchant, make_template, user):
    await put_product(client, merchant, "p1", 30000)
    template = await make_template()
    coupon = await claim_ok(client, user, template["id"])
    (entry,) = (await price_of(client, "p1", user))["coupons"]
    assert_held(entry, coupon["coupon_id"], 5000)
    await revoke_ok(client, merchant, coupon["coupon_id"])
    price = await price_of(client, "p1", user)
    assert (price["final_price"], price["coupons"]) == (30000, []), price


# --- which coupons are candidates -----------------------------------------------------------
def _window_not_open(clock: Any) -> dict[str, Any]:
    now = clock.now()
    return {"claim_start": iso(now + timedelta(hours=1)), "claim_end": iso(now + timedelta(days=3))}


def _window_closed(clock: Any) -> dict[str, Any]:
    now = clock.now()
    return {
        "claim_start": iso(now - timedelta(days=3)),
        "claim_end": iso(now - timedelta(hours=1)),
        "validity": {"type": "relative", "effective_after_days": 0, "valid_days": 7},
    }


def _absolute_later(clock: Any) -> dict[str, Any]:
    now = clock.now()
    return {
        "validity": {
            "type": "absolute",
            "start": iso(now + timedelta(days=1)),
            "end": iso(now + timedelta(days=5)),
        }
    }


def _absolute_now(clock: Any) -> dict[str, Any]:
    now = clock.now()
    return {
        "validity": {
            "type": "absolute",
            "start": iso(now - timedelta(days=1)),
            "end": iso(now + timedelta(days=5)),
        }
    }


NOT_CLAIMABLE = {
    "paused": lambda clock: {"status": "paused"},
    "ended": lambda clock: {},  # PATCHed to ended after creation
    "window_not_open": _window_not_open,
    "window_closed": _window_closed,
    "points_only": lambda clock: {"claim_methods": ["points"]},
    "code_only": lambda clock: {
        "claim_methods": ["code"],
        "codes": {"type": "pregenerated", "count": 5},
        "stock": None,
    },
    "members_only": lambda clock: {"audience": {"type": "members"}},
    "sold_out": lambda clock: {"stock": {"type": "limited", "total": 1}},
    "effective_tomorrow": lambda clock: {
        "validity": {"type": "relative", "effective_after_days": 1, "valid_days": 7}
    },
    "absolute_validity_later": _absolute_later,
}


@pytest.mark.parametrize("case", sorted(NOT_CLAIMABLE))
async def test_anonymous_price_ignores_templates_not_claimable_now(
    client, merchant, make_template, clock, auth, case
):
    await put_product(client, merchant, "p1", 10000)
    template = await make_template(benefit=no_threshold(3000), **NOT_CLAIMABLE[case](clock))
    if case == "ended":
        await set_status(client, merchant, template["id"], "ended")
    if case == "sold_out":
        await claim_ok(client, auth("user", sub="u9"), template["id"])
    price = await price_of(client, "p1")
    assert_price(price, list_price=10000, final=10000)
    assert price["coupons"] == [], price


CLAIMABLE = {
    "widget": lambda clock: {},
    "auto_only": lambda clock: {"claim_methods": ["auto"]},
    "widget_and_points": lambda clock: {"claim_methods": ["points", "widget"]},
    "unlimited_stock": lambda clock: {"stock": {"type": "unlimited"}},
    "absolute_validity_now": _absolute_now,
    "per_user_limit_3": lambda clock: {"per_user_limit": 3},
}


@pytest.mark.parametrize("case", sorted(CLAIMABLE))
async def test_anonymous_price_offers_claimable_templates(
    client, merchant, make_template, clock, case
):
    template = await make_template(benefit=no_threshold(3000), **CLAIMABLE[case](clock))
    # An auto-only coupon is claimed by opening a product that lists it.
    auto = [template["id"]] if case == "auto_only" else []
    await put_product(client, merchant, "p1", 10000, auto_claim_template_ids=auto)
    price = await price_of(client, "p1")
    assert_price(price, list_price=10000, final=7000)
    (entry,) = price["coupons"]
    assert_claimable(entry, template["id"], 3000)


async def test_auto_only_coupon_does_not_count_on_products_that_do_not_list_it(
    client, merchant, make_template, user
):
    template = await make_template(benefit=no_threshold(1000), claim_methods=["auto"])
    await put_product(client, merchant, "pA", 10000, auto_claim_template_ids=[template["id"]])
    await put_product(client, merchant, "pB", 10000)
    assert (await price_of(client, "pA"))["final_price"] == 9000
    for headers in (None, user):
        price = await price_of(client, "pB", headers)
        assert price["final_price"] == 10000 and price["coupons"] == []


async def test_claimable_then_held_after_claiming(client, merchant, make_template, user):
    await put_product(client, merchant, "p1", 30000)
    template = await make_template()
    before = await price_of(client, "p1", user)
    assert_price(before, list_price=30000, final=25000)
    (entry,) = before["coupons"]
    assert_claimable(entry, template["id"], 5000)
    coupon = await claim_ok(client, user, template["id"])
    after = await price_of(client, "p1", user)
    assert_price(after, list_price=30000, final=25000)
    (entry,) = after["coupons"]
    assert_held(entry, coupon["coupon_id"], 5000)
    # Another shopper still sees it as one to claim.
    (entry,) = (await price_of(client, "p1"))["coupons"]
    assert_claimable(entry, template["id"], 5000)


@pytest.mark.parametrize("claim_index", [0, 1])
async def test_held_coupon_beats_an_equal_claimable_one(
    client, merchant, make_template, user, claim_index
):
    await put_product(client, merchant, "p1", 10000)
    templates = [
        await make_template(name=f"立减10 #{n}", benefit=no_threshold(1000)) for n in range(2)
    ]
    coupon = await claim_ok(client, user, templates[claim_index]["id"])
    price = await price_of(client, "p1", user)
    assert_price(price, list_price=10000, final=9000)
    (entry,) = price["coupons"]
    assert_held(entry, coupon["coupon_id"], 1000)


async def test_held_coupon_beats_an_equal_claimable_one_expiring_sooner(
    client, merchant, make_template, user
):
    # Ties go to coupons already held first, and only then to the earliest expiry.
    await put_product(client, merchant, "p1", 10000)
    held = await make_template(name="立减10 7天", benefit=no_threshold(1000))
    await make_template(
        name="立减10 2天",
        benefit=no_threshold(1000),
        validity={"type": "relative", "effective_after_days": 0, "valid_days": 2},
    )
    coupon = await claim_ok(client, user, held["id"])
    price = await price_of(client, "p1", user)
    assert_price(price, list_price=10000, final=9000)
    (entry,) = price["coupons"]
    assert_held(entry, coupon["coupon_id"], 1000)


async def test_better_claimable_beats_a_held_coupon(client, merchant, make_template, user):
    await put_product(client, merchant, "p1", 10000)
    small = await make_template(name="立减10", benefit=no_threshold(1000))
    large = await make_template(name="立减25", benefit=no_threshold(2500))
    await claim_ok(client, user, small["id"])
    price = await price_of(client, "p1", user)
    assert_price(price, list_price=10000, final=7500)
    (entry,) = price["coupons"]
    assert_claimable(entry, large["id"], 2500)


@pytest.mark.parametrize("soon_first", [False, True])
async def test_earlier_expiry_wins_between_held_coupons(
    client, merchant, make_template, user, soon_first
):
    await put_product(client, merchant, "p1", 10000)
    days = [3, 6] if soon_first else [6, 3]
    coupons = {}
    for valid_days in days:
        template = await make_template(
            name=f"立减10 {valid_days}天",
            benefit=no_threshold(1000),
            validity={"type": "relative", "effective_after_days": 0, "valid_days": valid_days},
        )
        coupons[valid_days] = await claim_ok(client, user, template["id"])
    price = await price_of(client, "p1", user)
    assert_price(price, list_price=10000, final=9000)
    (entry,) = price["coupons"]
    assert_held(entry, coupons[3]["coupon_id"], 1000)


async def test_held_coupon_of_a_not_claimable_template_applies(
    client, merchant, make_template, user
):
    await put_product(client, merchant, "p1", 10000)
    template = await make_template(benefit=no_threshold(1500), claim_methods=["points"])
    await grant_ok(client, merchant, template["id"], ["u7"])
    coupon = await held_coupon(client, user, template["id"])
    price = await price_of(client, "p1", user)
    assert_price(price, list_price=10000, final=8500)
    (entry,) = price["coupons"]
    assert_held(entry, coupon["coupon_id"], 1500)
    anonymous = await price_of(client, "p1")
    assert anonymous["coupons"] == [], anonymous


async def test_revoked_coupon_at_the_limit_is_neither_held_nor_claimable(
    client, merchant, make_template, user
):
    await put_product(client, merchant, "p1", 30000)
    template = await make_template()  # per_user_limit 1
    coupon = await claim_ok(client, user, template["id"])
    await revoke_ok(client, merchant, coupon["coupon_id"])
    price = await price_of(client, "p1", user)
    assert_price(price, list_price=30000, final=30000)
    assert price["coupons"] == [], price
    (entry,) = (await price_of(client, "p1"))["coupons"]
    assert_claimable(entry, template["id"], 5000)


async def test_expired_coupon_is_not_used(client, merchant, make_template, auth, clock):
    await put_product(client, merchant, "p1", 30000)
    template = await make_template()  # valid 7 days; window open 10 more days; limit 1
    await claim_ok(client, auth("user", sub="u7"), template["id"])
    clock.advance(timedelta(days=8))
    price = await price_of(client, "p1", auth("user", sub="u7"))
    assert_price(price, list_price=30000, final=30000)
    assert price["coupons"] == [], price


async def test_held_coupon_not_yet_valid_is_not_used(client, merchant, make_template, user):
    await put_product(client, merchant, "p1", 30000)
    later = {"type": "relative", "effective_after_days": 1, "valid_days": 7}
    template = await make_template(validity=later)
    await grant_ok(client, merchant, template["id"], ["u7"])
    price = await price_of(client, "p1", user)
    assert_price(price, list_price=30000, final=30000)
    assert price["coupons"] == [], price


async def test_members_audience_claimable_for_members_only(
    client, merchant, make_template, user, auth
):
    await put_product(client, merchant, "p1", 10000)
    template = await make_template(benefit=no_threshold(1000), audience={"type": "members"})
    assert (await price_of(client, "p1"))["coupons"] == []
    assert (await price_of(client, "p1", user))["coupons"] == []
    await enrol(client, merchant, "u7", 1)
    price = await price_of(client, "p1", user)
    assert_price(price, list_price=10000, final=9000)
    (entry,) = price["coupons"]
    assert_claimable(entry, template["id"], 1000)


async def test_another_users_coupon_is_not_shown(client, merchant, make_template, auth):
    await put_product(client, merchant, "p1", 10000)
    template = await make_template(benefit=no_threshold(1500), claim_methods=["points"])
    await grant_ok(client, merchant, template["id"], ["u8"])
    price = await price_of(client, "p1", auth("user", sub="u7"))
    assert price["coupons"] == [], price


# --- gift coupon ----------------------------------------------------------------------------
async def gift_setup(client, merchant, make_template) -> dict[str, Any]:
    await put_product(client, merchant, "p1", 5000)
    await put_product(client, merchant, "g1", 3000)
    template = await make_template(
        name="赠品 g1",
        benefit={"type": "gift", "product_id": "g1"},
        claim_methods=["gift_pack"],
    )
    await grant_ok(client, merchant, template["id"], ["u7"])
    return template


async def test_gift_coupon_is_not_offered_to_claim(client, merchant, make_template):
    await gift_setup(client, merchant, make_template)
    price = await price_of(client, "g1")
    assert_price(price, list_price=3000, final=3000)
    assert price["coupons"] == [], price


async def test_gift_coupon_in_checkout(client, merchant, make_template, user):
    template = await gift_setup(client, merchant, make_template)
    coupon = await held_coupon(client, user, template["id"])
    body = await preview_ok(client, user, lines(("p1", 1), ("g1", 1)))
    assert [line["product_id"] for line in body["lines"]] == ["p1", "g1"], body
    first, gift = body["lines"]
    assert (first["amount"], first["discount"], first["payable"]) == (5000, 0, 5000), body
    assert (gift["unit_price"], gift["amount"]) == (3000, 3000), body
    assert (gift["discount"], gift["payable"]) == (2999, 1), body
    assert applied(body) == {coupon["coupon_id"]: 2999}, body
    assert (body["total"], body["discount"], body["payable"]) == (8000, 2999, 5001), body


async def test_gift_coupon_covers_one_unit(client, merchant, make_template, user):
    template = await gift_setup(client, merchant, make_template)
    coupon = await held_coupon(client, user, template["id"])
    body = await preview_ok(client, user, lines(("g1", 2)))
    (gift,) = body["lines"]
    assert (gift["amount"], gift["discount"], gift["payable"]) == (6000, 2999, 3001), body
    assert applied(body) == {coupon["coupon_id"]: 2999}, body
    price = await price_of(client, "g1", user)
    assert_price(price, list_price=3000, final=1)
    (entry,) = price["coupons"]
    assert_held(entry, coupon["coupon_id"], 2999)


# --- POST /prices ---------------------------------------------------------------------------
async def test_prices_in_request_order(client, merchant, make_template):
    await put_product(client, merchant, "p1", 30000)
    await put_product(client, merchant, "p2", 12000)
    await put_product(client, merchant, "p3", 10000, promo_price=8000)
    template = await make_template()
    response = await post_prices(client, lines(("p3", 1), ("p1", 1), ("p2", 3)))
    body = await expect(response, HTTPStatus.OK)
    assert [item["product_id"] for item in body["items"]] == ["p3", "p1", "p2"], body
    p3, p1, p2 = (item["price"] for item in body["items"])
    assert_price(p3, list_price=10000, promo=8000, final=8000)
    assert p3["coupons"] == [], p3
    assert_price(p1, list_price=30000, final=25000)
    (entry,) = p1["coupons"]
    assert_claimable(entry, template["id"], 5000)
    assert_price(p2, list_price=12000, quantity=3, final=31000)
    (entry,) = p2["coupons"]
    assert_claimable(entry, template["id"], 5000)


async def test_prices_equal_the_product_detail(client, merchant, make_template, user):
    await put_product(client, merchant, "p1", 30000, promo_price=29000)
    await put_product(client, merchant, "p2", 9999)
    await make_template(name="满200减20", benefit=MAN_200_20)
    held = await make_template(name="85折", benefit={"type": "discount", "rate_permille": 850})
    await claim_ok(client, user, held["id"])
    for headers in (None, user):
        body = await expect(
            await post_prices(client, lines(("p1", 2), ("p2", 1)), headers), HTTPStatus.OK
        )
        prices = [item["price"] for item in body["items"]]
        assert prices == [
            await price_of(client, "p1", headers, quantity=2),
            await price_of(client, "p2", headers, quantity=1),
        ], body


async def test_prices_leave_out_unknown_products(client, merchant, auth):
    await put_product(client, merchant, "p1", 10000)
    s2 = auth("merchant", shop="s2", sub="m2")
    await put_product(client, s2, "p9", 10000, shop="s2")
    response = await post_prices(client, lines(("nope", 1), ("p1", 1), ("p9", 1)))
    body = await expect(response, HTTPStatus.OK)
    assert [item["product_id"] for item in body["items"]] == ["p1"], body


async def test_prices_signed_in_shows_held_coupons(client, merchant, make_template, user):
    await put_product(client, merchant, "p1", 30000)
    template = await make_template()
    coupon = await claim_ok(client, user, template["id"])
    body = await expect(await post_prices(client, lines(("p1", 1)), user), HTTPStatus.OK)
    (item,) = body["items"]
    assert_price(item["price"], list_price=30000, final=25000)
    (entry,) = item["price"]["coupons"]
    assert_held(entry, coupon["coupon_id"], 5000)


@pytest.mark.parametrize("count, status", [(0, 400), (1, 200), (50, 200), (51, 400)])
async def test_prices_item_count(client, merchant, count, status):
    await put_product(client, merchant, "p0", 10000)
    response = await post_prices(client, lines(*((f"p{n}", 1) for n in range(count))))
    if status == 400:
        await expect(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")
    else:
        body = await expect(response, HTTPStatus.OK)
        assert [item["product_id"] for item in body["items"]] == ["p0"], body


# --- POST /checkout/preview -----------------------------------------------------------------
async def test_preview_needs_a_token(client, merchant):
    await put_product(client, merchant, "p1", 10000)
    response = await client.post(shop_url("/checkout/preview"), json={"items": lines(("p1", 1))})
    await expect(response, HTTPStatus.UNAUTHORIZED, "UNAUTHENTICATED")


@pytest.mark.parametrize("role", ["merchant", "service"])
async def test_preview_is_for_shoppers(client, merchant, auth, role):
    await put_product(client, merchant, "p1", 10000)
    response = await preview(client, auth(role, shop="s1", sub="x1"), lines(("p1", 1)))
    await expect(response, HTTPStatus.FORBIDDEN, "FORBIDDEN")


async def test_preview_uses_held_coupons_only(client, merchant, make_template, user):
    await put_product(client, merchant, "p1", 30000)
    await put_product(client, merchant, "p2", 10000, promo_price=9000)
    await make_template()  # claimable, not held
    body = await preview_ok(client, user, lines(("p1", 1), ("p2", 2)))
    assert body["coupons"] == [], body
    assert [line_view(line) for line in body["lines"]] == [
        ("p1", 1, 30000, 30000, 0, 30000),
        ("p2", 2, 9000, 18000, 0, 18000),
    ], body
    assert (body["total"], body["discount"], body["payable"]) == (48000, 0, 48000), body


async def test_preview_apportions_a_shop_coupon_over_three_lines(
    client, merchant, make_template, user
):
    await put_product(client, merchant, "p1", 10000)
    await put_product(client, merchant, "p2", 7000)
    await put_product(client, merchant, "p3", 6001)
    template = await make_template()  # 满299减50
    coupon = await claim_ok(client, user, template["id"])
    body = await preview_ok(client, user, lines(("p1", 1), ("p2", 2), ("p3", 1)))
    assert [line["product_id"] for line in body["lines"]] == ["p1", "p2", "p3"], body
    assert [line["amount"] for line in body["lines"]] == [10000, 14000, 6001], body
    # 5000 over 10000 / 14000 / 6001 of 30001: 1666.6, 2333.3, 1000.1 -> the extra cent to p1.
    assert [line["discount"] for line in body["lines"]] == [1667, 2333, 1000], body
    assert sum(line["discount"] for line in body["lines"]) == 5000, body
    assert [line["payable"] for line in body["lines"]] == [8333, 11667, 5001], body
    assert applied(body) == {coupon["coupon_id"]: 5000}, body
    assert (body["total"], body["discount"], body["payable"]) == (30001, 5000, 25001), body


async def test_preview_product_coupon_only_on_lines_in_scope(client, merchant, make_template, user):
    await put_product(client, merchant, "p1", 3000)
    await put_product(client, merchant, "p2", 7001)
    await put_product(client, merchant, "p3", 5000)
    template = await make_template(
        benefit=no_threshold(1000), scope={"type": "products", "product_ids": ["p1", "p2"]}
    )
    coupon = await claim_ok(client, user, template["id"])
    body = await preview_ok(client, user, lines(("p1", 1), ("p2", 1), ("p3", 1)))
    assert [line["discount"] for line in body["lines"]] == [300, 700, 0], body
    assert applied(body) == {coupon["coupon_id"]: 1000}, body
    assert body["payable"] == 14001, body


async def test_preview_threshold_counts_only_lines_in_scope(client, merchant, make_template, user):
    await put_product(client, merchant, "p1", 20000, category="cups")
    await put_product(client, merchant, "p2", 20000, category="bowls")
    template = await make_template(scope={"type": "categories", "categories": ["cups"]})
    coupon = await claim_ok(client, user, template["id"])
    body = await preview_ok(client, user, lines(("p1", 1), ("p2", 1)))  # cups: 20000 < 29900
    assert body["coupons"] == [], body
    assert body["payable"] == 40000, body
    body = await preview_ok(client, user, lines(("p1", 2), ("p2", 1)))  # cups: 40000
    assert applied(body) == {coupon["coupon_id"]: 5000}, body
    assert [line["discount"] for line in body["lines"]] == [5000, 0], body


async def test_preview_picks_the_best_held_coupon(client, merchant, make_template, user):
    await put_product(client, merchant, "p1", 20000)
    small = await make_template(name="立减10", benefit=no_threshold(1000))
    large = await make_template(name="立减25", benefit=no_threshold(2500))
    await claim_ok(client, user, small["id"])
    best = await claim_ok(client, user, large["id"])
    body = await preview_ok(client, user, lines(("p1", 1)))
    assert applied(body) == {best["coupon_id"]: 2500}, body
    assert body["payable"] == 17500, body


async def test_preview_stacks_held_coupons(client, merchant, make_template, user):
    await put_product(client, merchant, "p1", 20000)
    first = await make_template(
        name="立减10", benefit=no_threshold(1000), stacking=stacking(others=True)
    )
    second = await make_template(
        name="立减20", benefit=no_threshold(2000), stacking=stacking(others=True)
    )
    a = await claim_ok(client, user, first["id"])
    b = await claim_ok(client, user, second["id"])
    body = await preview_ok(client, user, lines(("p1", 1)))
    assert applied(body) == {a["coupon_id"]: 1000, b["coupon_id"]: 2000}, body
    assert body["payable"] == 17000, body


async def test_preview_with_chosen_coupon(client, merchant, make_template, user):
    await put_product(client, merchant, "p1", 20000)
    small = await make_template(name="立减10", benefit=no_threshold(1000))
    large = await make_template(name="立减25", benefit=no_threshold(2500))
    chosen = await claim_ok(client, user, small["id"])
    await claim_ok(client, user, large["id"])
    body = await preview_ok(client, user, lines(("p1", 1)), coupon_ids=[chosen["coupon_id"]])
    assert applied(body) == {chosen["coupon_id"]: 1000}, body
    assert body["payable"] == 19000, body


async def test_preview_with_two_chosen_stackable_coupons(client, merchant, make_template, user):
    await put_product(client, merchant, "p1", 10000)
    cash = await make_template(
        name="立减10", benefit=no_threshold(1000), stacking=stacking(others=True)
    )
    rate = await make_template(
        name="9折",
        benefit={"type": "discount", "rate_permille": 900},
        stacking=stacking(others=True),
    )
    a = await claim_ok(client, user, cash["id"])
    b = await claim_ok(client, user, rate["id"])
    body = await preview_ok(
        client, user, lines(("p1", 1)), coupon_ids=[b["coupon_id"], a["coupon_id"]]
    )
    assert applied(body) == {a["coupon_id"]: 1000, b["coupon_id"]: 900}, body
    assert body["payable"] == 8100, body


async def test_preview_does_not_spend_coupons(client, merchant, make_template, user):
    await put_product(client, merchant, "p1", 30000)
    template = await make_template()
    coupon = await claim_ok(client, user, template["id"])
    await preview_ok(client, user, lines(("p1", 1)))
    await preview_ok(client, user, lines(("p1", 1)), coupon_ids=[coupon["coupon_id"]])
    (item,) = await wallet(client, user)
    assert (item["coupon_id"], item["status"]) == (coupon["coupon_id"], "unused"), item


async def test_preview_refuses_unknown_coupon(client, merchant, user):
    await put_product(client, merchant, "p1", 30000)
    response = await preview(client, user, lines(("p1", 1)), coupon_ids=[987654321])
    details = await refused_coupon(response, 987654321)
    assert details["reason"] == "not_found", details


async def test_preview_refuses_another_users_coupon_as_not_found(
    client, merchant, make_template, auth
):
    await put_product(client, merchant, "p1", 30000)
    template = await make_template()
    theirs = await claim_ok(client, auth("user", sub="u8"), template["id"])
    response = await preview(
        client, auth("user", sub="u7"), lines(("p1", 1)), coupon_ids=[theirs["coupon_id"]]
    )
    details = await refused_coupon(response, theirs["coupon_id"])
    assert details["reason"] == "not_found", details


async def test_preview_refuses_coupon_below_threshold(client, merchant, make_template, user):
    await put_product(client, merchant, "p1", 29800)
    template = await make_template()
    coupon = await claim_ok(client, user, template["id"])
    response = await preview(client, user, lines(("p1", 1)), coupon_ids=[coupon["coupon_id"]])
    details = await refused_coupon(response, coupon["coupon_id"])
    assert details["reason"] == "threshold_not_met", details


async def test_preview_refuses_expired_coupon(client, merchant, make_template, auth, clock):
    await put_product(client, merchant, "p1", 30000)
    template = await make_template()
    coupon = await claim_ok(client, auth("user", sub="u7"), template["id"])
    clock.advance(timedelta(days=8))
    response = await preview(
        client, auth("user", sub="u7"), lines(("p1", 1)), coupon_ids=[coupon["coupon_id"]]
    )
    await refused_coupon(response, coupon["coupon_id"])


async def test_preview_refuses_revoked_coupon(client, merchant, make_template, user):
    await put_product(client, merchant, "p1", 30000)
    template = await make_template()
    coupon = await claim_ok(client, user, template["id"])
    await revoke_ok(client, merchant, coupon["coupon_id"])
    response = await preview(client, user, lines(("p1", 1)), coupon_ids=[coupon["coupon_id"]])
    await refused_coupon(response, coupon["coupon_id"])


async def test_preview_refuses_coupons_that_do_not_stack(client, merchant, make_template, user):
    await put_product(client, merchant, "p1", 20000)
    first = await make_template(name="立减10", benefit=no_threshold(1000))
    second = await make_template(
        name="立减20", benefit=no_threshold(2000), stacking=stacking(others=True)
    )
    a = await claim_ok(client, user, first["id"])
    b = await claim_ok(client, user, second["id"])
    response = await preview(
        client, user, lines(("p1", 1)), coupon_ids=[a["coupon_id"], b["coupon_id"]]
    )
    body = await expect(response, HTTPStatus.CONFLICT, "COUPON_NOT_USABLE")
    assert body["error"]["details"]["coupon_id"] in (a["coupon_id"], b["coupon_id"]), body


async def test_preview_refuses_two_coupons_of_one_template(client, merchant, make_template, user):
    await put_product(client, merchant, "p1", 20000)
    template = await make_template(
        name="立减10", benefit=no_threshold(1000), stacking=stacking(others=True), per_user_limit=2
    )
    a = await claim_ok(client, user, template["id"])
    b = await claim_ok(client, user, template["id"])
    response = await preview(
        client, user, lines(("p1", 1)), coupon_ids=[a["coupon_id"], b["coupon_id"]]
    )
    body = await expect(response, HTTPStatus.CONFLICT, "COUPON_NOT_USABLE")
    assert body["error"]["details"]["coupon_id"] in (a["coupon_id"], b["coupon_id"]), body


async def test_preview_refuses_coupon_out_of_scope(client, merchant, make_template, user):
    await put_product(client, merchant, "p1", 20000)
    template = await make_template(
        benefit=no_threshold(1000), scope={"type": "products", "product_ids": ["p9"]}
    )
    coupon = await claim_ok(client, user, template["id"])
    response = await preview(client, user, lines(("p1", 1)), coupon_ids=[coupon["coupon_id"]])
    await refused_coupon(response, coupon["coupon_id"])


# --- POST /products/{id}/auto-claim ---------------------------------------------------------
async def auto_claim(
    client: TestClient, headers: dict[str, str], product_id: str, request_id: str | None = None
) -> Any:
    return await client.post(
        shop_url(f"/products/{product_id}/auto-claim"),
        json={"request_id": request_id or new_request_id()},
        headers=headers,
    )


@pytest.fixture
async def auto_product(client, merchant, make_template) -> dict[str, Any]:
    """p1 (list 30000) auto-claims two stackable templates: 立减10 and 满299减50."""
    cash = await make_template(
        name="立减10",
        benefit=no_threshold(1000),
        claim_methods=["auto"],
        stacking=stacking(others=True),
    )
    man = await make_template(claim_methods=["widget", "auto"], stacking=stacking(others=True))
    await put_product(
        client, merchant, "p1", 30000, auto_claim_template_ids=[cash["id"], man["id"]]
    )
    return {"cash": cash["id"], "man": man["id"]}


async def test_auto_claim_issues_every_template(client, auto_product, user):
    body = await expect(await auto_claim(client, user, "p1"), HTTPStatus.OK)
    assert not body.get("replayed"), body
    claimed = {coupon["template_id"]: coupon for coupon in body["claimed"]}
    assert set(claimed) == {auto_product["cash"], auto_product["man"]}, body
    for coupon in claimed.values():
        assert coupon["status"] == "unused", coupon
        assert coupon["source"] == "auto", coupon
    assert body["skipped"] == [], body
    held = {item["coupon_id"] for item in await wallet(client, user)}
    assert held == {coupon["coupon_id"] for coupon in claimed.values()}, held
    # The price after the claims: both held, 30000 - 5000 - 1000.
    price = body["price"]
    assert_price(price, list_price=30000, final=24000)
    by_id = {entry["coupon_id"]: entry for entry in price["coupons"]}
    assert set(by_id) == {coupon["coupon_id"] for coupon in claimed.values()}, price
    for key, discount in (("cash", 1000), ("man", 5000)):
        coupon_id = claimed[auto_product[key]]["coupon_id"]
        assert_held(by_id[coupon_id], coupon_id, discount)
    assert price == await price_of(client, "p1", user)


async def test_auto_claim_skips_a_sold_out_template(client, merchant, make_template, auth):
    keep = await make_template(name="立减10", benefit=no_threshold(1000), claim_methods=["auto"])
    scarce = await make_template(
        claim_methods=["widget", "auto"], stock={"type": "limited", "total": 1}
    )
    await put_product(
        client, merchant, "p1", 30000, auto_claim_template_ids=[keep["id"], scarce["id"]]
    )
    await claim_ok(client, auth("user", sub="u9"), scarce["id"])
    user = auth("user", sub="u7")
    body = await expect(await auto_claim(client, user, "p1"), HTTPStatus.OK)
    assert [coupon["template_id"] for coupon in body["claimed"]] == [keep["id"]], body
    assert skipped(body) == [(scarce["id"], "SOLD_OUT")], body
    price = body["price"]
    assert_price(price, list_price=30000, final=29000)
    (entry,) = price["coupons"]
    assert_held(entry, body["claimed"][0]["coupon_id"], 1000)


async def test_auto_claim_skips_a_template_not_started(
    client, merchant, make_template, user, clock
):
    now = clock.now()
    later = await make_template(
        claim_methods=["auto"],
        claim_start=iso(now + timedelta(hours=1)),
        claim_end=iso(now + timedelta(days=3)),
    )
    await put_product(client, merchant, "p1", 30000, auto_claim_template_ids=[later["id"]])
    body = await expect(await auto_claim(client, user, "p1"), HTTPStatus.OK)
    assert body["claimed"] == [], body
    assert skipped(body) == [(later["id"], "NOT_STARTED")], body
    assert_price(body["price"], list_price=30000, final=30000)
    assert body["price"]["coupons"] == [], body


async def test_auto_claim_again_issues_nothing_new(client, auto_product, user):
    await expect(await auto_claim(client, user, "p1"), HTTPStatus.OK)
    body = await expect(await auto_claim(client, user, "p1"), HTTPStatus.OK)
    assert not body.get("replayed"), body
    assert body["claimed"] == [], body
    assert skipped(body) == sorted(
        [(auto_product["cash"], "LIMIT_REACHED"), (auto_product["man"], "LIMIT_REACHED")]
    ), body
    assert len(await wallet(client, user)) == 2
    assert_price(body["price"], list_price=30000, final=24000)
    assert all(entry["needs_claim"] is False for entry in body["price"]["coupons"]), body


async def test_auto_claim_replay(client, auto_product, user):
    first = await expect(await auto_claim(client, user, "p1", "auto-1"), HTTPStatus.OK)
    again = await expect(await auto_claim(client, user, "p1", "auto-1"), HTTPStatus.OK)
    assert again["replayed"] is True, again
    assert {key: value for key, value in again.items() if key != "replayed"} == first
    assert len(await wallet(client, user)) == 2


async def test_auto_claim_without_auto_templates(client, merchant, make_template, user):
    template = await make_template()  # widget only, not on the product
    await put_product(client, merchant, "p1", 30000)
    body = await expect(await auto_claim(client, user, "p1"), HTTPStatus.OK)
    assert (body["claimed"], body["skipped"]) == ([], []), body
    (entry,) = body["price"]["coupons"]
    assert_claimable(entry, template["id"], 5000)
    assert await wallet(client, user) == []


async def test_auto_claim_needs_a_token(client, auto_product):
    response = await client.post(
        shop_url("/products/p1/auto-claim"), json={"request_id": new_request_id()}
    )
    await expect(response, HTTPStatus.UNAUTHORIZED, "UNAUTHENTICATED")


@pytest.mark.parametrize("role", ["merchant", "service"])
async def test_auto_claim_is_for_shoppers(client, auto_product, auth, role):
    response = await auto_claim(client, auth(role, shop="s1", sub="x1"), "p1")
    await expect(response, HTTPStatus.FORBIDDEN, "FORBIDDEN")


async def test_auto_claim_unknown_product(client, auto_product, user):
    await expect(await auto_claim(client, user, "nope"), HTTPStatus.NOT_FOUND, "NOT_FOUND")
    assert await wallet(client, user) == []
    await expect(await auto_claim(client, user, "p1"), HTTPStatus.OK)


async def test_auto_claim_bad_request_id(client, auto_product, user):
    response = await client.post(
        shop_url("/products/p1/auto-claim"), json={"request_id": "a b"}, headers=user
    )
    await expect(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")
    assert await wallet(client, user) == []


async def test_auto_claim_issues_nothing_new_on_reopening_even_with_a_higher_limit(
    client, merchant, make_template, user
):
    template = await make_template(
        benefit=no_threshold(1000), claim_methods=["auto"], per_user_limit=3
    )
    await put_product(client, merchant, "p1", 10000, auto_claim_template_ids=[template["id"]])
    url = shop_url("/products/p1/auto-claim")
    first = await expect(
        await client.post(url, json={"request_id": "open-1"}, headers=user), HTTPStatus.OK
    )
    assert len(first["claimed"]) == 1
    again = await expect(
        await client.post(url, json={"request_id": "open-2"}, headers=user), HTTPStatus.OK
    )
    assert again["claimed"] == []
    assert again["skipped"] == [{"template_id": template["id"], "reason": "ALREADY_CLAIMED"}]


async def test_money_above_the_cap_is_400(client, merchant):
    response = await client.put(
        shop_url("/admin/products/p1"),
        json={"title": "t", "list_price": 10**20},
        headers=merchant,
    )
    await expect(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")
