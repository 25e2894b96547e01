"""System endpoints, error shape, request ids, metrics, OpenAPI, 503 on a lost dependency."""

from __future__ import annotations

import asyncio
import dataclasses
from http import HTTPStatus
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from bff.app import create_app
from bff.auth import Role, TokenCodec
from bff.clock import ManualClock
from bff.keys import ENDPOINTS
from config.loader import DatabaseSettings, RedisSettings
from tests.conftest import (
    MYSQL_URL,
    REDIS_URL,
    base_settings,
    expect,
    mariadb_settings,
    template_body,
)
from tests.helpers import json_log_lines
from tests.proxy import TcpProxy

ADMIN = "/api/v1/shops/s1/admin/coupon-templates"


async def test_healthz_and_readyz(client):
    assert (await expect(await client.get("/healthz"), HTTPStatus.OK))["status"] == "ok"
    ready = await expect(await client.get("/readyz"), HTTPStatus.OK)
    assert set(ready["checks"].values()) == {"ok"}


async def test_ping_is_a_small_json_reply_through_the_middlewares(client):
    response = await client.get("/api/v1/ping")
    assert await expect(response, HTTPStatus.OK) == {"pong": True}
    assert response.headers["X-Request-Id"]  # went through the observe middleware


async def test_unknown_path_and_method_use_the_error_shape(client):
    await expect(await client.get("/api/v1/nope"), HTTPStatus.NOT_FOUND, "NOT_FOUND")
    response = await client.delete("/healthz")
    body = await expect(response, HTTPStatus.METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
    assert set(body["error"]) == {"code", "message", "details"}
    assert "GET" in response.headers["Allow"]


async def test_body_over_limit_is_413(client, merchant, clock):
    body = template_body(clock, description="x" * 100_000)
    response = await client.post(ADMIN, json=body, headers=merchant)
    await expect(response, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "PAYLOAD_TOO_LARGE")


async def test_malformed_json_is_400(client, merchant):
    response = await client.post(
        ADMIN, data=b"{not json", headers={**merchant, "Content-Type": "application/json"}
    )
    body = await expect(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")
    assert "_body" in body["error"]["details"]


async def test_unknown_exception_is_a_plain_500_logged_with_request_id(
    aiohttp_client, make_app, caplog
):
    app = make_app()

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    app.router.add_get("/boom", boom)
    client = await aiohttp_client(app)
    response = await client.get("/boom", headers={"X-Request-Id": "req-boom-1"})
    body = await expect(response, HTTPStatus.INTERNAL_SERVER_ERROR, "INTERNAL")
    assert "secret" not in str(body)
    assert response.headers["X-Request-Id"] == "req-boom-1"
    assert any(r.exc_info and "secret internals" in str(r.exc_info[1]) for r in caplog.records)


async def test_request_id_is_echoed_or_made(client):
    response = await client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert response.headers["X-Request-Id"] == "abc-123"
    made = (await client.get("/healthz")).headers["X-Request-Id"]
    assert len(made) == 32
    odd = (await client.get("/healthz", headers={"X-Request-Id": "bad id\u00e9"})).headers
    assert odd["X-Request-Id"] != "bad id\u00e9"


async def test_access_log_is_json_lines_with_the_request_id(aiohttp_client, make_app, settings):
    server = dataclasses.replace(settings.server, access_log=True)
    client = await aiohttp_client(make_app(settings=settings.replace(server=server)))
    with json_log_lines("bff.access") as lines:
        await client.get("/api/v1/nope", headers={"X-Request-Id": "log-me-1"})
    line = lines[-1]
    assert line["request_id"] == "log-me-1"
    assert line["status"] == 404 and line["logger"] == "bff.access"


async def test_metrics_count_requests_by_route(client):
    await client.get("/healthz")
    await client.get("/healthz")
    text = await (await client.get("/metrics")).text()
    assert 'bff_http_requests_total{method="GET",route="/healthz",status="200"} 2.0' in text
    assert "bff_http_request_duration_seconds_bucket" in text


async def test_openapi_lists_every_endpoint_with_schemas(client):
    doc = await expect(await client.get("/api/v1/openapi.json"), HTTPStatus.OK)
    endpoints = client.app[ENDPOINTS]
    for endpoint in endpoints:
        operation = doc["paths"][endpoint.openapi_path][endpoint.method.lower()]
        if endpoint.body is not None:
            assert operation["requestBody"]["content"]
        if endpoint.reply is not None:
            assert operation["responses"][str(int(endpoint.status))]["content"]
    create = doc["paths"]["/api/v1/shops/{shop_id}/admin/coupon-templates"]["post"]
    assert create["responses"]["201"]
    schemas = doc["components"]["schemas"]
    assert "TemplateIn" in schemas and "ThresholdBenefit" in schemas
    assert {"name", "benefit", "redeem_page"} <= set(schemas["TemplateIn"]["properties"])


async def test_docs_page_is_self_contained(client):
    response = await client.get("/docs")
    assert response.status == HTTPStatus.OK
    html = await response.text()
    assert "/api/v1/openapi.json" in html
    for external in ('src="http', "src='http", 'href="http', "@import", "cdn."):
        assert external not in html
    # Its icon (an SVG) is served by this server, where browsers look for one anyway.
    assert '<link rel="icon" type="image/svg+xml" href="/favicon.ico">' in html
    icon = await client.get("/favicon.ico")
    assert icon.status == HTTPStatus.OK
    assert icon.content_type == "image/svg+xml"
    assert (await icon.read()).startswith(b"<svg")


@pytest.fixture
async def proxied():
    """MariaDB settings whose database and Redis are reached through proxies the test can cut."""
    settings = await mariadb_settings(base_settings())
    mysql = urlsplit(MYSQL_URL)
    redis_url = urlsplit(REDIS_URL)
    db_proxy = TcpProxy(mysql.hostname, mysql.port or 3306)
    redis_proxy = TcpProxy(redis_url.hostname, redis_url.port or 6379)
    await db_proxy.start()
    await redis_proxy.start()
    proxied_settings = settings.replace(
        database=DatabaseSettings(
            url=MYSQL_URL.replace(f":{mysql.port}/", f":{db_proxy.port}/"),
            connect_timeout_seconds=1,
        ),
        redis=RedisSettings(
            url=REDIS_URL.replace(f":{redis_url.port}/", f":{redis_proxy.port}/"),
            socket_timeout_seconds=1,
        ),
    )
    yield proxied_settings, db_proxy, redis_proxy
    await db_proxy.stop()
    await redis_proxy.stop()


async def test_database_down_is_503_then_recovers(aiohttp_client, proxied, tmp_path):
    proxied_settings, db_proxy, _ = proxied
    clock = ManualClock()
    client = await aiohttp_client(create_app(proxied_settings, clock=clock, base_dir=tmp_path))
    token, _ = TokenCodec(proxied_settings.jwt, clock).mint("m1", Role.MERCHANT, "s1")
    merchant = {"Authorization": f"Bearer {token}"}
    await expect(await client.get(ADMIN, headers=merchant), HTTPStatus.OK)
    await db_proxy.stop()
    response = await client.get(ADMIN, headers=merchant)
    await expect(response, HTTPStatus.SERVICE_UNAVAILABLE, "UNAVAILABLE")
    assert response.headers["Retry-After"] == "1"
    ready = await expect(await client.get("/readyz"), HTTPStatus.SERVICE_UNAVAILABLE, "UNAVAILABLE")
    assert ready["error"]["details"]["checks"]["database"] == "unavailable"
    await db_proxy.start()  # same port again
    for _ in range(20):
        if (await client.get(ADMIN, headers=merchant)).status == HTTPStatus.OK:
            break
        await asyncio.sleep(0.1)
    await expect(await client.get(ADMIN, headers=merchant), HTTPStatus.OK)
    await expect(await client.get("/readyz"), HTTPStatus.OK)


async def test_redis_down_fails_readiness(aiohttp_client, proxied, tmp_path):
    proxied_settings, _, redis_proxy = proxied
    client = await aiohttp_client(create_app(proxied_settings, base_dir=tmp_path))
    await expect(await client.get("/readyz"), HTTPStatus.OK)
    await redis_proxy.stop()
    body = await expect(await client.get("/readyz"), HTTPStatus.SERVICE_UNAVAILABLE, "UNAVAILABLE")
    assert body["error"]["details"]["checks"]["redis"] == "unavailable"


async def test_redis_down_at_start_serves_not_ready_then_recovers(
    aiohttp_client, proxied, tmp_path
):
    """A rolling deploy starts the instance anyway: /readyz and claims say 503 until Redis
    answers, then the same process serves, with no restart."""
    proxied_settings, _, redis_proxy = proxied
    await redis_proxy.stop()
    clock = ManualClock()
    client = await aiohttp_client(create_app(proxied_settings, clock=clock, base_dir=tmp_path))
    codec = TokenCodec(proxied_settings.jwt, clock)
    merchant = {"Authorization": f"Bearer {codec.mint('m1', Role.MERCHANT, 's1')[0]}"}
    shopper = {"Authorization": f"Bearer {codec.mint('u1', Role.USER, None)[0]}"}
    ready = await expect(await client.get("/readyz"), HTTPStatus.SERVICE_UNAVAILABLE, "UNAVAILABLE")
    assert ready["error"]["details"]["checks"] == {"database": "ok", "redis": "unavailable"}
    template = await expect(
        await client.post(ADMIN, json=template_body(clock), headers=merchant), HTTPStatus.CREATED
    )
    claim = {"template_id": template["id"], "request_id": "r-1", "device": {"id": "d1"}}
    response = await client.post("/api/v1/shops/s1/coupons/claim", json=claim, headers=shopper)
    await expect(response, HTTPStatus.SERVICE_UNAVAILABLE, "UNAVAILABLE")
    assert response.headers["Retry-After"] == "1"
    await redis_proxy.start()  # same port again
    for _ in range(50):
        if (await client.get("/readyz")).status == HTTPStatus.OK:
            break
        await asyncio.sleep(0.1)
    await expect(await client.get("/readyz"), HTTPStatus.OK)
    response = await client.post("/api/v1/shops/s1/coupons/claim", json=claim, headers=shopper)
    await expect(response, HTTPStatus.CREATED)


async def test_connections_closed_by_the_server_while_idle_are_replaced(aiohttp_client, tmp_path):
    """MariaDB closed the pooled connections (wait_timeout, a restart, KILL): the ones
    idle past PING_AFTER_IDLE_SECONDS are pinged at checkout, found dead and replaced,
    so the next requests are answered, not 503 (bff.db.engine._ping_idle)."""
    import pymysql

    from bff.db.engine import PING_AFTER_IDLE_SECONDS

    settings = await mariadb_settings(base_settings())
    url = urlsplit(MYSQL_URL.replace("mysql+aiomysql", "mysql"))
    database = url.path.lstrip("/")

    def sessions() -> set[int]:
        admin = pymysql.connect(host=url.hostname, port=url.port or 3306, user=url.username)
        try:
            with admin.cursor() as cursor:
                cursor.execute(
                    "SELECT id FROM information_schema.processlist WHERE db = %s"
                    " AND id <> CONNECTION_ID()",
                    (database,),
                )
                return {row[0] for row in cursor.fetchall()}
        finally:
            admin.close()

    def kill(ids: set[int]) -> None:
        admin = pymysql.connect(host=url.hostname, port=url.port or 3306, user=url.username)
        try:
            with admin.cursor() as cursor:
                for session in ids:
                    cursor.execute(f"KILL CONNECTION {int(session)}")
        finally:
            admin.close()

    before = await asyncio.to_thread(sessions)
    clock = ManualClock()
    client = await aiohttp_client(create_app(settings, clock=clock, base_dir=tmp_path))
    token, _ = TokenCodec(settings.jwt, clock).mint("m1", Role.MERCHANT, "s1")
    merchant = {"Authorization": f"Bearer {token}"}
    # Several connections in the pool: concurrent reads.
    replies = await asyncio.gather(*(client.get(ADMIN, headers=merchant) for _ in range(6)))
    assert all(reply.status == HTTPStatus.OK for reply in replies)
    pooled = await asyncio.to_thread(sessions) - before
    assert pooled
    await asyncio.to_thread(kill, pooled)
    await asyncio.sleep(PING_AFTER_IDLE_SECONDS + 0.3)
    replies = await asyncio.gather(*(client.get(ADMIN, headers=merchant) for _ in range(6)))
    assert [reply.status for reply in replies] == [HTTPStatus.OK] * 6
    await expect(await client.get("/readyz"), HTTPStatus.OK)
