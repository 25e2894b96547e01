"""The hot-read cache: same bytes for everyone, cleared by admin writes in every process."""

from __future__ import annotations

import asyncio
from http import HTTPStatus

import pytest

from bff.app import create_app
from bff.auth import Role, TokenCodec
from bff.clock import ManualClock
from tests.conftest import base_settings, expect, mariadb_settings
from tests.helpers import put_product

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
    reader = await aiohttp_client(create_app(settings, clock=clock, base_dir=tmp_path))
    writer = await aiohttp_client(create_app(settings, clock=clock, base_dir=tmp_path))
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
