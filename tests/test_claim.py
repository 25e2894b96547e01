"""Claiming from the claim widget: POST /coupons/claim and GET /claim-widget over HTTP.

Covers the reply, idempotency, every refusal in the documented check order,
the validity a coupon gets, the template counters and the widget's states.
Concurrency lives in test_claim_concurrency.py; codes, wallet, grants and
revocation in test_wallet_and_codes.py.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from datetime import timedelta
from http import HTTPStatus
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import expect, iso
from tests.helpers import (
    claim,
    claim_ok,
    create_template,
    enrol,
    get_template,
    set_status,
    shop_url,
    wallet,
    when,
)


# --- helpers ---------------------------------------------------------------------------------
async def refused(response: Any, status: HTTPStatus, code: str) -> dict[str, Any]:
    return await expect(response, status, code)


async def claim_widget(
    client: TestClient, headers: dict[str, str] | None = None, **params: str
) -> dict[str, Any]:
    response = await client.get(shop_url("/claim-widget"), params=params, headers=headers or {})
    return await expect(response, HTTPStatus.OK)


def widget_entry(widget: dict[str, Any], template_id: int) -> dict[str, Any]:
    entries = [item for item in widget["coupons"] if item["template_id"] == template_id]
    assert len(entries) == 1, widget
    return entries[0]


def assert_retry_after(response: Any) -> None:
    value = response.headers.get("Retry-After")
    assert value, dict(response.headers)
    if value.isdigit():
        assert int(value) >= 1, value
    else:
        assert email.utils.parsedate_to_datetime(value) is not None, value


@pytest.fixture
def user(auth: Callable[..., dict[str, str]]) -> dict[str, str]:
    return auth("user", sub="u7")


# --- the reply -------------------------------------------------------------------------------
async def test_claim_issues_unused_widget_coupon(client, make_template, user, clock):
    template = await make_template()
    body = await expect(await claim(client, user, template["id"]), HTTPStatus.CREATED)
    assert not body.get("replayed"), body
    coupon = body["coupon"]
    assert isinstance(coupon["coupon_id"], int | str) and coupon["coupon_id"], coupon
    assert coupon["template_id"] == template["id"]
    assert coupon["name"] == "满299减50"
    assert coupon["benefit"] == {"type": "threshold", "amount_off": 5000, "threshold": 29900}
    assert "code" in coupon
    assert coupon["status"] == "unused"
    assert coupon["source"] == "widget"
    assert when(coupon["valid_from"]) == clock.now()
    assert when(coupon["valid_to"]) == clock.now() + timedelta(days=7)
    assert coupon["expiring_soon"] is False
    assert coupon["redeem_page"] == "pages/coupon/use"


async def test_claimed_coupon_is_in_the_wallet(client, make_template, user):
    template = await make_template()
    coupon = await claim_ok(client, user, template["id"])
    items = await wallet(client, user)
    assert [item["coupon_id"] for item in items] == [coupon["coupon_id"]]
    assert items[0]["status"] == "unused"
    assert items[0]["template_id"] == template["id"]


async def test_device_is_accepted_without_risk_check(client, make_template, user):
    template = await make_template()
    await claim_ok(client, user, template["id"], device={"id": "d1"})


@pytest.mark.parametrize("request_id", ["a", "A" * 64, "abc_DEF-123"])
async def test_request_id_bounds_accepted(client, make_template, user, request_id):
    template = await make_template()
    await claim_ok(client, user, template["id"], request_id=request_id)


@pytest.mark.parametrize("request_id", ["", "a" * 65, "a b", "a.b", "券", "a/b", 7, None])
async def test_bad_request_id(client, make_template, user, request_id):
    template = await make_template()
    body = {"template_id": template["id"], "request_id": request_id}
    response = await client.post(shop_url("/coupons/claim"), json=body, headers=user)
    error = await refused(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")
    assert "request_id" in error["error"]["details"], error
    assert await wallet(client, user) == []


@pytest.mark.parametrize(
    "body, field",
    [
        ({"request_id": "r1"}, "template_id"),
        ({"template_id": "1", "request_id": "r1"}, "template_id"),
        ({"template_id": 1}, "request_id"),
    ],
)
async def test_bad_claim_body(client, user, body, field):
    response = await client.post(shop_url("/coupons/claim"), json=body, headers=user)
    error = await refused(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")
    assert field in error["error"]["details"], error


async def test_claim_without_token(client, make_template):
    template = await make_template()
    body = {"template_id": template["id"], "request_id": "r1"}
    response = await client.post(shop_url("/coupons/claim"), json=body)
    await refused(response, HTTPStatus.UNAUTHORIZED, "UNAUTHENTICATED")


@pytest.mark.parametrize("role", ["merchant", "service"])
async def test_claim_with_non_user_token_forbidden(client, make_template, auth, role):
    template = await make_template()
    headers = auth(role, shop="s1", sub="staff")
    await refused(await claim(client, headers, template["id"]), HTTPStatus.FORBIDDEN, "FORBIDDEN")


# --- idempotency -----------------------------------------------------------------------------
async def test_replay_returns_the_same_coupon(client, make_template, merchant, user):
    template = await make_template()
    first_response = await claim(client, user, template["id"], "req-1")
    first = await expect(first_response, HTTPStatus.CREATED)
    again = await expect(await claim(client, user, template["id"], "req-1"), HTTPStatus.CREATED)
    assert again["replayed"] is True
    assert {key: value for key, value in again.items() if key != "replayed"} == first
    assert len(await wallet(client, user)) == 1
    assert (await get_template(client, merchant, template["id"]))["issued"] == 1


async def test_replay_with_device_returns_the_same_coupon(client, make_template, user):
    template = await make_template(risk_check=True)
    device = {"id": "d1", "emulator": False, "multi_open": False}
    first = await claim_ok(client, user, template["id"], request_id="req-1", device=device)
    again = await expect(
        await claim(client, user, template["id"], "req-1", device=device), HTTPStatus.CREATED
    )
    assert again["replayed"] is True
    assert again["coupon"] == first


async def test_same_request_id_other_template_conflicts(client, make_template, user):
    first = await make_template(name="first")
    second = await make_template(name="second")
    coupon = await claim_ok(client, user, first["id"], request_id="req-1")
    await refused(
        await claim(client, user, second["id"], "req-1"),
        HTTPStatus.CONFLICT,
        "IDEMPOTENCY_CONFLICT",
    )
    assert [item["coupon_id"] for item in await wallet(client, user)] == [coupon["coupon_id"]]


async def test_same_request_id_by_another_user_never_returns_their_coupon(
    client, make_template, auth
):
    template = await make_template()
    mine = await claim_ok(client, auth("user", sub="u1"), template["id"], request_id="req-1")
    other = auth("user", sub="u2")
    response = await claim(client, other, template["id"], "req-1")
    body = await response.json()
    assert response.status in (HTTPStatus.CREATED, HTTPStatus.CONFLICT), body
    if response.status == HTTPStatus.CREATED:
        assert body["coupon"]["coupon_id"] != mine["coupon_id"], body
    for item in await wallet(client, other):
        assert item["coupon_id"] != mine["coupon_id"]


# --- refusals --------------------------------------------------------------------------------
async def test_nonexistent_template(client, user):
    await refused(await claim(client, user, 999999), HTTPStatus.NOT_FOUND, "NOT_FOUND")


async def test_other_shops_template_not_found(client, make_template, user):
    other = await make_template(shop="s2")
    await refused(await claim(client, user, other["id"]), HTTPStatus.NOT_FOUND, "NOT_FOUND")
    assert await wallet(client, user) == []
    assert await wallet(client, user, shop="s2") == []


async def test_paused_template(client, make_template, merchant, user):
    template = await make_template()
    await set_status(client, merchant, template["id"], "paused")
    await refused(await claim(client, user, template["id"]), HTTPStatus.CONFLICT, "CLAIM_PAUSED")
    await set_status(client, merchant, template["id"], "active")
    await claim_ok(client, user, template["id"])


async def test_ended_template(client, make_template, merchant, user):
    template = await make_template()
    await set_status(client, merchant, template["id"], "ended")
    await refused(await claim(client, user, template["id"]), HTTPStatus.CONFLICT, "CLAIM_ENDED")


async def test_method_not_allowed(client, make_template, user):
    template = await make_template(claim_methods=["points"])
    await refused(
        await claim(client, user, template["id"]),
        HTTPStatus.FORBIDDEN,
        "CLAIM_METHOD_NOT_ALLOWED",
    )


async def test_widget_among_other_methods_allowed(client, make_template, user):
    template = await make_template(claim_methods=["auto", "widget"])
    await claim_ok(client, user, template["id"])


async def test_before_claim_start(client, make_template, user, clock):
    template = await make_template(
        claim_start=iso(clock.now() + timedelta(hours=1)),
        claim_end=iso(clock.now() + timedelta(days=3)),
    )
    await refused(await claim(client, user, template["id"]), HTTPStatus.CONFLICT, "NOT_STARTED")
    clock.advance(timedelta(hours=1))
    await claim_ok(client, user, template["id"])


@pytest.mark.parametrize("past_end", [timedelta(0), timedelta(seconds=1)])
async def test_at_or_after_claim_end(client, make_template, user, clock, past_end):
    template = await make_template(claim_end=iso(clock.now() + timedelta(minutes=30)))
    clock.advance(timedelta(minutes=30) + past_end)
    await refused(await claim(client, user, template["id"]), HTTPStatus.CONFLICT, "CLAIM_ENDED")


async def test_just_before_claim_end(client, make_template, user, clock):
    template = await make_template(claim_end=iso(clock.now() + timedelta(minutes=30)))
    clock.advance(timedelta(minutes=30) - timedelta(seconds=1))
    await claim_ok(client, user, template["id"])


@pytest.mark.parametrize(
    "level, expected",
    [(None, "NOT_ELIGIBLE"), (0, "NOT_ELIGIBLE"), (1, "NOT_ELIGIBLE"), (2, None), (5, None)],
)
async def test_members_audience(client, make_template, merchant, user, level, expected):
    template = await make_template(audience={"type": "members", "min_level": 2})
    if level is not None:
        await enrol(client, merchant, "u7", level)
    response = await claim(client, user, template["id"])
    if expected is None:
        await expect(response, HTTPStatus.CREATED)
    else:
        await refused(response, HTTPStatus.FORBIDDEN, expected)


async def test_members_audience_without_level(client, make_template, merchant, user, auth):
    template = await make_template(audience={"type": "members"})
    await refused(await claim(client, user, template["id"]), HTTPStatus.FORBIDDEN, "NOT_ELIGIBLE")
    await enrol(client, merchant, "u7", 0)
    await claim_ok(client, user, template["id"])


async def test_membership_in_another_shop_does_not_count(client, make_template, auth, user):
    template = await make_template(audience={"type": "members", "min_level": 1})
    s2 = auth("merchant", shop="s2", sub="m2")
    response = await client.put(shop_url("/admin/members/u7", "s2"), json={"level": 5}, headers=s2)
    await expect(response, HTTPStatus.OK)
    await refused(await claim(client, user, template["id"]), HTTPStatus.FORBIDDEN, "NOT_ELIGIBLE")


@pytest.mark.parametrize(
    "device",
    [
        pytest.param(None, id="no-device"),
        pytest.param({"id": "d1", "emulator": True}, id="emulator"),
        pytest.param({"id": "d1", "multi_open": True}, id="multi-open"),
        pytest.param({"id": "d1", "emulator": True, "multi_open": True}, id="both"),
    ],
)
async def test_risk_check_rejects(client, make_template, user, device):
    template = await make_template(risk_check=True)
    extra = {} if device is None else {"device": device}
    await refused(
        await claim(client, user, template["id"], **extra), HTTPStatus.FORBIDDEN, "RISK_REJECTED"
    )
    assert await wallet(client, user) == []


@pytest.mark.parametrize(
    "device", [{"id": "d1"}, {"id": "d1", "emulator": False, "multi_open": False}]
)
async def test_risk_check_passes_clean_device(client, make_template, user, device):
    template = await make_template(risk_check=True)
    await claim_ok(client, user, template["id"], device=device)


async def test_fourth_account_on_one_device_rejected(client, make_template, auth, clock):
    template = await make_template(risk_check=True)
    for sub in ("u1", "u2", "u3"):
        await claim_ok(client, auth("user", sub=sub), template["id"], device={"id": "d1"})
    fourth = auth("user", sub="u4")
    await refused(
        await claim(client, fourth, template["id"], device={"id": "d1"}),
        HTTPStatus.FORBIDDEN,
        "RISK_REJECTED",
    )
    # a known account on the device is not a new one; another device is not this one
    again = await make_template(name="second", risk_check=True)
    await claim_ok(client, auth("user", sub="u1"), again["id"], device={"id": "d1"})
    await claim_ok(client, fourth, template["id"], device={"id": "d2"})


async def test_accounts_per_device_count_again_next_day(client, make_template, auth, clock):
    template = await make_template(risk_check=True)
    for sub in ("u1", "u2", "u3"):
        await claim_ok(client, auth("user", sub=sub), template["id"], device={"id": "d1"})
    clock.advance(timedelta(days=1, hours=1))
    await claim_ok(client, auth("user", sub="u4"), template["id"], device={"id": "d1"})


async def test_rate_limited(client_with, clock, auth):
    client = await client_with(risk={"user_claims_per_minute": 3})
    merchant = auth("merchant", shop="s1", sub="m1")
    user = auth("user", sub="u7")
    ids = [
        (
            await create_template(
                client,
                clock,
                merchant,
                name=f"t{i}",
                stock={"type": "unlimited"},
                per_user_limit=10,
            )
        )["id"]
        for i in range(2)
    ]
    for n in range(3):
        await claim_ok(client, user, ids[n % 2])
    response = await claim(client, user, ids[1])
    await refused(response, HTTPStatus.TOO_MANY_REQUESTS, "RATE_LIMITED")
    assert_retry_after(response)
    assert len(await wallet(client, user)) == 3
    # another user is not limited by u7's claims, and u7 may claim again a minute later
    await claim_ok(client, auth("user", sub="u8"), ids[0])
    clock.advance(timedelta(seconds=61))
    await claim_ok(client, user, ids[0])


async def test_per_user_limit(client, make_template, merchant, user):
    template = await make_template(per_user_limit=2)
    await claim_ok(client, user, template["id"])
    await claim_ok(client, user, template["id"])
    await refused(await claim(client, user, template["id"]), HTTPStatus.CONFLICT, "LIMIT_REACHED")
    assert len(await wallet(client, user)) == 2
    assert (await get_template(client, merchant, template["id"]))["issued"] == 2


async def test_per_user_limit_one_default(client, make_template, user, auth):
    template = await make_template()
    await claim_ok(client, user, template["id"])
    await refused(await claim(client, user, template["id"]), HTTPStatus.CONFLICT, "LIMIT_REACHED")
    await claim_ok(client, auth("user", sub="u8"), template["id"])


async def test_wallet_full(client_with, clock, auth):
    client = await client_with(wallet={"max_unused_per_shop": 2})
    merchant = auth("merchant", shop="s1", sub="m1")
    user = auth("user", sub="u7")
    ids = [(await create_template(client, clock, merchant, name=f"t{i}"))["id"] for i in range(3)]
    await claim_ok(client, user, ids[0])
    await claim_ok(client, user, ids[1])
    await refused(await claim(client, user, ids[2]), HTTPStatus.CONFLICT, "WALLET_FULL")
    assert len(await wallet(client, user)) == 2
    # the cap is per shop: s2 is not full
    s2 = auth("merchant", shop="s2", sub="m2")
    other = await create_template(client, clock, s2, shop="s2")
    await claim_ok(client, user, other["id"], shop="s2")


async def test_revoked_coupon_frees_a_wallet_slot(client_with, clock, auth):
    client = await client_with(wallet={"max_unused_per_shop": 2})
    merchant = auth("merchant", shop="s1", sub="m1")
    user = auth("user", sub="u7")
    ids = [(await create_template(client, clock, merchant, name=f"t{i}"))["id"] for i in range(3)]
    first = await claim_ok(client, user, ids[0])
    await claim_ok(client, user, ids[1])
    await refused(await claim(client, user, ids[2]), HTTPStatus.CONFLICT, "WALLET_FULL")
    response = await client.post(
        shop_url(f"/admin/coupons/{first['coupon_id']}/revoke"), headers=merchant
    )
    await expect(response, HTTPStatus.OK)
    await claim_ok(client, user, ids[2])


async def test_expired_coupon_frees_a_wallet_slot(client_with, clock, auth):
    client = await client_with(wallet={"max_unused_per_shop": 2})
    merchant = auth("merchant", shop="s1", sub="m1")
    short = {"type": "relative", "effective_after_days": 0, "valid_days": 1}
    ids = [
        (await create_template(client, clock, merchant, name=f"t{i}", validity=short))["id"]
        for i in range(3)
    ]
    user = auth("user", sub="u7")
    await claim_ok(client, user, ids[0])
    await claim_ok(client, user, ids[1])
    await refused(await claim(client, user, ids[2]), HTTPStatus.CONFLICT, "WALLET_FULL")
    clock.advance(timedelta(days=1, minutes=1))
    await claim_ok(client, auth("user", sub="u7"), ids[2])


async def test_sold_out(client, make_template, merchant, auth):
    template = await make_template(stock={"type": "limited", "total": 2})
    await claim_ok(client, auth("user", sub="u1"), template["id"])
    await claim_ok(client, auth("user", sub="u2"), template["id"])
    third = auth("user", sub="u3")
    await refused(await claim(client, third, template["id"]), HTTPStatus.CONFLICT, "SOLD_OUT")
    assert await wallet(client, third) == []
    stored = await get_template(client, merchant, template["id"])
    assert (stored["issued"], stored["remaining"]) == (2, 0)


async def test_daily_limit_counts_shop_days(client, make_template, merchant, auth, clock):
    # 2026-11-20T04:00Z is noon in Shanghai; the shop day ends at 16:00Z
    template = await make_template(daily_limit=2)
    await claim_ok(client, auth("user", sub="u1"), template["id"])
    await claim_ok(client, auth("user", sub="u2"), template["id"])
    await refused(
        await claim(client, auth("user", sub="u3"), template["id"]),
        HTTPStatus.CONFLICT,
        "DAILY_SOLD_OUT",
    )
    clock.advance(timedelta(hours=11, minutes=59))  # 23:59 in Shanghai, still 11-20
    await refused(
        await claim(client, auth("user", sub="u3"), template["id"]),
        HTTPStatus.CONFLICT,
        "DAILY_SOLD_OUT",
    )
    clock.advance(timedelta(minutes=1))  # 00:00 on 11-21 in Shanghai, still 11-20 in UTC
    await claim_ok(client, auth("user", sub="u3"), template["id"])
    await claim_ok(client, auth("user", sub="u4"), template["id"])
    await refused(
        await claim(client, auth("user", sub="u5"), template["id"]),
        HTTPStatus.CONFLICT,
        "DAILY_SOLD_OUT",
    )
    stored = await get_template(client, auth("merchant", shop="s1", sub="m1"), template["id"])
    assert (stored["issued"], stored["remaining"]) == (4, 996)


# --- the order of the checks -----------------------------------------------------------------
async def test_paused_before_window(client, make_template, merchant, user, clock):
    template = await make_template(claim_start=iso(clock.now() + timedelta(days=1)))
    await set_status(client, merchant, template["id"], "paused")
    await refused(await claim(client, user, template["id"]), HTTPStatus.CONFLICT, "CLAIM_PAUSED")


async def test_window_before_audience(client, make_template, user, clock):
    template = await make_template(
        claim_start=iso(clock.now() + timedelta(days=1)),
        audience={"type": "members", "min_level": 2},
    )
    await refused(await claim(client, user, template["id"]), HTTPStatus.CONFLICT, "NOT_STARTED")


async def test_audience_before_risk(client, make_template, user):
    template = await make_template(risk_check=True, audience={"type": "members", "min_level": 2})
    response = await claim(client, user, template["id"], device={"id": "d1", "emulator": True})
    await refused(response, HTTPStatus.FORBIDDEN, "NOT_ELIGIBLE")


async def test_risk_before_per_user_limit(client, make_template, user):
    template = await make_template(risk_check=True)
    await claim_ok(client, user, template["id"], device={"id": "d1"})
    await refused(await claim(client, user, template["id"]), HTTPStatus.FORBIDDEN, "RISK_REJECTED")


async def test_per_user_limit_before_stock(client, make_template, user):
    template = await make_template(stock={"type": "limited", "total": 1})
    await claim_ok(client, user, template["id"])
    await refused(await claim(client, user, template["id"]), HTTPStatus.CONFLICT, "LIMIT_REACHED")


async def test_wallet_cap_before_stock(client_with, clock, auth):
    client = await client_with(wallet={"max_unused_per_shop": 2})
    merchant = auth("merchant", shop="s1", sub="m1")
    user = auth("user", sub="u7")
    held = [(await create_template(client, clock, merchant, name=f"t{i}"))["id"] for i in range(2)]
    scarce = await create_template(
        client, clock, merchant, name="scarce", stock={"type": "limited", "total": 1}
    )
    for template_id in held:
        await claim_ok(client, user, template_id)
    await claim_ok(client, auth("user", sub="u8"), scarce["id"])
    await refused(await claim(client, user, scarce["id"]), HTTPStatus.CONFLICT, "WALLET_FULL")


async def test_refusal_issues_nothing(client, make_template, merchant, user, clock):
    template = await make_template(claim_start=iso(clock.now() + timedelta(days=1)))
    await refused(await claim(client, user, template["id"]), HTTPStatus.CONFLICT, "NOT_STARTED")
    stored = await get_template(client, merchant, template["id"])
    assert (stored["issued"], stored["remaining"]) == (0, 1000)
    assert await wallet(client, user) == []


# --- validity --------------------------------------------------------------------------------
async def test_relative_validity_with_delay(client, make_template, user, clock):
    template = await make_template(
        validity={"type": "relative", "effective_after_days": 2, "valid_days": 7}
    )
    claimed_at = clock.now()
    coupon = await claim_ok(client, user, template["id"])
    assert when(coupon["valid_from"]) == claimed_at + timedelta(days=2)
    assert when(coupon["valid_to"]) == claimed_at + timedelta(days=9)


async def test_relative_validity_counts_from_claim_time(client, make_template, auth, clock):
    template = await make_template(per_user_limit=2)
    clock.advance(timedelta(hours=5))
    claimed_at = clock.now()
    coupon = await claim_ok(client, auth("user", sub="u7"), template["id"])
    assert when(coupon["valid_from"]) == claimed_at
    assert when(coupon["valid_to"]) == claimed_at + timedelta(days=7)


async def test_absolute_validity(client, make_template, user, clock):
    start, end = clock.now() + timedelta(days=1), clock.now() + timedelta(days=20)
    template = await make_template(
        validity={"type": "absolute", "start": iso(start), "end": iso(end)}
    )
    coupon = await claim_ok(client, user, template["id"])
    assert when(coupon["valid_from"]) == start
    assert when(coupon["valid_to"]) == end
    assert coupon["expiring_soon"] is False


@pytest.mark.parametrize(
    "validity, expiring_soon",
    [
        pytest.param(
            {"type": "relative", "effective_after_days": 0, "valid_days": 2}, True, id="2-days"
        ),
        pytest.param(
            {"type": "relative", "effective_after_days": 0, "valid_days": 1}, True, id="1-day"
        ),
        pytest.param(
            {"type": "relative", "effective_after_days": 0, "valid_days": 7}, False, id="7-days"
        ),
        pytest.param(
            {"type": "relative", "effective_after_days": 3, "valid_days": 2}, False, id="later"
        ),
    ],
)
async def test_expiring_soon_on_claim(client, make_template, user, validity, expiring_soon):
    template = await make_template(validity=validity)
    coupon = await claim_ok(client, user, template["id"])
    assert coupon["expiring_soon"] is expiring_soon, coupon


async def test_absolute_validity_ending_soon_is_flagged(client, make_template, user, clock):
    validity = {
        "type": "absolute",
        "start": iso(clock.now()),
        "end": iso(clock.now() + timedelta(days=2)),
    }
    template = await make_template(validity=validity)
    coupon = await claim_ok(client, user, template["id"])
    assert coupon["expiring_soon"] is True


async def test_expiring_soon_follows_the_clock(client, make_template, auth, clock):
    template = await make_template()
    await claim_ok(client, auth("user", sub="u7"), template["id"])
    clock.advance(timedelta(days=5))
    (item,) = await wallet(client, auth("user", sub="u7"))
    assert item["expiring_soon"] is True
    assert item["status"] == "unused"


# --- template counters -----------------------------------------------------------------------
async def test_counters_follow_claims(client, make_template, merchant, auth):
    template = await make_template()
    for sub in ("u1", "u2", "u3"):
        await claim_ok(client, auth("user", sub=sub), template["id"], request_id=f"req-{sub}")
    replay = await claim(client, auth("user", sub="u1"), template["id"], "req-u1")
    assert (await expect(replay, HTTPStatus.CREATED))["replayed"] is True
    stored = await get_template(client, merchant, template["id"])
    assert (stored["issued"], stored["remaining"]) == (3, 997)


async def test_unlimited_counters(client, make_template, merchant, auth):
    template = await make_template(stock={"type": "unlimited"})
    for sub in ("u1", "u2"):
        await claim_ok(client, auth("user", sub=sub), template["id"])
    stored = await get_template(client, merchant, template["id"])
    assert (stored["issued"], stored["remaining"]) == (2, None)


# --- the claim widget ------------------------------------------------------------------------
async def test_widget_lists_this_shops_widget_templates(client, make_template):
    listed = await make_template(name="widget")
    also = await make_template(name="widget-and-auto", claim_methods=["widget", "auto"])
    await make_template(name="points-only", claim_methods=["points"])
    await make_template(name="auto-only", claim_methods=["auto"])
    await make_template(shop="s2", name="other shop")
    widget = await claim_widget(client)
    assert widget["claim_page"] == "pages/index/index"
    assert sorted(item["template_id"] for item in widget["coupons"]) == sorted(
        [listed["id"], also["id"]]
    )
    entry = widget_entry(widget, listed["id"])
    assert entry["name"] == "widget"
    assert entry["description"] == "全店通用"
    assert entry["benefit"] == listed["benefit"]
    assert entry["validity"] == listed["validity"]
    assert entry["claim_page"] == "pages/index/index"
    assert (entry["state"], entry["held"], entry["remaining"]) == ("claimable", 0, 1000)


async def test_widget_shows_template_claim_page(client, make_template):
    template = await make_template(claim_page="pages/shop/coupons?from=widget")
    entry = widget_entry(await claim_widget(client), template["id"])
    assert entry["claim_page"] == "pages/shop/coupons?from=widget"


async def test_widget_claimed_and_held(client, make_template, user):
    single = await make_template(name="single")
    double = await make_template(name="double", per_user_limit=2)
    await claim_ok(client, user, single["id"])
    await claim_ok(client, user, double["id"])
    widget = await claim_widget(client, user)
    entry = widget_entry(widget, single["id"])
    assert (entry["state"], entry["held"], entry["remaining"]) == ("claimed", 1, 999)
    entry = widget_entry(widget, double["id"])
    assert (entry["state"], entry["held"], entry["remaining"]) == ("claimable", 1, 999)
    await claim_ok(client, user, double["id"])
    entry = widget_entry(await claim_widget(client, user), double["id"])
    assert (entry["state"], entry["held"]) == ("claimed", 2)


async def test_widget_anonymous_sees_no_user_state(client, make_template, user, merchant):
    template = await make_template(name="members", audience={"type": "members", "min_level": 2})
    held = await make_template(name="held")
    await claim_ok(client, user, held["id"])
    widget = await claim_widget(client)
    for entry in widget["coupons"]:
        assert entry["held"] == 0, entry
        assert entry["state"] == "claimable", entry
    assert widget_entry(widget, template["id"])["state"] == "claimable"


async def test_widget_sold_out(client, make_template, auth, user):
    template = await make_template(stock={"type": "limited", "total": 1})
    await claim_ok(client, auth("user", sub="u8"), template["id"])
    entry = widget_entry(await claim_widget(client, user), template["id"])
    assert (entry["state"], entry["held"], entry["remaining"]) == ("sold_out", 0, 0)
    assert widget_entry(await claim_widget(client), template["id"])["state"] == "sold_out"


async def test_widget_not_started_and_ended(client, make_template, user, clock):
    later = await make_template(name="later", claim_start=iso(clock.now() + timedelta(days=1)))
    soon_over = await make_template(
        name="soon over", claim_end=iso(clock.now() + timedelta(hours=1))
    )
    widget = await claim_widget(client, user)
    assert widget_entry(widget, later["id"])["state"] == "not_started"
    assert widget_entry(widget, soon_over["id"])["state"] == "claimable"
    clock.advance(timedelta(hours=1, minutes=1))
    assert widget_entry(await claim_widget(client), soon_over["id"])["state"] == "ended"


async def test_widget_not_eligible(client, make_template, merchant, auth):
    template = await make_template(audience={"type": "members", "min_level": 2})
    outsider = auth("user", sub="u7")
    assert widget_entry(await claim_widget(client, outsider), template["id"])["state"] == (
        "not_eligible"
    )
    await enrol(client, merchant, "u8", 1)
    low = auth("user", sub="u8")
    assert widget_entry(await claim_widget(client, low), template["id"])["state"] == "not_eligible"
    await enrol(client, merchant, "u9", 2)
    member = auth("user", sub="u9")
    assert widget_entry(await claim_widget(client, member), template["id"])["state"] == "claimable"


async def test_widget_wallet_full(client_with, clock, auth):
    client = await client_with(wallet={"max_unused_per_shop": 2})
    merchant = auth("merchant", shop="s1", sub="m1")
    user = auth("user", sub="u7")
    ids = [(await create_template(client, clock, merchant, name=f"t{i}"))["id"] for i in range(3)]
    await claim_ok(client, user, ids[0])
    await claim_ok(client, user, ids[1])
    entry = widget_entry(await claim_widget(client, user), ids[2])
    assert (entry["state"], entry["held"]) == ("wallet_full", 0)
    assert widget_entry(await claim_widget(client), ids[2])["state"] == "claimable"


async def test_widget_product_scope(client, make_template):
    shop_wide = await make_template(name="shop")
    for_p1 = await make_template(name="p1 only", scope={"type": "products", "product_ids": ["p1"]})
    on_p1 = await claim_widget(client, product_id="p1")
    assert sorted(item["template_id"] for item in on_p1["coupons"]) == sorted(
        [shop_wide["id"], for_p1["id"]]
    )
    on_p2 = await claim_widget(client, product_id="p2")
    assert [item["template_id"] for item in on_p2["coupons"]] == [shop_wide["id"]]
