"""Membership, gift packs, the member-center popup and new-member exclusives over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from http import HTTPStatus
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import expect, iso
from tests.helpers import get_template, new_request_id, shop_url, wallet


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


async def create_pack(
    client: TestClient, merchant: dict[str, str], body: dict[str, Any]
) -> dict[str, Any]:
    response = await client.post(shop_url("/admin/gift-packs"), json=body, headers=merchant)
    return await expect(response, HTTPStatus.CREATED)


async def pack_templates(make_template: Callable[..., Any], *stocks: int) -> list[int]:
    ids = []
    for stock in stocks:
        template = await make_template(
            claim_methods=["gift_pack"], stock={"type": "limited", "total": stock}
        )
        ids.append(template["id"])
    return ids


async def gift_template(make_template: Callable[..., Any], stock: int) -> int:
    template = await make_template(
        name="赠品",
        benefit={"type": "gift", "product_id": "gift-1"},
        claim_methods=["gift_pack"],
        stock={"type": "limited", "total": stock},
    )
    return int(template["id"])


async def join(client: TestClient, headers: dict[str, str]) -> Any:
    return await client.post(shop_url("/membership"), json={}, headers=headers)


async def claim_pack(
    client: TestClient, headers: dict[str, str], pack_id: int, request_id: str | None = None
) -> Any:
    body = {"request_id": request_id or new_request_id()}
    return await client.post(shop_url(f"/gift-packs/{pack_id}/claim"), json=body, headers=headers)


# --- the flow --------------------------------------------------------------------------------
async def test_join_popup_claim_flow(
    client: TestClient,
    clock: Any,
    merchant: dict[str, str],
    auth: Callable[..., dict[str, str]],
    make_template: Callable[..., Any],
) -> None:
    ids = await pack_templates(make_template, 10000, 5000)
    gift = await gift_template(make_template, 500)
    pack = await create_pack(
        client, merchant, pack_body(clock, ids, gift={"template_id": gift, "quantity": 500})
    )
    assert pack["remaining"] == 500
    user = auth(sub="alice")
    joined = await expect(await join(client, user), HTTPStatus.CREATED)
    assert joined["new_member"] is True
    assert joined["popup"]["id"] == pack["id"]
    again = await expect(await join(client, user), HTTPStatus.OK)
    assert again["popup"] is None
    center = await expect(
        await client.get(shop_url("/member-center"), headers=user), HTTPStatus.OK
    )
    assert center["gift_packs"][0]["state"] == "claimable"
    claimed = await expect(await claim_pack(client, user, pack["id"]), HTTPStatus.CREATED)
    assert claimed["presentation"] == "lottery"
    assert [c["template_id"] for c in claimed["coupons"]] == ids
    assert claimed["gift"]["template_id"] == gift
    assert len(await wallet(client, user)) == 3
    await expect(await claim_pack(client, user, pack["id"]), HTTPStatus.CONFLICT, "ALREADY_CLAIMED")
    center = await expect(
        await client.get(shop_url("/member-center"), headers=user), HTTPStatus.OK
    )
    assert center["gift_packs"][0]["state"] == "claimed"
    assert (await get_template(client, merchant, gift))["issued"] == 1


async def test_fifty_new_members_race_for_five_gifts(
    client: TestClient,
    clock: Any,
    merchant: dict[str, str],
    auth: Callable[..., dict[str, str]],
    make_template: Callable[..., Any],
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
    statuses = sorted(r.status for r in replies)
    assert statuses.count(201) == 5, statuses
    for template_id in [*ids, gift]:
        assert (await get_template(client, merchant, template_id))["issued"] == 5
