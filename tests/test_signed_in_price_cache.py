"""Signed-in prices: the shop's shared facts cached per process, the user's read fresh.

The shop's active templates, today's issued counts, products and live rows are
kept per process for ``cache.ttl_seconds`` (widgets.coupon_price.facts) and
cleared with the anonymous reply cache: at once in the writing process, through
pub/sub in the others. What is the user's own is never cached.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import timedelta
from http import HTTPStatus
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bff.auth import Role, TokenCodec
from bff.cache import ShopCache
from bff.clock import ManualClock
from bff.coupons.counts import held_per_template
from bff.coupons.wallet import unused_counts
from bff.keys import DB
from tests.conftest import base_settings, expect, mariadb_settings, template_body
from tests.helpers import (
    cancel_order,
    claim_ok,
    confirm_order,
    create_template,
    items,
    put_product,
    redeem_ok,
    set_status,
    shop_url,
    statements,
    two_instances,
)
from widgets.coupon_price.user_facts import read_usable, read_user_facts

NO_THRESHOLD_1000 = {"type": "no_threshold", "amount_off": 1000}


async def price_of(
    client: TestClient, headers: dict[str, str] | None = None, product_id: str = "p1"
) -> dict[str, Any]:
    response = await client.get(shop_url(f"/products/{product_id}"), headers=headers or {})
    return (await expect(response, HTTPStatus.OK))["price"]


def to_claim(price: dict[str, Any]) -> list[int]:
    return [entry["template_id"] for entry in price["coupons"] if entry["needs_claim"]]


def facts_loads(seen: list[str]) -> int:
    """Reads of the shop's active templates (the shared facts' first statement)."""
    return sum(1 for sql in seen if "coupon_templates.status =" in sql)


@pytest.fixture
async def alone(aiohttp_client, make_app, settings, client) -> TestClient:
    """A second app on the same database whose gate is its own (in-process): it hears
    nothing from ``client``'s, like a process whose pub/sub messages were all lost, and
    its own invalidations land before its writes reply (no echo from Redis later on),
    so counting its statements is deterministic. Without a gate shared with ``client``
    it hears none of ``client``'s version bumps either, so it must not keep users' facts
    (cache.user_facts_entries = 0, as config/defaults.toml says for such a layout):
    these tests are of the shop's facts and of prices read fresh
    (tests/test_user_facts_cache.py has the cached ones)."""
    own_gate = settings.replace(
        redis=dataclasses.replace(settings.redis, url=""),
        cache=dataclasses.replace(settings.cache, user_facts_entries=0),
    )
    return await aiohttp_client(make_app(settings=own_gate))


@pytest.fixture
def user(auth: Callable[..., dict[str, str]]) -> dict[str, str]:
    return auth("user", sub="u7")


# --- the same process -------------------------------------------------------------------------
async def test_an_admin_template_change_is_seen_by_a_signed_in_price_at_once(
    client, merchant, make_template, user
):
    await put_product(client, merchant, "p1", 10000)
    template = await make_template(benefit=NO_THRESHOLD_1000)
    assert to_claim(await price_of(client, user)) == [template["id"]]  # now cached
    await set_status(client, merchant, template["id"], "paused")
    assert to_claim(await price_of(client, user)) == []
    await set_status(client, merchant, template["id"], "active")
    assert to_claim(await price_of(client, user)) == [template["id"]]
    larger = await make_template(benefit={"type": "no_threshold", "amount_off": 2500})
    price = await price_of(client, user)
    assert (to_claim(price), price["final_price"]) == ([larger["id"]], 7500)
    await put_product(client, merchant, "p1", 20000)
    assert (await price_of(client, user))["final_price"] == 17500


async def test_the_shared_facts_are_read_once_per_ttl_not_per_request(alone, merchant, auth, clock):
    await put_product(alone, merchant, "p1", 10000)
    await create_template(alone, clock, merchant, benefit=NO_THRESHOLD_1000)
    users = [auth("user", sub=f"u{n}") for n in range(10)]
    with statements(alone) as seen:
        prices = await asyncio.gather(*(price_of(alone, headers) for headers in users))
        assert all(price["final_price"] == 9000 for price in prices)
        assert facts_loads(seen) == 1  # ten concurrent misses, one load
        already = len(seen)
        await price_of(alone, users[0])
        hit = seen[already:]
        assert hit, "the user's own facts are read on every request"
        assert not any("FROM products" in sql or "FROM template_daily" in sql for sql in hit)
        assert facts_loads(seen) == 1
        clock.advance(timedelta(seconds=5))  # past cache.ttl_seconds
        await price_of(alone, users[0])
        assert facts_loads(seen) == 2


async def test_claims_by_others_show_in_a_signed_in_price_within_the_ttl(
    client, merchant, make_template, auth, user, clock
):
    """Stock moves with claims; like the anonymous price, a signed-in one may offer a
    template that just sold out for at most the TTL (its claim is refused)."""
    await put_product(client, merchant, "p1", 10000)
    template = await make_template(benefit=NO_THRESHOLD_1000, stock={"type": "limited", "total": 1})
    assert to_claim(await price_of(client, user)) == [template["id"]]
    await claim_ok(client, auth("user", sub="u9"), template["id"])
    clock.advance(timedelta(seconds=5))
    price = await price_of(client, user)
    assert (price["final_price"], price["coupons"]) == (10000, [])


async def test_a_new_product_and_a_live_room_are_seen_at_once(client, merchant, user, clock):
    await expect(await client.get(shop_url("/products/p2"), headers=user), HTTPStatus.NOT_FOUND)
    await put_product(client, merchant, "p2", 10000)
    assert (await price_of(client, user, "p2"))["final_price"] == 10000
    now = clock.now()
    room = {
        "items": [
            {
                "product_id": "p2",
                "exclusive_price": 6000,
                "starts_at": (now - timedelta(hours=1)).isoformat(),
                "ends_at": (now + timedelta(hours=1)).isoformat(),
            }
        ]
    }
    url = shop_url("/products/p2")
    live = await expect(
        await client.get(url, params={"live_room_id": "r1"}, headers=user), HTTPStatus.OK
    )
    assert live["price"]["exclusive_price"] is None
    response = await client.put(
        shop_url("/admin/live-rooms/r1/prices"), json=room, headers=merchant
    )
    await expect(response, HTTPStatus.OK)
    live = await expect(
        await client.get(url, params={"live_room_id": "r1"}, headers=user), HTTPStatus.OK
    )
    assert live["price"]["exclusive_price"] == 6000


async def test_a_load_that_began_before_a_clear_is_not_served_to_later_requests():
    cache: ShopCache[str] = ShopCache(60, ManualClock())
    release = asyncio.Event()

    async def old() -> str:
        await release.wait()
        return "old"

    async def new() -> str:
        return "new"

    before = asyncio.ensure_future(cache.cached("s1", "day", old))
    await asyncio.sleep(0)
    cache.clear_shop("s1")  # an admin write lands while the load is running
    after = await cache.cached("s1", "day", new)
    release.set()
    assert (await before, after) == ("old", "new")
    assert cache.get("s1", "day") == "new"


# --- two processes ----------------------------------------------------------------------------
@pytest.fixture
async def two_apps(aiohttp_client, tmp_path):
    settings = await mariadb_settings(base_settings())
    clock = ManualClock()
    reader, writer = await two_instances(aiohttp_client, settings, clock, tmp_path)
    codec = TokenCodec(settings.jwt, clock)
    merchant = {"Authorization": "Bearer " + codec.mint("m1", Role.MERCHANT, "s1")[0]}
    user = {"Authorization": "Bearer " + codec.mint("u7", Role.USER, None)[0]}
    return reader, writer, merchant, user, clock


async def eventually(check: Callable[[], Any]) -> None:
    """The clock stands still, so only the invalidation message can clear the reader."""
    for _ in range(50):
        if await check():
            return
        await asyncio.sleep(0.02)
    assert await check()


async def test_a_template_change_in_one_process_reaches_signed_in_prices_in_another(two_apps):
    reader, writer, merchant, user, clock = two_apps
    await put_product(writer, merchant, "p1", 10000)
    response = await writer.post(
        shop_url("/admin/coupon-templates"),
        json=template_body(clock, benefit=NO_THRESHOLD_1000),
        headers=merchant,
    )
    template = await expect(response, HTTPStatus.CREATED)
    await asyncio.sleep(0.2)  # let both subscriptions settle
    assert to_claim(await price_of(reader, user)) == [template["id"]]  # cached in the reader
    await set_status(writer, merchant, template["id"], "paused")

    async def paused() -> bool:
        return to_claim(await price_of(reader, user)) == []

    await eventually(paused)
    await put_product(writer, merchant, "p1", 8000)

    async def repriced() -> bool:
        return (await price_of(reader, user))["final_price"] == 8000

    await eventually(repriced)


# --- the user's own facts: one statement, never cached ------------------------------------------
@pytest.fixture
def service(auth: Callable[..., dict[str, str]]) -> dict[str, str]:
    return auth("service", shop="s1", sub="order-system")


async def preview_coupons(client: TestClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = await client.post(
        shop_url("/checkout/preview"), json={"items": items(("p1", 1))}, headers=headers
    )
    return (await expect(response, HTTPStatus.OK))["coupons"]


async def test_a_users_own_claim_shows_in_their_next_price_at_once(
    client, merchant, make_template, user
):
    await put_product(client, merchant, "p1", 10000)
    template = await make_template(benefit=NO_THRESHOLD_1000, per_user_limit=2)
    assert to_claim(await price_of(client, user)) == [template["id"]]
    coupon = await claim_ok(client, user, template["id"])
    price = await price_of(client, user)
    assert price["coupons"] == [
        {"coupon_id": coupon["coupon_id"], "needs_claim": False, "discount": 1000}
    ]
    await claim_ok(client, user, template["id"])  # the second of two: nothing left to claim
    price = await price_of(client, user)
    assert to_claim(price) == [] and len(price["coupons"]) == 1, price


async def test_joining_and_leaving_show_at_once(client, merchant, make_template, user):
    await put_product(client, merchant, "p1", 10000)
    template = await make_template(benefit=NO_THRESHOLD_1000, audience={"type": "members"})
    assert to_claim(await price_of(client, user)) == []
    await expect(
        await client.post(shop_url("/membership"), json={}, headers=user), HTTPStatus.CREATED
    )
    assert to_claim(await price_of(client, user)) == [template["id"]]
    response = await client.delete(shop_url("/membership"), headers=user)
    assert response.status == HTTPStatus.NO_CONTENT
    assert to_claim(await price_of(client, user)) == []


async def test_after_taking_one_exclusive_the_others_are_not_offered(
    client, merchant, make_template, user
):
    await put_product(client, merchant, "p1", 10000)
    smaller = await make_template(
        benefit={"type": "no_threshold", "amount_off": 500}, new_member_exclusive=True
    )
    larger = await make_template(benefit=NO_THRESHOLD_1000, new_member_exclusive=True)
    await expect(
        await client.post(shop_url("/membership"), json={}, headers=user), HTTPStatus.CREATED
    )
    assert to_claim(await price_of(client, user)) == [larger["id"]]
    coupon = await claim_ok(client, user, smaller["id"])
    # The larger one would beat the held 5.00 off, but one exclusive per member, ever.
    assert (await price_of(client, user))["coupons"] == [
        {"coupon_id": coupon["coupon_id"], "needs_claim": False, "discount": 500}
    ]


async def test_a_lapsed_lock_reads_as_unused(client, merchant, make_template, user, service, clock):
    await put_product(client, merchant, "p1", 10000)
    template = await make_template(benefit=NO_THRESHOLD_1000)
    coupon = await claim_ok(client, user, template["id"])
    held = [{"coupon_id": coupon["coupon_id"], "needs_claim": False, "discount": 1000}]
    await redeem_ok(client, service, "o1", "u7", items(("p1", 1)), [coupon["coupon_id"]])
    price = await price_of(client, user)
    assert price["coupons"] == [], price  # locked by o1, and the one per user is taken
    assert await preview_coupons(client, user) == []
    clock.advance(timedelta(minutes=30))  # redemption.lock_timeout_minutes: the lock lapsed
    assert (await price_of(client, user))["coupons"] == held
    assert await preview_coupons(client, user) == [
        {"coupon_id": coupon["coupon_id"], "discount": 1000}
    ]


async def test_a_locked_coupon_counts_against_the_wallet_cap(client_with, make_app, auth, clock):
    client = await client_with(wallet={"max_unused_per_shop": 1})
    merchant = auth("merchant", shop="s1", sub="m1")
    user, service = auth("user", sub="u7"), auth("service", shop="s1", sub="order-system")
    await put_product(client, merchant, "p1", 10000)
    first = await create_template(client, clock, merchant, benefit=NO_THRESHOLD_1000)
    second = await create_template(client, clock, merchant, benefit=NO_THRESHOLD_1000)
    coupon = await claim_ok(client, user, first["id"])
    assert to_claim(await price_of(client, user)) == []  # the wallet is full
    await redeem_ok(client, service, "o1", "u7", items(("p1", 1)), [coupon["coupon_id"]])
    assert to_claim(await price_of(client, user)) == []  # a lock still counts
    await expect(await cancel_order(client, service, "o1"), HTTPStatus.OK)
    await redeem_ok(client, service, "o2", "u7", items(("p1", 1)), [coupon["coupon_id"]])
    await expect(await confirm_order(client, service, "o2"), HTTPStatus.OK)
    assert to_claim(await price_of(client, user)) == [second["id"]]  # used: room again


@pytest.mark.parametrize("status", ["paused", "ended"])
async def test_a_held_coupon_whose_template_left_the_active_set_still_prices(
    alone, merchant, user, clock, status
):
    await put_product(alone, merchant, "p1", 10000)
    template = await create_template(alone, clock, merchant, benefit=NO_THRESHOLD_1000)
    coupon = await claim_ok(alone, user, template["id"])
    held = [{"coupon_id": coupon["coupon_id"], "needs_claim": False, "discount": 1000}]
    assert (await price_of(alone, user))["coupons"] == held
    await set_status(alone, merchant, template["id"], status)
    with statements(alone) as seen:
        assert (await price_of(alone, user))["coupons"] == held
        assert await preview_coupons(alone, user) == [
            {"coupon_id": coupon["coupon_id"], "discount": 1000}
        ]
        assert (await price_of(alone, user))["coupons"] == held
    spec_reads = [sql for sql in seen if "coupon_templates.spec" in sql and "IN (" in sql]
    assert (len(spec_reads), facts_loads(seen)) == (1, 1), seen  # remembered with the facts


async def test_the_python_rules_agree_with_the_sql_ones_on_every_coupon_state(
    client, merchant, make_template, user, service, auth, clock
):
    """The one-statement read derives usable coupons, held counts and the wallet's count
    in Python; they must be what unused_now, held_per_template and unused_counts say."""
    await put_product(client, merchant, "p1", 10000)
    short = await make_template(
        validity={"type": "relative", "effective_after_days": 0, "valid_days": 1}
    )
    await claim_ok(client, user, short["id"])  # expired once the clock moves on
    clock.advance(timedelta(days=2))
    merchant = auth("merchant", shop="s1", sub="m1")  # tokens minted before would expire
    user, service = auth("user", sub="u7"), auth("service", shop="s1", sub="order-system")
    many = await create_template(
        client, clock, merchant, benefit=NO_THRESHOLD_1000, per_user_limit=10
    )
    later = await create_template(
        client,
        clock,
        merchant,
        validity={"type": "relative", "effective_after_days": 1, "valid_days": 7},
    )
    await claim_ok(client, user, later["id"])  # not yet valid
    ids = [(await claim_ok(client, user, many["id"]))["coupon_id"] for _ in range(5)]
    await claim_ok(client, auth("user", sub="u8"), many["id"])  # someone else's
    unused, lapsed, locked, used, revoked = ids
    await redeem_ok(client, service, "o-lapsed", "u7", items(("p1", 1)), [lapsed])
    clock.advance(timedelta(minutes=31))
    service = auth("service", shop="s1", sub="order-system")
    await redeem_ok(client, service, "o-locked", "u7", items(("p1", 1)), [locked])
    await redeem_ok(client, service, "o-used", "u7", items(("p1", 1)), [used])
    await expect(await confirm_order(client, service, "o-used"), HTTPStatus.OK)
    merchant = auth("merchant", shop="s1", sub="m1")
    response = await client.post(shop_url(f"/admin/coupons/{revoked}/revoke"), headers=merchant)
    await expect(response, HTTPStatus.OK)

    now = clock.now()
    deadline = now - timedelta(minutes=30)
    templates = [short["id"], many["id"], later["id"]]

    async def both(conn: Any) -> tuple[Any, ...]:
        held, facts = await read_user_facts(conn, "s1", "u7", now, deadline)
        usable = await read_usable(conn, "s1", "u7", now, deadline)
        counts = await held_per_template(conn, "s1", "u7", templates)
        in_wallet = (await unused_counts(conn, "s1", ["u7"], now)).get("u7", 0)
        return held, facts, usable, counts, in_wallet

    held, facts, usable, counts, in_wallet = await client.app[DB].read(both)
    assert sorted(c.coupon_id for c in held) == sorted(c.coupon_id for c in usable)
    assert sorted(c.coupon_id for c in held) == sorted([unused, lapsed])
    assert facts.held_counts == counts == {short["id"]: 1, many["id"]: 5, later["id"]: 1}
    # unused, the lapsed lock (still stored as locked), the live lock, the one not yet valid
    assert facts.unused == in_wallet == 4
    assert (facts.member, facts.took_exclusive) == (None, False)


# --- a process that missed the invalidation message ---------------------------------------------
async def test_the_users_own_writes_reach_a_process_that_missed_every_message(
    client, alone, merchant, make_template, user
):
    await put_product(client, merchant, "p1", 10000)
    template = await make_template(benefit=NO_THRESHOLD_1000, per_user_limit=2)
    members_only = await make_template(
        benefit={"type": "no_threshold", "amount_off": 3000}, audience={"type": "members"}
    )
    assert to_claim(await price_of(alone, user)) == [template["id"]]  # the shop's facts cached
    coupon = await claim_ok(client, user, template["id"])
    price = await price_of(alone, user)
    assert price["coupons"] == [
        {"coupon_id": coupon["coupon_id"], "needs_claim": False, "discount": 1000}
    ]
    await expect(
        await client.post(shop_url("/membership"), json={}, headers=user), HTTPStatus.CREATED
    )
    assert to_claim(await price_of(alone, user)) == [members_only["id"]]


async def test_an_order_is_priced_on_its_own_transaction_not_the_cached_catalog(
    client, alone, merchant, make_template, user, service, clock
):
    await put_product(client, merchant, "p1", 30000)
    template = await make_template()  # 满299减50
    coupon = await claim_ok(client, user, template["id"])
    assert (await price_of(alone, user))["final_price"] == 25000  # p1 cached in ``alone``
    await put_product(client, merchant, "p1", 40000)
    # Within the TTL ``alone`` may still show the old price: it missed the message...
    assert (await price_of(alone, user))["final_price"] == 25000
    # ...but an order it locks is priced as its transaction reads the product.
    body = await redeem_ok(alone, service, "o1", "u7", items(("p1", 1)), [coupon["coupon_id"]])
    assert (body["total"], body["payable"]) == (40000, 35000), body
    clock.advance(timedelta(seconds=5))  # past cache.ttl_seconds
    assert (await price_of(alone, user))["final_price"] == 40000
