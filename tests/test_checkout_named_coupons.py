"""A checkout that names its coupons (issue 15, section 1): a combination the rules
forbid, or one holding a coupon that takes nothing the others would not, is refused
with 409 COUPON_NOT_USABLE naming the coupon, never priced; the same order without
``coupon_ids`` gets the best combination."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from tests.conftest import expect
from tests.helpers import new_request_id, put_product, shop_url, wallet

STACKING = {"with_store_promotions": True, "with_other_coupons": True}


async def grant(client, merchant, template_id: int, user_id: str) -> None:
    response = await client.post(
        shop_url(f"/admin/coupon-templates/{template_id}/grants"),
        json={"user_ids": [user_id], "request_id": new_request_id()},
        headers=merchant,
    )
    body = await expect(response, HTTPStatus.CREATED)
    assert body["failed"] == [], body


async def held(client, user, template_id: int) -> int:
    (coupon,) = [c for c in await wallet(client, user) if c["template_id"] == template_id]
    return coupon["coupon_id"]


async def preview(client, user, items, coupon_ids: list[int] | None = None) -> Any:
    body: dict[str, Any] = {"items": items}
    if coupon_ids is not None:
        body["coupon_ids"] = coupon_ids
    return await client.post(shop_url("/checkout/preview"), json=body, headers=user)


async def test_a_coupon_the_others_make_useless_is_refused_by_name(
    client, merchant, auth, make_template
):
    await put_product(client, merchant, "p1", 999)
    small = await make_template(
        name="立减1", benefit={"type": "no_threshold", "amount_off": 100}, stacking=STACKING
    )
    big = await make_template(
        name="立减67.77",
        benefit={"type": "no_threshold", "amount_off": 6777},
        stacking=STACKING,
    )
    user = auth("user", sub="u3")
    for template in (small, big):
        await grant(client, merchant, template["id"], "u3")
    small_id, big_id = await held(client, user, small["id"]), await held(client, user, big["id"])
    items = [{"product_id": "p1", "quantity": 1}]

    # Named together, the 100 off (applied first, by template id) is spent for nothing.
    refused = await expect(
        await preview(client, user, items, [small_id, big_id]),
        HTTPStatus.CONFLICT,
        "COUPON_NOT_USABLE",
    )
    assert refused["error"]["details"] == {"coupon_id": small_id, "reason": "not_needed"}

    best = await expect(await preview(client, user, items), HTTPStatus.OK)
    assert best["payable"] == 0, best
    assert best["coupons"] == [{"coupon_id": big_id, "discount": 999}], best
    alone = await expect(await preview(client, user, items, [big_id]), HTTPStatus.OK)
    assert alone == best


async def test_two_fixed_prices_never_share_one_unit(client, merchant, auth, make_template):
    await put_product(client, merchant, "p2", 19900)
    gift = await make_template(
        name="1分购",
        benefit={"type": "gift", "product_id": "p2"},
        claim_methods=["gift_pack"],
        stacking=STACKING,
    )
    exchange = await make_template(
        name="162.97兑换",
        benefit={"type": "exchange", "product_id": "p2", "price": 16297},
        stacking=STACKING,
    )
    user = auth("user", sub="u4")
    for template in (gift, exchange):
        await grant(client, merchant, template["id"], "u4")
    gift_id = await held(client, user, gift["id"])
    exchange_id = await held(client, user, exchange["id"])
    one = [{"product_id": "p2", "quantity": 1}]

    refused = await expect(
        await preview(client, user, one, [gift_id, exchange_id]),
        HTTPStatus.CONFLICT,
        "COUPON_NOT_USABLE",
    )
    # The gift (lower template id) takes the one unit; the exchange finds none of its own.
    assert refused["error"]["details"] == {"coupon_id": exchange_id, "reason": "not_combinable"}

    best = await expect(await preview(client, user, one), HTTPStatus.OK)
    assert (best["total"], best["payable"]) == (19900, 1), best
    assert best["coupons"] == [{"coupon_id": gift_id, "discount": 19899}], best

    # Two units: one at 1 cent, the other at 162.97.
    two = [{"product_id": "p2", "quantity": 2}]
    both = await expect(await preview(client, user, two, [gift_id, exchange_id]), HTTPStatus.OK)
    assert both["payable"] == 1 + 16297, both
    assert {c["coupon_id"]: c["discount"] for c in both["coupons"]} == {
        gift_id: 19899,
        exchange_id: 19900 - 16297,
    }, both
    assert await expect(await preview(client, user, two), HTTPStatus.OK) == both
