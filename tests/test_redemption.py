"""Redemption (核销) and returns (退券) through HTTP, as the order system calls them.

The life of a coupon: claimed, locked by an order, confirmed (used), returned
on cancel, usable again. Amounts are worked by hand as in test_prices.py: the
default template is 满299减50 (5000 off from 29900), valid 7 days from claim.
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

from bff.keys import REDEMPTIONS
from bff.redemption.locks import effective_status, outcome_on_release
from config.loader import ConfigError, load_settings
from tests.conftest import REDIS_URL, expect, iso
from tests.helpers import (
    cancel_order,
    claim_ok,
    confirm_order,
    create_template,
    items,
    put_product,
    redeem,
    redeem_ok,
    shop_url,
    wallet,
)

NO_RETURN = {"return_on_cancel": False}


def no_threshold(amount_off: int) -> dict[str, Any]:
    return {"type": "no_threshold", "amount_off": amount_off}


def stackable() -> dict[str, bool]:
    return {"with_store_promotions": True, "with_other_coupons": True}


@pytest.fixture
def user(auth: Callable[..., dict[str, str]]) -> dict[str, str]:
    return auth("user", sub="u7")


@pytest.fixture
def service(auth: Callable[..., dict[str, str]]) -> dict[str, str]:
    return auth("service", shop="s1", sub="order-system")


@pytest.fixture
async def held(client, merchant, make_template, user) -> dict[str, Any]:
    """Product p1 at 300.00 and u7's 满299减50 coupon."""
    await put_product(client, merchant, "p1", 30000)
    template = await make_template()
    return await claim_ok(client, user, template["id"])


async def coupon_in_wallet(
    client: TestClient, headers: dict[str, str], coupon_id: int, status: str = "all"
) -> dict[str, Any] | None:
    return next(
        (c for c in await wallet(client, headers, status) if c["coupon_id"] == coupon_id), None
    )


async def refused(response: Any, coupon_id: int, reason: str) -> dict[str, Any]:
    body = await expect(response, HTTPStatus.CONFLICT, "COUPON_NOT_USABLE")
    assert body["error"]["details"] == {"coupon_id": coupon_id, "reason": reason}, body
    return body


async def confirmed(client: TestClient, service: dict[str, str], order_id: str) -> dict[str, Any]:
    body = await expect(await confirm_order(client, service, order_id), HTTPStatus.OK)
    assert (body["order_id"], body["status"]) == (order_id, "used"), body
    return body


async def cancelled(client: TestClient, service: dict[str, str], order_id: str) -> dict[str, Any]:
    body = await expect(await cancel_order(client, service, order_id), HTTPStatus.OK)
    assert (body["order_id"], body["status"]) == (order_id, "cancelled"), body
    return body


# --- the full life ---------------------------------------------------------------------------
async def test_claim_lock_confirm_cancel_and_usable_again(client, held, service, user):
    coupon_id = held["coupon_id"]
    body = await redeem_ok(client, service, "o1", "u7", items(("p1", 1)), [coupon_id])
    assert body["order_id"] == "o1" and body["user_id"] == "u7", body
    assert body["lines"] == [
        {
            "product_id": "p1",
            "quantity": 1,
            "unit_price": 30000,
            "amount": 30000,
            "discount": 5000,
            "payable": 25000,
        }
    ], body
    assert body["coupons"] == [
        {"coupon_id": coupon_id, "template_id": held["template_id"], "discount": 5000}
    ], body
    assert (body["total"], body["discount"], body["payable"]) == (30000, 5000, 25000), body
    assert (await coupon_in_wallet(client, user, coupon_id, "usable"))["status"] == "locked"

    assert (await confirmed(client, service, "o1"))["confirmed_at"]
    assert (await coupon_in_wallet(client, user, coupon_id, "used"))["status"] == "used"
    assert await coupon_in_wallet(client, user, coupon_id, "usable") is None

    back = await cancelled(client, service, "o1")
    assert (back["returned"], back["not_returned"]) == ([coupon_id], []), back
    assert (await coupon_in_wallet(client, user, coupon_id, "usable"))["status"] == "unused"

    again = await redeem_ok(client, service, "o2", "u7", items(("p1", 1)), [coupon_id])
    assert again["payable"] == 25000, again


