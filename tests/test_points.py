"""Points over HTTP on both backends: the ledger, exchange offers under the policy, the exchange."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from http import HTTPStatus
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import update

from bff.db import tables
from bff.keys import DB, GATE
from tests.conftest import expect, iso, template_body
from tests.helpers import (
    claim_ok,
    create_template,
    enrol,
    get_template,
    new_request_id,
    set_status,
    shop_url,
    wallet,
)

POINTS_55 = {"type": "threshold", "amount_off": 5500, "threshold": 29900}


# --- helpers ---------------------------------------------------------------------------------
def points_url(user_id: str, shop: str = "s1") -> str:
    return shop_url(f"/admin/members/{user_id}/points", shop)


async def change_points(
    client: TestClient,
    merchant: dict[str, str],
    user_id: str,
    delta: int,
    request_id: str | None = None,
    *,
    reason: str = "购物奖励",
    shop: str = "s1",
    **extra: Any,
) -> Any:
    body = {"delta": delta, "reason": reason, "request_id": request_id or new_request_id()}
    return await client.post(points_url(user_id, shop), json={**body, **extra}, headers=merchant)


async def grant(
    client: TestClient, merchant: dict[str, str], user_id: str, delta: int, **kwargs: Any
) -> dict[str, Any]:
    """Change a member's points and assert 200; return the reply."""
    return await expect(
        await change_points(client, merchant, user_id, delta, **kwargs), HTTPStatus.OK
    )


async def member_with_points(
    client: TestClient, merchant: dict[str, str], user_id: str, points: int, level: int = 0
) -> None:
    await enrol(client, merchant, user_id, level)
    if points:
        await grant(client, merchant, user_id, points)


async def my_points(client: TestClient, user: dict[str, str], **params: str) -> dict[str, Any]:
    response = await client.get(shop_url("/me/points"), params=params, headers=user)
    return await expect(response, HTTPStatus.OK)


async def create_offer(
    client: TestClient, merchant: dict[str, str], template_id: int, points_cost: int, **extra: Any
) -> Any:
    body = {"template_id": template_id, "points_cost": points_cost, **extra}
    return await client.post(shop_url("/admin/exchange-offers"), json=body, headers=merchant)


async def offer_ok(
    client: TestClient, merchant: dict[str, str], template_id: int, points_cost: int, **extra: Any
) -> dict[str, Any]:
    response = await create_offer(client, merchant, template_id, points_cost, **extra)
    return await expect(response, HTTPStatus.CREATED)


async def redeem(
    client: TestClient,
    user: dict[str, str],
    offer_id: int,
    request_id: str | None = None,
    shop: str = "s1",
    **extra: Any,
) -> Any:
    body = {"request_id": request_id or new_request_id(), **extra}
    return await client.post(
        shop_url(f"/points-exchange/{offer_id}/redeem", shop), json=body, headers=user
    )


async def exchange_page(client: TestClient, user: dict[str, str]) -> dict[str, Any]:
    return await expect(await client.get(shop_url("/points-exchange"), headers=user), HTTPStatus.OK)


def offer_entry(page: dict[str, Any], offer_id: int) -> dict[str, Any]:
    entries = [item for item in page["offers"] if item["offer_id"] == offer_id]
    assert len(entries) == 1, page
    return entries[0]


@pytest.fixture
def points_template(make_template: Callable[..., Any]) -> Callable[..., Any]:
    """A points-only 满299减55 template (stock 1000, 10 per user) unless overridden."""

    async def create(**overrides: Any) -> dict[str, Any]:
        values: dict[str, Any] = {
            "name": "积分券 满299减55",
            "benefit": POINTS_55,
            "claim_methods": ["points"],
            "per_user_limit": 10,
        }
        return await make_template(**{**values, **overrides})

    return create


@pytest.fixture
def points_offer(
    client: TestClient, merchant: dict[str, str], points_template: Callable[..., Any]
) -> Callable[..., Any]:
    async def create(points_cost: int = 300, offer: dict[str, Any] | None = None, **template: Any):
        created = await points_template(**template)
        return await offer_ok(client, merchant, created["id"], points_cost, **(offer or {}))

    return create


# === the ledger ==============================================================================
async def test_grant_and_deduct_write_one_ledger_row_each(client, merchant, auth, clock):
    await enrol(client, merchant, "u1", 0)
    granted = await grant(client, merchant, "u1", 500, ref="order:A-1")
    assert granted["balance"] == 500
    assert granted["user_id"] == "u1"
    assert granted["entry"]["delta"] == 500
    assert not granted.get("replayed")
    clock.advance(timedelta(minutes=1))
    deducted = await grant(client, merchant, "u1", -120, reason="积分过期")
    assert deducted["balance"] == 380

    body = await my_points(client, auth("user", sub="u1"))
    assert body["balance"] == 380
    assert body["next_cursor"] is None
    rows = [
        {k: row[k] for k in ("delta", "reason", "ref", "balance_after", "at")}
        for row in body["ledger"]
    ]
    assert rows == [
        {
            "delta": -120,
            "reason": "积分过期",
            "ref": None,
            "balance_after": 380,
            "at": (clock.now()).isoformat(),
        },
        {
            "delta": 500,
            "reason": "购物奖励",
            "ref": "order:A-1",
            "balance_after": 500,
            "at": (clock.now() - timedelta(minutes=1)).isoformat(),
        },
    ]


async def test_points_of_a_user_without_any_are_zero(client, auth):
    body = await my_points(client, auth("user", sub="nobody"))
    assert (body["balance"], body["ledger"], body["next_cursor"]) == (0, [], None)


async def test_deduct_below_zero_is_insufficient_points_and_changes_nothing(client, merchant, auth):
    await member_with_points(client, merchant, "u1", 100)
    response = await change_points(client, merchant, "u1", -101)
    body = await expect(response, HTTPStatus.CONFLICT, "INSUFFICIENT_POINTS")
    assert body["error"]["details"] == {"balance": 100, "needed": 101}
    points = await my_points(client, auth("user", sub="u1"))
    assert points["balance"] == 100
    assert len(points["ledger"]) == 1


