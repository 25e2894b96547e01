"""Merchant statistics per template (数据统计) through HTTP, exact after a scripted run.

Every figure below is counted by hand from the script: which coupons were
issued by which channel, which orders were confirmed, cancelled or left
pending. The default template is 满299减50 on p1 at 300.00, so every order
takes 5000 off and pays (300.00 × quantity) − 50.00.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from bff.redemption.stats import SOURCES, rate, roi
from tests.conftest import expect
from tests.helpers import (
    cancel_order,
    claim_ok,
    confirm_order,
    grant_ok,
    items,
    new_request_id,
    put_product,
    redeem_ok,
    shop_url,
    template_url,
)

ZERO = {
    "issued": 0,
    "claimed": 0,
    "claim_users": 0,
    "used": 0,
    "redeem_users": 0,
    "redemption_rate": 0.0,
    "discount_total": 0,
    "gmv": 0,
    "roi": None,
}


def stats_url(template_id: int, shop: str = "s1") -> str:
    return shop_url(f"/admin/stats/coupon-templates/{template_id}", shop)


async def stats_of(
    client: TestClient, merchant: dict[str, str], template_id: int
) -> dict[str, Any]:
    body = await expect(await client.get(stats_url(template_id), headers=merchant), HTTPStatus.OK)
    assert body["template_id"] == template_id, body
    assert set(body["by_source"]) == set(SOURCES), body
    return body


def figures(body: dict[str, Any]) -> dict[str, Any]:
    return {key: body[key] for key in ZERO}


@pytest.fixture
def service(auth: Callable[..., dict[str, str]]) -> dict[str, str]:
    return auth("service", shop="s1", sub="order-system")


@pytest.fixture
def users(auth: Callable[..., dict[str, str]]) -> Callable[[str], dict[str, str]]:
    return lambda sub: auth("user", sub=sub)


async def paid(
    client: TestClient,
    service: dict[str, str],
    order_id: str,
    user_id: str,
    quantity: int,
    coupon_ids: list[int],
) -> dict[str, Any]:
    body = await redeem_ok(client, service, order_id, user_id, items(("p1", quantity)), coupon_ids)
    await expect(await confirm_order(client, service, order_id), HTTPStatus.OK)
    return body


async def test_figures_after_a_scripted_run_of_claims_and_orders(
    client, merchant, make_template, service, users
):
    template = await make_template(claim_methods=["widget", "auto"], per_user_limit=2)
    tid = template["id"]
    await put_product(client, merchant, "p1", 30000, auto_claim_template_ids=[tid])
    # widget: u1 twice, u2, u3; auto: u4, u5; grant: u6, u7. 8 coupons, 7 users.
    u1a = await claim_ok(client, users("u1"), tid)
    u1b = await claim_ok(client, users("u1"), tid)
    u2 = await claim_ok(client, users("u2"), tid)
    u3 = await claim_ok(client, users("u3"), tid)
    auto = {}
    for sub in ("u4", "u5"):
        response = await client.post(
            shop_url("/products/p1/auto-claim"),
            json={"request_id": new_request_id()},
            headers=users(sub),
        )
        (auto[sub],) = (await expect(response, HTTPStatus.OK))["claimed"]
    granted = {
        g["user_id"]: g["coupon_id"] for g in await grant_ok(client, merchant, tid, ["u6", "u7"])
    }

    await paid(client, service, "o1", "u1", 1, [u1a["coupon_id"]])  # pays 25000
    await paid(client, service, "o2", "u1", 2, [u1b["coupon_id"]])  # pays 55000
    await redeem_ok(client, service, "o3", "u2", items(("p1", 1)), [u2["coupon_id"]])  # pending
    await paid(client, service, "o4", "u3", 1, [u3["coupon_id"]])
    await expect(await cancel_order(client, service, "o4"), HTTPStatus.OK)  # refunded: returned
    await redeem_ok(client, service, "o5", "u4", items(("p1", 1)), [auto["u4"]["coupon_id"]])
    await expect(await cancel_order(client, service, "o5"), HTTPStatus.OK)  # never paid
    await paid(client, service, "o6", "u6", 3, [granted["u6"]])  # pays 85000
    await paid(client, service, "o7", "u5", 1, [auto["u5"]["coupon_id"]])  # pays 25000

    body = await stats_of(client, merchant, tid)
    assert figures(body) == {
        "issued": 8,
        "claimed": 8,
        "claim_users": 7,
        "used": 4,
        "redeem_users": 3,  # u1, u6, u5
        "redemption_rate": 0.4286,  # 3 / 7
        "discount_total": 20000,
        "gmv": 190000,  # 25000 + 55000 + 85000 + 25000
        "roi": 9.5,
    }, body
    by_source = body["by_source"]
    assert by_source["widget"] == {
        "issued": 4,
        "claimed": 4,
        "claim_users": 3,
        "used": 2,
        "redeem_users": 1,
        "redemption_rate": 0.3333,
        "discount_total": 10000,
        "gmv": 80000,
        "roi": 8.0,
    }, by_source
    assert by_source["auto"] == {
        "issued": 2,
        "claimed": 2,
        "claim_users": 2,
        "used": 1,
        "redeem_users": 1,
        "redemption_rate": 0.5,
        "discount_total": 5000,
        "gmv": 25000,
        "roi": 5.0,
    }, by_source
    assert by_source["grant"] == {
        "issued": 2,
        "claimed": 2,
        "claim_users": 2,
        "used": 1,
        "redeem_users": 1,
        "redemption_rate": 0.5,
        "discount_total": 5000,
        "gmv": 85000,
        "roi": 17.0,
    }, by_source
    for source in ("gift_pack", "points", "code"):
        assert by_source[source] == ZERO, (source, by_source)

    # The pending order confirmed later counts at once; the template shows the same issued.
    await expect(await confirm_order(client, service, "o3"), HTTPStatus.OK)
    later = await stats_of(client, merchant, tid)
    assert (later["used"], later["redeem_users"], later["gmv"]) == (5, 4, 215000), later
    stored = await expect(await client.get(template_url(tid), headers=merchant), HTTPStatus.OK)
    assert stored["issued"] == later["issued"] == 8, stored


async def test_an_order_with_two_templates_counts_for_each(
    client, merchant, make_template, service, users
):
    stack = {"with_store_promotions": True, "with_other_coupons": True}
    big = await make_template(stacking=stack)  # 满299减50
    small = await make_template(
        name="立减10", benefit={"type": "no_threshold", "amount_off": 1000}, stacking=stack
    )
    await put_product(client, merchant, "p1", 30000)
    a = await claim_ok(client, users("u1"), big["id"])
    b = await claim_ok(client, users("u1"), small["id"])
    order = await paid(client, service, "o1", "u1", 1, [a["coupon_id"], b["coupon_id"]])
    assert order["payable"] == 24000, order
    big_stats = await stats_of(client, merchant, big["id"])
    small_stats = await stats_of(client, merchant, small["id"])
    assert (big_stats["discount_total"], big_stats["gmv"], big_stats["roi"]) == (5000, 24000, 4.8)
    assert (small_stats["discount_total"], small_stats["gmv"], small_stats["roi"]) == (
        1000,
        24000,
        24.0,
    )


async def test_a_kept_coupon_of_a_cancelled_order_is_used_but_earns_nothing(
    client, merchant, make_template, service, users
):
    template = await make_template(return_on_cancel=False)
    await put_product(client, merchant, "p1", 30000)
    coupon = await claim_ok(client, users("u1"), template["id"])
    await paid(client, service, "o1", "u1", 1, [coupon["coupon_id"]])
    await expect(await cancel_order(client, service, "o1"), HTTPStatus.OK)
    body = await stats_of(client, merchant, template["id"])
    assert figures(body) == {
        **ZERO,
        "issued": 1,
        "claimed": 1,
        "claim_users": 1,
        "used": 1,
        "redeem_users": 1,
        "redemption_rate": 1.0,
    }, body


async def test_code_claims_count_under_code(client, merchant, make_template, service, users):
    template = await make_template(codes={"type": "imported"}, claim_methods=["code"], stock=None)
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(b"SMS-0001\nSMS-0002\n"), filename="codes.txt")
    response = await client.post(
        template_url(template["id"], "/codes/import"), data=form, headers=merchant
    )
    await expect(response, HTTPStatus.CREATED)
    await put_product(client, merchant, "p1", 30000)
    response = await client.post(
        shop_url("/coupons/claim-by-code"),
        json={"code": "SMS-0002", "request_id": new_request_id()},
        headers=users("u1"),
    )
    coupon = (await expect(response, HTTPStatus.CREATED))["coupon"]
    await paid(client, service, "o1", "u1", 1, [coupon["coupon_id"]])
    body = await stats_of(client, merchant, template["id"])
    assert body["by_source"]["code"] == {
        "issued": 1,
        "claimed": 1,
        "claim_users": 1,
        "used": 1,
        "redeem_users": 1,
        "redemption_rate": 1.0,
        "discount_total": 5000,
        "gmv": 25000,
        "roi": 5.0,
    }, body
    assert figures(body) == body["by_source"]["code"], body


async def test_a_template_nobody_claimed_has_zero_figures(client, merchant, make_template):
    template = await make_template()
    body = await stats_of(client, merchant, template["id"])
    assert figures(body) == ZERO, body
    assert all(figures(b) == ZERO for b in body["by_source"].values()), body


async def test_another_shops_template_is_404(client, make_template, merchant):
    elsewhere = await make_template(shop="s2")
    response = await client.get(stats_url(elsewhere["id"]), headers=merchant)
    await expect(response, HTTPStatus.NOT_FOUND, "NOT_FOUND")
    response = await client.get(stats_url(987654321), headers=merchant)
    await expect(response, HTTPStatus.NOT_FOUND, "NOT_FOUND")


@pytest.mark.parametrize(("role", "shop"), [("user", None), ("service", "s1"), ("merchant", "s2")])
async def test_only_the_shops_merchant_reads_statistics(client, make_template, auth, role, shop):
    template = await make_template()
    response = await client.get(stats_url(template["id"]), headers=auth(role, shop=shop))
    await expect(response, HTTPStatus.FORBIDDEN, "FORBIDDEN")


def test_rates_and_roi_round_to_four_places():
    assert (rate(1, 3), rate(2, 3), rate(0, 0), rate(5, 5)) == (0.3333, 0.6667, 0.0, 1.0)
    assert (roi(190000, 20000), roi(1, 3), roi(5, 0)) == (9.5, 0.3333, None)
