"""A price never counts more coupons to claim than the wallet can still take (issue 15, 5).

At 49 of 50 unused coupons a shopper can claim one more: a product page or list price
that added two to-claim coupons would show a price nobody can get. Here the cap is 2.
"""

from __future__ import annotations

from http import HTTPStatus

from tests.conftest import expect
from tests.helpers import claim_ok, put_product, shop_url

STACKING = {"with_store_promotions": True, "with_other_coupons": True}


def no_threshold(amount_off: int) -> dict[str, object]:
    return {"type": "no_threshold", "amount_off": amount_off}


async def setup(client, merchant, make_template):
    await put_product(client, merchant, "p1", 20000)
    held = await make_template(name="已领5元", benefit=no_threshold(500), stacking=STACKING)
    small = await make_template(name="立减10", benefit=no_threshold(1000), stacking=STACKING)
    large = await make_template(name="立减20", benefit=no_threshold(2000), stacking=STACKING)
    return held, small, large


async def test_one_slot_left_shows_one_coupon_to_claim(
    client, client_with, merchant, auth, make_template
):
    held, _small, large = await setup(client, merchant, make_template)
    user = auth("user", sub="u9")
    coupon = await claim_ok(client, user, held["id"])
    capped = await client_with(wallet={"max_unused_per_shop": 2})

    body = await expect(await capped.get(shop_url("/products/p1"), headers=user), HTTPStatus.OK)
    price = body["price"]
    # Held 500 plus the better of the two to claim (2000): 20000 - 2500.
    assert price["final_price"] == 17500, price
    entries = {
        (e["needs_claim"], e.get("template_id"), e.get("coupon_id")) for e in price["coupons"]
    }
    assert entries == {(False, None, coupon["coupon_id"]), (True, large["id"], None)}, price

    listed = await capped.post(
        shop_url("/prices"), json={"items": [{"product_id": "p1", "quantity": 1}]}, headers=user
    )
    (item,) = (await expect(listed, HTTPStatus.OK))["items"]
    assert item["price"] == price, item

    # Without the cap both would be counted: 20000 - 500 - 1000 - 2000.
    roomy = await expect(await client.get(shop_url("/products/p1"), headers=user), HTTPStatus.OK)
    assert roomy["price"]["final_price"] == 16500, roomy
    assert sum(e["needs_claim"] for e in roomy["price"]["coupons"]) == 2, roomy


async def test_full_wallet_shows_no_coupon_to_claim(
    client, client_with, merchant, auth, make_template
):
    held, small, _large = await setup(client, merchant, make_template)
    user = auth("user", sub="u9")
    first = await claim_ok(client, user, held["id"])
    second = await claim_ok(client, user, small["id"])
    capped = await client_with(wallet={"max_unused_per_shop": 2})

    body = await expect(await capped.get(shop_url("/products/p1"), headers=user), HTTPStatus.OK)
    price = body["price"]
    assert price["final_price"] == 20000 - 500 - 1000, price
    assert {e.get("coupon_id") for e in price["coupons"]} == {
        first["coupon_id"],
        second["coupon_id"],
    }, price
    assert not any(e["needs_claim"] for e in price["coupons"]), price


async def test_anonymous_price_counts_every_coupon_to_claim(
    client, client_with, merchant, make_template
):
    await setup(client, merchant, make_template)
    capped = await client_with(wallet={"max_unused_per_shop": 2})
    body = await expect(await capped.get(shop_url("/products/p1")), HTTPStatus.OK)
    # A shopper not signed in has no wallet we know of: all three can be claimed.
    assert body["price"]["final_price"] == 20000 - 3500, body