async def test_cancel_of_a_locked_order_returns_every_coupon(
    client, merchant, make_template, service, user
):
    await put_product(client, merchant, "p1", 30000)
    first = await make_template(benefit=no_threshold(1000), stacking=stackable())
    second = await make_template(benefit=no_threshold(2000), stacking=stackable())
    a = await claim_ok(client, user, first["id"])
    b = await claim_ok(client, user, second["id"])
    ids = [a["coupon_id"], b["coupon_id"]]
    body = await redeem_ok(client, service, "o1", "u7", items(("p1", 1)), ids)
    assert body["payable"] == 27000, body
    back = await cancelled(client, service, "o1")
    assert (back["returned"], back["not_returned"]) == (sorted(ids), []), back
    statuses = {c["coupon_id"]: c["status"] for c in await wallet(client, user)}
    assert statuses == {a["coupon_id"]: "unused", b["coupon_id"]: "unused"}, statuses


async def test_lock_prices_like_the_checkout_preview(
    client, merchant, make_template, service, user
):
    await put_product(client, merchant, "p1", 10000)
    await put_product(client, merchant, "p2", 8000, promo_price=7500)
    await put_product(client, merchant, "p3", 6001)
    template = await make_template()
    coupon = await claim_ok(client, user, template["id"])
    cart = items(("p1", 1), ("p2", 2), ("p3", 1))
    preview = await expect(
        await client.post(
            shop_url("/checkout/preview"),
            json={"items": cart, "coupon_ids": [coupon["coupon_id"]]},
            headers=user,
        ),
        HTTPStatus.OK,
    )
    body = await redeem_ok(client, service, "o1", "u7", cart, [coupon["coupon_id"]])
    for key in ("lines", "total", "discount", "payable"):
        assert body[key] == preview[key], (key, body, preview)
    assert [c["discount"] for c in body["coupons"]] == [5000], body
    assert sum(line["discount"] for line in body["lines"]) == 5000, body


async def test_an_order_without_coupons_locks_nothing_and_confirms(client, held, service, user):
    body = await redeem_ok(client, service, "o1", "u7", items(("p1", 2)), [])
    assert (body["coupons"], body["payable"]) == ([], 60000), body
    await confirmed(client, service, "o1")
    back = await cancelled(client, service, "o1")
    assert (back["returned"], back["not_returned"]) == ([], []), back
    assert (await coupon_in_wallet(client, user, held["coupon_id"]))["status"] == "unused"


# --- idempotency by order id -----------------------------------------------------------------
async def test_same_order_again_replays_the_first_reply(client, held, service, clock):
    first = await redeem_ok(client, service, "o1", "u7", items(("p1", 1)), [held["coupon_id"]])
    clock.advance(timedelta(minutes=1))
    response = await redeem(client, service, "o1", "u7", items(("p1", 1)), [held["coupon_id"]])
    again = await expect(response, HTTPStatus.CREATED)
    assert again.pop("replayed") is True, again
    assert again == first


async def test_same_order_with_another_body_conflicts(client, held, service):
    await redeem_ok(client, service, "o1", "u7", items(("p1", 1)), [held["coupon_id"]])
    response = await redeem(client, service, "o1", "u7", items(("p1", 2)), [held["coupon_id"]])
    body = await expect(response, HTTPStatus.CONFLICT, "IDEMPOTENCY_CONFLICT")
    assert body["error"]["message"] == "this order_id was used with a different body"
    response = await redeem(client, service, "o1", "u8", items(("p1", 1)), [held["coupon_id"]])
    await expect(response, HTTPStatus.CONFLICT, "IDEMPOTENCY_CONFLICT")


async def test_replay_survives_the_gate_losing_its_keys(
    client, held, service, aiohttp_client, make_app, backend
):
    first = await redeem_ok(client, service, "o1", "u7", items(("p1", 1)), [held["coupon_id"]])
    # Another process whose gate never saw the order (embedded: its own in-process gate;
    # MariaDB: the shared Redis flushed): the order row answers.
    other = await aiohttp_client(make_app())
    if backend == "mariadb":
        redis = aioredis.Redis.from_url(REDIS_URL)
        try:
            await redis.flushdb()
        finally:
            await redis.aclose()
    response = await redeem(other, service, "o1", "u7", items(("p1", 1)), [held["coupon_id"]])
    again = await expect(response, HTTPStatus.CREATED)
    assert again.pop("replayed") is True and again == first, again
    response = await redeem(other, service, "o1", "u7", items(("p1", 3)), [held["coupon_id"]])
    body = await expect(response, HTTPStatus.CONFLICT, "IDEMPOTENCY_CONFLICT")
    assert "order_id" in body["error"]["message"], body


