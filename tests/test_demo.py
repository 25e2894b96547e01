"""The demo shop and its page: seeding is idempotent, every widget has something to show,
``/demo`` is served with caching headers, and ``python run.py --demo`` works from scratch."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from bff.auth import Role, TokenCodec
from bff.clock import ManualClock
from bff.db import tables
from bff.demo.seed import (
    DEMO_SHOP,
    DEMO_USER,
    EXCHANGE_OFFERS,
    LIVE_ROOM,
    MERCHANT_SUB,
    PRODUCT_IDS,
    USER_POINTS,
    DemoApi,
    SeedReport,
    seed,
)
from bff.keys import DB, ENDPOINTS
from bff.openapi_examples import REPLY_EXAMPLES, REQUEST_EXAMPLES, resolve
from config.loader import IdentitySettings, Settings, ShopSettings
from handlers.demo import assets
from tests.conftest import expect
from tests.demo_server import REPO, demo_env, demo_server, free_port
from tests.helpers import new_request_id, shop_url

SHOP = DEMO_SHOP


def demo_url(path: str) -> str:
    return shop_url(path, SHOP)


async def run_seed(client: TestClient, tokens: TokenCodec, clock: ManualClock) -> SeedReport:
    merchant_token, _ = tokens.mint(MERCHANT_SUB, Role.MERCHANT, SHOP)
    api = DemoApi(client.session, str(client.make_url("/")), merchant_token)
    return await seed(api, tokens, clock.now())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def row_counts(client: TestClient) -> dict[str, int]:
    async def work(conn: Any) -> dict[str, int]:
        counts = {}
        for table in tables.metadata.sorted_tables:
            counts[table.name] = (
                await conn.execute(select(func.count()).select_from(table))
            ).scalar_one()
        return counts

    return await client.app[DB].read(work)


async def widget_states(client: TestClient, token: str | None = None) -> dict[str, str]:
    headers = bearer(token) if token else {}
    body = await expect(await client.get(demo_url("/claim-widget"), headers=headers), HTTPStatus.OK)
    return {coupon["name"]: coupon["state"] for coupon in body["coupons"]}


# --- seeding ---------------------------------------------------------------------------------
async def test_seeding_twice_creates_nothing_new(client, tokens, clock):
    first = await run_seed(client, tokens, clock)
    assert len([item for item in first.created if item.startswith("template ")]) == 16
    assert len([item for item in first.created if item.startswith("product ")]) == len(PRODUCT_IDS)
    assert len([item for item in first.created if item.startswith("gift-pack ")]) == 2
    before = await row_counts(client)

    second = await run_seed(client, tokens, clock)

    assert second.created == [] and second.updated == []
    assert second.template_ids == first.template_ids and second.pack_ids == first.pack_ids
    assert await row_counts(client) == before


async def test_a_later_run_moves_closing_windows_and_creates_nothing(client, tokens, clock):
    first = await run_seed(client, tokens, clock)
    before = await row_counts(client)
    clock.advance(timedelta(days=28))

    later = await run_seed(client, tokens, clock)

    assert later.created == []
    assert "template 全店满299减50" in later.updated and "gift-pack 新会员礼包" in later.updated
    assert await row_counts(client) == before
    assert later.template_ids == first.template_ids
    states = await widget_states(client, tokens.mint("fresh-user")[0])
    assert states["全店满299减50"] == "claimable"
    assert states["已结束 满99减5"] == "ended"
    room = await expect(
        await client.get(demo_url(f"/live-rooms/{LIVE_ROOM}/prices?product_ids=cup-1")),
        HTTPStatus.OK,
    )
    assert room["items"][0]["status"] == "live"
    joined = await expect(
        await client.post(demo_url("/membership"), json={}, headers=bearer(tokens.mint("u9")[0])),
        HTTPStatus.CREATED,
    )
    assert joined["popup"]["name"] == "新会员礼包"


async def test_the_seeded_shop_shows_every_widget_state(client, tokens, clock):
    report = await run_seed(client, tokens, clock)
    states = await widget_states(client, report.user_token)
    assert states["全店满299减50"] == "claimable"
    assert states["限量1张 满199减20"] == "sold_out"
    assert states["双12预热 满399减60"] == "not_started"
    assert states["已结束 满99减5"] == "ended"
    assert states["金卡专享 满500减100"] == "not_eligible"
    # Templates for other methods stay off the widget.
    assert "保温杯进店立减20" not in states and "积分兑换 满299减60" not in states
    assert "短信券 满99减10" not in states and "赠品：帆布袋" not in states


async def test_the_seeded_products_show_prices_with_and_without_promotions(client, tokens, clock):
    report = await run_seed(client, tokens, clock)
    cup = await expect(await client.get(demo_url("/products/cup-1")), HTTPStatus.OK)
    price = cup["price"]
    assert (price["list_price"], price["promo_price"], price["final_price"]) == (
        39900,
        36900,
        31900,
    )
    assert price["coupons"] == [
        {"template_id": report.template_ids["welcome"], "needs_claim": True, "discount": 5000}
    ]
    tea = await expect(await client.get(demo_url("/products/tea-1")), HTTPStatus.OK)
    assert tea["price"]["promo_price"] is None and tea["price"]["final_price"] == 24900
    listed = await expect(
        await client.post(
            demo_url("/prices"),
            json={"items": [{"product_id": pid, "quantity": 1} for pid in PRODUCT_IDS]},
        ),
        HTTPStatus.OK,
    )
    assert [item["product_id"] for item in listed["items"]] == list(PRODUCT_IDS)
    # Opening the auto-claim product claims its coupon for the demo shopper, once.
    body = {"request_id": new_request_id()}
    opened = await expect(
        await client.post(
            demo_url("/products/cup-1/auto-claim"), json=body, headers=bearer(report.user_token)
        ),
        HTTPStatus.OK,
    )
    assert [coupon["name"] for coupon in opened["claimed"]] == ["保温杯进店立减20"]


async def test_the_seeded_live_room_is_live_now(client, tokens, clock):
    await run_seed(client, tokens, clock)
    room = await expect(
        await client.get(demo_url(f"/live-rooms/{LIVE_ROOM}/prices?product_ids=cup-1,kettle-1")),
        HTTPStatus.OK,
    )
    assert {item["product_id"]: item["status"] for item in room["items"]} == {
        "cup-1": "live",
        "kettle-1": "upcoming",
    }
    detail = await expect(
        await client.get(demo_url(f"/products/cup-1?live_room_id={LIVE_ROOM}")), HTTPStatus.OK
    )
    assert detail["price"]["final_price"] == 29900 and detail["price"]["coupons"] == []


async def test_the_seeded_packs_pop_up_and_hold_a_gift(client, tokens, clock):
    report = await run_seed(client, tokens, clock)
    # The demo shopper is a level-2 member: the member pack pops up on the first entry.
    center = await expect(
        await client.get(demo_url("/member-center"), headers=bearer(report.user_token)),
        HTTPStatus.OK,
    )
    assert center["member"]["level"] == 2
    assert center["popup"]["name"] == "会员礼包"
    # A new shopper joins and sees the new-member pack; it holds two coupons and a gift.
    newcomer = bearer(tokens.mint("newcomer")[0])
    joined = await expect(
        await client.post(demo_url("/membership"), json={}, headers=newcomer), HTTPStatus.CREATED
    )
    pack = joined["popup"]
    assert pack["name"] == "新会员礼包" and pack["gift"]["quantity"] == 200
    claimed = await expect(
        await client.post(
            demo_url(f"/gift-packs/{pack['id']}/claim"),
            json={"request_id": new_request_id()},
            headers=newcomer,
        ),
        HTTPStatus.CREATED,
    )
    assert len(claimed["coupons"]) == 2 and claimed["gift"]["name"] == "赠品：帆布袋"


async def test_the_seeded_code_template_takes_the_demo_codes(client, tokens, clock):
    await run_seed(client, tokens, clock)
    first, second = bearer(tokens.mint("c1")[0]), bearer(tokens.mint("c2")[0])
    body = {"code": "DEMO-0001", "request_id": new_request_id()}
    got = await expect(
        await client.post(demo_url("/coupons/claim-by-code"), json=body, headers=first),
        HTTPStatus.CREATED,
    )
    assert got["coupon"]["name"] == "短信券 满99减10"
    body = {"code": "DEMO-0001", "request_id": new_request_id()}
    await expect(
        await client.post(demo_url("/coupons/claim-by-code"), json=body, headers=second),
        HTTPStatus.CONFLICT,
        "ALREADY_CLAIMED",
    )


async def test_points_and_exchange_offers_are_seeded(client, tokens, clock):
    report = await run_seed(client, tokens, clock)
    headers = bearer(report.user_token)
    response = await client.get(demo_url("/points-exchange"), headers=headers)
    page = await expect(response, HTTPStatus.OK)
    assert page["balance"] == USER_POINTS
    assert sorted(offer["points_cost"] for offer in page["offers"]) == sorted(
        EXCHANGE_OFFERS.values()
    )
    again = await run_seed(client, tokens, clock)
    page = await expect(
        await client.get(demo_url("/points-exchange"), headers=headers), HTTPStatus.OK
    )
    assert page["balance"] == USER_POINTS and len(page["offers"]) == len(EXCHANGE_OFFERS)
    assert again.notes == []


async def test_the_report_prints_the_urls_and_a_ready_token(client, tokens, clock):
    report = await run_seed(client, tokens, clock)
    lines = "\n".join(report.lines("http://127.0.0.1:8080", "the embedded default"))
    assert f"http://127.0.0.1:8080/demo#token={report.user_token}" in lines
    assert "http://127.0.0.1:8080/docs" in lines
    assert "Created: 16 templates, 5 products, 2 gift packs" in lines
    assert tokens.decode(report.user_token).sub == DEMO_USER


# --- the page --------------------------------------------------------------------------------
async def test_the_demo_page_is_served_with_caching_headers(client):
    response = await client.get("/demo")
    assert response.status == HTTPStatus.OK
    assert response.content_type == "text/html"
    assert response.headers["Cache-Control"] == "no-cache"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    html = await response.text()
    version = assets()["version"].body.decode()
    assert f'src="/demo/app.js?v={version}"' in html
    assert f'href="/demo/style.css?v={version}"' in html
    again = await client.get("/demo", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status == HTTPStatus.NOT_MODIFIED


@pytest.mark.parametrize(
    ("name", "content_type"), [("app.js", "text/javascript"), ("style.css", "text/css")]
)
async def test_the_page_assets_are_kept_for_good_when_linked_by_version(client, name, content_type):
    version = assets()["version"].body.decode()
    current = await client.get(f"/demo/{name}?v={version}")
    assert current.status == HTTPStatus.OK and current.content_type == content_type
    assert current.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    unversioned = await client.get(f"/demo/{name}")
    assert unversioned.headers["Cache-Control"] == "no-cache"
    etag = current.headers["ETag"]
    assert (await client.get(f"/demo/{name}", headers={"If-None-Match": etag})).status == 304


async def test_an_unknown_asset_is_404_in_the_error_shape(client):
    await expect(await client.get("/demo/secret.js"), HTTPStatus.NOT_FOUND, "NOT_FOUND")
    await expect(await client.get("/demo/../run.py"), HTTPStatus.NOT_FOUND, "NOT_FOUND")


async def test_the_page_loads_nothing_from_elsewhere(client):
    version = assets()["version"].body.decode()
    for path in ("/demo", f"/demo/app.js?v={version}", f"/demo/style.css?v={version}"):
        text = await (await client.get(path)).text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE), path
        assert "@import" not in text and "cdn" not in text.lower()


async def test_the_page_config_names_the_demo_shop_and_sign_in(
    client: TestClient,
    aiohttp_client: Callable[..., Any],
    make_app: Callable[..., Any],
    settings: Settings,
):
    config = await expect(await client.get("/demo/config.json"), HTTPStatus.OK)
    assert config["shop_id"] == SHOP and config["product_ids"] == list(PRODUCT_IDS)
    assert config["live_room_id"] == LIVE_ROOM and config["code_hint"] == "DEMO-0001"
    assert config["dev_sign_in"] is True
    # The page shows times in the shop's zone (issue 19), whatever the browser's is.
    assert config["shop_timezone"] == "Asia/Shanghai"
    no_sign_in = settings.replace(
        identity=IdentitySettings(provider="none"), shop=ShopSettings(timezone="Europe/Berlin")
    )
    other = await aiohttp_client(make_app(settings=no_sign_in))
    config = await expect(await other.get("/demo/config.json"), HTTPStatus.OK)
    assert config["dev_sign_in"] is False and config["shop_timezone"] == "Europe/Berlin"


# --- python run.py --demo --------------------------------------------------------------------
async def test_run_demo_twice_from_scratch(backend, settings, tmp_path):
    """The newcomer's commands: the page works, the printed token works, a re-run adds nothing."""
    workdir = tmp_path / "clone"
    async with demo_server(workdir, backend) as server:
        assert "Created: 16 templates, 5 products, 2 gift packs" in server.output
        async with aiohttp.ClientSession() as session:
            async with session.get(server.base_url + "/demo") as response:
                assert response.status == HTTPStatus.OK
            async with session.get(server.base_url + "/docs") as response:
                assert response.status == HTTPStatus.OK
            url = server.base_url + demo_url("/me/coupons")
            async with session.get(url, headers=bearer(server.token)) as response:
                assert response.status == HTTPStatus.OK
            # Demo mode signs a fresh shopper in with the development provider.
            body = {"auth_code": "dev:demo-newcomer"}
            async with session.post(server.base_url + "/api/v1/session", json=body) as response:
                assert response.status == HTTPStatus.OK
    async with demo_server(workdir, backend) as server:
        assert "Nothing new: the demo shop was already there." in server.output


