"""Claims under concurrency: never oversell, never pass per_user_limit, never issue twice.

The first tests run on both backends through the one test client. The last ones
need the shared MariaDB + Redis (a Redis flush in the middle of a burst, two
app instances racing); they build their settings with ``mariadb_settings`` so
they do not take the backend parametrization, and they skip (or fail in CI)
exactly as the MariaDB half of the suite does when the services are missing.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from bff.app import create_app
from bff.auth import Role, TokenCodec
from bff.clock import ManualClock
from config.loader import Settings
from tests.conftest import REDIS_URL, base_settings, expect, mariadb_settings
from tests.helpers import claim as post_claim
from tests.helpers import create_template, get_template, shop_url, wallet

pytestmark = pytest.mark.slow

MANY_CLAIMS_PER_MINUTE = 100_000


# --- helpers ---------------------------------------------------------------------------------
async def claim(
    client: TestClient, headers: dict[str, str], template_id: int, request_id: str | None = None
) -> tuple[int, dict[str, Any]]:
    """POST a widget claim; return (status, JSON body)."""
    response = await post_claim(client, headers, template_id, request_id)
    return response.status, await response.json()


def outcome(status: int, body: dict[str, Any]) -> str:
    """``"201"`` or ``"409 SOLD_OUT"``: one word per reply, to count them."""
    if status == HTTPStatus.CREATED:
        return "201"
    return f"{status} {body.get('error', {}).get('code')}"


def limited(total: int) -> dict[str, Any]:
    return {"type": "limited", "total": total}


def with_many_claims(settings: Settings) -> Settings:
    """One user firing many claims at once must meet the per-user limit, not the rate limit."""
    return settings.replace(
        risk=dataclasses.replace(settings.risk, user_claims_per_minute=MANY_CLAIMS_PER_MINUTE)
    )


@pytest.fixture
async def busy_client(
    aiohttp_client: Callable[..., Any], make_app: Callable[..., Any], settings: Settings
) -> TestClient:
    """The app on the parametrized backend with a per-user rate limit no burst reaches."""
    return await aiohttp_client(make_app(settings=with_many_claims(settings)))


# --- on both backends ------------------------------------------------------------------------
async def test_many_claimants_never_oversell(client, make_template, merchant, auth):
    template = await make_template(stock=limited(50))
    users = [auth("user", sub=f"c{i}") for i in range(200)]
    results = await asyncio.gather(*(claim(client, headers, template["id"]) for headers in users))
    counts = Counter(outcome(status, body) for status, body in results)
    assert counts == {"201": 50, "409 SOLD_OUT": 150}, counts
    coupon_ids = [body["coupon"]["coupon_id"] for status, body in results if status == 201]
    assert len(set(coupon_ids)) == 50
    stored = await get_template(client, merchant, template["id"])
    assert (stored["issued"], stored["remaining"]) == (50, 0)
    held = await asyncio.gather(*(wallet(client, headers, status="all") for headers in users))
    assert sum(len(items) for items in held) == 50
    assert max(len(items) for items in held) == 1


async def test_one_user_bursting_meets_per_user_limit(busy_client, clock, merchant, auth):
    template = await create_template(busy_client, clock, merchant, per_user_limit=3)
    user = auth("user", sub="u7")
    results = await asyncio.gather(*(claim(busy_client, user, template["id"]) for _ in range(20)))
    counts = Counter(outcome(status, body) for status, body in results)
    assert counts == {"201": 3, "409 LIMIT_REACHED": 17}, counts
    assert len(await wallet(busy_client, user, status="all")) == 3
    stored = await get_template(busy_client, merchant, template["id"])
    assert (stored["issued"], stored["remaining"]) == (3, 997)


async def test_concurrent_copies_issue_once(busy_client, clock, merchant, auth):
    template = await create_template(busy_client, clock, merchant, per_user_limit=5)
    user = auth("user", sub="u7")
    results = await asyncio.gather(
        *(claim(busy_client, user, template["id"], "same-request") for _ in range(20))
    )
    assert [status for status, _ in results] == [HTTPStatus.CREATED] * 20, results
    assert len({body["coupon"]["coupon_id"] for _, body in results}) == 1, results
    replayed = sorted(body.get("replayed") is True for _, body in results)
    assert replayed == [False] + [True] * 19, results
    (first,) = [body for _, body in results if body.get("replayed") is not True]
    for _, body in results:
        assert {key: value for key, value in body.items() if key != "replayed"} == first
    assert len(await wallet(busy_client, user, status="all")) == 1
    assert (await get_template(busy_client, merchant, template["id"]))["issued"] == 1


# --- MariaDB + Redis only --------------------------------------------------------------------
@pytest.fixture
async def shared_settings() -> Settings:
    """MariaDB + Redis, emptied; deliberately not the backend-parametrized ``settings``."""
    return with_many_claims(await mariadb_settings(base_settings()))


@pytest.fixture
def bearer(shared_settings: Settings, clock: ManualClock) -> Callable[..., dict[str, str]]:
    codec = TokenCodec(shared_settings.jwt, clock)

    def headers(sub: str, role: str = "user", shop: str | None = None) -> dict[str, str]:
        token, _ = codec.mint(sub, Role(role), shop)
        return {"Authorization": f"Bearer {token}"}

    return headers


@pytest.fixture
def instance(
    aiohttp_client: Callable[..., Any],
    shared_settings: Settings,
    clock: ManualClock,
    tmp_path: Path,
) -> Callable[..., Any]:
    """``await instance()``: one more app process-equivalent on the same MariaDB + Redis."""

    async def start() -> TestClient:
        return await aiohttp_client(create_app(shared_settings, clock=clock, base_dir=tmp_path))

    return start


async def flush_redis() -> None:
    redis = aioredis.Redis.from_url(REDIS_URL)
    try:
        await redis.flushdb()
    finally:
        await redis.aclose()


async def test_redis_flush_mid_burst_never_oversells(instance, bearer, clock):
    client = await instance()
    merchant = bearer("m1", "merchant", "s1")
    template = await create_template(client, clock, merchant, stock=limited(30))
    users = {f"f{i}": bearer(f"f{i}") for i in range(50)}

    async def one(sub: str) -> tuple[str, int, dict[str, Any]]:
        status, body = await claim(client, users[sub], template["id"])
        return sub, status, body

    # every user claims twice (per_user_limit 1): 100 claims for 30 coupons, in waves of 25
    # so that some are committed, some in flight and some not yet sent when Redis is flushed
    # (the gate batches a whole turn's calls, so one wave finishes together)
    subs = list(users) * 2
    results: list[tuple[str, int, dict[str, Any]]] = []
    for wave in range(4):
        claims = [one(sub) for sub in subs[wave * 25 : (wave + 1) * 25]]
        if wave == 1:
            _, *done = await asyncio.gather(flush_redis(), *claims)
        else:
            done = await asyncio.gather(*claims)
        results.extend(done)
    assert any(status == HTTPStatus.CREATED for _, status, _ in results[:25])

    counts = Counter(outcome(status, body) for _, status, body in results)
    assert counts["201"] == 30, counts
    assert set(counts) <= {"201", "409 SOLD_OUT", "409 LIMIT_REACHED"}, counts
    winners = Counter(sub for sub, status, _ in results if status == HTTPStatus.CREATED)
    assert max(winners.values()) == 1, winners
    stored = await get_template(client, merchant, template["id"])
    assert (stored["issued"], stored["remaining"]) == (30, 0)
    held = {sub: len(await wallet(client, headers, status="all")) for sub, headers in users.items()}
    assert sum(held.values()) == 30 and max(held.values()) == 1, held

    # after another flush the gate rebuilds from the database: still sold out, limits kept
    await flush_redis()
    late = await asyncio.gather(
        *(claim(client, bearer(f"late{i}"), template["id"]) for i in range(5))
    )
    assert [outcome(status, body) for status, body in late] == ["409 SOLD_OUT"] * 5
    winner = next(iter(winners))
    status, body = await claim(client, users[winner], template["id"])
    assert outcome(status, body) == "409 LIMIT_REACHED", body  # per-user limit before stock
    assert (await get_template(client, merchant, template["id"]))["issued"] == 30


async def test_redis_flush_keeps_per_user_limit(instance, bearer, clock):
    client = await instance()
    merchant = bearer("m1", "merchant", "s1")
    template = await create_template(client, clock, merchant, per_user_limit=2)
    user = bearer("u7")
    for _ in range(2):
        status, body = await claim(client, user, template["id"])
        assert status == HTTPStatus.CREATED, body
    await flush_redis()
    results = await asyncio.gather(*(claim(client, user, template["id"]) for _ in range(10)))
    counts = Counter(outcome(status, body) for status, body in results)
    assert counts == {"409 LIMIT_REACHED": 10}, counts
    assert len(await wallet(client, user, status="all")) == 2


async def test_redis_flush_keeps_idempotency(instance, bearer, clock):
    client = await instance()
    merchant = bearer("m1", "merchant", "s1")
    template = await create_template(client, clock, merchant, per_user_limit=5)
    user = bearer("u7")
    status, first = await claim(client, user, template["id"], "req-1")
    assert status == HTTPStatus.CREATED, first
    await flush_redis()
    status, again = await claim(client, user, template["id"], "req-1")
    assert status == HTTPStatus.CREATED, again
    assert again.get("replayed") is True, again
    assert again["coupon"] == first["coupon"]
    assert len(await wallet(client, user, status="all")) == 1


async def test_two_instances_never_oversell(instance, bearer, clock):
    first, second = await instance(), await instance()
    merchant = bearer("m1", "merchant", "s1")
    template = await create_template(first, clock, merchant, stock=limited(40))
    users = [bearer(f"c{i}") for i in range(100)]
    results = await asyncio.gather(
        *(
            claim(first if i % 2 == 0 else second, headers, template["id"])
            for i, headers in enumerate(users)
        )
    )
    counts = Counter(outcome(status, body) for status, body in results)
    assert counts == {"201": 40, "409 SOLD_OUT": 60}, counts
    for client in (first, second):
        stored = await get_template(client, merchant, template["id"])
        assert (stored["issued"], stored["remaining"]) == (40, 0)
    held = await asyncio.gather(
        *(
            wallet(second if i % 2 == 0 else first, headers, status="all")
            for i, headers in enumerate(users)
        )
    )
    assert sum(len(items) for items in held) == 40
    assert max(len(items) for items in held) == 1


async def test_two_instances_keep_per_user_limit(instance, bearer, clock):
    first, second = await instance(), await instance()
    merchant = bearer("m1", "merchant", "s1")
    template = await create_template(first, clock, merchant, per_user_limit=2)
    user = bearer("u7")
    results = await asyncio.gather(
        *(claim(first if i % 2 == 0 else second, user, template["id"]) for i in range(10))
    )
    counts = Counter(outcome(status, body) for status, body in results)
    assert counts == {"201": 2, "409 LIMIT_REACHED": 8}, counts
    assert len(await wallet(second, user, status="all")) == 2


async def test_two_instances_replay_one_request(instance, bearer, clock):
    first, second = await instance(), await instance()
    merchant = bearer("m1", "merchant", "s1")
    template = await create_template(first, clock, merchant, per_user_limit=5)
    user = bearer("u7")
    results = await asyncio.gather(
        *(
            claim(first if i % 2 == 0 else second, user, template["id"], "same-request")
            for i in range(20)
        )
    )
    assert [status for status, _ in results] == [HTTPStatus.CREATED] * 20, results
    assert len({body["coupon"]["coupon_id"] for _, body in results}) == 1, results
    assert sum(1 for _, body in results if body.get("replayed") is not True) == 1, results
    assert len(await wallet(first, user, status="all")) == 1


async def test_sold_out_storm_keeps_the_order_and_stock_added_later_is_claimable(
    client, make_template, auth, merchant
):
    template = await make_template(stock={"type": "limited", "total": 2})
    holders = [auth("user", sub=f"h{n}") for n in range(2)]
    for headers in holders:
        await expect(await post_claim(client, headers, template["id"]), HTTPStatus.CREATED)
    # Sold out now: a storm of newcomers and the holders themselves.
    newcomers = [auth("user", sub=f"n{n}") for n in range(30)]
    replies = await asyncio.gather(
        *(post_claim(client, headers, template["id"]) for headers in newcomers + holders)
    )
    codes = [(await reply.json())["error"]["code"] for reply in replies]
    assert codes[:30] == ["SOLD_OUT"] * 30
    assert codes[30:] == ["LIMIT_REACHED"] * 2  # the order holds on the sold-out path
    # More stock: claimable at once, not after the sold-out flag runs out.
    response = await client.patch(
        shop_url(f"/admin/coupon-templates/{template['id']}"),
        json={"stock": {"type": "limited", "total": 3}},
        headers=merchant,
    )
    await expect(response, HTTPStatus.OK)
    await expect(await post_claim(client, newcomers[0], template["id"]), HTTPStatus.CREATED)
    after = await expect(
        await post_claim(client, newcomers[1], template["id"]), HTTPStatus.CONFLICT
    )
    assert after["error"]["code"] == "SOLD_OUT"
    assert (await get_template(client, merchant, template["id"]))["issued"] == 3