async def test_twenty_copies_at_once_lock_once_with_one_reply(client, held, service, user):
    responses = await asyncio.gather(
        *(
            redeem(client, service, "o1", "u7", items(("p1", 1)), [held["coupon_id"]])
            for _ in range(20)
        )
    )
    bodies = [await expect(r, HTTPStatus.CREATED) for r in responses]
    assert sum(1 for b in bodies if not b.get("replayed")) == 1, bodies
    firsts = {repr({k: v for k, v in b.items() if k != "replayed"}) for b in bodies}
    assert len(firsts) == 1, firsts
    assert (await coupon_in_wallet(client, user, held["coupon_id"]))["status"] == "locked"


async def test_copies_in_two_processes_without_a_shared_gate_lock_once(
    held, service, aiohttp_client, make_app, settings, user, client
):
    """Two gates that do not know of each other: the order row's key alone decides."""
    alone = settings.replace(redis=dataclasses.replace(settings.redis, url=""))
    first = await aiohttp_client(make_app(settings=alone))
    second = await aiohttp_client(make_app(settings=alone))
    order = ("o1", "u7", items(("p1", 1)), [held["coupon_id"]])
    responses = await asyncio.gather(*(redeem(app, service, *order) for app in [first, second] * 5))
    bodies = [await expect(r, HTTPStatus.CREATED) for r in responses]
    assert sum(1 for b in bodies if not b.get("replayed")) == 1, bodies
    assert len({b["locked_at"] for b in bodies}) == 1, bodies
    assert (await coupon_in_wallet(client, user, held["coupon_id"]))["status"] == "locked"


async def test_a_copy_pricing_after_the_first_committed_is_answered_as_a_replay(
    backend, held, service, aiohttp_client, make_app, settings, user, monkeypatch
):
    """The copy's replay check ran before the first copy committed, its pricing after.

    Under READ COMMITTED that pricing sees the coupon locked, by this same order:
    the copy must answer the stored reply, not refuse its own coupon.
    """
    if backend != "mariadb":
        pytest.skip("the embedded database runs one writing transaction at a time")
    alone = settings.replace(redis=dataclasses.replace(settings.redis, url=""))
    first = await aiohttp_client(make_app(settings=alone))
    second = await aiohttp_client(make_app(settings=alone))
    order = ("o1", "u7", items(("p1", 1)), [held["coupon_id"]])
    prices = second.server.app[REDEMPTIONS].prices
    order_quote = prices.order_quote
    committed: list[dict[str, Any]] = []

    async def after_the_first_commits(*args: Any, **kwargs: Any) -> Any:
        if not committed:
            committed.append(await redeem_ok(first, service, *order))
        return await order_quote(*args, **kwargs)

    monkeypatch.setattr(prices, "order_quote", after_the_first_commits)
    copy = await expect(await redeem(second, service, *order), HTTPStatus.CREATED)
    assert copy.pop("replayed") is True and copy == committed[0], copy
    assert (await coupon_in_wallet(second, user, held["coupon_id"]))["status"] == "locked"
    other = ("o2", "u7", items(("p1", 1)), [held["coupon_id"]])
    await refused(await redeem(second, service, *other), held["coupon_id"], "locked")


async def test_a_refused_order_can_be_retried_under_its_order_id(
    client, merchant, make_template, service, user
):
    await put_product(client, merchant, "p1", 30000)
    template = await make_template()
    coupon = await claim_ok(client, user, template["id"])
    response = await redeem(
        client, service, "o1", "u7", items(("p1", 1)), [coupon["coupon_id"], 99]
    )
    await refused(response, 99, "not_found")
    body = await redeem_ok(client, service, "o1", "u7", items(("p1", 1)), [coupon["coupon_id"]])
    assert body["payable"] == 25000, body


# --- what may be locked ----------------------------------------------------------------------
async def test_one_coupon_in_two_concurrent_orders_locks_once(client, held, service):
    responses = await asyncio.gather(
        redeem(client, service, "o1", "u7", items(("p1", 1)), [held["coupon_id"]]),
        redeem(client, service, "o2", "u7", items(("p1", 1)), [held["coupon_id"]]),
    )
    statuses = sorted(r.status for r in responses)
    assert statuses == [HTTPStatus.CREATED, HTTPStatus.CONFLICT], statuses
    loser = next(r for r in responses if r.status == HTTPStatus.CONFLICT)
    await refused(loser, held["coupon_id"], "locked")


async def test_one_coupon_in_twenty_concurrent_orders_locks_once(client, held, service, user):
    responses = await asyncio.gather(
        *(
            redeem(client, service, f"o{i}", "u7", items(("p1", 1)), [held["coupon_id"]])
            for i in range(20)
        )
    )
    outcomes = Counter()
    for response in responses:
        body = await response.json()
        if response.status == HTTPStatus.CREATED:
            outcomes["201"] += 1
        else:
            outcomes[f"{response.status} {body['error']['details']['reason']}"] += 1
    assert outcomes == {"201": 1, "409 locked": 19}, outcomes
    coupon = await coupon_in_wallet(client, user, held["coupon_id"])
    assert coupon["status"] == "locked", coupon


