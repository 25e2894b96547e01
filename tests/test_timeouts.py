"""A stalled database or Redis answers 503 UNAVAILABLE within its deadline, never hangs.

MariaDB and Redis are reached through :class:`tests.proxy.TcpProxy`, which can hold
every byte (a failover, a lock storm, a partition: nothing is closed, nothing gets
through) and then let them through again. The deadlines are made small here so the
tests stay short; "answered within the deadline plus slack instead of hanging" is the
correctness check (``asyncio.wait_for``), not a latency measurement. On the embedded
backend, which has no network, the stall is a write lock held by another connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import AsyncIterator, Awaitable
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bff.app import create_app
from bff.auth import Role, TokenCodec
from bff.clock import ManualClock
from config.loader import Settings
from tests.conftest import MYSQL_URL, REDIS_URL, base_settings, expect, mariadb_settings
from tests.helpers import (
    claim,
    create_template,
    new_request_id,
    put_product,
    shop_url,
    statements,
    wallet,
)
from tests.proxy import TcpProxy

READ_DEADLINE = 1.0
WRITE_DEADLINE = 1.5
REDIS_DEADLINE = 1.0
# Generous: a shared CI machine can be slow; what matters is an answer instead of a hang.
SLACK = 5.0


@dataclasses.dataclass
class Stack:
    client: TestClient
    clock: ManualClock
    settings: Settings
    merchant: dict[str, str]
    db_proxy: TcpProxy | None = None
    redis_proxy: TcpProxy | None = None

    def user(self, sub: str) -> dict[str, str]:
        token, _ = TokenCodec(self.settings.jwt, self.clock).mint(sub, Role.USER)
        return {"Authorization": f"Bearer {token}"}


def _short_deadlines(settings: Settings) -> Settings:
    return settings.replace(
        database=dataclasses.replace(
            settings.database,
            connect_timeout_seconds=1,
            read_timeout_seconds=READ_DEADLINE,
            write_timeout_seconds=WRITE_DEADLINE,
        ),
        redis=dataclasses.replace(settings.redis, socket_timeout_seconds=REDIS_DEADLINE),
    )


async def _stack(aiohttp_client: Any, settings: Settings, tmp_path: Path, **proxies: Any) -> Stack:
    clock = ManualClock()
    client = await aiohttp_client(create_app(settings, clock=clock, base_dir=tmp_path))
    token, _ = TokenCodec(settings.jwt, clock).mint("m1", Role.MERCHANT, "s1")
    return Stack(client, clock, settings, {"Authorization": f"Bearer {token}"}, **proxies)


@pytest.fixture
async def proxied(aiohttp_client: Any, tmp_path: Path) -> AsyncIterator[Stack]:
    """The app on MariaDB and Redis, each behind a proxy the test can stall or cut."""
    settings = await mariadb_settings(base_settings())
    mysql, redis_url = urlsplit(MYSQL_URL), urlsplit(REDIS_URL)
    db_proxy = TcpProxy(mysql.hostname or "127.0.0.1", mysql.port or 3306)
    redis_proxy = TcpProxy(redis_url.hostname or "127.0.0.1", redis_url.port or 6379)
    await db_proxy.start()
    await redis_proxy.start()
    settings = settings.replace(
        database=dataclasses.replace(
            settings.database,
            url=MYSQL_URL.replace(f":{mysql.port}/", f":{db_proxy.port}/"),
        ),
        redis=dataclasses.replace(
            settings.redis,
            url=REDIS_URL.replace(f":{redis_url.port}/", f":{redis_proxy.port}/"),
        ),
    )
    stack = await _stack(
        aiohttp_client,
        _short_deadlines(settings),
        tmp_path,
        db_proxy=db_proxy,
        redis_proxy=redis_proxy,
    )
    try:
        yield stack
    finally:
        db_proxy.resume()
        redis_proxy.resume()
        await stack.client.close()
        await db_proxy.stop()
        await redis_proxy.stop()


async def _answer(request: Awaitable[Any], within: float) -> Any:
    """The reply, which must come within ``within`` seconds (else the request hung)."""
    return await asyncio.wait_for(request, within)


async def _unavailable(request: Awaitable[Any], within: float) -> None:
    response = await _answer(request, within)
    await expect(response, HTTPStatus.SERVICE_UNAVAILABLE, "UNAVAILABLE")
    assert int(response.headers["Retry-After"]) >= 1, dict(response.headers)


async def _seed(stack: Stack) -> int:
    """A template of five per user, a product, and one coupon of u1 (warm pools)."""
    template = await create_template(stack.client, stack.clock, stack.merchant, per_user_limit=5)
    await put_product(stack.client, stack.merchant, "p1", 39900)
    response = await claim(stack.client, stack.user("u1"), template["id"])
    await expect(response, HTTPStatus.CREATED)
    return int(template["id"])


def _pages(stack: Stack) -> list[Awaitable[Any]]:
    """An anonymous claim widget and product page, and a shopper's wallet."""
    client = stack.client
    return [
        client.get(shop_url("/claim-widget")),
        client.get(shop_url("/products/p1")),
        client.get(shop_url("/me/coupons"), headers=stack.user("u1")),
    ]


