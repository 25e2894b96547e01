"""Signed-in prices: the shop's shared facts cached per process, the user's read fresh.

The shop's active templates, today's issued counts, products and live rows are
kept per process for ``cache.ttl_seconds`` (widgets.coupon_price.facts) and
cleared with the anonymous reply cache: at once in the writing process, through
pub/sub in the others. What is the user's own is never cached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from http import HTTPStatus
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import event

from bff.app import create_app
from bff.auth import Role, TokenCodec
from bff.cache import ShopCache
from bff.clock import ManualClock
from bff.keys import DB
from tests.conftest import base_settings, expect, mariadb_settings, template_body
from tests.helpers import claim_ok, put_product, set_status, shop_url

NO_THRESHOLD_1000 = {"type": "no_threshold", "amount_off": 1000}


async def price_of(
    client: TestClient, headers: dict[str, str] | None = None, product_id: str = "p1"
) -> dict[str, Any]:
    response = await client.get(shop_url(f"/products/{product_id}"), headers=headers or {})
    return (await expect(response, HTTPStatus.OK))["price"]


def to_claim(price: dict[str, Any]) -> list[int]:
    return [entry["template_id"] for entry in price["coupons"] if entry["needs_claim"]]


@contextmanager
def statements(client: TestClient) -> Iterator[list[str]]:
    """The SQL the app sends while the block runs (observed, not replaced)."""
    seen: list[str] = []
    engine = client.app[DB].engine.sync_engine

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def template_reads(seen: list[str]) -> int:
    return sum(1 for sql in seen if "FROM coupon_templates" in sql)


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


async def test_the_shared_facts_are_read_once_per_ttl_not_per_request(
    client, merchant, make_template, auth, clock
):
    await put_product(client, merchant, "p1", 10000)
    await make_template(benefit=NO_THRESHOLD_1000)
    users = [auth("user", sub=f"u{n}") for n in range(10)]
    with statements(client) as seen:
        prices = await asyncio.gather(*(price_of(client, headers) for headers in users))
        assert all(price["final_price"] == 9000 for price in prices)
        assert template_reads(seen) == 1  # ten concurrent misses, one load
        already = len(seen)
        await price_of(client, users[0])
        hit = seen[already:]
        assert hit, "the user's own facts are read on every request"
        assert not any("FROM products" in sql or "FROM template_daily" in sql for sql in hit)
        assert template_reads(seen) == 1
        clock.advance(timedelta(seconds=5))  # past cache.ttl_seconds
        await price_of(client, users[0])
        assert template_reads(seen) == 2


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
    reader = await aiohttp_client(create_app(settings, clock=clock, base_dir=tmp_path))
    writer = await aiohttp_client(create_app(settings, clock=clock, base_dir=tmp_path))
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