async def test_overlapping_coupon_sets_never_share_a_coupon(
    client, merchant, make_template, service, user
):
    await put_product(client, merchant, "p1", 30000)
    templates = [
        await make_template(name=f"立减{i}", benefit=no_threshold(100 * i), stacking=stackable())
        for i in range(1, 5)
    ]
    ids = [(await claim_ok(client, user, t["id"]))["coupon_id"] for t in templates]
    sets = [ids[0:2], ids[1:3], ids[2:4], ids[3:4] + ids[0:1], ids]
    responses = await asyncio.gather(
        *(
            redeem(client, service, f"o{i}", "u7", items(("p1", 1)), chosen)
            for i, chosen in enumerate(sets)
        )
    )
    locked: list[int] = []
    for response, chosen in zip(responses, sets, strict=True):
        if response.status == HTTPStatus.CREATED:
            locked += chosen
        else:
            await expect(response, HTTPStatus.CONFLICT, "COUPON_NOT_USABLE")
    assert locked and len(locked) == len(set(locked)), locked
    statuses = {c["coupon_id"]: c["status"] for c in await wallet(client, user, "all")}
    assert {cid for cid, status in statuses.items() if status == "locked"} == set(locked)


async def test_another_users_coupon_is_refused_as_not_found(
    client, merchant, make_template, service, auth
):
    await put_product(client, merchant, "p1", 30000)
    template = await make_template()
    theirs = await claim_ok(client, auth("user", sub="u8"), template["id"])
    unknown_id = theirs["coupon_id"] + 1000
    missing = await refused(
        await redeem(client, service, "o1", "u7", items(("p1", 1)), [unknown_id]),
        unknown_id,
        "not_found",
    )
    other = await refused(
        await redeem(client, service, "o2", "u7", items(("p1", 1)), [theirs["coupon_id"]]),
        theirs["coupon_id"],
        "not_found",
    )
    # The same words as for a coupon that does not exist, but for its id.
    assert missing["error"]["message"].replace(str(unknown_id), "#") == other["error"][
        "message"
    ].replace(str(theirs["coupon_id"]), "#")
    owner = auth("user", sub="u8")
    assert (await coupon_in_wallet(client, owner, theirs["coupon_id"]))["status"] == "unused"


async def test_another_shops_coupon_is_refused_as_not_found(
    client, merchant, make_template, service, auth
):
    await put_product(client, merchant, "p1", 30000)
    elsewhere = await make_template(shop="s2")
    theirs = await claim_ok(client, auth("user", sub="u7"), elsewhere["id"], shop="s2")
    response = await redeem(client, service, "o1", "u7", items(("p1", 1)), [theirs["coupon_id"]])
    await refused(response, theirs["coupon_id"], "not_found")


async def test_a_used_coupon_is_refused(client, held, service):
    await redeem_ok(client, service, "o1", "u7", items(("p1", 1)), [held["coupon_id"]])
    await confirmed(client, service, "o1")
    response = await redeem(client, service, "o2", "u7", items(("p1", 1)), [held["coupon_id"]])
    await refused(response, held["coupon_id"], "used")


async def test_an_expired_coupon_is_refused(client, held, auth, clock):
    clock.advance(timedelta(days=7))
    service = auth("service", shop="s1", sub="order-system")  # tokens minted now
    response = await redeem(client, service, "o1", "u7", items(("p1", 1)), [held["coupon_id"]])
    await refused(response, held["coupon_id"], "expired")


async def test_a_revoked_coupon_is_refused(client, held, service, merchant):
    response = await client.post(
        shop_url(f"/admin/coupons/{held['coupon_id']}/revoke"), headers=merchant
    )
    await expect(response, HTTPStatus.OK)
    response = await redeem(client, service, "o1", "u7", items(("p1", 1)), [held["coupon_id"]])
    await refused(response, held["coupon_id"], "revoked")


async def test_a_coupon_not_yet_valid_is_refused(client, merchant, make_template, service, user):
    await put_product(client, merchant, "p1", 30000)
    template = await make_template(
        validity={"type": "relative", "effective_after_days": 1, "valid_days": 7}
    )
    coupon = await claim_ok(client, user, template["id"])
    response = await redeem(client, service, "o1", "u7", items(("p1", 1)), [coupon["coupon_id"]])
    await refused(response, coupon["coupon_id"], "not_yet_valid")


