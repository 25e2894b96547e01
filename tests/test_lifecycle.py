"""Across features: coupons from a gift pack and from points are redeemed and counted.

Each issuing channel writes the same coupon rows, so an order can use them and
the merchant statistics count them under their own source.
"""

from __future__ import annotations

from datetime import timedelta
from http import HTTPStatus
from typing import Any

from tests.conftest import expect, iso
from tests.helpers import (
    confirm_order,
    enrol,
    items,
    new_request_id,
    put_product,
    redeem_ok,
    shop_url,
)

STORE_COUPON = {"type": "threshold", "amount_off": 5000, "threshold": 29900}
POINTS_COUPON = {"type": "threshold", "amount_off": 5500, "threshold": 29900}


async def stats(client: Any, merchant: dict[str, str], template_id: int) -> dict[str, Any]:
    response = await client.get(
        shop_url(f"/admin/stats/coupon-templates/{template_id}"), headers=merchant
    )
    return await expect(response, HTTPStatus.OK)


async def test_pack_and_points_coupons_are_redeemed_and_counted_by_source(
    client, clock, merchant, auth, make_template
):
    service = auth("service", shop="s1", sub="orders")
    await put_product(client, merchant, "p1", 30000)
    packed = await make_template(benefit=STORE_COUPON, claim_methods=["gift_pack"])
    for_points = await make_template(
        name="积分券 满299减55", benefit=POINTS_COUPON, claim_methods=["points"]
    )
    now = clock.now()
    pack = await expect(
        await client.post(
            shop_url("/admin/gift-packs"),
            json={
                "kind": "new_member",
                "name": "新会员礼包",
                "starts_at": iso(now - timedelta(hours=1)),
                "ends_at": iso(now + timedelta(days=7)),
                "coupon_template_ids": [packed["id"]],
            },
            headers=merchant,
        ),
        HTTPStatus.CREATED,
    )
    offer = await expect(
        await client.post(
            shop_url("/admin/exchange-offers"),
            json={"template_id": for_points["id"], "points_cost": 300},
            headers=merchant,
        ),
        HTTPStatus.CREATED,
    )

    user = auth(sub="u-life")
    await expect(
        await client.post(shop_url("/membership"), json={}, headers=user), HTTPStatus.CREATED
    )
    await enrol(client, merchant, "u-life", 1)
    await expect(
        await client.post(
            shop_url("/admin/members/u-life/points"),
            json={"delta": 1000, "reason": "welcome", "request_id": "pts-1"},
            headers=merchant,
        ),
        HTTPStatus.OK,
    )
    from_pack = await expect(
        await client.post(
            shop_url(f"/gift-packs/{pack['id']}/claim"),
            json={"request_id": new_request_id()},
            headers=user,
        ),
        HTTPStatus.CREATED,
    )
    from_points = await expect(
        await client.post(
            shop_url(f"/points-exchange/{offer['id']}/redeem"),
            json={"request_id": new_request_id()},
            headers=user,
        ),
        HTTPStatus.CREATED,
    )
    pack_coupon = from_pack["coupons"][0]
    points_coupon = from_points["coupon"]
    assert (pack_coupon["source"], points_coupon["source"]) == ("gift_pack", "points")

    for order, coupon in (("o-pack", pack_coupon), ("o-points", points_coupon)):
        locked = await redeem_ok(
            client, service, order, "u-life", items(("p1", 1)), [coupon["coupon_id"]]
        )
        assert locked["payable"] == 30000 - coupon["benefit"]["amount_off"]
        await expect(await confirm_order(client, service, order), HTTPStatus.OK)

    pack_stats = await stats(client, merchant, packed["id"])
    assert pack_stats["used"] == 1 and pack_stats["discount_total"] == 5000
    assert pack_stats["gmv"] == 25000
    assert pack_stats["by_source"]["gift_pack"]["used"] == 1
    assert pack_stats["by_source"]["widget"]["claimed"] == 0
    points_stats = await stats(client, merchant, for_points["id"])
    assert points_stats["by_source"]["points"]["used"] == 1
    assert points_stats["gmv"] == 24500 and points_stats["roi"] == round(24500 / 5500, 4)
