"""Regressions from the review of the member-center, points and redemption merge."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from http import HTTPStatus

import pytest

from tests.conftest import expect, iso
from tests.helpers import claim, claim_ok, field_error, items, put_product, redeem_ok, shop_url

FAR_DATES = ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "1999-12-31T00:00:00Z")


@pytest.mark.parametrize("value", FAR_DATES)
async def test_far_dates_are_a_400_on_every_write(client, clock, merchant, make_template, value):
    packed = await make_template(claim_methods=["gift_pack"])
    now = clock.now()
    pack = {
        "kind": "member",
        "name": "会员礼包",
        "starts_at": iso(now),
        "ends_at": value,
        "coupon_template_ids": [packed["id"]],
    }
    response = await client.post(shop_url("/admin/gift-packs"), json=pack, headers=merchant)
    await field_error(response, "ends_at")
    offer = {"template_id": packed["id"], "points_cost": 100, "starts_at": value}
    response = await client.post(shop_url("/admin/exchange-offers"), json=offer, headers=merchant)
    await field_error(response, "starts_at")
    response = await client.patch(
        shop_url(f"/admin/coupon-templates/{packed['id']}"),
        json={"claim_end": value},
        headers=merchant,
    )
    await field_error(response, "claim_end")


def forged_cursor(before: object) -> str:
    raw = json.dumps({"before": before}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("before", [10**30, 0, -5, True])
async def test_a_forged_cursor_is_a_400(client, merchant, auth, before):
    cursor = forged_cursor(before)
    for path, headers in (
        ("/admin/gift-packs", merchant),
        ("/admin/coupon-templates", merchant),
        ("/me/coupons", auth(sub="u1")),
    ):
        response = await client.get(shop_url(path), params={"cursor": cursor}, headers=headers)
        await field_error(response, "cursor")


async def test_coupons_held_by_an_order_count_against_the_wallet_cap(
    client_with, clock, merchant, auth
):
    client = await client_with(wallet={"max_unused_per_shop": 2})
    service = auth("service", shop="s1", sub="orders")
    await put_product(client, merchant, "p1", 30000)
    templates = []
    for name in ("A", "B", "C"):
        body = {
            "name": f"券{name}",
            "benefit": {"type": "threshold", "amount_off": 5000, "threshold": 29900},
            "scope": {"type": "shop"},
            "claim_start": iso(clock.now() - timedelta(days=1)),
            "claim_end": iso(clock.now() + timedelta(days=5)),
            "validity": {"type": "relative", "effective_after_days": 0, "valid_days": 7},
            "stock": {"type": "limited", "total": 10},
            "codes": {"type": "none"},
            "claim_methods": ["widget"],
            "redeem_page": "pages/coupon/use",
        }
        created = await client.post(
            shop_url("/admin/coupon-templates"), json=body, headers=merchant
        )
        templates.append((await expect(created, HTTPStatus.CREATED))["id"])
    user = auth(sub="capped")
    first = await claim_ok(client, user, templates[0])
    await claim_ok(client, user, templates[1])
    await redeem_ok(client, service, "o-cap", "capped", items(("p1", 1)), [first["coupon_id"]])
    # One coupon is locked by a pending order: cancelling it would bring it back, so the
    # wallet is still full.
    await expect(
        await claim(client, user, templates[2]), HTTPStatus.CONFLICT, "WALLET_FULL"
    )