async def test_a_coupon_below_its_threshold_is_refused(client, held, service, merchant):
    await put_product(client, merchant, "p2", 29800)
    response = await redeem(client, service, "o1", "u7", items(("p2", 1)), [held["coupon_id"]])
    await refused(response, held["coupon_id"], "threshold_not_met")


async def test_a_coupon_out_of_scope_is_refused(client, merchant, make_template, service, user):
    await put_product(client, merchant, "p1", 30000)
    template = await make_template(
        benefit=no_threshold(1000), scope={"type": "products", "product_ids": ["p9"]}
    )
    coupon = await claim_ok(client, user, template["id"])
    response = await redeem(client, service, "o1", "u7", items(("p1", 1)), [coupon["coupon_id"]])
    await refused(response, coupon["coupon_id"], "out_of_scope")


async def test_coupons_that_do_not_combine_are_refused_and_none_is_locked(
    client, merchant, make_template, service, user
):
    await put_product(client, merchant, "p1", 30000)
    alone = await make_template(benefit=no_threshold(1000))
    other = await make_template(benefit=no_threshold(2000), stacking=stackable())
    a = await claim_ok(client, user, alone["id"])
    b = await claim_ok(client, user, other["id"])
    response = await redeem(
        client, service, "o1", "u7", items(("p1", 1)), [a["coupon_id"], b["coupon_id"]]
    )
    await refused(response, b["coupon_id"], "not_combinable")
    statuses = {c["status"] for c in await wallet(client, user)}
    assert statuses == {"unused"}, statuses


async def test_a_refused_coupon_leaves_the_others_unlocked(
    client, merchant, make_template, service, user
):
    await put_product(client, merchant, "p1", 30000)
    first = await make_template(benefit=no_threshold(1000), stacking=stackable())
    second = await make_template(benefit=no_threshold(2000), stacking=stackable())
    a = (await claim_ok(client, user, first["id"]))["coupon_id"]
    b = (await claim_ok(client, user, second["id"]))["coupon_id"]
    await redeem_ok(client, service, "o1", "u7", items(("p1", 1)), [b])
    response = await redeem(client, service, "o2", "u7", items(("p1", 1)), [a, b])
    await refused(response, b, "locked")
    assert (await coupon_in_wallet(client, user, a))["status"] == "unused"
    await expect(await confirm_order(client, service, "o2"), HTTPStatus.NOT_FOUND, "NOT_FOUND")


async def test_an_unknown_product_is_404_and_locks_nothing(client, held, service, user):
    response = await redeem(
        client, service, "o1", "u7", items(("p1", 1), ("nope", 1)), [held["coupon_id"]]
    )
    await expect(response, HTTPStatus.NOT_FOUND, "NOT_FOUND")
    assert (await coupon_in_wallet(client, user, held["coupon_id"]))["status"] == "unused"


async def test_coupons_do_not_apply_to_a_live_exclusive_price(
    client, merchant, make_template, service, user, clock
):
    await put_product(client, merchant, "p1", 30000)
    await put_product(client, merchant, "p2", 10000)
    now = clock.now()
    room = {
        "items": [
            {
                "product_id": "p1",
                "exclusive_price": 25000,
                "starts_at": iso(now - timedelta(hours=1)),
                "ends_at": iso(now + timedelta(hours=1)),
            }
        ]
    }
    response = await client.put(
        shop_url("/admin/live-rooms/r1/prices"), json=room, headers=merchant
    )
    await expect(response, HTTPStatus.OK)
    cash = await make_template(benefit=no_threshold(1000))
    coupon = await claim_ok(client, user, cash["id"])
    alone = await redeem(
        client, service, "o1", "u7", items(("p1", 1)), [coupon["coupon_id"]], live_room_id="r1"
    )
    await refused(alone, coupon["coupon_id"], "out_of_scope")
    body = await redeem_ok(
        client,
        service,
        "o2",
        "u7",
        items(("p1", 1), ("p2", 1)),
        [coupon["coupon_id"]],
        live_room_id="r1",
    )
    assert [(line["unit_price"], line["discount"]) for line in body["lines"]] == [
        (25000, 0),
        (10000, 1000),
    ], body
    assert (body["payable"], body["live_room_id"]) == (34000, "r1"), body


# --- confirm and cancel ----------------------------------------------------------------------
async def test_confirm_twice_answers_the_same(client, held, service):
    await redeem_ok(client, service, "o1", "u7", items(("p1", 1)), [held["coupon_id"]])
    first = await confirmed(client, service, "o1")
    assert await confirmed(client, service, "o1") == first


