"""A cached signed-in price never shows a coupon the user no longer holds, nor misses one
just claimed (issue 16).

Each user's pricing facts are kept per process while their version in the gate
stands (widgets/coupon_price/user_cache.py, bff/versions.py). Every test warms
the cache with a product read and a list price read, makes one write (or moves
the clock), and reads both again at once: they must show the new facts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from bff.auth import Role, TokenCodec
from bff.clock import ManualClock
from bff.keys import PRICES
from tests.conftest import REDIS_URL, base_settings, expect, mariadb_settings
from tests.helpers import (
    cancel_order,
    claim_ok,
    confirm_order,
    create_template,
    enrol,
    grant_ok,
    items,
    new_request_id,
    put_product,
    redeem_ok,
    shop_url,
    statements,
    two_instances,
)
from tests.proxy import TcpProxy
from widgets.coupon_price.user_cache import Entry, UserFactsCache
from widgets.coupon_price.user_facts import UserFacts, next_change

OFF_1000 = {"type": "no_threshold", "amount_off": 1000}
Auth = Callable[..., dict[str, str]]


@pytest.fixture
def user(auth: Auth) -> dict[str, str]:
    return auth("user", sub="u7")


@pytest.fixture
def service(auth: Auth) -> dict[str, str]:
    return auth("service", shop="s1", sub="orders")


@pytest.fixture
async def shop(client: TestClient, merchant: dict[str, str]) -> None:
    await put_product(client, merchant, "p1", 30000)


async def product_price(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.get(shop_url("/products/p1"), headers=headers)
    return (await expect(response, HTTPStatus.OK))["price"]


async def list_price(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.post(
        shop_url("/prices"), json={"items": items(("p1", 1))}, headers=headers
    )
    body = await expect(response, HTTPStatus.OK)
    assert [entry["product_id"] for entry in body["items"]] == ["p1"], body
    return body["items"][0]["price"]


async def seen(client: TestClient, headers: dict[str, str]) -> tuple[list[int], list[int]]:
    """(held coupon ids, template ids to claim) the price uses, the same in both reads."""
    product, listed = await product_price(client, headers), await list_price(client, headers)
    assert product == listed
    held = sorted(c["coupon_id"] for c in product["coupons"] if not c["needs_claim"])
    to_claim = sorted(c["template_id"] for c in product["coupons"] if c["needs_claim"])
    return held, to_claim


async def warm(client: TestClient, headers: dict[str, str]) -> tuple[list[int], list[int]]:
    """Read twice: the second read is the cached one (asserted by the statements test)."""
    await seen(client, headers)
    return await seen(client, headers)


# --- each writer, followed at once by a read ---------------------------------------------------
async def test_a_read_of_unchanged_facts_touches_no_table(client, shop, make_template, user):
    template = await make_template(benefit=OFF_1000)
    await claim_ok(client, user, template["id"])
    await seen(client, user)
    with statements(client) as sql:
        await seen(client, user)
    assert sql == []
    assert len(client.app[PRICES].users) == 1


async def test_claim(client, shop, make_template, user):
    template = await make_template(benefit=OFF_1000)
    assert await warm(client, user) == ([], [template["id"]])
    coupon = await claim_ok(client, user, template["id"])
    assert await seen(client, user) == ([coupon["coupon_id"]], [])


async def test_lock_cancel_lock_confirm(client, shop, make_template, user, service):
    template = await make_template(benefit=OFF_1000)
    coupon = (await claim_ok(client, user, template["id"]))["coupon_id"]
    assert await warm(client, user) == ([coupon], [])
    await redeem_ok(client, service, "o1", "u7", items(("p1", 1)), [coupon])
    assert await seen(client, user) == ([], [])  # locked: not usable, and the limit is reached
    await expect(await cancel_order(client, service, "o1"), HTTPStatus.OK)
    assert await seen(client, user) == ([coupon], [])
    await redeem_ok(client, service, "o2", "u7", items(("p1", 1)), [coupon])
    assert await seen(client, user) == ([], [])
    await expect(await confirm_order(client, service, "o2"), HTTPStatus.OK)
    assert await seen(client, user) == ([], [])
    await expect(await cancel_order(client, service, "o2"), HTTPStatus.OK)  # given back
    assert await seen(client, user) == ([coupon], [])


async def test_revoke(client, shop, make_template, merchant, user):
    template = await make_template(benefit=OFF_1000)
    coupon = (await claim_ok(client, user, template["id"]))["coupon_id"]
    assert await warm(client, user) == ([coupon], [])
    response = await client.post(shop_url(f"/admin/coupons/{coupon}/revoke"), headers=merchant)
    await expect(response, HTTPStatus.OK)
    assert await seen(client, user) == ([], [])


async def test_grant(client, shop, make_template, merchant, user):
    template = await make_template(benefit=OFF_1000)
    assert await warm(client, user) == ([], [template["id"]])
    granted = await grant_ok(client, merchant, template["id"], ["u7"])
    assert await seen(client, user) == ([granted[0]["coupon_id"]], [])


async def test_gift_pack_claim(client, shop, make_template, merchant, clock, user):
    template = await make_template(benefit=OFF_1000, claim_methods=["gift_pack"])
    pack = {
        "kind": "new_member",
        "name": "新会员礼包",
        "starts_at": (clock.now() - timedelta(hours=1)).isoformat(),
        "ends_at": (clock.now() + timedelta(days=10)).isoformat(),
        "coupon_template_ids": [template["id"]],
    }
    created = await expect(
        await client.post(shop_url("/admin/gift-packs"), json=pack, headers=merchant),
        HTTPStatus.CREATED,
    )
    await expect(await client.post(shop_url("/membership"), json={}, headers=user), 201)
    assert await warm(client, user) == ([], [])
    response = await client.post(
        shop_url(f"/gift-packs/{created['id']}/claim"),
        json={"request_id": new_request_id()},
        headers=user,
    )
    claimed = await expect(response, HTTPStatus.CREATED)
    assert await seen(client, user) == ([claimed["coupons"][0]["coupon_id"]], [])


async def test_points_exchange(client, shop, make_template, merchant, user):
    points = await make_template(
        benefit={"type": "threshold", "amount_off": 5500, "threshold": 29900},
        claim_methods=["points"],
    )
    offer = await expect(
        await client.post(
            shop_url("/admin/exchange-offers"),
            json={"template_id": points["id"], "points_cost": 300},
            headers=merchant,
        ),
        HTTPStatus.CREATED,
    )
    await enrol(client, merchant, "u7", 0)
    body = {"delta": 1000, "reason": "购物奖励", "request_id": new_request_id()}
    response = await client.post(shop_url("/admin/members/u7/points"), json=body, headers=merchant)
    await expect(response, HTTPStatus.OK)
    assert await warm(client, user) == ([], [])
    response = await client.post(
        shop_url(f"/points-exchange/{offer['id']}/redeem"),
        json={"request_id": new_request_id()},
        headers=user,
    )
    exchanged = await expect(response, HTTPStatus.CREATED)
    assert await seen(client, user) == ([exchanged["coupon"]["coupon_id"]], [])


async def test_membership_join_leave_and_level(client, shop, make_template, merchant, user):
    members = await make_template(benefit=OFF_1000, audience={"type": "members"})
    level_2 = await make_template(
        benefit={"type": "no_threshold", "amount_off": 2000},
        audience={"type": "members", "min_level": 2},
    )
    assert await warm(client, user) == ([], [])
    await expect(await client.post(shop_url("/membership"), json={}, headers=user), 201)
    assert await seen(client, user) == ([], [members["id"]])
    await enrol(client, merchant, "u7", 2)  # the merchant's PUT
    # Level 2 is offered now (the engine picks the best of the two, or both).
    offered = (await seen(client, user))[1]
    assert level_2["id"] in offered
    await enrol(client, merchant, "u7", 0)
    assert await seen(client, user) == ([], [members["id"]])
    response = await client.delete(shop_url("/membership"), headers=user)
    assert response.status == HTTPStatus.NO_CONTENT
    assert await seen(client, user) == ([], [])


# --- time alone ---------------------------------------------------------------------------------
async def test_a_coupon_expiring(client, shop, make_template, auth, clock):
    user = auth("user", sub="u7")
    template = await make_template(benefit=OFF_1000)  # valid 7 days from the claim
    coupon = await claim_ok(client, user, template["id"])
    assert await warm(client, user) == ([coupon["coupon_id"]], [])
    clock.advance(timedelta(days=7) - timedelta(seconds=1))
    user = auth("user", sub="u7")  # a token minted after the clock moved
    assert await seen(client, user) == ([coupon["coupon_id"]], [])
    clock.advance(timedelta(seconds=1))  # at valid_to
    assert await seen(client, user) == ([], [])


async def test_a_coupon_becoming_valid(client, shop, make_template, auth, clock):
    user = auth("user", sub="u7")
    template = await make_template(
        benefit=OFF_1000, validity={"type": "relative", "effective_after_days": 1, "valid_days": 7}
    )
    coupon = await claim_ok(client, user, template["id"])
    assert await warm(client, user) == ([], [])
    clock.advance(timedelta(days=1))  # at valid_from
    user = auth("user", sub="u7")
    assert await seen(client, user) == ([coupon["coupon_id"]], [])


async def test_a_lock_lapsing(client, shop, make_template, user, service, clock):
    template = await make_template(benefit=OFF_1000)
    coupon = (await claim_ok(client, user, template["id"]))["coupon_id"]
    await redeem_ok(client, service, "o1", "u7", items(("p1", 1)), [coupon])
    assert await warm(client, user) == ([], [])
    clock.advance(timedelta(minutes=30))  # redemption.lock_timeout_minutes
    assert await seen(client, user) == ([coupon], [])


def test_next_change_is_the_first_moment_time_changes_the_facts(clock):
    now = clock.now()
    hour, timeout = timedelta(hours=1), timedelta(minutes=30)

    def row(status: str, starts: Any, ends: Any, updated: Any = now) -> tuple[Any, ...]:
        return (None, None, None, 1, 1, status, starts, ends, updated)

    assert next_change([(None,) * 9], now, timeout) is None  # no coupons
    assert next_change([row("used", now + hour, now + 2 * hour)], now, timeout) is None
    assert next_change([row("unused", now - hour, now + 2 * hour)], now, timeout) == now + 2 * hour
    assert next_change([row("unused", now + hour, now + 2 * hour)], now, timeout) == now + hour
    locked = row("locked", now - hour, now + 2 * hour, now - timedelta(minutes=10))
    assert next_change([locked], now, timeout) == now + timedelta(minutes=20)
    lapsed = row("locked", now - hour, now + 2 * hour, now - hour)
    assert next_change([lapsed, row("unused", now, now + 3 * hour)], now, timeout) == now + 2 * hour


def test_the_cache_is_bounded_in_entries_and_bytes(clock):
    now = clock.now()

    def entry(held: int = 0) -> Entry:
        facts = UserFacts({}, 0, None, False)
        return Entry("v", [(object(), {})] * held, facts, now, now + timedelta(hours=1))  # type: ignore[list-item]

    cache = UserFactsCache(max_entries=3, max_bytes=10**9)
    for n in range(5):
        cache.put("s1", f"u{n}", entry())
    assert len(cache) == 3
    assert cache.get("s1", "u0", "v", now) is None and cache.get("s1", "u4", "v", now) is not None
    small = UserFactsCache(max_entries=1000, max_bytes=5 * entry().size + 5 * 1000)
    for n in range(20):
        small.put("s1", f"u{n}", entry(held=2))
    assert small.bytes <= small.max_bytes and len(small) < 20
    assert small.get("s1", "u19", "v", now) is not None
    assert small.get("s1", "u19", "other", now) is None  # a new version: gone
    assert small.get("s1", "u18", "v", now + timedelta(hours=1)) is None  # expired


# --- two processes on MariaDB + Redis -----------------------------------------------------------
@pytest.fixture
async def two_apps(aiohttp_client, tmp_path):
    settings = await mariadb_settings(base_settings())
    clock = ManualClock()
    first, second = await two_instances(aiohttp_client, settings, clock, tmp_path)
    codec = TokenCodec(settings.jwt, clock)
    merchant = {"Authorization": "Bearer " + codec.mint("m1", Role.MERCHANT, "s1")[0]}
    user = {"Authorization": "Bearer " + codec.mint("u7", Role.USER, None)[0]}
    service = {"Authorization": "Bearer " + codec.mint("orders", Role.SERVICE, "s1")[0]}
    await put_product(first, merchant, "p1", 30000)
    template = await create_template(first, clock, merchant, benefit=OFF_1000)
    return first, second, user, service, template["id"]


async def test_a_write_through_one_instance_is_seen_at_once_by_another(two_apps):
    writer, reader, user, service, template_id = two_apps
    assert await warm(reader, user) == ([], [template_id])
    coupon = (await claim_ok(writer, user, template_id))["coupon_id"]
    assert await seen(reader, user) == ([coupon], [])
    await redeem_ok(writer, service, "o1", "u7", items(("p1", 1)), [coupon])
    assert await seen(reader, user) == ([], [])
    await expect(await cancel_order(writer, service, "o1"), HTTPStatus.OK)
    assert await seen(reader, user) == ([coupon], [])


async def test_versions_lost_in_the_gate_read_as_new_not_unchanged(two_apps):
    writer, reader, user, _service, template_id = two_apps
    assert await warm(reader, user) == ([], [template_id])
    redis = aioredis.Redis.from_url(REDIS_URL)
    try:
        await redis.flushdb()  # the reader's version is gone...
        coupon = (await claim_ok(writer, user, template_id))["coupon_id"]
        await redis.flushdb()  # ...and so is the writer's bump
    finally:
        await redis.aclose()
    assert await seen(reader, user) == ([coupon], [])


# --- Redis down ---------------------------------------------------------------------------------
@pytest.fixture
async def cut_redis(
    aiohttp_client, make_app, tmp_path
) -> AsyncIterator[tuple[TestClient, TcpProxy]]:
    """The app on MariaDB and on Redis behind a proxy the test can cut."""
    settings = await mariadb_settings(base_settings())
    target = urlsplit(REDIS_URL)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379)
    await proxy.start()
    url = REDIS_URL.replace(f":{target.port}/", f":{proxy.port}/")
    settings = settings.replace(
        redis=dataclasses.replace(settings.redis, url=url, socket_timeout_seconds=1)
    )
    client = await aiohttp_client(make_app(settings=settings))
    try:
        yield client, proxy
    finally:
        await client.close()
        await proxy.stop()


async def test_with_redis_down_a_signed_in_price_reads_the_database(
    cut_redis, merchant, make_template, user, auth, clock
):
    client, proxy = cut_redis
    merchant = auth("merchant", shop="s1", sub="m1")
    await put_product(client, merchant, "p1", 30000)
    template = await create_template(client, clock, merchant, benefit=OFF_1000)
    coupon = (await claim_ok(client, user, template["id"]))["coupon_id"]
    assert await warm(client, user) == ([coupon], [])
    await proxy.stop()
    # Revoking needs no gate: it commits, and its bump fails.
    response = await client.post(shop_url(f"/admin/coupons/{coupon}/revoke"), headers=merchant)
    await expect(response, HTTPStatus.OK)
    assert await seen(client, user) == ([], [])  # from the database, not the cache
    await proxy.start()  # the gate back: a fresh read, or the database during the 1 s pause
    assert await seen(client, user) == ([], [])