async def _no_double_issue(stack: Stack, template_id: int, request_id: str) -> None:
    """A retry of the claim that got 503 is one coupon, whether the stalled one landed."""
    user = stack.user("u1")
    retried = await _answer(claim(stack.client, user, template_id, request_id), SLACK * 2)
    body = await expect(retried, HTTPStatus.CREATED)
    again = await expect(
        await claim(stack.client, user, template_id, request_id), HTTPStatus.CREATED
    )
    assert again["replayed"] is True and again["coupon"] == body["coupon"]
    mine = [c for c in await wallet(stack.client, user) if c["template_id"] == template_id]
    assert len(mine) == 2, mine  # the warm-up claim and this one, never a third


async def test_stalled_database_answers_503_then_recovers(proxied: Stack) -> None:
    stack = proxied
    assert stack.db_proxy is not None
    template_id = await _seed(stack)
    request_id = new_request_id()
    stack.db_proxy.hold()
    try:
        within = WRITE_DEADLINE + SLACK
        requests = [*_pages(stack), claim(stack.client, stack.user("u1"), template_id, request_id)]
        await asyncio.gather(*(_unavailable(r, within) for r in requests))
        ready = await _answer(stack.client.get("/readyz"), within)
        body = await expect(ready, HTTPStatus.SERVICE_UNAVAILABLE, "UNAVAILABLE")
        assert body["error"]["details"]["checks"]["database"] == "unavailable"
    finally:
        stack.db_proxy.resume()
    # The stuck connections were discarded: the same app serves at once.
    for response in await asyncio.gather(*_pages(stack)):
        await expect(response, HTTPStatus.OK)
    await expect(await stack.client.get("/readyz"), HTTPStatus.OK)
    await _no_double_issue(stack, template_id, request_id)


async def test_stalled_database_checkout_is_503_then_recovers(proxied: Stack) -> None:
    """A checkout whose products the shop's facts know is one direct read past
    SQLAlchemy (bff.db.engine.Database.fetch): it gives up at the read deadline as well,
    and its stuck connection is not reused."""
    stack = proxied
    assert stack.db_proxy is not None
    await _seed(stack)

    def checkout() -> Awaitable[Any]:
        return stack.client.post(
            shop_url("/checkout/preview"),
            json={"items": [{"product_id": "p1", "quantity": 1}]},
            headers=stack.user("u1"),
        )

    before = await expect(await checkout(), HTTPStatus.OK)  # the shop's facts now known
    with statements(stack.client) as seen:
        await expect(await checkout(), HTTPStatus.OK)
    assert len(seen) == 1 and "FROM coupons" in seen[0], seen
    stack.db_proxy.hold()
    try:
        await asyncio.gather(*(_unavailable(checkout(), READ_DEADLINE + SLACK) for _ in range(3)))
    finally:
        stack.db_proxy.resume()
    assert await expect(await checkout(), HTTPStatus.OK) == before


async def test_stalled_write_lock_wait_is_503_not_a_hang(proxied: Stack) -> None:
    """A lock storm: another session holds the template's row lock past the deadline."""
    stack = proxied
    template_id = await _seed(stack)
    engine = create_async_engine(MYSQL_URL)
    try:
        async with engine.connect() as holder:
            await holder.execute(text("BEGIN"))
            await holder.execute(
                text("SELECT id FROM coupon_templates WHERE id = :id FOR UPDATE"),
                {"id": template_id},
            )
            request_id = new_request_id()
            await _unavailable(
                claim(stack.client, stack.user("u1"), template_id, request_id),
                WRITE_DEADLINE + SLACK,
            )
            await holder.execute(text("ROLLBACK"))
    finally:
        await engine.dispose()
    await _no_double_issue(stack, template_id, request_id)