async def test_many_confirms_at_once_agree(client, held, service, user):
    await redeem_ok(client, service, "o1", "u7", items(("p1", 1)), [held["coupon_id"]])
    replies = await asyncio.gather(*(confirm_order(client, service, "o1") for _ in range(10)))
    bodies = [await expect(r, HTTPStatus.OK) for r in replies]
    assert all(b == bodies[0] for b in bodies), bodies
    assert (await coupon_in_wallet(client, user, held["coupon_id"]))["status"] == "used"


async def test_cancel_twice_answers_the_same(client, held, service):
    await redeem_ok(client, service, "o1", "u7", items(("p1", 1)), [held["coupon_id"]])
    first = await cancelled(client, service, "o1")
    assert await cancelled(client, service, "o1") == first


async def test_confirm_after_cancel_is_refused(client, held, service, user):
    await redeem_ok(client, service, "o1", "u7", items(("p1", 1)), [held["coupon_id"]])
    await cancelled(client, service, "o1")
    response = await confirm_order(client, service, "o1")
    body = await expect(response, HTTPStatus.CONFLICT, "ORDER_CANCELLED")
    assert body["error"]["details"] == {"order_id": "o1"}, body
    assert (await coupon_in_wallet(client, user, held["coupon_id"]))["status"] == "unused"


@pytest.mark.parametrize("call", [confirm_order, cancel_order])
async def test_unknown_order_is_404(client, service, call):
    await expect(await call(client, service, "nope"), HTTPStatus.NOT_FOUND, "NOT_FOUND")


@pytest.mark.parametrize("call", [confirm_order, cancel_order])
async def test_another_shops_order_is_404(client, held, service, auth, call):
    await redeem_ok(client, service, "o1", "u7", items(("p1", 1)), [held["coupon_id"]])
    elsewhere = auth("service", shop="s2", sub="orders-2")
    await expect(await call(client, elsewhere, "o1", "s2"), HTTPStatus.NOT_FOUND, "NOT_FOUND")


async def test_confirm_and_cancel_racing_end_consistently(
    client, merchant, make_template, service, user
):
    await put_product(client, merchant, "p1", 30000)
    template = await make_template(per_user_limit=5)
    for round_no in range(5):
        coupon = await claim_ok(client, user, template["id"])
        order = f"race{round_no}"
        await redeem_ok(client, service, order, "u7", items(("p1", 1)), [coupon["coupon_id"]])
        confirm, cancel = await asyncio.gather(
            confirm_order(client, service, order), cancel_order(client, service, order)
        )
        back = await expect(cancel, HTTPStatus.OK)
        assert back["returned"] == [coupon["coupon_id"]], back
        if confirm.status != HTTPStatus.OK:
            await expect(confirm, HTTPStatus.CONFLICT, "ORDER_CANCELLED")
        assert (await coupon_in_wallet(client, user, coupon["coupon_id"]))["status"] == "unused"
        again = await expect(await confirm_order(client, service, order), HTTPStatus.CONFLICT)
        assert again["error"]["code"] == "ORDER_CANCELLED", again


# --- returns ---------------------------------------------------------------------------------
async def test_a_used_coupon_of_a_no_return_template_is_kept(
    client, merchant, make_template, service, user
):
    await put_product(client, merchant, "p1", 30000)
    template = await make_template(**NO_RETURN)
    coupon = await claim_ok(client, user, template["id"])
    await redeem_ok(client, service, "o1", "u7", items(("p1", 1)), [coupon["coupon_id"]])
    await confirmed(client, service, "o1")
    back = await cancelled(client, service, "o1")
    assert back["returned"] == [], back
    assert back["not_returned"] == [{"coupon_id": coupon["coupon_id"], "reason": "not_returnable"}]
    assert (await coupon_in_wallet(client, user, coupon["coupon_id"]))["status"] == "used"


async def test_a_locked_coupon_of_a_no_return_template_comes_back(
    client, merchant, make_template, service, user
):
    """Never spent (the order was not paid): return_on_cancel is about used coupons."""
    await put_product(client, merchant, "p1", 30000)
    template = await make_template(**NO_RETURN)
    coupon = await claim_ok(client, user, template["id"])
    await redeem_ok(client, service, "o1", "u7", items(("p1", 1)), [coupon["coupon_id"]])
    back = await cancelled(client, service, "o1")
    assert (back["returned"], back["not_returned"]) == ([coupon["coupon_id"]], []), back


