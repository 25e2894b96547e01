"""Membership, gift packs, the member-center popup and new-member exclusives over HTTP.

Sections follow the feature: joining and leaving, the new-member popup at join,
the member center (its popup and the packs' states), the merchant's pack admin
(contents, windows, overlap, patching, access), claiming a pack (every refusal,
idempotency, concurrency) and the new-member exclusive templates.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from http import HTTPStatus
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from bff.keys import PACKS
from tests.conftest import REDIS_URL, expect, iso
from tests.helpers import (
    claim,
    claim_ok,
    create_template,
    enrol,
    field_error,
    get_template,
    new_request_id,
    set_status,
    shop_url,
    wallet,
    when,
)

Auth = Callable[..., dict[str, str]]
MakeTemplate = Callable[..., Any]


# --- helpers ---------------------------------------------------------------------------------
def pack_body(clock: Any, template_ids: list[int], **overrides: Any) -> dict[str, Any]:
    now = clock.now()
    body: dict[str, Any] = {
        "kind": "new_member",
        "name": "新会员礼包",
        "starts_at": iso(now - timedelta(hours=1)),
        "ends_at": iso(now + timedelta(days=10)),
        "coupon_template_ids": template_ids,
    }
    body.update(overrides)
    return body


def member_pack_body(clock: Any, template_ids: list[int], **overrides: Any) -> dict[str, Any]:
    return pack_body(clock, template_ids, kind="member", name="会员礼包", **overrides)


def pack_url(pack_id: int | None = None, shop: str = "s1") -> str:
    return shop_url("/admin/gift-packs" + ("" if pack_id is None else f"/{pack_id}"), shop)


async def create_pack(
    client: TestClient, merchant: dict[str, str], body: dict[str, Any]
) -> dict[str, Any]:
    response = await client.post(pack_url(), json=body, headers=merchant)
    return await expect(response, HTTPStatus.CREATED)


async def get_pack(client: TestClient, merchant: dict[str, str], pack_id: int) -> dict[str, Any]:
    return await expect(await client.get(pack_url(pack_id), headers=merchant), HTTPStatus.OK)


async def patch_pack(
    client: TestClient, merchant: dict[str, str], pack_id: int, **changes: Any
) -> Any:
    return await client.patch(pack_url(pack_id), json=changes, headers=merchant)


async def pack_templates(make_template: MakeTemplate, *stocks: int) -> list[int]:
    ids = []
    for stock in stocks:
        template = await make_template(
            claim_methods=["gift_pack"], stock={"type": "limited", "total": stock}
        )
        ids.append(template["id"])
    return ids


async def gift_template(make_template: MakeTemplate, stock: int | None) -> int:
    """A gift template (stock None: unlimited)."""
    template = await make_template(
        name="赠品",
        benefit={"type": "gift", "product_id": "gift-1"},
        claim_methods=["gift_pack"],
        stock={"type": "unlimited"} if stock is None else {"type": "limited", "total": stock},
    )
    return int(template["id"])


async def simple_pack(
    client: TestClient,
    clock: Any,
    merchant: dict[str, str],
    make_template: MakeTemplate,
    **overrides: Any,
) -> dict[str, Any]:
    """A new-member pack (unless ``kind`` says otherwise) of one coupon with stock 100."""
    ids = await pack_templates(make_template, 100)
    return await create_pack(client, merchant, pack_body(clock, ids, **overrides))


def s1_merchant(auth: Auth) -> dict[str, str]:
    """A fresh token of the ``merchant`` fixture's identity, for after the clock moved on."""
    return auth("merchant", shop="s1", sub="m1")


async def join(client: TestClient, headers: dict[str, str]) -> Any:
    return await client.post(shop_url("/membership"), json={}, headers=headers)