async def test_deduct_from_a_member_without_points_is_insufficient(client, merchant):
    await enrol(client, merchant, "u1", 0)
    response = await change_points(client, merchant, "u1", -1)
    await expect(response, HTTPStatus.CONFLICT, "INSUFFICIENT_POINTS")


async def test_points_need_a_member(client, merchant, auth):
    response = await change_points(client, merchant, "stranger", 100)
    await expect(response, HTTPStatus.NOT_FOUND, "NOT_FOUND")
    assert (await my_points(client, auth("user", sub="stranger")))["balance"] == 0


async def test_points_change_is_idempotent_by_request_id(client, merchant, auth):
    await enrol(client, merchant, "u1", 0)
    first = await grant(client, merchant, "u1", 200, request_id="crm-1")
    again = await grant(client, merchant, "u1", 200, request_id="crm-1")
    assert again["replayed"] is True
    assert again["balance"] == first["balance"] == 200
    assert again["entry"] == first["entry"]
    # after the gate lost its keys, the ledger row's request key still replays
    await client.app[GATE].flush()
    third = await grant(client, merchant, "u1", 200, request_id="crm-1")
    assert third["replayed"] is True
    assert third["entry"] == first["entry"]
    assert len((await my_points(client, auth("user", sub="u1")))["ledger"]) == 1


@pytest.mark.parametrize("flushed", [False, True])
async def test_points_change_request_id_with_another_body_conflicts(client, merchant, flushed):
    await enrol(client, merchant, "u1", 0)
    await enrol(client, merchant, "u2", 0)
    await grant(client, merchant, "u1", 200, request_id="crm-1")
    if flushed:
        await client.app[GATE].flush()
    for response in (
        await change_points(client, merchant, "u1", 300, "crm-1"),
        await change_points(client, merchant, "u2", 200, "crm-1"),
        await change_points(client, merchant, "u1", 200, "crm-1", reason="other"),
    ):
        await expect(response, HTTPStatus.CONFLICT, "IDEMPOTENCY_CONFLICT")


async def test_concurrent_deductions_never_take_the_balance_below_zero(client, merchant, auth):
    await member_with_points(client, merchant, "u1", 1000)
    responses = await asyncio.gather(
        *(change_points(client, merchant, "u1", -150) for _ in range(20))
    )
    statuses = sorted(r.status for r in responses)
    assert statuses.count(HTTPStatus.OK) == 6, statuses
    assert statuses.count(HTTPStatus.CONFLICT) == 14, statuses
    body = await my_points(client, auth("user", sub="u1"), limit="100")
    assert body["balance"] == 100
    assert len(body["ledger"]) == 7
    assert sum(row["delta"] for row in body["ledger"]) == 100
    # each row's balance_after is the running total, newest first
    running = [row["balance_after"] for row in reversed(body["ledger"])]
    assert running == [1000 - 150 * n for n in range(7)]


async def test_concurrent_copies_of_a_points_change_apply_once(client, merchant, auth):
    await enrol(client, merchant, "u1", 0)
    responses = await asyncio.gather(
        *(change_points(client, merchant, "u1", 50, "same") for _ in range(20))
    )
    bodies = [await expect(r, HTTPStatus.OK) for r in responses]
    assert {b["balance"] for b in bodies} == {50}
    assert sum(1 for b in bodies if not b.get("replayed")) == 1
    assert (await my_points(client, auth("user", sub="u1")))["balance"] == 50