async def test_an_expired_used_coupon_stays_expired(client, held, service, auth, clock):
    await redeem_ok(client, service, "o1", "u7", items(("p1", 1)), [held["coupon_id"]])
    await confirmed(client, service, "o1")
    clock.advance(timedelta(days=7))  # valid for 7 days from the claim
    service, user = auth("service", shop="s1", sub="order-system"), auth("user", sub="u7")
    back = await cancelled(client, service, "o1")
    assert back["returned"] == [], back
    assert back["not_returned"] == [{"coupon_id": held["coupon_id"], "reason": "expired"}]
    coupon = await coupon_in_wallet(client, user, held["coupon_id"], "expired")
    assert coupon is not None and coupon["status"] == "expired", coupon
    response = await redeem(client, service, "o2", "u7", items(("p1", 1)), [held["coupon_id"]])
    await refused(response, held["coupon_id"], "expired")


async def test_mixed_returns_in_one_cancel(
    client, merchant, make_template, service, user, clock, auth
):
    await put_product(client, merchant, "p1", 30000)
    kept = await make_template(benefit=no_threshold(1000), stacking=stackable(), **NO_RETURN)
    short = await make_template(
        benefit=no_threshold(2000),
        stacking=stackable(),
        validity={"type": "relative", "effective_after_days": 0, "valid_days": 1},
    )
    long = await make_template(benefit=no_threshold(3000), stacking=stackable())
    a, b, c = [(await claim_ok(client, user, t["id"]))["coupon_id"] for t in (kept, short, long)]
    body = await redeem_ok(client, service, "o1", "u7", items(("p1", 1)), [a, b, c])
    assert body["payable"] == 24000, body
    await confirmed(client, service, "o1")
    clock.advance(timedelta(days=2))
    back = await cancelled(client, auth("service", shop="s1", sub="order-system"), "o1")
    assert back["returned"] == [c], back
    assert back["not_returned"] == [
        {"coupon_id": a, "reason": "not_returnable"},
        {"coupon_id": b, "reason": "expired"},
    ], back


# --- locks that lapse ------------------------------------------------------------------------
async def test_a_lapsed_lock_reads_as_unused_and_is_released_on_the_next_order(
    client, held, service, user, clock
):
    coupon_id = held["coupon_id"]
    await redeem_ok(client, service, "o1", "u7", items(("p1", 1)), [coupon_id])
    clock.advance(timedelta(minutes=29, seconds=59))
    assert (await coupon_in_wallet(client, user, coupon_id))["status"] == "locked"
    response = await redeem(client, service, "o2", "u7", items(("p1", 1)), [coupon_id])
    await refused(response, coupon_id, "locked")

    clock.advance(timedelta(seconds=1))  # 30 minutes: the lock has lapsed
    assert (await coupon_in_wallet(client, user, coupon_id, "usable"))["status"] == "unused"
    preview = await expect(
        await client.post(
            shop_url("/checkout/preview"), json={"items": items(("p1", 1))}, headers=user
        ),
        HTTPStatus.OK,
    )
    assert preview["coupons"] == [{"coupon_id": coupon_id, "discount": 5000}], preview
    await redeem_ok(client, service, "o2", "u7", items(("p1", 1)), [coupon_id])

    late = await expect(await confirm_order(client, service, "o1"), HTTPStatus.CONFLICT)
    assert late["error"]["code"] == "LOCK_EXPIRED", late
    await confirmed(client, service, "o2")
    assert (await coupon_in_wallet(client, user, coupon_id))["status"] == "used"


async def test_confirm_after_the_lock_lapsed_is_refused_and_releases(
    client, held, service, user, clock
):
    await redeem_ok(client, service, "o1", "u7", items(("p1", 1)), [held["coupon_id"]])
    clock.advance(timedelta(minutes=31))
    for _ in range(2):
        body = await expect(await confirm_order(client, service, "o1"), HTTPStatus.CONFLICT)
        assert body["error"] == {
            "code": "LOCK_EXPIRED",
            "message": body["error"]["message"],
            "details": {"order_id": "o1"},
        }, body
    assert (await coupon_in_wallet(client, user, held["coupon_id"]))["status"] == "unused"
    back = await cancelled(client, service, "o1")
    assert (back["returned"], back["not_returned"]) == ([held["coupon_id"]], []), back


async def test_cancel_after_the_lock_lapsed_reports_the_release(client, held, service, clock):
    await redeem_ok(client, service, "o1", "u7", items(("p1", 1)), [held["coupon_id"]])
    clock.advance(timedelta(hours=2))
    back = await cancelled(client, service, "o1")
    assert (back["returned"], back["not_returned"]) == ([held["coupon_id"]], []), back


