"""The hot-read cache: same bytes for everyone, cleared by admin writes in every process."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from http import HTTPStatus

import pytest

from bff.auth import Role, TokenCodec
from bff.clock import ManualClock
from tests.conftest import base_settings, expect, mariadb_settings
from tests.helpers import claim_ok, put_product, two_instances

BASE = "/api/v1/shops/s1"


async def test_anonymous_replies_are_cached_and_cleared_by_a_write(client, merchant):
    await put_product(client, merchant, "p1", 10000, title="cup")
    first = await client.get(f"{BASE}/products/p1")
    second = await client.get(f"{BASE}/products/p1")
    assert await first.read() == await second.read()
    await put_product(client, merchant, "p1", 9000, title="cup")
    body = await expect(await client.get(f"{BASE}/products/p1"), HTTPStatus.OK)
    assert body["price"]["final_price"] == 9000


@pytest.fixture
async def two_apps(aiohttp_client, tmp_path):
    settings = await mariadb_settings(base_settings())
    clock = ManualClock()
    reader, writer = await two_instances(aiohttp_client, settings, clock, tmp_path)
    token, _ = TokenCodec(settings.jwt, clock).mint("m1", Role.MERCHANT, "s1")
    return reader, writer, {"Authorization": f"Bearer {token}"}


async def test_a_write_in_one_process_clears_the_other_processes_cache(two_apps):
    reader, writer, merchant = two_apps
    await put_product(writer, merchant, "p1", 10000, title="cup")
    await asyncio.sleep(0.2)  # let both subscriptions settle
    body = await expect(await reader.get(f"{BASE}/products/p1"), HTTPStatus.OK)
    assert body["price"]["final_price"] == 10000  # now cached in the reader
    await put_product(writer, merchant, "p1", 8000, title="cup")
    # The clock stands still, so only the invalidation message can clear the reader.
    for _ in range(50):
        body = await expect(await reader.get(f"{BASE}/products/p1"), HTTPStatus.OK)
        if body["price"]["final_price"] == 8000:
            break
        await asyncio.sleep(0.02)
    assert body["price"]["final_price"] == 8000


async def test_cache_builds_once_for_concurrent_misses_and_drops_builds_older_than_a_clear():
    from bff.cache import ReplyCache

    cache = ReplyCache(60, ManualClock())
    calls = 0
    release = asyncio.Event()

    async def build() -> bytes:
        nonlocal calls
        calls += 1
        await release.wait()
        return b"old"

    waiting = [asyncio.ensure_future(cache.cached("s1", "k", build)) for _ in range(5)]
    await asyncio.sleep(0)
    cache.clear_shop("s1")  # an admin write lands while the build is running
    release.set()
    assert await asyncio.gather(*waiting) == [b"old"] * 5
    assert calls == 1
    assert cache.get("s1", "k") is None  # the pre-write build was not kept


# --- the raw-request key: cached bytes before any parsing ---------------------------------
async def test_a_raw_request_replays_cached_bytes_but_never_an_error(client, merchant):
    await put_product(client, merchant, "p1", 10000, title="cup")
    url = f"{BASE}/products/p1?quantity=2"
    first = await expect(await client.get(url), HTTPStatus.OK)
    assert await (await client.get(url)).read() == await (await client.get(url)).read()
    assert first["price"]["final_price"] == 20000
    for _ in range(2):  # an invalid query is refused every time, never served from a cache
        await expect(
            await client.get(f"{BASE}/products/p1?quantity=abc"),
            HTTPStatus.BAD_REQUEST,
            "VALIDATION_FAILED",
        )
        await expect(await client.get(f"{BASE}/products/nope"), HTTPStatus.NOT_FOUND)
    # A write clears the raw entries with the others: the same raw request sees the new price.
    await put_product(client, merchant, "p1", 9000, title="cup")
    body = await expect(await client.get(url), HTTPStatus.OK)
    assert body["price"]["final_price"] == 18000


async def test_list_prices_are_cached_by_the_exact_body_and_bad_bodies_stay_refused(
    client, merchant
):
    await put_product(client, merchant, "p1", 10000, title="cup")
    compact = b'{"items":[{"product_id":"p1","quantity":1}]}'
    spaced = b'{"items": [ {"product_id": "p1", "quantity": 1} ]}'
    headers = {"Content-Type": "application/json"}
    replies = [
        await expect(await client.post(f"{BASE}/prices", data=raw, headers=headers), HTTPStatus.OK)
        for raw in (compact, compact, spaced, spaced)
    ]
    assert all(reply == replies[0] for reply in replies)
    assert replies[0]["items"][0]["price"]["final_price"] == 10000
    too_many = {"items": [{"product_id": f"p{n}", "quantity": 1} for n in range(51)]}
    for _ in range(2):
        await expect(
            await client.post(f"{BASE}/prices", json=too_many),
            HTTPStatus.BAD_REQUEST,
            "VALIDATION_FAILED",
        )
    await put_product(client, merchant, "p1", 7000, title="cup")
    body = await expect(
        await client.post(f"{BASE}/prices", data=compact, headers=headers), HTTPStatus.OK
    )
    assert body["items"][0]["price"]["final_price"] == 7000


async def test_a_signed_in_caller_never_gets_the_anonymous_cached_reply(
    client, merchant, make_template, auth
):
    await put_product(client, merchant, "p1", 40000, title="cup")
    template = await make_template()
    user = auth("user", sub="u1")
    anonymous = await expect(await client.get(f"{BASE}/products/p1"), HTTPStatus.OK)
    assert anonymous["price"]["coupons"][0]["needs_claim"] is True  # now cached
    coupon = await claim_ok(client, user, template["id"])
    signed_in = await expect(await client.get(f"{BASE}/products/p1", headers=user), HTTPStatus.OK)
    assert signed_in["price"]["coupons"] == [
        {"coupon_id": coupon["coupon_id"], "needs_claim": False, "discount": 5000}
    ]


async def test_a_raw_alias_lives_and_dies_with_its_entry():
    from bff.cache import ReplyCache

    clock = ManualClock()
    cache = ReplyCache(1.0, clock)

    async def build() -> bytes:
        return b"reply"

    assert await cache.cached("s1", "k", build, alias="raw|a") == b"reply"
    assert await cache.cached("s1", "k", build, alias="raw|b") == b"reply"  # a hit aliases too
    assert cache.get("s1", "raw|a") == cache.get("s1", "raw|b") == b"reply"
    clock.advance(timedelta(seconds=2))
    assert cache.get("s1", "raw|a") is None  # expires with its entry
    await cache.cached("s1", "k", build, alias="raw|a")
    cache.clear_shop("s1")
    assert cache.get("s1", "raw|a") is None