async def test_stalled_redis_answers_503_then_recovers(proxied: Stack) -> None:
    stack = proxied
    assert stack.redis_proxy is not None
    template_id = await _seed(stack)
    request_id = new_request_id()
    stack.redis_proxy.hold()
    try:
        within = REDIS_DEADLINE * 2 + WRITE_DEADLINE + SLACK
        await _unavailable(claim(stack.client, stack.user("u1"), template_id, request_id), within)
        # Pages that need no Redis are served; none of them hangs.
        for response in await asyncio.gather(*(_answer(r, within) for r in _pages(stack))):
            assert response.status in (HTTPStatus.OK, HTTPStatus.SERVICE_UNAVAILABLE)
        ready = await _answer(stack.client.get("/readyz"), within)
        body = await expect(ready, HTTPStatus.SERVICE_UNAVAILABLE, "UNAVAILABLE")
        assert body["error"]["details"]["checks"]["redis"] == "unavailable"
    finally:
        stack.redis_proxy.resume()
    await expect(await stack.client.get("/readyz"), HTTPStatus.OK)
    other = await claim(stack.client, stack.user("u2"), template_id)
    await expect(other, HTTPStatus.CREATED)
    await _no_double_issue(stack, template_id, request_id)


@pytest.mark.parametrize("how", ["cut", "stall"])
async def test_once_ready_after_a_redis_outage_requests_are_served(
    proxied: Stack, how: str
) -> None:
    stack = proxied
    assert stack.redis_proxy is not None
    template_id = await _seed(stack)
    # Many pooled Redis connections, as a busy process has.
    users = [stack.user(f"b{n}") for n in range(60)]
    warm = await asyncio.gather(*(claim(stack.client, user, template_id) for user in users))
    assert {r.status for r in warm} == {HTTPStatus.CREATED}
    if how == "cut":
        await stack.redis_proxy.stop()
    else:
        stack.redis_proxy.hold()
    await _unavailable(stack.client.get("/readyz"), REDIS_DEADLINE + SLACK)
    await asyncio.sleep(1.0)
    if how == "cut":
        await stack.redis_proxy.start()
    else:
        stack.redis_proxy.resume()
    for _ in range(100):
        if (await stack.client.get("/readyz")).status == HTTPStatus.OK:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("readyz never said ready again")
    burst = await asyncio.gather(*(claim(stack.client, user, template_id) for user in users))
    statuses = [r.status for r in burst]
    assert statuses.count(HTTPStatus.SERVICE_UNAVAILABLE) == 0, statuses
    assert set(statuses) == {HTTPStatus.CREATED}, [await r.json() for r in burst]


async def test_embedded_write_lock_held_elsewhere_is_503_then_recovers(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """The embedded analogue of a stall: another connection holds SQLite's write lock."""
    path = tmp_path / "bff.sqlite3"
    settings = base_settings().replace(
        database=dataclasses.replace(base_settings().database, sqlite_path=str(path), pool_size=5)
    )
    stack = await _stack(aiohttp_client, _short_deadlines(settings), tmp_path)
    template_id = await _seed(stack)
    request_id = new_request_id()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        await _unavailable(
            claim(stack.client, stack.user("u1"), template_id, request_id),
            WRITE_DEADLINE + SLACK,
        )
        # Reads answer too: here every transaction begins IMMEDIATE, so they wait, then 503.
        pages = await asyncio.gather(*(_answer(r, WRITE_DEADLINE + SLACK) for r in _pages(stack)))
        for response in pages:
            assert response.status in (HTTPStatus.OK, HTTPStatus.SERVICE_UNAVAILABLE)
            if response.status == HTTPStatus.SERVICE_UNAVAILABLE:
                await expect(response, HTTPStatus.SERVICE_UNAVAILABLE, "UNAVAILABLE")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    for response in await asyncio.gather(*_pages(stack)):
        await expect(response, HTTPStatus.OK)
    await _no_double_issue(stack, template_id, request_id)
