"""CORS (BFF_CORS_ORIGINS): the preflight, the headers of every reply, nothing when off.

A real browser page on another origin is in tests/test_demo_browser.py.
"""

from __future__ import annotations

from http import HTTPStatus

import pytest
from aiohttp import web

from config.loader import CorsSettings
from tests.conftest import expect
from tests.helpers import claim

H5 = "https://h5.example.com"
LOCAL = "http://localhost:5173"
ORIGINS = f"{H5}, {LOCAL}/"  # a trailing slash as people write it
CLAIM = "/api/v1/shops/s1/coupons/claim"
ACAO = "Access-Control-Allow-Origin"


def _preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }


@pytest.fixture
async def cors_client(client_with):
    return await client_with(cors={"origins": ORIGINS}, risk={"user_claims_per_minute": 1})


@pytest.mark.parametrize("origin", [H5, LOCAL])
async def test_a_preflight_from_a_listed_origin_is_answered(cors_client, origin):
    response = await cors_client.options(CLAIM, headers=_preflight(origin))
    assert response.status == HTTPStatus.NO_CONTENT
    headers = response.headers
    assert headers[ACAO] == origin
    assert {"POST", "GET", "PUT", "PATCH", "DELETE"} <= set(
        headers["Access-Control-Allow-Methods"].replace(" ", "").split(",")
    )
    allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "x-request-id"} <= allowed
    assert headers["Access-Control-Max-Age"] == "600"
    assert "Origin" in headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in headers


async def test_a_preflight_for_an_unknown_api_path_lets_the_404_through(cors_client):
    response = await cors_client.options("/api/v1/shops/s1/nothing-here", headers=_preflight(H5))
    assert response.status == HTTPStatus.NO_CONTENT
    reply = await cors_client.get("/api/v1/shops/s1/nothing-here", headers={"Origin": H5})
    await expect(reply, HTTPStatus.NOT_FOUND, "NOT_FOUND")
    assert reply.headers[ACAO] == H5


@pytest.mark.parametrize("origin", ["https://evil.example.com", "https://h5.example.com.evil.io"])
async def test_another_origin_gets_no_cors_header(cors_client, origin):
    response = await cors_client.options(CLAIM, headers=_preflight(origin))
    await expect(response, HTTPStatus.METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
    assert not any(name.startswith("Access-Control-") for name in response.headers)
    assert "Origin" in response.headers["Vary"]
    reply = await cors_client.get("/healthz", headers={"Origin": origin})
    assert reply.status == HTTPStatus.OK and ACAO not in reply.headers


async def test_replies_and_errors_carry_the_origin_and_exposed_headers(
    cors_client, make_template, auth
):
    template = await make_template()
    shopper = {**auth("user", sub="u-cors"), "Origin": H5}
    created = await claim(cors_client, shopper, template["id"], device={"id": "d1"})
    await expect(created, HTTPStatus.CREATED)
    limited = await claim(cors_client, shopper, template["id"], device={"id": "d1"})
    await expect(limited, HTTPStatus.TOO_MANY_REQUESTS, "RATE_LIMITED")
    anonymous = await cors_client.post(CLAIM, json={}, headers={"Origin": H5})
    await expect(anonymous, HTTPStatus.UNAUTHORIZED, "UNAUTHENTICATED")
    wrong_method = await cors_client.put(CLAIM, json={}, headers={"Origin": H5})
    await expect(wrong_method, HTTPStatus.METHOD_NOT_ALLOWED)
    for response in (created, limited, anonymous, wrong_method):
        assert response.headers[ACAO] == H5
        exposed = {h.strip() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"Retry-After", "X-Request-Id"} <= exposed
        assert "Access-Control-Allow-Credentials" not in response.headers
    assert limited.headers["Retry-After"]


async def test_a_500_carries_the_origin_too(aiohttp_client, make_app, settings):
    app = make_app(settings=settings.replace(cors=CorsSettings(origins=H5)))

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    app.router.add_get("/api/v1/boom", boom)
    client = await aiohttp_client(app)
    response = await client.get("/api/v1/boom", headers={"Origin": H5})
    await expect(response, HTTPStatus.INTERNAL_SERVER_ERROR, "INTERNAL")
    assert response.headers[ACAO] == H5


async def test_any_origin_is_answered_with_a_star_and_never_credentials(client_with):
    client = await client_with(cors={"origins": "*"})
    response = await client.options(CLAIM, headers=_preflight("https://anyone.example"))
    assert response.status == HTTPStatus.NO_CONTENT
    assert response.headers[ACAO] == "*"
    assert "Access-Control-Allow-Credentials" not in response.headers


async def test_off_by_default_nothing_is_installed(client):
    assert not any(getattr(m, "__name__", "") == "preflight" for m in client.app.middlewares)
    assert not list(client.app.on_response_prepare)
    response = await client.options(CLAIM, headers=_preflight(H5))
    await expect(response, HTTPStatus.METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
    reply = await client.get("/healthz", headers={"Origin": H5})
    assert not any(name.startswith("Access-Control-") for name in reply.headers)
    assert "Vary" not in reply.headers
