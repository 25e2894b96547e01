"""Test harness: every HTTP test runs on both backends.

* ``embedded``: a fresh SQLite file per test and the in-process gate.
* ``mariadb``: MariaDB + Redis (``BFF_TEST_MYSQL_URL``, ``BFF_TEST_REDIS_URL``);
  tables truncated and the Redis test db flushed before each test.

With ``CI=true`` an unreachable MariaDB or Redis fails the run; elsewhere
those tests skip with a reason that says how to start the services.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bff import fastdump, fastload
from bff.app import create_app
from bff.auth import Role, TokenCodec
from bff.clock import ManualClock
from bff.db import tables
from config.loader import (
    DatabaseSettings,
    IdentitySettings,
    JwtSettings,
    RedisSettings,
    ServerSettings,
    Settings,
)

# Shared helpers assert too; rewrite them like the test modules for the same failure reports.
pytest.register_assert_rewrite("tests.helpers")

# Every body the fast loader decides and every reply the fast dumper writes is done by
# marshmallow as well, and must come out equal: each test through the API checks it.
fastload.VERIFY = True
fastdump.VERIFY = True

MYSQL_URL = os.environ.get("BFF_TEST_MYSQL_URL", "mysql+aiomysql://root@127.0.0.1:3306/bff_test")
REDIS_URL = os.environ.get("BFF_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI", "").lower() == "true"
TEST_SECRET = "test-secret-that-is-at-least-32-bytes-long!"
START_HINT = (
    "MariaDB/Redis not reachable; start them: "
    "`start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd` and "
    "`redis-server --daemonize yes --port 6379 --save '' --appendonly no`"
)

_services_checked: dict[str, str | None] = {}


async def _check_services() -> str | None:
    """None when MariaDB and Redis answer, else why not."""
    if "result" in _services_checked:
        return _services_checked["result"]
    problem: str | None = None
    try:
        server_url = MYSQL_URL.rsplit("/", 1)[0] + "/"
        database = MYSQL_URL.rsplit("/", 1)[1].split("?")[0]
        engine = create_async_engine(server_url, connect_args={"connect_timeout": 3})
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    text(f"CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4")
                )
        finally:
            await engine.dispose()
        client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
        try:
            await client.ping()
        finally:
            await client.aclose()
    except Exception as exc:
        problem = f"{START_HINT} ({type(exc).__name__}: {exc})"
    _services_checked["result"] = problem
    return problem


# A shared CI machine can stall a disk write (an fsync) or a process for seconds; a test is
# not a latency check, so reads and writes get more room than production's 3 s and 5 s
# (tests/test_timeouts.py sets short deadlines of its own to test them).
TEST_DEADLINES = {"read_timeout_seconds": 15.0, "write_timeout_seconds": 20.0}


def base_settings() -> Settings:
    return Settings(
        environment="test",
        server=ServerSettings(access_log=False, max_body_bytes=64 * 1024),
        jwt=JwtSettings(secret=TEST_SECRET),
        identity=IdentitySettings(provider="dev"),
    )


@pytest.fixture(params=["embedded", "mariadb"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def settings(backend: str, tmp_path: Path) -> Settings:
    settings = base_settings()
    if backend == "embedded":
        return settings.replace(
            database=DatabaseSettings(
                sqlite_path=str(tmp_path / "bff.sqlite3"), pool_size=5, **TEST_DEADLINES
            )
        )
    return await mariadb_settings(settings)


async def mariadb_settings(settings: Settings) -> Settings:
    """``settings`` on a freshly emptied MariaDB + Redis; fails in CI, skips elsewhere."""
    problem = await _check_services()
    if problem is not None:
        if IN_CI:
            pytest.fail(problem)
        pytest.skip(problem)
    await _reset_mariadb_and_redis()
    return settings.replace(
        database=DatabaseSettings(url=MYSQL_URL, pool_size=10, max_overflow=40, **TEST_DEADLINES),
        # A shared CI machine can stall a process for a second or two; a test is not a
        # latency check, so give Redis replies more room than production's 2 s.
        redis=RedisSettings(url=REDIS_URL, socket_timeout_seconds=10),
    )


async def _reset_mariadb_and_redis() -> None:
    engine = create_async_engine(MYSQL_URL)
    try:
        async with engine.begin() as conn:
            existing = set((await conn.execute(text("SHOW TABLES"))).scalars().all())
            await conn.execute(text("SET FOREIGN_KEY_CHECKS=0"))
            for table in reversed(tables.metadata.sorted_tables):
                if table.name != "schema_migrations" and table.name in existing:
                    await conn.execute(text(f"TRUNCATE TABLE `{table.name}`"))
            await conn.execute(text("SET FOREIGN_KEY_CHECKS=1"))
    finally:
        await engine.dispose()
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 11, 20, 4, 0, tzinfo=UTC))


@pytest.fixture
def make_app(
    settings: Settings, clock: ManualClock, tmp_path: Path
) -> Callable[..., web.Application]:
    def factory(**overrides: Any) -> web.Application:
        return create_app(overrides.pop("settings", settings), clock=clock, base_dir=tmp_path)

    return factory


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Any], make_app: Callable[..., web.Application]
) -> TestClient:
    return await aiohttp_client(make_app())


# --- tokens ----------------------------------------------------------------------------------
@pytest.fixture
def tokens(settings: Settings, clock: ManualClock) -> TokenCodec:
    return TokenCodec(settings.jwt, clock)


@pytest.fixture
def auth(tokens: TokenCodec) -> Callable[..., dict[str, str]]:
    """``auth("merchant", shop="s1")`` -> headers with a bearer token."""

    def headers(role: str = "user", *, shop: str | None = None, sub: str = "u1") -> dict[str, str]:
        token, _ = tokens.mint(sub, Role(role), shop)
        return {"Authorization": f"Bearer {token}"}

    return headers


@pytest.fixture
def merchant(auth: Callable[..., dict[str, str]]) -> dict[str, str]:
    return auth("merchant", shop="s1", sub="m1")


# --- factories -------------------------------------------------------------------------------
def iso(instant: datetime) -> str:
    return instant.isoformat()


def template_body(clock: ManualClock, **overrides: Any) -> dict[str, Any]:
    """A valid widget template for shop s1 whose claim window is open now."""
    now = clock.now()
    body: dict[str, Any] = {
        "name": "满299减50",
        "description": "全店通用",
        "benefit": {"type": "threshold", "amount_off": 5000, "threshold": 29900},
        "scope": {"type": "shop"},
        "claim_start": iso(now - timedelta(days=1)),
        "claim_end": iso(now + timedelta(days=10)),
        "validity": {"type": "relative", "effective_after_days": 0, "valid_days": 7},
        "stock": {"type": "limited", "total": 1000},
        "codes": {"type": "none"},
        "claim_methods": ["widget"],
        "per_user_limit": 1,
        "claim_page": "pages/index/index",
        "redeem_page": "pages/coupon/use",
    }
    body.update(overrides)
    return body


@pytest.fixture
def make_template(
    client: TestClient,
    clock: ManualClock,
    merchant: dict[str, str],
    auth: Callable[..., dict[str, str]],
) -> Callable[..., Any]:
    async def create(
        shop: str = "s1", expected: HTTPStatus = HTTPStatus.CREATED, **overrides: Any
    ) -> dict[str, Any]:
        headers = merchant if shop == "s1" else auth("merchant", shop=shop, sub="m-" + shop)
        response = await client.post(
            f"/api/v1/shops/{shop}/admin/coupon-templates",
            json=template_body(clock, **overrides),
            headers=headers,
        )
        body = await response.json()
        assert response.status == expected, body
        return body

    return create


async def expect(response: Any, status: HTTPStatus, code: str | None = None) -> Any:
    """Assert a reply's status (and error code); return its JSON body."""
    body = await response.json()
    assert response.status == status, body
    if code is not None:
        assert body["error"]["code"] == code, body
    return body


@pytest.fixture
def client_with(
    aiohttp_client: Callable[..., Any], make_app: Callable[..., web.Application], settings: Settings
) -> Callable[..., Any]:
    """``await client_with(wallet={"max_unused_per_shop": 2})``: an app with changed settings."""

    async def build(**sections: dict[str, Any]) -> TestClient:
        changes = {
            name: dataclasses.replace(getattr(settings, name), **values)
            for name, values in sections.items()
        }
        return await aiohttp_client(make_app(settings=settings.replace(**changes)))

    return build


@pytest.fixture
async def steady(client_with: Callable[..., Any]) -> TestClient:
    """An app whose claim caches outlast any test (tests.helpers.STEADY)."""
    from tests.helpers import STEADY

    return await client_with(claim=STEADY)