async def test_ledger_pages_newest_first(client, merchant, auth):
    await enrol(client, merchant, "u1", 0)
    for n in range(1, 6):
        await grant(client, merchant, "u1", n)
    user = auth("user", sub="u1")
    first = await my_points(client, user, limit="2")
    assert [row["delta"] for row in first["ledger"]] == [5, 4]
    second = await my_points(client, user, limit="2", cursor=first["next_cursor"])
    assert [row["delta"] for row in second["ledger"]] == [3, 2]
    third = await my_points(client, user, limit="2", cursor=second["next_cursor"])
    assert [row["delta"] for row in third["ledger"]] == [1]
    assert third["next_cursor"] is None
    assert first["balance"] == third["balance"] == 15
    bad = await client.get(shop_url("/me/points"), params={"cursor": "nope"}, headers=user)
    await expect(bad, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")


async def test_merchant_reads_a_members_points(client, merchant):
    await member_with_points(client, merchant, "u1", 70)
    body = await expect(await client.get(points_url("u1"), headers=merchant), HTTPStatus.OK)
    assert body["balance"] == 70
    assert [row["delta"] for row in body["ledger"]] == [70]


async def test_points_are_per_shop_and_per_user(client, merchant, auth):
    other_shop = auth("merchant", shop="s2", sub="m2")
    await member_with_points(client, merchant, "u1", 70)
    response = await client.put(
        shop_url("/admin/members/u1", "s2"), json={"level": 0}, headers=other_shop
    )
    await expect(response, HTTPStatus.OK)
    await grant(client, other_shop, "u1", 5, shop="s2")
    assert (await my_points(client, auth("user", sub="u1")))["balance"] == 70
    assert (await my_points(client, auth("user", sub="U1")))["balance"] == 0
    s2 = await client.get(shop_url("/me/points", "s2"), headers=auth("user", sub="u1"))
    assert (await expect(s2, HTTPStatus.OK))["balance"] == 5


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"delta": 0}, "delta"),
        ({"delta": 10**9 + 1}, "delta"),
        ({"delta": -(10**9) - 1}, "delta"),
        ({"delta": 1.5}, "delta"),
        ({"delta": "5"}, "delta"),
        ({"delta": True}, "delta"),
        ({"reason": " "}, "reason"),
        ({"reason": "x" * 65}, "reason"),
        ({"ref": "has space"}, "ref"),
        ({"request_id": "bad id"}, "request_id"),
        ({"request_id": None}, "request_id"),
    ],
)
async def test_points_change_validation(client, merchant, body, field):
    await enrol(client, merchant, "u1", 0)
    payload = {"delta": 5, "reason": "r", "request_id": "r-1", **body}
    response = await client.post(points_url("u1"), json=payload, headers=merchant)
    details = (await expect(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED"))["error"]
    assert field in details["details"], details


async def test_points_balance_has_a_ceiling(client, merchant, monkeypatch):
    monkeypatch.setattr("bff.points.ledger.MAX_BALANCE", 1000)
    await member_with_points(client, merchant, "u1", 900)
    response = await change_points(client, merchant, "u1", 101)
    body = await expect(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")
    assert "delta" in body["error"]["details"]
    await expect(await change_points(client, merchant, "u1", 100), HTTPStatus.OK)


async def test_points_paths_check_roles_and_shops(client, merchant, auth):
    await enrol(client, merchant, "u1", 0)
    user = auth("user", sub="u1")
    other = auth("merchant", shop="s2", sub="m2")
    await expect(await change_points(client, user, "u1", 5), HTTPStatus.FORBIDDEN, "FORBIDDEN")
    await expect(await change_points(client, other, "u1", 5), HTTPStatus.FORBIDDEN, "FORBIDDEN")
    await expect(
        await client.get(points_url("u1"), headers=user), HTTPStatus.FORBIDDEN, "FORBIDDEN"
    )
    await expect(await client.get(shop_url("/me/points")), HTTPStatus.UNAUTHORIZED)
    await expect(
        await client.get(shop_url("/points-exchange"), headers=merchant), HTTPStatus.FORBIDDEN
    )


# === offers and the policy ===================================================================
async def test_create_and_list_offers(client, merchant, points_template, clock):
    template = await points_template()
    starts = clock.now() + timedelta(hours=1)
    offer = await offer_ok(client, merchant, template["id"], 300, starts_at=iso(starts))
    assert offer["template_id"] == template["id"]
    assert offer["points_cost"] == 300
    assert offer["starts_at"] == starts.isoformat()
    assert offer["ends_at"] is None
    assert offer["template"]["name"] == "积分券 满299减55"
    assert offer["template"]["benefit"] == POINTS_55
    assert offer["template"]["remaining"] == 1000
    second = await offer_ok(client, merchant, template["id"], 500)

    got = await client.get(shop_url(f"/admin/exchange-offers/{offer['id']}"), headers=merchant)
    assert await expect(got, HTTPStatus.OK) == offer
    listed = await client.get(
        shop_url("/admin/exchange-offers"), params={"limit": "1"}, headers=merchant
    )
    page = await expect(listed, HTTPStatus.OK)
    assert [item["id"] for item in page["items"]] == [second["id"]]
    rest = await client.get(
        shop_url("/admin/exchange-offers"),
        params={"cursor": page["next_cursor"]},
        headers=merchant,
    )
    assert [item["id"] for item in (await expect(rest, HTTPStatus.OK))["items"]] == [offer["id"]]


async def test_offers_belong_to_their_shop(client, merchant, auth, points_template, clock):
    template = await points_template()
    offer = await offer_ok(client, merchant, template["id"], 300)
    other = auth("merchant", shop="s2", sub="m2")
    response = await client.post(
        shop_url("/admin/exchange-offers", "s2"),
        json={"template_id": template["id"], "points_cost": 300},
        headers=other,
    )
    await expect(response, HTTPStatus.NOT_FOUND, "NOT_FOUND")
    got = await client.get(shop_url(f"/admin/exchange-offers/{offer['id']}", "s2"), headers=other)
    await expect(got, HTTPStatus.NOT_FOUND, "NOT_FOUND")
    listed = await client.get(shop_url("/admin/exchange-offers", "s2"), headers=other)
    assert (await expect(listed, HTTPStatus.OK))["items"] == []
    user = auth("user", sub="u1")
    await expect(await redeem(client, user, offer["id"], shop="s2"), HTTPStatus.NOT_FOUND)


async def test_offer_needs_the_points_method(client, merchant, make_template):
    template = await make_template(benefit=POINTS_55, claim_methods=["widget"])
    response = await create_offer(client, merchant, template["id"], 300)
    body = await expect(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")
    assert "template_id" in body["error"]["details"]


async def test_offer_needs_a_template_still_claimable(client, merchant, points_template, clock):
    template = await points_template()
    await set_status(client, merchant, template["id"], "ended")
    response = await create_offer(client, merchant, template["id"], 300)
    body = await expect(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")
    assert "template_id" in body["error"]["details"]


async def test_unknown_template_is_not_found(client, merchant):
    await expect(await create_offer(client, merchant, 999, 300), HTTPStatus.NOT_FOUND)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"points_cost": 0}, "points_cost"),
        ({"points_cost": -5}, "points_cost"),
        ({"points_cost": 10**9 + 1}, "points_cost"),
        ({"points_cost": "300"}, "points_cost"),
        ({"template_id": 0}, "template_id"),
        ({"starts_at": "2026-11-20T10:00:00"}, "starts_at"),
        (
            {"starts_at": "2026-11-22T00:00:00+00:00", "ends_at": "2026-11-21T00:00:00+00:00"},
            "ends_at",
        ),
        ({"ends_at": "2026-11-20T03:00:00+00:00"}, "ends_at"),  # already over
        ({"starts_at": "2026-12-30T00:00:00+00:00"}, "starts_at"),  # after the claim end
    ],
)
async def test_offer_validation(client, merchant, points_template, extra, field):
    template = await points_template()
    body = {"template_id": template["id"], "points_cost": 300, **extra}
    response = await client.post(shop_url("/admin/exchange-offers"), json=body, headers=merchant)
    details = (await expect(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED"))["error"]
    assert field in details["details"], details


async def test_store_coupon_299_50_refuses_points_299_50_and_takes_299_55(
    client, merchant, make_template, points_template
):
    store = await make_template(name="店铺券 满299减50")  # free (widget), 299-50
    same = await points_template(
        benefit={"type": "threshold", "amount_off": 5000, "threshold": 29900}
    )
    response = await create_offer(client, merchant, same["id"], 300)
    body = await expect(response, HTTPStatus.BAD_REQUEST, "POLICY_VIOLATION")
    details = body["error"]["details"]
    assert details["rule"] == "stronger_than_store_coupons"
    assert details["store_coupon"]["id"] == store["id"]
    assert details["store_coupon"]["name"] == "店铺券 满299减50"
    assert details["min_amount_off"] == 5001

    stronger = await points_template()  # 299-55
    await offer_ok(client, merchant, stronger["id"], 300)


async def test_strength_names_the_strongest_store_coupon_it_lost_to(
    client, merchant, make_template, points_template
):
    await make_template(
        name="满100减10", benefit={"type": "threshold", "amount_off": 1000, "threshold": 10000}
    )
    strongest = await make_template(
        name="满200减40", benefit={"type": "threshold", "amount_off": 4000, "threshold": 20000}
    )
    weak = await points_template(
        benefit={"type": "threshold", "amount_off": 5000, "threshold": 29900}
    )
    body = await expect(
        await create_offer(client, merchant, weak["id"], 300),
        HTTPStatus.BAD_REQUEST,
        "POLICY_VIOLATION",
    )
    assert body["error"]["details"]["store_coupon"]["id"] == strongest["id"]
    # 40/200 = 20%: a 299 coupon needs more than 59.80 off; 60 is a points denomination
    assert body["error"]["details"]["min_amount_off"] == 5981
    ok = await points_template(
        benefit={"type": "threshold", "amount_off": 6000, "threshold": 29900}
    )
    await offer_ok(client, merchant, ok["id"], 300)


async def test_strength_counts_only_active_free_shop_threshold_coupons(
    client, merchant, make_template, points_template, clock
):
    strong = {"type": "threshold", "amount_off": 10000, "threshold": 20000}
    paused = await make_template(benefit=strong)
    await set_status(client, merchant, paused["id"], "paused")
    ended = await make_template(benefit=strong)
    await set_status(client, merchant, ended["id"], "ended")
    await make_template(
        benefit=strong,
        claim_start=iso(clock.now() - timedelta(days=3)),
        claim_end=iso(clock.now() - timedelta(hours=1)),
        validity={"type": "relative", "effective_after_days": 0, "valid_days": 7},
    )
    await make_template(benefit=strong, scope={"type": "products", "product_ids": ["p1"]})
    await make_template(benefit=strong, claim_methods=["points"])  # not free
    await make_template(benefit={"type": "no_threshold", "amount_off": 9000})
    await make_template(benefit={"type": "discount", "rate_permille": 500})
    offered = await points_template()
    await offer_ok(client, merchant, offered["id"], 300)


async def test_a_coupon_given_free_cannot_be_sold_for_points(client, merchant, make_template):
    both = await make_template(benefit=POINTS_55, claim_methods=["widget", "points"])
    body = await expect(
        await create_offer(client, merchant, both["id"], 300),
        HTTPStatus.BAD_REQUEST,
        "POLICY_VIOLATION",
    )
    assert body["error"]["details"]["store_coupon"]["id"] == both["id"]


async def test_gift_pack_coupons_count_as_free(client, merchant, make_template, points_template):
    pack = await make_template(benefit=POINTS_55, claim_methods=["gift_pack"])
    offered = await points_template()
    body = await expect(
        await create_offer(client, merchant, offered["id"], 300),
        HTTPStatus.BAD_REQUEST,
        "POLICY_VIOLATION",
    )
    assert body["error"]["details"]["store_coupon"]["id"] == pack["id"]


@pytest.mark.parametrize(
    "benefit",
    [
        {"type": "threshold", "amount_off": 4500, "threshold": 29900},  # 45 yuan: not listed
        {"type": "threshold", "amount_off": 5550, "threshold": 29900},  # not whole yuan
        {"type": "no_threshold", "amount_off": 1500},
        {"type": "discount", "rate_permille": 800},
        {"type": "exchange", "product_id": "p1", "price": 100},
    ],
)
async def test_points_denomination_rule(client, merchant, points_template, benefit):
    template = await points_template(benefit=benefit)
    body = await expect(
        await create_offer(client, merchant, template["id"], 300),
        HTTPStatus.BAD_REQUEST,
        "POLICY_VIOLATION",
    )
    details = body["error"]["details"]
    assert details["rule"] == "points_denomination"
    assert 55 in details["allowed_yuan"] and 45 not in details["allowed_yuan"]


async def test_no_threshold_points_coupon_in_a_denomination(client, merchant, points_template):
    template = await points_template(benefit={"type": "no_threshold", "amount_off": 1000})
    await offer_ok(client, merchant, template["id"], 100)


async def test_rules_off_accept_what_they_would_refuse(client_with, clock, merchant):
    client = await client_with(points={"points_denomination_rule": False, "strength_rule": False})
    await create_template(client, clock, merchant)  # store 299-50
    weak = await create_template(
        client,
        clock,
        merchant,
        benefit={"type": "threshold", "amount_off": 4500, "threshold": 29900},
        claim_methods=["points"],
    )
    await offer_ok(client, merchant, weak["id"], 300)


async def test_configured_points_denominations(client_with, clock, merchant):
    client = await client_with(points={"points_denominations": (45,)})
    weak = await create_template(
        client,
        clock,
        merchant,
        benefit={"type": "threshold", "amount_off": 4500, "threshold": 29900},
        claim_methods=["points"],
    )
    await offer_ok(client, merchant, weak["id"], 300)
    template = await create_template(
        client, clock, merchant, benefit=POINTS_55, claim_methods=["points"]
    )
    body = await expect(
        await create_offer(client, merchant, template["id"], 300),
        HTTPStatus.BAD_REQUEST,
        "POLICY_VIOLATION",
    )
    assert body["error"]["details"]["allowed_yuan"] == [45]


async def test_free_denominations_are_off_by_default(make_template):
    await make_template(benefit={"type": "threshold", "amount_off": 4500, "threshold": 29900})


async def test_free_denomination_rule_when_on(client_with, clock, merchant):
    client = await client_with(points={"free_denomination_rule": True})
    url = shop_url("/admin/coupon-templates")

    def body(**overrides: Any) -> dict[str, Any]:
        return template_body(clock, **overrides)

    odd = {"type": "threshold", "amount_off": 4500, "threshold": 29900}
    refused = await client.post(url, json=body(benefit=odd), headers=merchant)
    details = (await expect(refused, HTTPStatus.BAD_REQUEST, "POLICY_VIOLATION"))["error"]
    assert details["details"]["rule"] == "free_denomination"
    assert details["details"]["allowed_yuan"] == [3, 5, 10, 20, 50, 100]
    no_threshold = await client.post(
        url, json=body(benefit={"type": "no_threshold", "amount_off": 700}), headers=merchant
    )
    await expect(no_threshold, HTTPStatus.BAD_REQUEST, "POLICY_VIOLATION")
    # listed amounts, points-only coupons and product coupons are not free store coupons' business
    for accepted in (
        body(),
        body(benefit=odd, claim_methods=["points"]),
        body(benefit=odd, scope={"type": "products", "product_ids": ["p1"]}),
        body(benefit={"type": "discount", "rate_permille": 850}),
    ):
        await expect(await client.post(url, json=accepted, headers=merchant), HTTPStatus.CREATED)
    listed = await client.get(url, headers=merchant)
    assert len((await expect(listed, HTTPStatus.OK))["items"]) == 4


# === the exchange ============================================================================
async def test_exchange_issues_a_points_coupon_and_charges_points(
    client, merchant, auth, points_offer, clock
):
    offer = await points_offer(300)
    await member_with_points(client, merchant, "u1", 1000)
    user = auth("user", sub="u1")
    body = await expect(await redeem(client, user, offer["id"]), HTTPStatus.CREATED)
    assert not body.get("replayed")
    assert body["balance"] == 700
    coupon = body["coupon"]
    assert coupon["source"] == "points"
    assert coupon["template_id"] == offer["template_id"]
    assert coupon["benefit"] == POINTS_55
    assert coupon["status"] == "unused"
    held = await wallet(client, user)
    assert [(c["coupon_id"], c["source"]) for c in held] == [(coupon["coupon_id"], "points")]
    points = await my_points(client, user)
    assert points["balance"] == 700
    newest = points["ledger"][0]
    assert newest["delta"] == -300
    assert newest["reason"] == "exchange"
    assert newest["ref"] == f"offer:{offer['id']}/coupon:{coupon['coupon_id']}"
    assert newest["balance_after"] == 700
    template = await get_template(client, merchant, offer["template_id"])
    assert template["issued"] == 1


async def test_insufficient_points_changes_nothing(client, merchant, auth, points_offer):
    offer = await points_offer(300)
    await member_with_points(client, merchant, "u1", 299)
    user = auth("user", sub="u1")
    body = await expect(
        await redeem(client, user, offer["id"]), HTTPStatus.CONFLICT, "INSUFFICIENT_POINTS"
    )
    assert body["error"]["details"] == {"balance": 299, "needed": 300}
    assert await wallet(client, user) == []
    assert (await my_points(client, user))["balance"] == 299
    assert (await get_template(client, merchant, offer["template_id"]))["issued"] == 0


async def test_member_without_points_is_insufficient(client, merchant, auth, points_offer):
    offer = await points_offer(300)
    await enrol(client, merchant, "u1", 0)
    response = await redeem(client, auth("user", sub="u1"), offer["id"])
    await expect(response, HTTPStatus.CONFLICT, "INSUFFICIENT_POINTS")


async def test_sold_out_exchange_leaves_the_balance_untouched(client, merchant, auth, points_offer):
    offer = await points_offer(300, stock={"type": "limited", "total": 1})
    await member_with_points(client, merchant, "u1", 1000)
    await member_with_points(client, merchant, "u2", 1000)
    await expect(await redeem(client, auth("user", sub="u1"), offer["id"]), HTTPStatus.CREATED)
    user = auth("user", sub="u2")
    await expect(await redeem(client, user, offer["id"]), HTTPStatus.CONFLICT, "SOLD_OUT")
    points = await my_points(client, user)
    assert points["balance"] == 1000
    assert len(points["ledger"]) == 1
    assert await wallet(client, user) == []


async def test_sold_out_comes_before_insufficient_points(client, merchant, auth, points_offer):
    offer = await points_offer(300, stock={"type": "limited", "total": 1})
    await member_with_points(client, merchant, "u1", 1000)
    await member_with_points(client, merchant, "u2", 10)
    await expect(await redeem(client, auth("user", sub="u1"), offer["id"]), HTTPStatus.CREATED)
    response = await redeem(client, auth("user", sub="u2"), offer["id"])
    await expect(response, HTTPStatus.CONFLICT, "SOLD_OUT")


async def test_limit_reached_charges_nothing_more(client, merchant, auth, points_offer):
    offer = await points_offer(300, per_user_limit=1)
    await member_with_points(client, merchant, "u1", 1000)
    user = auth("user", sub="u1")
    await expect(await redeem(client, user, offer["id"]), HTTPStatus.CREATED)
    await expect(await redeem(client, user, offer["id"]), HTTPStatus.CONFLICT, "LIMIT_REACHED")
    assert (await my_points(client, user))["balance"] == 700


async def test_limit_reached_comes_before_insufficient_points(client, merchant, auth, points_offer):
    offer = await points_offer(600, per_user_limit=1)
    await member_with_points(client, merchant, "u1", 1000)
    user = auth("user", sub="u1")
    await expect(await redeem(client, user, offer["id"]), HTTPStatus.CREATED)
    await expect(await redeem(client, user, offer["id"]), HTTPStatus.CONFLICT, "LIMIT_REACHED")


async def test_wallet_full_charges_nothing(client_with, clock, merchant, auth):
    client = await client_with(wallet={"max_unused_per_shop": 1})
    widget = await create_template(client, clock, merchant)
    template = await create_template(
        client, clock, merchant, benefit=POINTS_55, claim_methods=["points"]
    )
    offer = await offer_ok(client, merchant, template["id"], 300)
    await member_with_points(client, merchant, "u1", 1000)
    user = auth("user", sub="u1")
    await claim_ok(client, user, widget["id"])
    await expect(await redeem(client, user, offer["id"]), HTTPStatus.CONFLICT, "WALLET_FULL")
    assert (await my_points(client, user))["balance"] == 1000
    page = await exchange_page(client, user)
    assert page["wallet_full"] is True


async def test_daily_sold_out(client, merchant, auth, points_offer):
    offer = await points_offer(100, daily_limit=1)
    await member_with_points(client, merchant, "u1", 1000)
    user = auth("user", sub="u1")
    await expect(await redeem(client, user, offer["id"]), HTTPStatus.CREATED)
    await expect(await redeem(client, user, offer["id"]), HTTPStatus.CONFLICT, "DAILY_SOLD_OUT")
    assert (await my_points(client, user))["balance"] == 900


async def test_offer_window_not_started_and_ended(client, merchant, auth, points_offer, clock):
    starts = clock.now() + timedelta(hours=2)
    ends = clock.now() + timedelta(hours=4)
    offer = await points_offer(100, offer={"starts_at": iso(starts), "ends_at": iso(ends)})
    await member_with_points(client, merchant, "u1", 1000)
    response = await redeem(client, auth("user", sub="u1"), offer["id"])
    body = await expect(response, HTTPStatus.CONFLICT, "NOT_STARTED")
    assert body["error"]["details"]["claim_start"] == starts.isoformat()
    clock.advance(timedelta(hours=3))
    await expect(await redeem(client, auth("user", sub="u1"), offer["id"]), HTTPStatus.CREATED)
    clock.advance(timedelta(hours=1))
    response = await redeem(client, auth("user", sub="u1"), offer["id"])
    await expect(response, HTTPStatus.CONFLICT, "CLAIM_ENDED")
    assert (await my_points(client, auth("user", sub="u1")))["balance"] == 900


async def test_template_window_bounds_the_offer(client, merchant, auth, points_offer, clock):
    offer = await points_offer(100)  # the template's claim ends in 10 days
    await member_with_points(client, merchant, "u1", 1000)
    clock.advance(timedelta(days=11))
    response = await redeem(client, auth("user", sub="u1"), offer["id"])
    await expect(response, HTTPStatus.CONFLICT, "CLAIM_ENDED")


async def test_paused_template_refuses_exchange(client, merchant, auth, points_offer):
    offer = await points_offer(100)
    await member_with_points(client, merchant, "u1", 1000)
    await set_status(client, merchant, offer["template_id"], "paused")
    user = auth("user", sub="u1")
    await expect(await redeem(client, user, offer["id"]), HTTPStatus.CONFLICT, "CLAIM_PAUSED")
    assert (await exchange_page(client, user))["offers"] == []


async def test_exchange_needs_an_active_member(client, merchant, auth, points_offer):
    offer = await points_offer(100)
    body = await expect(
        await redeem(client, auth("user", sub="guest"), offer["id"]),
        HTTPStatus.FORBIDDEN,
        "NOT_ELIGIBLE",
    )
    assert body["error"]["details"]["reason"] == "members only"
    page = await exchange_page(client, auth("user", sub="guest"))
    assert page["member"] is False
    assert offer_entry(page, offer["id"])["state"] == "insufficient_points"


async def test_exchange_keeps_the_template_audience(client, merchant, auth, points_offer):
    offer = await points_offer(100, audience={"type": "members", "min_level": 3})
    await member_with_points(client, merchant, "u1", 1000, level=2)
    user = auth("user", sub="u1")
    await expect(await redeem(client, user, offer["id"]), HTTPStatus.FORBIDDEN, "NOT_ELIGIBLE")
    assert (await exchange_page(client, user))["offers"] == []
    await enrol(client, merchant, "u1", 3)
    await expect(await redeem(client, user, offer["id"]), HTTPStatus.CREATED)


async def test_exchange_runs_the_risk_check_when_asked(client, merchant, auth, points_offer):
    offer = await points_offer(100, risk_check=True)
    await member_with_points(client, merchant, "u1", 1000)
    user = auth("user", sub="u1")
    await expect(await redeem(client, user, offer["id"]), HTTPStatus.FORBIDDEN, "RISK_REJECTED")
    response = await redeem(client, user, offer["id"], device={"id": "d-1", "emulator": True})
    await expect(response, HTTPStatus.FORBIDDEN, "RISK_REJECTED")
    response = await redeem(client, user, offer["id"], device={"id": "d-1"})
    await expect(response, HTTPStatus.CREATED)
    assert (await my_points(client, user))["balance"] == 900


async def test_exchange_counts_against_the_claim_rate_limit(client_with, clock, merchant, auth):
    client = await client_with(risk={"user_claims_per_minute": 1})
    template = await create_template(
        client, clock, merchant, benefit=POINTS_55, claim_methods=["points"], per_user_limit=5
    )
    offer = await offer_ok(client, merchant, template["id"], 100)
    await member_with_points(client, merchant, "u1", 1000)
    user = auth("user", sub="u1")
    await expect(await redeem(client, user, offer["id"]), HTTPStatus.CREATED)
    response = await redeem(client, user, offer["id"])
    await expect(response, HTTPStatus.TOO_MANY_REQUESTS, "RATE_LIMITED")
    assert response.headers.get("Retry-After")
    assert (await my_points(client, user))["balance"] == 900


async def test_a_former_member_keeps_points_but_cannot_exchange(
    client, merchant, auth, points_offer, clock
):
    offer = await points_offer(100)
    await member_with_points(client, merchant, "u1", 1000)

    async def leave(conn: Any) -> None:
        members = tables.members
        await conn.execute(
            update(members)
            .where(members.c.shop_id == "s1", members.c.user_id == "u1")
            .values(left_at=clock.now())
        )

    await client.app[DB].transaction(leave)  # DELETE /membership is issue 5's
    user = auth("user", sub="u1")
    body = await expect(await redeem(client, user, offer["id"]), HTTPStatus.FORBIDDEN)
    assert body["error"]["code"] == "NOT_ELIGIBLE"
    # the merchant can still correct a former member's points
    assert (await grant(client, merchant, "u1", -50))["balance"] == 950
    page = await exchange_page(client, user)
    assert (page["member"], page["balance"]) == (False, 950)


async def test_unknown_offer_is_not_found(client, merchant, auth):
    await enrol(client, merchant, "u1", 0)
    response = await redeem(client, auth("user", sub="u1"), 12345)
    await expect(response, HTTPStatus.NOT_FOUND, "NOT_FOUND")


async def test_exchange_is_idempotent_by_request_id(client, merchant, auth, points_offer, clock):
    offer = await points_offer(300)
    await member_with_points(client, merchant, "u1", 1000)
    user = auth("user", sub="u1")
    first = await expect(await redeem(client, user, offer["id"], "x-1"), HTTPStatus.CREATED)
    again = await expect(await redeem(client, user, offer["id"], "x-1"), HTTPStatus.CREATED)
    assert again["replayed"] is True
    assert again["coupon"] == first["coupon"]
    assert again["balance"] == 700
    # the gate lost its keys and the window has closed since: still a replay, no charge
    await client.app[GATE].flush()
    clock.advance(timedelta(days=11))
    user = auth("user", sub="u1")
    third = await expect(await redeem(client, user, offer["id"], "x-1"), HTTPStatus.CREATED)
    assert third["replayed"] is True
    assert third["coupon"]["coupon_id"] == first["coupon"]["coupon_id"]
    assert third["balance"] == 700
    points = await my_points(client, user)
    assert points["balance"] == 700
    assert len(points["ledger"]) == 2


@pytest.mark.parametrize("flushed", [False, True])
async def test_exchange_request_id_with_another_body_conflicts(
    client, merchant, auth, points_offer, flushed
):
    offer = await points_offer(300)
    other = await points_offer(100)
    await member_with_points(client, merchant, "u1", 1000)
    user = auth("user", sub="u1")
    await expect(await redeem(client, user, offer["id"], "x-1"), HTTPStatus.CREATED)
    if flushed:
        await client.app[GATE].flush()
    response = await redeem(client, user, other["id"], "x-1")
    await expect(response, HTTPStatus.CONFLICT, "IDEMPOTENCY_CONFLICT")
    response = await redeem(client, user, offer["id"], "x-1", device={"id": "d-1"})
    await expect(response, HTTPStatus.CONFLICT, "IDEMPOTENCY_CONFLICT")
    assert (await my_points(client, user))["balance"] == 700


async def test_request_ids_are_per_user(client, merchant, auth, points_offer):
    offer = await points_offer(300)
    await member_with_points(client, merchant, "u1", 1000)
    await member_with_points(client, merchant, "u2", 1000)
    one = await redeem(client, auth("user", sub="u1"), offer["id"], "same")
    two = await redeem(client, auth("user", sub="u2"), offer["id"], "same")
    first, second = await expect(one, HTTPStatus.CREATED), await expect(two, HTTPStatus.CREATED)
    assert first["coupon"]["coupon_id"] != second["coupon"]["coupon_id"]
    assert not second.get("replayed")


async def test_ten_concurrent_exchanges_of_1000_points_at_300_make_three(
    client, merchant, auth, points_offer
):
    offer = await points_offer(300)
    await member_with_points(client, merchant, "u1", 1000)
    user = auth("user", sub="u1")
    responses = await asyncio.gather(*(redeem(client, user, offer["id"]) for _ in range(10)))
    statuses = sorted(r.status for r in responses)
    assert statuses.count(HTTPStatus.CREATED) == 3, statuses
    for response in responses:
        if response.status != HTTPStatus.CREATED:
            await expect(response, HTTPStatus.CONFLICT, "INSUFFICIENT_POINTS")
    points = await my_points(client, user)
    assert points["balance"] == 100
    exchanges = [row for row in points["ledger"] if row["reason"] == "exchange"]
    assert len(exchanges) == 3
    assert sorted(row["balance_after"] for row in exchanges) == [100, 400, 700]
    assert len(await wallet(client, user)) == 3
    assert (await get_template(client, merchant, offer["template_id"]))["issued"] == 3


async def test_twenty_concurrent_copies_of_one_exchange_charge_once(
    client, merchant, auth, points_offer
):
    offer = await points_offer(300)
    await member_with_points(client, merchant, "u1", 1000)
    user = auth("user", sub="u1")
    responses = await asyncio.gather(
        *(redeem(client, user, offer["id"], "one-request") for _ in range(20))
    )
    bodies = [await expect(r, HTTPStatus.CREATED) for r in responses]
    assert len({b["coupon"]["coupon_id"] for b in bodies}) == 1
    assert {b["balance"] for b in bodies} == {700}
    assert sum(1 for b in bodies if not b.get("replayed")) == 1
    points = await my_points(client, user)
    assert points["balance"] == 700
    assert [row["reason"] for row in points["ledger"]] == ["exchange", "购物奖励"]


async def test_concurrent_exchanges_and_deductions_share_one_balance(
    client, merchant, auth, points_offer
):
    offer = await points_offer(300)
    await member_with_points(client, merchant, "u1", 1000)
    user = auth("user", sub="u1")
    burst = [redeem(client, user, offer["id"]) for _ in range(5)]
    burst += [change_points(client, merchant, "u1", -300) for _ in range(5)]
    responses = await asyncio.gather(*burst)
    assert sum(1 for r in responses if r.status in (HTTPStatus.OK, HTTPStatus.CREATED)) == 3
    points = await my_points(client, user, limit="100")
    assert points["balance"] == 100
    assert sum(row["delta"] for row in points["ledger"]) == 100
    issued = (await get_template(client, merchant, offer["template_id"]))["issued"]
    assert issued == len(await wallet(client, user))
    assert issued == sum(1 for row in points["ledger"] if row["reason"] == "exchange")


async def _no_gate(gate: Any, key: str, digest: str, work: Any, *, ttl_seconds: int) -> Any:
    """run_once as if the gate had lost every key: each copy runs its work."""
    return await work()


async def test_copies_without_the_gate_still_charge_once(
    client, merchant, auth, points_offer, monkeypatch
):
    monkeypatch.setattr("bff.points.exchange.run_once", _no_gate)
    offer = await points_offer(300)
    await member_with_points(client, merchant, "u1", 1000)
    user = auth("user", sub="u1")
    responses = await asyncio.gather(*(redeem(client, user, offer["id"], "r") for _ in range(10)))
    bodies = [await expect(r, HTTPStatus.CREATED) for r in responses]
    assert len({b["coupon"]["coupon_id"] for b in bodies}) == 1
    assert {b["balance"] for b in bodies} == {700}
    assert sum(1 for b in bodies if not b.get("replayed")) == 1
    assert (await my_points(client, user))["balance"] == 700
    assert len(await wallet(client, user)) == 1


async def test_points_change_copies_without_the_gate_apply_once(
    client, merchant, auth, monkeypatch
):
    monkeypatch.setattr("bff.points.ledger.run_once", _no_gate)
    await enrol(client, merchant, "u1", 0)
    responses = await asyncio.gather(
        *(change_points(client, merchant, "u1", 40, "same") for _ in range(10))
    )
    bodies = [await expect(r, HTTPStatus.OK) for r in responses]
    assert {b["balance"] for b in bodies} == {40}
    assert sum(1 for b in bodies if not b.get("replayed")) == 1
    points = await my_points(client, auth("user", sub="u1"))
    assert points["balance"] == 40
    assert len(points["ledger"]) == 1


async def test_many_users_race_for_little_stock(client, merchant, auth, points_offer):
    offer = await points_offer(100, stock={"type": "limited", "total": 4})
    users = [f"racer{n}" for n in range(12)]
    for user_id in users:
        await member_with_points(client, merchant, user_id, 100)
    responses = await asyncio.gather(
        *(redeem(client, auth("user", sub=u), offer["id"]) for u in users)
    )
    statuses = sorted(r.status for r in responses)
    assert statuses.count(HTTPStatus.CREATED) == 4, statuses
    balances = [(await my_points(client, auth("user", sub=u)))["balance"] for u in users]
    assert sorted(balances) == [0] * 4 + [100] * 8


# === the shopper's page =====================================================================
async def test_exchange_page_states(client, merchant, auth, points_offer, clock):
    await member_with_points(client, merchant, "u1", 500)
    user = auth("user", sub="u1")
    available = await points_offer(300)
    expensive = await points_offer(600)
    sold_out = await points_offer(100, stock={"type": "limited", "total": 1})
    limited = await points_offer(100, per_user_limit=1)
    later = await points_offer(100, offer={"starts_at": iso(clock.now() + timedelta(days=1))})
    over = await points_offer(100, offer={"ends_at": iso(clock.now() + timedelta(hours=1))})
    await member_with_points(client, merchant, "u2", 100)
    await expect(await redeem(client, auth("user", sub="u2"), sold_out["id"]), HTTPStatus.CREATED)
    await expect(await redeem(client, user, limited["id"]), HTTPStatus.CREATED)
    clock.advance(timedelta(hours=2))
    user = auth("user", sub="u1")
    page = await exchange_page(client, user)
    assert page["balance"] == 400
    assert page["member"] is True
    assert page["wallet_full"] is False
    states = {item["offer_id"]: item["state"] for item in page["offers"]}
    assert states == {
        available["id"]: "available",
        expensive["id"]: "insufficient_points",
        sold_out["id"]: "sold_out",
        limited["id"]: "limit_reached",
        later["id"]: "not_started",
        over["id"]: "ended",
    }
    entry = offer_entry(page, available["id"])
    assert entry["points_cost"] == 300
    assert entry["template"]["benefit"] == POINTS_55
    assert entry["held"] == 0
    assert offer_entry(page, limited["id"])["held"] == 1
    assert (
        offer_entry(page, later["id"])["starts_at"]
        == (clock.now() - timedelta(hours=2) + timedelta(days=1)).isoformat()
    )
    # a day after an offer ended it no longer shows
    clock.advance(timedelta(days=1))
    page = await exchange_page(client, auth("user", sub="u1"))
    assert over["id"] not in {item["offer_id"] for item in page["offers"]}


async def test_exchange_page_of_another_shop_is_empty(client, auth, points_offer):
    await points_offer(300)
    response = await client.get(shop_url("/points-exchange", "s2"), headers=auth("user", sub="u1"))
    page = await expect(response, HTTPStatus.OK)
    assert page == {"balance": 0, "member": False, "wallet_full": False, "offers": []}


async def test_openapi_lists_the_points_paths(client):
    doc = await expect(await client.get("/api/v1/openapi.json"), HTTPStatus.OK)
    paths = doc["paths"]
    base = "/api/v1/shops/{shop_id}"
    for path in (
        "/points-exchange",
        "/points-exchange/{offer_id}/redeem",
        "/me/points",
        "/admin/exchange-offers",
        "/admin/members/{user_id}/points",
    ):
        assert base + path in paths, sorted(paths)