def test_run_demo_is_refused_outside_development(tmp_path: Path):
    env = demo_env("embedded", free_port(), BFF_ENV="production", BFF_JWT_SECRET="x" * 40)
    result = subprocess.run(
        [sys.executable, str(REPO / "run.py"), "--demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--demo is for development only" in result.stderr


def test_demo_mode_turns_on_dev_sign_in_only_when_no_provider_is_configured():
    from bff.cli import demo_settings

    assert demo_settings(Settings()).identity.provider == "dev"
    custom = Settings(identity=IdentitySettings(provider="corp.sso:Provider"))
    assert demo_settings(custom).identity.provider == "corp.sso:Provider"


# --- /docs -----------------------------------------------------------------------------------
async def test_docs_show_the_main_flows_with_examples_that_match_the_schemas(client, clock):
    doc = await expect(await client.get("/api/v1/openapi.json"), HTTPStatus.OK)
    assert "# Main flows" in doc["info"]["description"]
    endpoints = {endpoint.handler.__name__: endpoint for endpoint in client.app[ENDPOINTS]}
    for name, example in resolve(REPLY_EXAMPLES, clock.now()).items():
        endpoint = endpoints[name]
        assert endpoint.reply is not None, name
        assert endpoint.reply().validate(example) == {}, name
        operation = doc["paths"][endpoint.openapi_path][endpoint.method.lower()]
        ok = operation["responses"][str(int(endpoint.status))]
        assert ok["content"]["application/json"]["example"] == example, name
    for name, example in resolve(REQUEST_EXAMPLES, clock.now()).items():
        endpoint = endpoints[name]
        assert endpoint.body is not None and endpoint.body().validate(example) == {}, name
        operation = doc["paths"][endpoint.openapi_path][endpoint.method.lower()]
        assert operation["requestBody"]["content"]["application/json"]["example"] == example