async def joined(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    """Join for the first time (or rejoin) and assert 201; return the reply."""
    return await expect(await join(client, headers), HTTPStatus.CREATED)


async def leave(client: TestClient, headers: dict[str, str]) -> None:
    response = await client.delete(shop_url("/membership"), headers=headers)
    assert response.status == HTTPStatus.NO_CONTENT, await response.text()


async def member_center(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    return await expect(
        await client.get(shop_url("/member-center"), headers=headers), HTTPStatus.OK
    )


def state_of(center: dict[str, Any], pack_id: int) -> str | None:
    """The pack's state in the member center, or None when it is not listed."""
    states = [entry["state"] for entry in center["gift_packs"] if entry["pack"]["id"] == pack_id]
    assert len(states) <= 1, center
    return states[0] if states else None


async def claim_pack(
    client: TestClient,
    headers: dict[str, str],
    pack_id: int,
    request_id: str | None = None,
    shop: str = "s1",
) -> Any:
    body = {"request_id": request_id or new_request_id()}
    return await client.post(
        shop_url(f"/gift-packs/{pack_id}/claim", shop), json=body, headers=headers
    )


async def claim_pack_ok(
    client: TestClient, headers: dict[str, str], pack_id: int, **kwargs: Any
) -> dict[str, Any]:
    return await expect(await claim_pack(client, headers, pack_id, **kwargs), HTTPStatus.CREATED)


async def refused_pack(
    client: TestClient, headers: dict[str, str], pack_id: int, status: HTTPStatus, code: str
) -> dict[str, Any]:
    """Claim and assert the refusal; nothing may reach the wallet."""
    before = await wallet(client, headers)
    body = await expect(await claim_pack(client, headers, pack_id), status, code)
    assert await wallet(client, headers) == before
    return body


async def redis_flush() -> None:
    """Lose every key the gate holds (the MariaDB backend's Redis test db)."""
    redis = aioredis.Redis.from_url(REDIS_URL)
    try:
        await redis.flushdb()
    finally:
        await redis.aclose()


def outcome(status: int, body: dict[str, Any]) -> str:
    """``"201"`` or ``"409 SOLD_OUT"``: one word per reply, to count them."""
    if status == HTTPStatus.CREATED:
        return "201"
    return f"{status} {body.get('error', {}).get('code')}"


# --- the flow --------------------------------------------------------------------------------
async def test_join_popup_claim_flow(
    client: TestClient,
    clock: Any,
    merchant: dict[str, str],
    auth: Auth,
    make_template: MakeTemplate,
) -> None:
    ids = await pack_templates(make_template, 10000, 5000)
    gift = await gift_template(make_template, 500)
    pack = await create_pack(
        client, merchant, pack_body(clock, ids, gift={"template_id": gift, "quantity": 500})
    )
    assert pack["remaining"] == 500
    user = auth(sub="alice")
    first = await joined(client, user)
    assert first["new_member"] is True
    assert first["popup"]["id"] == pack["id"]
    again = await expect(await join(client, user), HTTPStatus.OK)
    assert again["popup"] is None
    center = await member_center(client, user)
    assert center["gift_packs"][0]["state"] == "claimable"
    claimed = await claim_pack_ok(client, user, pack["id"])
    assert claimed["presentation"] == "lottery"
    assert [c["template_id"] for c in claimed["coupons"]] == ids
    assert claimed["gift"]["template_id"] == gift
    assert len(await wallet(client, user)) == 3
    await expect(await claim_pack(client, user, pack["id"]), HTTPStatus.CONFLICT, "ALREADY_CLAIMED")
    center = await member_center(client, user)
    assert center["gift_packs"][0]["state"] == "claimed"
    assert (await get_template(client, merchant, gift))["issued"] == 1


# --- membership ------------------------------------------------------------------------------
async def test_join_is_201_then_200(client: TestClient, clock: Any, auth: Auth) -> None:
    user = auth(sub="u1")
    first = await joined(client, user)
    assert first["member"] == {
        "user_id": "u1",
        "level": 0,
        "first_joined_at": first["member"]["joined_at"],
        "joined_at": first["member"]["joined_at"],
        "rejoined": False,
        "active": True,
    }
    assert when(first["member"]["first_joined_at"]) == clock.now()
    assert first["new_member"] is True
    assert first["popup"] is None  # no pack
    again = await expect(await join(client, user), HTTPStatus.OK)
    assert again["member"] == first["member"]
    assert again["new_member"] is True


async def test_membership_is_per_shop(client: TestClient, auth: Auth) -> None:
    user = auth(sub="u1")
    await joined(client, user)
    response = await client.get(shop_url("/member-center", "s2"), headers=user)
    assert (await expect(response, HTTPStatus.OK))["member"] is None
    response = await client.post(shop_url("/membership", "s2"), json={}, headers=user)
    assert (await expect(response, HTTPStatus.CREATED))["new_member"] is True


async def test_leave_is_204_and_idempotent(client: TestClient, auth: Auth) -> None:
    user = auth(sub="u1")
    await joined(client, user)
    await leave(client, user)
    await leave(client, user)
    center = await member_center(client, user)
    assert center["member"]["active"] is False
    assert center["new_member"] is False
    await leave(client, auth(sub="never-joined"))


async def test_rejoin_keeps_first_join_and_is_never_new(
    client: TestClient, clock: Any, auth: Auth
) -> None:
    user = auth(sub="u1")
    first = (await joined(client, user))["member"]
    clock.advance(timedelta(hours=1))
    await leave(client, user)
    clock.advance(timedelta(hours=1))
    user = auth(sub="u1")  # tokens live two hours
    back = await joined(client, user)
    assert back["member"]["first_joined_at"] == first["first_joined_at"]
    assert when(back["member"]["joined_at"]) == clock.now()
    assert back["member"]["rejoined"] is True
    assert back["member"]["active"] is True
    assert back["new_member"] is False
    assert (await member_center(client, user))["new_member"] is False
    again = await expect(await join(client, user), HTTPStatus.OK)
    assert again["new_member"] is False


async def test_new_member_for_24_hours_after_first_join(
    client: TestClient, clock: Any, auth: Auth
) -> None:
    user = auth(sub="u1")
    await joined(client, user)
    clock.advance(timedelta(hours=23, minutes=59))
    user = auth(sub="u1")
    assert (await member_center(client, user))["new_member"] is True
    clock.advance(timedelta(minutes=1))
    assert (await member_center(client, user))["new_member"] is False
    assert (await expect(await join(client, user), HTTPStatus.OK))["new_member"] is False


async def test_membership_needs_a_user_token(client: TestClient, merchant: dict[str, str]) -> None:
    await expect(await join(client, {}), HTTPStatus.UNAUTHORIZED, "UNAUTHENTICATED")
    await expect(await join(client, merchant), HTTPStatus.FORBIDDEN, "FORBIDDEN")


# --- the new-member popup at join ------------------------------------------------------------
async def test_join_popup_defaults_to_the_pack_window(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template)
    assert (pack["popup_starts_at"], pack["popup_ends_at"]) == (
        pack["starts_at"],
        pack["ends_at"],
    )
    popup = (await joined(client, auth(sub="u1")))["popup"]
    assert popup["id"] == pack["id"]
    assert popup["kind"] == "new_member"


async def test_join_popup_shown_once(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template)
    user = auth(sub="u1")
    assert (await joined(client, user))["popup"]["id"] == pack["id"]
    assert (await expect(await join(client, user), HTTPStatus.OK))["popup"] is None
    # the member center pops up member packs only; the pack stays claimable from the page
    center = await member_center(client, user)
    assert center["popup"] is None
    assert state_of(center, pack["id"]) == "claimable"


async def test_join_popup_only_inside_its_popup_window(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    now = clock.now()
    pack = await simple_pack(
        client,
        clock,
        merchant,
        make_template,
        popup_starts_at=iso(now + timedelta(hours=1)),
        popup_ends_at=iso(now + timedelta(days=1)),
    )
    user = auth(sub="u1")
    reply = await joined(client, user)
    assert reply["new_member"] is True
    assert reply["popup"] is None
    assert state_of(await member_center(client, user), pack["id"]) == "claimable"


async def test_join_popup_not_after_the_pack_is_claimed(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    now = clock.now()
    pack = await simple_pack(
        client,
        clock,
        merchant,
        make_template,
        popup_starts_at=iso(now + timedelta(hours=1)),
        popup_ends_at=iso(now + timedelta(days=1)),
    )
    user = auth(sub="u1")
    assert (await joined(client, user))["popup"] is None
    await claim_pack_ok(client, user, pack["id"])
    clock.advance(timedelta(hours=2))  # the popup window is open and the user still new
    reply = await expect(await join(client, auth(sub="u1")), HTTPStatus.OK)
    assert reply["new_member"] is True
    assert reply["popup"] is None


async def test_join_popup_not_for_a_rejoined_member(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    user = auth(sub="u1")
    await joined(client, user)
    await leave(client, user)
    await simple_pack(client, clock, merchant, make_template)
    reply = await joined(client, user)
    assert reply["new_member"] is False
    assert reply["popup"] is None


async def test_join_popup_not_for_a_member_of_more_than_24_hours(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    ids = await pack_templates(make_template, 100)
    await joined(client, auth(sub="u1"))
    clock.advance(timedelta(hours=25))
    await create_pack(client, s1_merchant(auth), pack_body(clock, ids))
    reply = await expect(await join(client, auth(sub="u1")), HTTPStatus.OK)
    assert reply["new_member"] is False
    assert reply["popup"] is None


async def test_join_popup_not_for_an_ended_pack(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template)
    await expect(await patch_pack(client, merchant, pack["id"], status="ended"), HTTPStatus.OK)
    assert (await joined(client, auth(sub="u1")))["popup"] is None


async def test_join_popup_is_never_a_member_pack(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    await simple_pack(client, clock, merchant, make_template, kind="member")
    assert (await joined(client, auth(sub="u1")))["popup"] is None


async def test_concurrent_first_joins_one_201_one_popup(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template)
    user = auth(sub="u1")
    responses = await asyncio.gather(*(join(client, user) for _ in range(10)))
    bodies = [await r.json() for r in responses]
    statuses = Counter(r.status for r in responses)
    assert statuses == {HTTPStatus.CREATED: 1, HTTPStatus.OK: 9}, bodies
    popups = [b["popup"]["id"] for b in bodies if b["popup"] is not None]
    assert popups == [pack["id"]], bodies


# --- the member center -----------------------------------------------------------------------
async def test_member_center_for_a_non_member(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    new_pack = await simple_pack(client, clock, merchant, make_template)
    member_pack = await simple_pack(client, clock, merchant, make_template, kind="member")
    center = await member_center(client, auth(sub="stranger"))
    assert center["member"] is None
    assert center["new_member"] is False
    assert center["points"] == 0
    assert center["popup"] is None
    assert state_of(center, new_pack["id"]) == "not_eligible"
    assert state_of(center, member_pack["id"]) == "not_eligible"


async def test_member_popup_shown_once(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template, kind="member")
    user = auth(sub="u1")
    await joined(client, user)
    first = await member_center(client, user)
    assert first["popup"]["id"] == pack["id"]
    assert first["member"]["user_id"] == "u1"
    assert state_of(first, pack["id"]) == "claimable"
    second = await member_center(client, user)
    assert second["popup"] is None
    assert state_of(second, pack["id"]) == "claimable"


@pytest.mark.parametrize("entries", [2, 10])
async def test_member_popup_once_under_concurrent_first_entries(
    client: TestClient,
    clock: Any,
    merchant: dict[str, str],
    auth: Auth,
    make_template: Any,
    entries: int,
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template, kind="member")
    user = auth(sub="u1")
    await joined(client, user)
    replies = await asyncio.gather(
        *(client.get(shop_url("/member-center"), headers=user) for _ in range(entries))
    )
    bodies = [await expect(r, HTTPStatus.OK) for r in replies]
    popups = [b["popup"]["id"] for b in bodies if b["popup"] is not None]
    assert popups == [pack["id"]], bodies


async def test_member_popup_once_per_pack(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    now = clock.now()
    first = await simple_pack(
        client, clock, merchant, make_template, kind="member", ends_at=iso(now + timedelta(days=1))
    )
    second = await simple_pack(
        client,
        clock,
        merchant,
        make_template,
        kind="member",
        starts_at=iso(now + timedelta(days=2)),
        ends_at=iso(now + timedelta(days=7)),
    )
    await joined(client, auth(sub="u1"))
    assert (await member_center(client, auth(sub="u1")))["popup"]["id"] == first["id"]
    clock.advance(timedelta(days=2))
    assert (await member_center(client, auth(sub="u1")))["popup"]["id"] == second["id"]
    assert (await member_center(client, auth(sub="u1")))["popup"] is None


async def test_member_popup_not_for_a_member_below_min_level(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template, kind="member", min_level=2)
    user = auth(sub="u1")
    await enrol(client, merchant, "u1", 1)
    center = await member_center(client, user)
    assert center["popup"] is None
    assert state_of(center, pack["id"]) == "not_eligible"
    await enrol(client, merchant, "u1", 2)
    center = await member_center(client, user)
    assert center["popup"]["id"] == pack["id"]
    assert state_of(center, pack["id"]) == "claimable"


async def test_member_popup_not_for_a_member_who_left(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template, kind="member")
    user = auth(sub="u1")
    await joined(client, user)
    await leave(client, user)
    center = await member_center(client, user)
    assert center["popup"] is None
    assert state_of(center, pack["id"]) == "not_eligible"


async def test_member_popup_not_after_the_pack_is_claimed(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template, kind="member")
    user = auth(sub="u1")
    await joined(client, user)
    await claim_pack_ok(client, user, pack["id"])
    center = await member_center(client, user)
    assert center["popup"] is None
    assert state_of(center, pack["id"]) == "claimed"


async def test_member_popup_only_inside_its_popup_window(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    now = clock.now()
    pack = await simple_pack(
        client,
        clock,
        merchant,
        make_template,
        kind="member",
        popup_starts_at=iso(now + timedelta(days=1)),
        popup_ends_at=iso(now + timedelta(days=2)),
    )
    await joined(client, auth(sub="u1"))
    assert (await member_center(client, auth(sub="u1")))["popup"] is None
    clock.advance(timedelta(days=1))
    assert (await member_center(client, auth(sub="u1")))["popup"]["id"] == pack["id"]
    clock.advance(timedelta(days=1))
    assert (await member_center(client, auth(sub="u1")))["popup"] is None


async def test_packs_listed_from_start_until_30_days_after_end(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    now = clock.now()
    pack = await simple_pack(
        client,
        clock,
        merchant,
        make_template,
        kind="member",
        starts_at=iso(now + timedelta(days=1)),
        ends_at=iso(now + timedelta(days=2)),
    )

    async def state_now() -> str | None:
        return state_of(await member_center(client, auth(sub="u1")), pack["id"])

    await joined(client, auth(sub="u1"))
    assert await state_now() is None  # not started
    clock.advance(timedelta(days=1))
    assert await state_now() == "claimable"
    clock.advance(timedelta(days=1))
    assert await state_now() == "ended"
    clock.advance(timedelta(days=29, hours=23))
    assert await state_now() == "ended"
    clock.advance(timedelta(hours=1))
    assert await state_now() is None


async def test_state_claimed_wins_over_ended(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template, kind="member")
    user = auth(sub="u1")
    await joined(client, user)
    await claim_pack_ok(client, user, pack["id"])
    await expect(await patch_pack(client, merchant, pack["id"], status="ended"), HTTPStatus.OK)
    assert state_of(await member_center(client, user), pack["id"]) == "claimed"


async def test_state_claimed_wins_over_not_eligible(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template)
    await joined(client, auth(sub="u1"))
    await claim_pack_ok(client, auth(sub="u1"), pack["id"])
    clock.advance(timedelta(hours=25))  # no longer a new member
    assert state_of(await member_center(client, auth(sub="u1")), pack["id"]) == "claimed"


async def test_state_ended_wins_over_not_eligible(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template, kind="member")
    clock.advance(timedelta(days=11))
    assert state_of(await member_center(client, auth(sub="stranger")), pack["id"]) == "ended"


async def test_state_not_eligible_wins_over_sold_out(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    ids = await pack_templates(make_template, 1)
    pack = await create_pack(client, merchant, member_pack_body(clock, ids))
    taker = auth(sub="taker")
    await joined(client, taker)
    await claim_pack_ok(client, taker, pack["id"])
    assert state_of(await member_center(client, auth(sub="stranger")), pack["id"]) == (
        "not_eligible"
    )
    member = auth(sub="member")
    await joined(client, member)
    assert state_of(await member_center(client, member), pack["id"]) == "sold_out"


# --- pack admin: the pack and its remaining --------------------------------------------------
async def test_create_pack_reply(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    ids = await pack_templates(make_template, 100, 200)
    gift = await gift_template(make_template, 50)
    body = pack_body(clock, ids, gift={"template_id": gift, "quantity": 20})
    pack = await create_pack(client, merchant, body)
    assert pack["kind"] == "new_member"
    assert pack["name"] == "新会员礼包"
    assert pack["status"] == "active"
    assert when(pack["starts_at"]) == when(body["starts_at"])
    assert when(pack["ends_at"]) == when(body["ends_at"])
    assert pack["min_level"] == 0
    assert pack["coupon_template_ids"] == ids
    assert pack["gift"] == {"template_id": gift, "quantity": 20, "given": 0}
    assert [(b["type"], b["template_id"], b["quantity"]) for b in pack["benefits"]] == [
        ("coupon", ids[0], 1),
        ("coupon", ids[1], 1),
        ("gift", gift, 20),
    ]
    assert pack["remaining"] == 20
    assert pack["claimed"] == 0
    assert await get_pack(client, merchant, pack["id"]) == pack


async def test_pack_remaining_is_the_scarcest_benefit(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    ids = await pack_templates(make_template, 10000, 5000)
    gift = await gift_template(make_template, 500)
    pack = await create_pack(
        client, merchant, pack_body(clock, ids, gift={"template_id": gift, "quantity": 500})
    )
    assert pack["remaining"] == 500


async def test_pack_remaining_is_the_gift_quantity_when_set_aside(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    ids = await pack_templates(make_template, 10000)
    gift = await gift_template(make_template, 500)
    pack = await create_pack(
        client, merchant, pack_body(clock, ids, gift={"template_id": gift, "quantity": 120})
    )
    assert pack["remaining"] == 120


async def test_pack_remaining_is_a_coupon_stock_when_lower(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    ids = await pack_templates(make_template, 1000, 30)
    gift = await gift_template(make_template, 500)
    pack = await create_pack(
        client, merchant, pack_body(clock, ids, gift={"template_id": gift, "quantity": 500})
    )
    assert pack["remaining"] == 30


async def test_pack_remaining_null_when_every_benefit_is_unlimited(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    template = await make_template(claim_methods=["gift_pack"], stock={"type": "unlimited"})
    pack = await create_pack(client, merchant, pack_body(clock, [template["id"]]))
    assert pack["remaining"] is None
    assert pack["gift"] is None


async def test_pack_remaining_is_the_gifts_set_aside_when_stocks_are_unlimited(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    template = await make_template(claim_methods=["gift_pack"], stock={"type": "unlimited"})
    gift = await gift_template(make_template, None)
    body = pack_body(clock, [template["id"]], gift={"template_id": gift, "quantity": 7})
    assert (await create_pack(client, merchant, body))["remaining"] == 7


async def test_pack_remaining_falls_with_each_claim(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    ids = await pack_templates(make_template, 10000, 5000)
    gift = await gift_template(make_template, 500)
    pack = await create_pack(
        client, merchant, pack_body(clock, ids, gift={"template_id": gift, "quantity": 500})
    )
    user = auth(sub="u1")
    await joined(client, user)
    await claim_pack_ok(client, user, pack["id"])
    stored = await get_pack(client, merchant, pack["id"])
    assert stored["remaining"] == 499
    assert stored["claimed"] == 1
    assert stored["gift"] == {"template_id": gift, "quantity": 500, "given": 1}


async def test_pack_remaining_follows_claims_outside_the_pack(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    template = await make_template(
        claim_methods=["widget", "gift_pack"], stock={"type": "limited", "total": 3}
    )
    pack = await create_pack(client, merchant, pack_body(clock, [template["id"]]))
    await claim_ok(client, auth(sub="w1"), template["id"])
    assert (await get_pack(client, merchant, pack["id"]))["remaining"] == 2


async def test_list_packs_newest_first_and_by_kind(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    first = await simple_pack(client, clock, merchant, make_template)
    second = await simple_pack(client, clock, merchant, make_template, kind="member")
    listed = await expect(await client.get(pack_url(), headers=merchant), HTTPStatus.OK)
    assert [p["id"] for p in listed["items"]] == [second["id"], first["id"]]
    assert listed["next_cursor"] is None
    response = await client.get(pack_url(), params={"kind": "member"}, headers=merchant)
    assert [p["id"] for p in (await expect(response, HTTPStatus.OK))["items"]] == [second["id"]]
    response = await client.get(pack_url(), params={"limit": "1"}, headers=merchant)
    page = await expect(response, HTTPStatus.OK)
    assert [p["id"] for p in page["items"]] == [second["id"]]
    response = await client.get(
        pack_url(), params={"limit": "1", "cursor": page["next_cursor"]}, headers=merchant
    )
    assert [p["id"] for p in (await expect(response, HTTPStatus.OK))["items"]] == [first["id"]]


async def test_get_unknown_pack_is_404(client: TestClient, merchant: dict[str, str]) -> None:
    await expect(await client.get(pack_url(999), headers=merchant), HTTPStatus.NOT_FOUND)


# --- pack admin: validation ------------------------------------------------------------------
async def post_pack(client: TestClient, merchant: dict[str, str], body: dict[str, Any]) -> Any:
    return await client.post(pack_url(), json=body, headers=merchant)


async def test_pack_needs_a_coupon(
    client: TestClient, clock: Any, merchant: dict[str, str]
) -> None:
    await field_error(
        await post_pack(client, merchant, pack_body(clock, [])), "coupon_template_ids"
    )


async def test_pack_holds_at_most_three_coupons(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    ids = await pack_templates(make_template, 10, 10, 10, 10)
    response = await post_pack(client, merchant, pack_body(clock, ids))
    await field_error(response, "coupon_template_ids")
    await create_pack(client, merchant, pack_body(clock, ids[:3]))


async def test_pack_coupon_appears_once(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    ids = await pack_templates(make_template, 10)
    response = await post_pack(client, merchant, pack_body(clock, [ids[0], ids[0]]))
    await field_error(response, "coupon_template_ids")


async def test_pack_coupon_must_exist(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    ids = await pack_templates(make_template, 10)
    response = await post_pack(client, merchant, pack_body(clock, [ids[0], 987654]))
    await field_error(response, "coupon_template_ids.1")


async def test_pack_coupon_of_another_shop_is_unknown(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    other = await make_template(shop="s2", claim_methods=["gift_pack"])
    response = await post_pack(client, merchant, pack_body(clock, [other["id"]]))
    await field_error(response, "coupon_template_ids.0")


async def test_pack_coupon_must_not_be_a_gift(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    gift = await gift_template(make_template, 10)
    response = await post_pack(client, merchant, pack_body(clock, [gift]))
    await field_error(response, "coupon_template_ids.0")


async def test_pack_coupon_must_be_store_wide(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    product_coupon = await make_template(
        claim_methods=["gift_pack"], scope={"type": "products", "product_ids": ["p1"]}
    )
    response = await post_pack(client, merchant, pack_body(clock, [product_coupon["id"]]))
    await field_error(response, "coupon_template_ids.0")


async def test_pack_coupon_must_allow_the_gift_pack_method(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    ids = await pack_templates(make_template, 10)
    widget_only = await make_template(claim_methods=["widget"])
    response = await post_pack(client, merchant, pack_body(clock, [ids[0], widget_only["id"]]))
    await field_error(response, "coupon_template_ids.1")


async def test_pack_coupon_must_not_have_ended(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    ids = await pack_templates(make_template, 10)
    await set_status(client, merchant, ids[0], "ended")
    await field_error(
        await post_pack(client, merchant, pack_body(clock, ids)), "coupon_template_ids.0"
    )


async def test_pack_coupon_id_must_be_an_id(
    client: TestClient, clock: Any, merchant: dict[str, str]
) -> None:
    response = await post_pack(client, merchant, pack_body(clock, [0]))
    await field_error(response, "coupon_template_ids.0")


async def test_pack_gift_must_exist(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    ids = await pack_templates(make_template, 10)
    body = pack_body(clock, ids, gift={"template_id": 987654, "quantity": 1})
    await field_error(await post_pack(client, merchant, body), "gift.template_id")


async def test_pack_gift_must_be_a_gift_template(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    ids = await pack_templates(make_template, 10, 10)
    body = pack_body(clock, ids[:1], gift={"template_id": ids[1], "quantity": 1})
    await field_error(await post_pack(client, merchant, body), "gift.template_id")


async def test_pack_gift_must_not_have_ended(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    ids = await pack_templates(make_template, 10)
    gift = await gift_template(make_template, 10)
    await set_status(client, merchant, gift, "ended")
    body = pack_body(clock, ids, gift={"template_id": gift, "quantity": 1})
    await field_error(await post_pack(client, merchant, body), "gift.template_id")


async def test_pack_gift_quantity_at_most_its_stock(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    ids = await pack_templates(make_template, 10)
    gift = await gift_template(make_template, 5)
    body = pack_body(clock, ids, gift={"template_id": gift, "quantity": 6})
    await field_error(await post_pack(client, merchant, body), "gift.quantity")
    body["gift"]["quantity"] = 5
    await create_pack(client, merchant, body)


async def test_pack_gift_quantity_must_be_positive(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    ids = await pack_templates(make_template, 10)
    gift = await gift_template(make_template, 5)
    body = pack_body(clock, ids, gift={"template_id": gift, "quantity": 0})
    await field_error(await post_pack(client, merchant, body), "gift.quantity")


# Window rules, as offsets in hours from now (the default pack runs from -1 h to +10 days).
WINDOW_ERRORS = [
    ({"starts_at": 0, "ends_at": 0}, "ends_at"),
    ({"popup_starts_at": 0}, "popup_ends_at"),  # half a popup window
    ({"popup_ends_at": 24}, "popup_starts_at"),
    ({"popup_starts_at": 0, "popup_ends_at": 0}, "popup_ends_at"),
    ({"popup_starts_at": -2, "popup_ends_at": 24}, "popup_starts_at"),  # before the pack
    ({"popup_starts_at": 0, "popup_ends_at": 11 * 24}, "popup_starts_at"),  # after it
]


@pytest.mark.parametrize(("hours", "field"), WINDOW_ERRORS)
async def test_pack_window_rules(
    client: TestClient,
    clock: Any,
    merchant: dict[str, str],
    make_template: Any,
    hours: dict[str, int],
    field: str,
) -> None:
    ids = await pack_templates(make_template, 10)
    times = {name: iso(clock.now() + timedelta(hours=h)) for name, h in hours.items()}
    await field_error(await post_pack(client, merchant, pack_body(clock, ids, **times)), field)


async def test_min_level_for_member_packs_only(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    ids = await pack_templates(make_template, 10)
    await field_error(
        await post_pack(client, merchant, pack_body(clock, ids, min_level=1)), "min_level"
    )
    pack = await create_pack(client, merchant, member_pack_body(clock, ids, min_level=3))
    assert pack["min_level"] == 3


async def test_pack_kind_and_status_are_checked(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    ids = await pack_templates(make_template, 10)
    await field_error(await post_pack(client, merchant, pack_body(clock, ids, kind="vip")), "kind")
    await field_error(
        await post_pack(client, merchant, pack_body(clock, ids, status="paused")), "status"
    )


# --- pack admin: one active pack of a kind at a time ------------------------------------------
async def test_overlapping_active_pack_of_the_same_kind_is_409(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    first = await simple_pack(client, clock, merchant, make_template)
    now = clock.now()
    ids = await pack_templates(make_template, 10)
    body = pack_body(
        clock, ids, starts_at=iso(now + timedelta(days=9)), ends_at=iso(now + timedelta(days=20))
    )
    conflict = await expect(
        await post_pack(client, merchant, body), HTTPStatus.CONFLICT, "PACK_WINDOW_OVERLAP"
    )
    assert conflict["error"]["details"]["pack_id"] == first["id"]


async def test_packs_of_different_kinds_may_overlap(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    await simple_pack(client, clock, merchant, make_template)
    await simple_pack(client, clock, merchant, make_template, kind="member")


async def test_back_to_back_packs_do_not_overlap(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    first = await simple_pack(client, clock, merchant, make_template)
    ids = await pack_templates(make_template, 10)
    body = pack_body(
        clock,
        ids,
        starts_at=first["ends_at"],
        ends_at=iso(when(first["ends_at"]) + timedelta(days=5)),
    )
    await create_pack(client, merchant, body)


async def test_an_ended_pack_does_not_block_a_window(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    first = await simple_pack(client, clock, merchant, make_template)
    await expect(await patch_pack(client, merchant, first["id"], status="ended"), HTTPStatus.OK)
    await simple_pack(client, clock, merchant, make_template)
    # nor does one created ended
    await simple_pack(client, clock, merchant, make_template, status="ended")


async def test_patch_into_an_overlap_is_409(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    now = clock.now()
    first = await simple_pack(client, clock, merchant, make_template)
    later = await simple_pack(
        client,
        clock,
        merchant,
        make_template,
        starts_at=iso(now + timedelta(days=10)),
        ends_at=iso(now + timedelta(days=20)),
    )
    response = await patch_pack(
        client, merchant, later["id"], starts_at=iso(now + timedelta(days=5))
    )
    conflict = await expect(response, HTTPStatus.CONFLICT, "PACK_WINDOW_OVERLAP")
    assert conflict["error"]["details"]["pack_id"] == first["id"]
    assert (await get_pack(client, merchant, later["id"]))["starts_at"] == later["starts_at"]


async def test_concurrent_overlapping_creates_one_wins(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    ids = await pack_templates(make_template, 10)
    replies = await asyncio.gather(
        *(post_pack(client, merchant, pack_body(clock, ids)) for _ in range(5))
    )
    outcomes = Counter([outcome(r.status, await r.json()) for r in replies])
    assert outcomes == {"201": 1, "409 PACK_WINDOW_OVERLAP": 4}, outcomes


# --- pack admin: patch -----------------------------------------------------------------------
async def test_patch_name_and_window(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template)
    new_end = clock.now() + timedelta(days=20)
    response = await patch_pack(
        client,
        merchant,
        pack["id"],
        name="双11新会员礼包",
        ends_at=iso(new_end),
        popup_starts_at=pack["starts_at"],
        popup_ends_at=iso(new_end),
    )
    patched = await expect(response, HTTPStatus.OK)
    assert patched["name"] == "双11新会员礼包"
    assert when(patched["ends_at"]) == new_end
    assert await get_pack(client, merchant, pack["id"]) == patched


async def test_default_popup_window_follows_a_patched_pack_window(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    """No popup window given: the popup is the pack window, also after the window changes."""
    pack = await simple_pack(client, clock, merchant, make_template)
    shorter = iso(clock.now() + timedelta(days=5))
    response = await patch_pack(client, merchant, pack["id"], ends_at=shorter)
    patched = await expect(response, HTTPStatus.OK)
    assert (patched["popup_starts_at"], patched["popup_ends_at"]) == (
        patched["starts_at"],
        patched["ends_at"],
    )
    longer = iso(clock.now() + timedelta(days=20))
    patched = await expect(
        await patch_pack(client, merchant, pack["id"], ends_at=longer), HTTPStatus.OK
    )
    assert patched["popup_ends_at"] == patched["ends_at"]


async def test_patch_popup_window_back_to_the_default(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    now = clock.now()
    pack = await simple_pack(
        client,
        clock,
        merchant,
        make_template,
        popup_starts_at=iso(now),
        popup_ends_at=iso(now + timedelta(days=1)),
    )
    assert when(pack["popup_ends_at"]) == now + timedelta(days=1)
    response = await patch_pack(
        client, merchant, pack["id"], popup_starts_at=None, popup_ends_at=None
    )
    patched = await expect(response, HTTPStatus.OK)
    assert (patched["popup_starts_at"], patched["popup_ends_at"]) == (
        patched["starts_at"],
        patched["ends_at"],
    )
    # half a popup window is refused, on a patch as on a create
    response = await patch_pack(client, merchant, pack["id"], popup_starts_at=iso(now))
    await field_error(response, "popup_ends_at")


async def test_patch_contents_before_any_claim(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template)
    ids = await pack_templates(make_template, 10, 20)
    gift = await gift_template(make_template, 5)
    response = await patch_pack(
        client,
        merchant,
        pack["id"],
        coupon_template_ids=ids,
        gift={"template_id": gift, "quantity": 3},
    )
    patched = await expect(response, HTTPStatus.OK)
    assert patched["coupon_template_ids"] == ids
    assert patched["remaining"] == 3


async def test_patch_contents_are_checked(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template)
    widget_only = await make_template(claim_methods=["widget"])
    response = await patch_pack(
        client, merchant, pack["id"], coupon_template_ids=[widget_only["id"]]
    )
    await field_error(response, "coupon_template_ids.0")


async def test_patch_contents_fixed_after_a_claim(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template)
    user = auth(sub="u1")
    await joined(client, user)
    await claim_pack_ok(client, user, pack["id"])
    ids = await pack_templates(make_template, 10)
    response = await patch_pack(client, merchant, pack["id"], coupon_template_ids=ids)
    await field_error(response, "coupon_template_ids")
    gift = await gift_template(make_template, 5)
    response = await patch_pack(
        client, merchant, pack["id"], gift={"template_id": gift, "quantity": 1}
    )
    await field_error(response, "gift")
    # the rest may still change
    response = await patch_pack(client, merchant, pack["id"], name="改名")
    assert (await expect(response, HTTPStatus.OK))["name"] == "改名"


async def test_patch_window_is_checked(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template)
    response = await patch_pack(client, merchant, pack["id"], ends_at=pack["starts_at"])
    await field_error(response, "ends_at")


async def test_patch_ended_pack_cannot_reopen(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template)
    ended = await expect(
        await patch_pack(client, merchant, pack["id"], status="ended"), HTTPStatus.OK
    )
    assert ended["status"] == "ended"
    await field_error(await patch_pack(client, merchant, pack["id"], status="active"), "status")


async def test_patch_unknown_pack_is_404(client: TestClient, merchant: dict[str, str]) -> None:
    response = await patch_pack(client, merchant, 999, name="x")
    await expect(response, HTTPStatus.NOT_FOUND, "NOT_FOUND")


# --- pack admin: access ----------------------------------------------------------------------
async def test_another_shops_pack_is_404(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template)
    s2 = auth("merchant", shop="s2", sub="m2")
    await expect(
        await client.get(pack_url(pack["id"], "s2"), headers=s2), HTTPStatus.NOT_FOUND, "NOT_FOUND"
    )
    response = await client.patch(pack_url(pack["id"], "s2"), json={"name": "x"}, headers=s2)
    await expect(response, HTTPStatus.NOT_FOUND, "NOT_FOUND")
    listed = await expect(await client.get(pack_url(shop="s2"), headers=s2), HTTPStatus.OK)
    assert listed["items"] == []
    # and s2's merchant cannot use s1's paths at all
    await expect(
        await client.get(pack_url(pack["id"]), headers=s2), HTTPStatus.FORBIDDEN, "FORBIDDEN"
    )
    assert (await get_pack(client, merchant, pack["id"]))["name"] == pack["name"]


async def test_a_user_token_cannot_use_pack_admin(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template)
    user = auth(sub="u1")
    replies = [
        await client.get(pack_url(), headers=user),
        await client.get(pack_url(pack["id"]), headers=user),
        await client.post(pack_url(), json=pack_body(clock, [1]), headers=user),
        await client.patch(pack_url(pack["id"]), json={"name": "x"}, headers=user),
    ]
    for response in replies:
        await expect(response, HTTPStatus.FORBIDDEN, "FORBIDDEN")


# --- claiming a pack -------------------------------------------------------------------------
async def test_claim_reply_and_wallet(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    ids = await pack_templates(make_template, 100, 100)
    gift = await gift_template(make_template, 10)
    pack = await create_pack(
        client, merchant, pack_body(clock, ids, gift={"template_id": gift, "quantity": 10})
    )
    user = auth(sub="u1")
    await joined(client, user)
    claimed = await claim_pack_ok(client, user, pack["id"])
    assert claimed["pack_id"] == pack["id"]
    assert claimed["presentation"] == "lottery"
    assert "replayed" not in claimed or claimed["replayed"] is False
    coupons = [*claimed["coupons"], claimed["gift"]]
    assert [c["template_id"] for c in coupons] == [*ids, gift]
    assert {c["source"] for c in coupons} == {"gift_pack"}
    assert {c["status"] for c in coupons} == {"unused"}
    held = {c["coupon_id"]: c for c in await wallet(client, user)}
    assert sorted(held) == sorted(c["coupon_id"] for c in coupons)
    assert {c["source"] for c in held.values()} == {"gift_pack"}
    for template_id in [*ids, gift]:
        assert (await get_template(client, merchant, template_id))["issued"] == 1


async def test_claim_without_gift(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template)
    user = auth(sub="u1")
    await joined(client, user)
    claimed = await claim_pack_ok(client, user, pack["id"])
    assert claimed["gift"] is None
    assert [c["template_id"] for c in claimed["coupons"]] == pack["coupon_template_ids"]


async def test_claim_one_of_each_whatever_the_templates_limit(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    template = await make_template(claim_methods=["widget", "gift_pack"], per_user_limit=1)
    pack = await create_pack(client, merchant, pack_body(clock, [template["id"]]))
    user = auth(sub="u1")
    await joined(client, user)
    widget_coupon = await claim_ok(client, user, template["id"])
    await expect(await claim(client, user, template["id"]), HTTPStatus.CONFLICT, "LIMIT_REACHED")
    claimed = await claim_pack_ok(client, user, pack["id"])
    assert len(claimed["coupons"]) == 1
    held = [c for c in await wallet(client, user) if c["template_id"] == template["id"]]
    assert sorted(c["source"] for c in held) == ["gift_pack", "widget"]
    assert widget_coupon["coupon_id"] in {c["coupon_id"] for c in held}


async def test_claim_needs_a_user_token(
    client: TestClient, clock: Any, merchant: dict[str, str], make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template)
    await expect(await claim_pack(client, {}, pack["id"]), HTTPStatus.UNAUTHORIZED)
    await expect(await claim_pack(client, merchant, pack["id"]), HTTPStatus.FORBIDDEN)


async def test_claim_request_id_is_checked(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template)
    user = auth(sub="u1")
    await joined(client, user)
    await field_error(await claim_pack(client, user, pack["id"], "has spaces"), "request_id")
    response = await client.post(shop_url(f"/gift-packs/{pack['id']}/claim"), json={}, headers=user)
    await field_error(response, "request_id")


async def test_claim_unknown_pack_is_not_found(client: TestClient, auth: Auth) -> None:
    user = auth(sub="u1")
    await joined(client, user)
    await refused_pack(client, user, 987654, HTTPStatus.NOT_FOUND, "NOT_FOUND")


async def test_claim_another_shops_pack_is_not_found(
    client: TestClient, clock: Any, auth: Auth, make_template: Any
) -> None:
    s2_template = await make_template(shop="s2", claim_methods=["gift_pack"])
    s2 = auth("merchant", shop="s2", sub="m2")
    response = await client.post(
        pack_url(shop="s2"), json=pack_body(clock, [s2_template["id"]]), headers=s2
    )
    pack = await expect(response, HTTPStatus.CREATED)
    user = auth(sub="u1")
    await joined(client, user)
    await refused_pack(client, user, pack["id"], HTTPStatus.NOT_FOUND, "NOT_FOUND")


async def test_claim_before_the_pack_starts(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    now = clock.now()
    pack = await simple_pack(
        client,
        clock,
        merchant,
        make_template,
        starts_at=iso(now + timedelta(hours=1)),
        ends_at=iso(now + timedelta(days=1)),
    )
    user = auth(sub="u1")
    await joined(client, user)
    await refused_pack(client, user, pack["id"], HTTPStatus.CONFLICT, "NOT_STARTED")
    clock.advance(timedelta(hours=1))
    await claim_pack_ok(client, user, pack["id"])


async def test_claim_after_the_pack_ends(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template, kind="member")
    user = auth(sub="u1")
    await joined(client, user)
    clock.advance(timedelta(days=10))  # ends_at is exclusive
    user = auth(sub="u1")
    await refused_pack(client, user, pack["id"], HTTPStatus.CONFLICT, "CLAIM_ENDED")


async def test_claim_a_pack_the_merchant_ended(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template)
    user = auth(sub="u1")
    await joined(client, user)
    await expect(await patch_pack(client, merchant, pack["id"], status="ended"), HTTPStatus.OK)
    await refused_pack(client, user, pack["id"], HTTPStatus.CONFLICT, "CLAIM_ENDED")


async def test_claim_window_is_checked_before_eligibility(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template)
    await expect(await patch_pack(client, merchant, pack["id"], status="ended"), HTTPStatus.OK)
    await refused_pack(client, auth(sub="stranger"), pack["id"], HTTPStatus.CONFLICT, "CLAIM_ENDED")


async def test_claim_new_member_pack_by_a_non_member(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template)
    await refused_pack(client, auth(sub="u1"), pack["id"], HTTPStatus.FORBIDDEN, "NOT_ELIGIBLE")


async def test_claim_new_member_pack_by_a_rejoined_member(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template)
    user = auth(sub="u1")
    await joined(client, user)
    await leave(client, user)
    await joined(client, user)  # ten minutes in, yet a rejoin
    await refused_pack(client, user, pack["id"], HTTPStatus.FORBIDDEN, "NOT_ELIGIBLE")
    assert state_of(await member_center(client, user), pack["id"]) == "not_eligible"


async def test_claim_new_member_pack_after_24_hours(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template)
    user = auth(sub="u1")
    await joined(client, user)
    clock.advance(timedelta(hours=24))
    user = auth(sub="u1")
    await refused_pack(client, user, pack["id"], HTTPStatus.FORBIDDEN, "NOT_ELIGIBLE")
    assert state_of(await member_center(client, user), pack["id"]) == "not_eligible"


async def test_claim_new_member_pack_by_a_member_who_left(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template)
    user = auth(sub="u1")
    await joined(client, user)
    await leave(client, user)
    await refused_pack(client, user, pack["id"], HTTPStatus.FORBIDDEN, "NOT_ELIGIBLE")


async def test_claim_member_pack_by_a_rejoined_member(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template, kind="member")
    user = auth(sub="u1")
    await joined(client, user)
    await leave(client, user)
    await joined(client, user)
    await claim_pack_ok(client, user, pack["id"])


async def test_claim_member_pack_by_a_non_member(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template, kind="member")
    await refused_pack(client, auth(sub="u1"), pack["id"], HTTPStatus.FORBIDDEN, "NOT_ELIGIBLE")


async def test_claim_member_pack_by_any_member_without_min_level(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template, kind="member")
    user = auth(sub="u1")
    await joined(client, user)
    clock.advance(timedelta(days=2))  # long past new
    await claim_pack_ok(client, auth(sub="u1"), pack["id"])


async def test_claim_member_pack_needs_its_min_level(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template, kind="member", min_level=2)
    user = auth(sub="u1")
    await enrol(client, merchant, "u1", 1)
    body = await refused_pack(client, user, pack["id"], HTTPStatus.FORBIDDEN, "NOT_ELIGIBLE")
    assert "reason" in body["error"]["details"]
    await enrol(client, merchant, "u1", 2)
    await claim_pack_ok(client, user, pack["id"])


async def test_claim_twice_is_already_claimed(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template)
    user = auth(sub="u1")
    await joined(client, user)
    await claim_pack_ok(client, user, pack["id"])
    await refused_pack(client, user, pack["id"], HTTPStatus.CONFLICT, "ALREADY_CLAIMED")
    assert (await get_pack(client, merchant, pack["id"]))["claimed"] == 1


async def test_claim_pack_that_does_not_fit_the_wallet_changes_nothing(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    filler = await make_template(name="填充", per_user_limit=49)
    user = auth(sub="u1")
    await joined(client, user)
    for _ in range(49):
        await claim_ok(client, user, filler["id"])
    ids = await pack_templates(make_template, 100)
    gift = await gift_template(make_template, 10)
    pack = await create_pack(
        client, merchant, pack_body(clock, ids, gift={"template_id": gift, "quantity": 10})
    )
    body = await refused_pack(client, user, pack["id"], HTTPStatus.CONFLICT, "WALLET_FULL")
    assert body["error"]["code"] == "WALLET_FULL"
    assert len(await wallet(client, user)) == 49
    for template_id in [*ids, gift]:
        assert (await get_template(client, merchant, template_id))["issued"] == 0
    stored = await get_pack(client, merchant, pack["id"])
    assert (stored["claimed"], stored["remaining"], stored["gift"]["given"]) == (0, 10, 0)
    assert state_of(await member_center(client, user), pack["id"]) == "claimable"


async def test_claim_pack_that_exactly_fills_the_wallet(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    filler = await make_template(name="填充", per_user_limit=49)
    user = auth(sub="u1")
    await joined(client, user)
    for _ in range(48):
        await claim_ok(client, user, filler["id"])
    ids = await pack_templates(make_template, 100, 100)
    pack = await create_pack(client, merchant, pack_body(clock, ids))
    await claim_pack_ok(client, user, pack["id"])
    assert len(await wallet(client, user)) == 50


async def test_claim_respects_the_configured_wallet_cap(
    aiohttp_client: Callable[..., Any],
    make_app: Callable[..., Any],
    settings: Any,
    clock: Any,
    merchant: dict[str, str],
    auth: Auth,
) -> None:
    wallet_settings = dataclasses.replace(settings.wallet, max_unused_per_shop=3)
    client = await aiohttp_client(make_app(settings=settings.replace(wallet=wallet_settings)))
    ids = [
        (await create_template(client, clock, merchant, claim_methods=["gift_pack"]))["id"]
        for _ in range(3)
    ]
    gift = (
        await create_template(
            client,
            clock,
            merchant,
            benefit={"type": "gift", "product_id": "gift-1"},
            claim_methods=["gift_pack"],
        )
    )["id"]
    big = await create_pack(
        client, merchant, pack_body(clock, ids, gift={"template_id": gift, "quantity": 5})
    )
    user = auth(sub="u1")
    await joined(client, user)
    await refused_pack(client, user, big["id"], HTTPStatus.CONFLICT, "WALLET_FULL")
    assert await wallet(client, user) == []
    small = await create_pack(client, merchant, member_pack_body(clock, ids))
    await claim_pack_ok(client, user, small["id"])
    assert len(await wallet(client, user)) == 3


async def test_claim_sold_out_when_a_coupon_runs_out(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    scarce = await make_template(
        claim_methods=["widget", "gift_pack"], stock={"type": "limited", "total": 1}
    )
    plenty = await pack_templates(make_template, 100)
    pack = await create_pack(client, merchant, pack_body(clock, [*plenty, scarce["id"]]))
    await claim_ok(client, auth(sub="widget-user"), scarce["id"])
    assert (await get_pack(client, merchant, pack["id"]))["remaining"] == 0
    user = auth(sub="u1")
    await joined(client, user)
    assert state_of(await member_center(client, user), pack["id"]) == "sold_out"
    await refused_pack(client, user, pack["id"], HTTPStatus.CONFLICT, "SOLD_OUT")
    assert (await get_template(client, merchant, plenty[0]))["issued"] == 0


async def test_claim_sold_out_when_the_gifts_are_given(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    ids = await pack_templates(make_template, 100)
    gift = await gift_template(make_template, 10)
    pack = await create_pack(
        client, merchant, pack_body(clock, ids, gift={"template_id": gift, "quantity": 1})
    )
    first, second = auth(sub="u1"), auth(sub="u2")
    for user in (first, second):
        await joined(client, user)
    await claim_pack_ok(client, first, pack["id"])
    await refused_pack(client, second, pack["id"], HTTPStatus.CONFLICT, "SOLD_OUT")
    # the gift template has stock left for other uses; the pack is done all the same
    assert (await get_template(client, merchant, gift))["issued"] == 1
    assert (await get_template(client, merchant, ids[0]))["issued"] == 1
    stored = await get_pack(client, merchant, pack["id"])
    assert (stored["remaining"], stored["gift"]["given"]) == (0, 1)
    assert state_of(await member_center(client, second), pack["id"]) == "sold_out"
    assert state_of(await member_center(client, first), pack["id"]) == "claimed"


# --- claiming a pack: idempotency ------------------------------------------------------------
async def test_claim_replay_returns_the_first_reply(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    ids = await pack_templates(make_template, 100)
    gift = await gift_template(make_template, 10)
    pack = await create_pack(
        client, merchant, pack_body(clock, ids, gift={"template_id": gift, "quantity": 10})
    )
    user = auth(sub="u1")
    await joined(client, user)
    request_id = new_request_id()
    first = await claim_pack_ok(client, user, pack["id"], request_id=request_id)
    again = await claim_pack_ok(client, user, pack["id"], request_id=request_id)
    assert again == {**first, "replayed": True}
    assert len(await wallet(client, user)) == 2
    assert (await get_pack(client, merchant, pack["id"]))["claimed"] == 1


async def test_claim_replay_after_the_pack_ended(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    pack = await simple_pack(client, clock, merchant, make_template)
    user = auth(sub="u1")
    await joined(client, user)
    request_id = new_request_id()
    first = await claim_pack_ok(client, user, pack["id"], request_id=request_id)
    await expect(await patch_pack(client, merchant, pack["id"], status="ended"), HTTPStatus.OK)
    again = await claim_pack_ok(client, user, pack["id"], request_id=request_id)
    assert again == {**first, "replayed": True}


async def test_claim_replay_after_the_gate_lost_its_keys(
    client: TestClient,
    backend: str,
    clock: Any,
    merchant: dict[str, str],
    auth: Auth,
    make_template: Any,
) -> None:
    if backend != "mariadb":
        pytest.skip("the embedded gate lives in the process; only Redis can be flushed")
    ids = await pack_templates(make_template, 100, 100)
    gift = await gift_template(make_template, 10)
    pack = await create_pack(
        client, merchant, pack_body(clock, ids, gift={"template_id": gift, "quantity": 10})
    )
    user = auth(sub="u1")
    await joined(client, user)
    request_id = new_request_id()
    first = await claim_pack_ok(client, user, pack["id"], request_id=request_id)
    await redis_flush()
    again = await claim_pack_ok(client, user, pack["id"], request_id=request_id)
    assert again == {**first, "replayed": True}
    assert len(await wallet(client, user)) == 3
    member_pack = await simple_pack(client, clock, merchant, make_template, kind="member")
    await redis_flush()
    response = await claim_pack(client, user, member_pack["id"], request_id)
    await expect(response, HTTPStatus.CONFLICT, "IDEMPOTENCY_CONFLICT")
    assert len(await wallet(client, user)) == 3


async def test_claim_request_id_reused_for_another_pack(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    new_pack = await simple_pack(client, clock, merchant, make_template)
    member_pack = await simple_pack(client, clock, merchant, make_template, kind="member")
    user = auth(sub="u1")
    await joined(client, user)
    request_id = new_request_id()
    await claim_pack_ok(client, user, new_pack["id"], request_id=request_id)
    response = await claim_pack(client, user, member_pack["id"], request_id)
    await expect(response, HTTPStatus.CONFLICT, "IDEMPOTENCY_CONFLICT")
    assert len(await wallet(client, user)) == 1
    assert state_of(await member_center(client, user), member_pack["id"]) == "claimable"


# --- claiming a pack: concurrency ------------------------------------------------------------
async def test_twenty_copies_of_one_claim_grant_one_pack(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    ids = await pack_templates(make_template, 100, 100)
    gift = await gift_template(make_template, 10)
    pack = await create_pack(
        client, merchant, pack_body(clock, ids, gift={"template_id": gift, "quantity": 10})
    )
    user = auth(sub="u1")
    await joined(client, user)
    request_id = new_request_id()
    replies = await asyncio.gather(
        *(claim_pack(client, user, pack["id"], request_id) for _ in range(20))
    )
    bodies = [await expect(r, HTTPStatus.CREATED) for r in replies]
    originals = [b for b in bodies if not b.get("replayed")]
    assert len(originals) == 1, bodies
    for body in bodies:
        assert {**body, "replayed": True} == {**originals[0], "replayed": True}
    assert len(await wallet(client, user)) == 3
    for template_id in [*ids, gift]:
        assert (await get_template(client, merchant, template_id))["issued"] == 1
    stored = await get_pack(client, merchant, pack["id"])
    assert (stored["claimed"], stored["gift"]["given"]) == (1, 1)


async def test_a_copy_that_finds_the_pack_claimed_by_itself_answers_the_replay(
    client: TestClient,
    clock: Any,
    merchant: dict[str, str],
    auth: Auth,
    make_template: Any,
    aiohttp_client: Any,
    make_app: Any,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two processes, no shared gate: the copy looked for a reply before the first committed."""
    alone = settings.replace(redis=dataclasses.replace(settings.redis, url=""))
    first = await aiohttp_client(make_app(settings=alone))
    second = await aiohttp_client(make_app(settings=alone))
    ids = await pack_templates(make_template, 100, 100)
    pack = await create_pack(client, merchant, pack_body(clock, ids))
    user = auth(sub="u1")
    await joined(client, user)
    request_id = new_request_id()
    packs = second.server.app[PACKS]
    replay = packs._replay
    committed: list[dict[str, Any]] = []

    async def then_the_first_commits(*args: Any) -> Any:
        found = await replay(*args)
        if not committed:
            committed.append(await claim_pack_ok(first, user, pack["id"], request_id=request_id))
        return found

    monkeypatch.setattr(packs, "_replay", then_the_first_commits)
    copy = await claim_pack_ok(second, user, pack["id"], request_id=request_id)
    assert copy == {**committed[0], "replayed": True}
    assert len(await wallet(client, user)) == 2
    await refused_pack(second, user, pack["id"], HTTPStatus.CONFLICT, "ALREADY_CLAIMED")


async def test_concurrent_claims_with_different_request_ids_grant_one_pack(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    ids = await pack_templates(make_template, 100, 100)
    pack = await create_pack(client, merchant, pack_body(clock, ids))
    user = auth(sub="u1")
    await joined(client, user)
    replies = await asyncio.gather(*(claim_pack(client, user, pack["id"]) for _ in range(10)))
    outcomes = Counter([outcome(r.status, await r.json()) for r in replies])
    assert outcomes == {"201": 1, "409 ALREADY_CLAIMED": 9}, outcomes
    assert len(await wallet(client, user)) == 2
    for template_id in ids:
        assert (await get_template(client, merchant, template_id))["issued"] == 1


async def test_fifty_new_members_race_for_five_gifts(
    client: TestClient,
    clock: Any,
    merchant: dict[str, str],
    auth: Auth,
    make_template: MakeTemplate,
) -> None:
    ids = await pack_templates(make_template, 1000, 1000)
    gift = await gift_template(make_template, 5)
    pack = await create_pack(
        client, merchant, pack_body(clock, ids, gift={"template_id": gift, "quantity": 5})
    )
    users = [auth(sub=f"u{i}") for i in range(50)]
    for user in users:
        await expect(await join(client, user), HTTPStatus.CREATED)
    replies = await asyncio.gather(*(claim_pack(client, u, pack["id"]) for u in users))
    outcomes = Counter([outcome(r.status, await r.json()) for r in replies])
    assert outcomes == {"201": 5, "409 SOLD_OUT": 45}, outcomes
    for template_id in [*ids, gift]:
        assert (await get_template(client, merchant, template_id))["issued"] == 5
    stored = await get_pack(client, merchant, pack["id"])
    assert (stored["claimed"], stored["remaining"], stored["gift"]["given"]) == (5, 0, 5)


# --- new-member exclusives -------------------------------------------------------------------
async def exclusive_templates(make_template: MakeTemplate, count: int) -> list[int]:
    ids = []
    for index in range(count):
        template = await make_template(name=f"新会员专享{index}", new_member_exclusive=True)
        ids.append(template["id"])
    return ids


async def test_a_member_takes_one_exclusive_only(
    client: TestClient, auth: Auth, make_template: Any
) -> None:
    first, second = await exclusive_templates(make_template, 2)
    user = auth(sub="u1")
    await joined(client, user)
    await claim_ok(client, user, first)
    body = await expect(await claim(client, user, second), HTTPStatus.CONFLICT, "ALREADY_CLAIMED")
    assert body["error"]["details"]["reason"] == "new_member_exclusive"
    assert [c["template_id"] for c in await wallet(client, user)] == [first]


async def test_exclusive_once_even_when_its_template_allows_more(
    client: TestClient, auth: Auth, make_template: Any
) -> None:
    template = await make_template(name="新会员专享", new_member_exclusive=True, per_user_limit=3)
    user = auth(sub="u1")
    await joined(client, user)
    await claim_ok(client, user, template["id"])
    body = await expect(
        await claim(client, user, template["id"]), HTTPStatus.CONFLICT, "ALREADY_CLAIMED"
    )
    assert body["error"]["details"]["reason"] == "new_member_exclusive"


async def test_exclusive_once_ever_also_after_rejoining(
    client: TestClient, auth: Auth, make_template: Any
) -> None:
    first, second = await exclusive_templates(make_template, 2)
    user = auth(sub="u1")
    await joined(client, user)
    await claim_ok(client, user, first)
    await leave(client, user)
    await joined(client, user)
    body = await expect(await claim(client, user, second), HTTPStatus.CONFLICT, "ALREADY_CLAIMED")
    assert body["error"]["details"]["reason"] == "new_member_exclusive"


async def test_exclusive_is_for_members(client: TestClient, auth: Auth, make_template: Any) -> None:
    (exclusive,) = await exclusive_templates(make_template, 1)
    user = auth(sub="u1")
    await expect(await claim(client, user, exclusive), HTTPStatus.FORBIDDEN, "NOT_ELIGIBLE")
    await joined(client, user)
    await leave(client, user)
    await expect(await claim(client, user, exclusive), HTTPStatus.FORBIDDEN, "NOT_ELIGIBLE")
    assert await wallet(client, user) == []


async def test_exclusive_taker_can_still_claim_the_new_member_pack(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    (exclusive,) = await exclusive_templates(make_template, 1)
    pack = await simple_pack(client, clock, merchant, make_template)
    user = auth(sub="u1")
    await joined(client, user)
    await claim_ok(client, user, exclusive)
    await claim_pack_ok(client, user, pack["id"])
    assert len(await wallet(client, user)) == 2


async def test_exclusive_in_a_pack_does_not_use_up_the_one_take(
    client: TestClient, clock: Any, merchant: dict[str, str], auth: Auth, make_template: Any
) -> None:
    in_pack = await make_template(
        name="新会员专享礼包券", new_member_exclusive=True, claim_methods=["gift_pack"]
    )
    (exclusive,) = await exclusive_templates(make_template, 1)
    pack = await create_pack(client, merchant, pack_body(clock, [in_pack["id"]]))
    user = auth(sub="u1")
    await joined(client, user)
    await claim_pack_ok(client, user, pack["id"])
    await claim_ok(client, user, exclusive)


async def test_concurrent_exclusive_claims_grant_one(
    client: TestClient, auth: Auth, make_template: Any
) -> None:
    ids = await exclusive_templates(make_template, 3)
    user = auth(sub="u1")
    await joined(client, user)
    replies = await asyncio.gather(*(claim(client, user, t) for t in ids for _ in range(4)))
    outcomes = Counter([outcome(r.status, await r.json()) for r in replies])
    assert outcomes["201"] == 1, outcomes
    assert len(await wallet(client, user)) == 1