async def test_the_lock_timeout_is_configurable(
    aiohttp_client, make_app, settings, clock, merchant, make_template, auth
):
    short = settings.replace(
        redemption=dataclasses.replace(settings.redemption, lock_timeout_minutes=5)
    )
    client = await aiohttp_client(make_app(settings=short))
    service = auth("service", shop="s1", sub="orders")
    user = auth("user", sub="u7")
    await put_product(client, merchant, "p1", 30000)
    template = await create_template(client, clock, merchant)
    coupon = await claim_ok(client, user, template["id"])
    body = await redeem_ok(client, service, "o1", "u7", items(("p1", 1)), [coupon["coupon_id"]])
    assert body["lock_expires_at"] == iso(clock.now() + timedelta(minutes=5)), body
    clock.advance(timedelta(minutes=5))
    await expect(await confirm_order(client, service, "o1"), HTTPStatus.CONFLICT, "LOCK_EXPIRED")


# --- who may call ----------------------------------------------------------------------------
CALLS = [
    ("POST", "/redemptions"),
    ("POST", "/redemptions/o1/confirm"),
    ("POST", "/redemptions/o1/cancel"),
]


@pytest.mark.parametrize(("method", "path"), CALLS)
@pytest.mark.parametrize(
    "who",
    [
        ("user", None),
        ("merchant", "s1"),
        ("service", "s2"),  # a service token of another shop
    ],
)
async def test_only_this_shops_service_may_call(client, held, service, auth, method, path, who):
    await redeem_ok(client, service, "o0", "u7", items(("p1", 1)), [held["coupon_id"]])
    role, shop = who
    headers = auth(role, shop=shop, sub="someone")
    body = {"order_id": "o1", "user_id": "u7", "items": items(("p1", 1)), "coupon_ids": []}
    response = await client.request(method, shop_url(path), json=body, headers=headers)
    await expect(response, HTTPStatus.FORBIDDEN, "FORBIDDEN")


@pytest.mark.parametrize(("method", "path"), CALLS)
async def test_service_calls_need_a_token(client, method, path):
    response = await client.request(method, shop_url(path), json={})
    await expect(response, HTTPStatus.UNAUTHORIZED, "UNAUTHENTICATED")


# --- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"order_id": None}, "order_id"),
        ({"order_id": "has space"}, "order_id"),
        ({"order_id": "x" * 65}, "order_id"),
        ({"user_id": ""}, "user_id"),
        ({"coupon_ids": None}, "coupon_ids"),
        ({"coupon_ids": [1, 1]}, "coupon_ids"),
        ({"coupon_ids": list(range(1, 12))}, "coupon_ids"),
        ({"coupon_ids": ["1"]}, "coupon_ids.0"),
        ({"items": []}, "items"),
        ({"items": items(("p1", 1), ("p1", 2))}, "items"),
        ({"items": items(("p1", 0))}, "items.0.quantity"),
        ({"live_room_id": "bad room"}, "live_room_id"),
    ],
)
async def test_bad_bodies_are_400(client, held, service, user, change, field):
    body = {"order_id": "o1", "user_id": "u7", "items": items(("p1", 1)), "coupon_ids": []}
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}
    response = await client.post(shop_url("/redemptions"), json=body, headers=service)
    answer = await expect(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")
    assert field in answer["error"]["details"], answer
    assert (await coupon_in_wallet(client, user, held["coupon_id"]))["status"] == "unused"


# --- pure parts ------------------------------------------------------------------------------
def test_a_lock_lapses_at_its_deadline(clock):
    now = clock.now()
    deadline = now - timedelta(minutes=30)
    assert effective_status("locked", deadline, deadline) == "unused"
    assert effective_status("locked", deadline + timedelta(microseconds=1), deadline) == "locked"
    assert effective_status("used", deadline - timedelta(days=1), deadline) == "used"


def test_a_coupon_released_after_its_validity_comes_back_expired(clock):
    now = clock.now()
    assert outcome_on_release(now + timedelta(seconds=1), now) == "returned"
    assert outcome_on_release(now, now) == "expired"


def test_the_lock_timeout_defaults_to_30_minutes_and_has_an_override(tmp_path):
    assert load_settings({}, base_dir=tmp_path).redemption.lock_timeout_minutes == 30
    settings = load_settings({"BFF_REDEMPTION_LOCK_TIMEOUT_MINUTES": "15"}, base_dir=tmp_path)
    assert settings.redemption.lock_timeout_minutes == 15


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("0", "redemption.lock_timeout_minutes must be at least 1"), ("soon", "must be a number")],
)
def test_a_bad_lock_timeout_is_one_clear_line(tmp_path, value, fragment):
    with pytest.raises(ConfigError) as caught:
        load_settings({"BFF_REDEMPTION_LOCK_TIMEOUT_MINUTES": value}, base_dir=tmp_path)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)
