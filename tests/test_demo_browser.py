"""The demo storefront in a real browser: headless Chromium drives ``/demo`` end to end.

The server is the newcomer's: ``python run.py --demo`` as a subprocess (on the
embedded default and on MariaDB + Redis). The browser is Debian's ``chromium``
(``.ci/run`` installs it), driven by Playwright's Python package, whose wheel
ships its driver; nothing is downloaded. Each step saves a screenshot under
``artifacts/screenshots/`` and prints its path.

Without chromium or Playwright the test skips here, and fails with ``CI=true``.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import IN_CI
from tests.demo_server import REPO, DemoServer, demo_server

SCREENSHOTS = REPO / "artifacts" / "screenshots"
STEP_TIMEOUT_MS = 15_000
# The browser's zone differs from the shop's (Asia/Shanghai), so a time shown in the
# browser's zone would fail the live-room check.
BROWSER_TIMEZONE = "America/New_York"
SHOP_TIMEZONE = ZoneInfo("Asia/Shanghai")


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None and Path("/usr/bin/chromium").exists():
        path = "/usr/bin/chromium"
    if path is None:
        _missing("Debian's chromium is not installed (`apt-get install -y chromium`)")
    return str(path)


def _missing(why: str) -> None:
    if IN_CI:
        pytest.fail(why)
    pytest.skip(why)


try:
    from playwright.async_api import Page, async_playwright, expect
except ImportError:  # pragma: no cover - the test extra installs it
    async_playwright = None  # type: ignore[assignment]


class Steps:
    """Numbered screenshots of one run; their paths are printed as they are taken."""

    def __init__(self, page: Page, backend: str, capsys: pytest.CaptureFixture[str]):
        self.page = page
        self.prefix = backend
        self.capsys = capsys
        self.count = 0
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    async def shot(self, name: str) -> Path:
        self.count += 1
        path = SCREENSHOTS / f"{self.prefix}-{self.count:02d}-{name}.png"
        await self.page.screenshot(path=str(path), full_page=False)
        with self.capsys.disabled():
            print(f"\n  screenshot: {path.relative_to(REPO)}", end="")
        return path


async def _claim_through_api(server: DemoServer, token: str, template_name: str) -> None:
    """The same shopper claims in "another tab": the page's widget is now stale."""
    headers = {"Authorization": f"Bearer {token}"}
    base = f"{server.base_url}/api/v1/shops/demo"
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(base + "/claim-widget") as response:
            coupons = (await response.json())["coupons"]
        template_id = next(c["template_id"] for c in coupons if c["name"] == template_name)
        body = {"template_id": template_id, "request_id": "other-tab-1"}
        async with session.post(base + "/coupons/claim", json=body) as response:
            assert response.status == 201, await response.text()


async def _live_start(server: DemoServer, product_id: str) -> datetime:
    url = f"{server.base_url}/api/v1/shops/demo/live-rooms/room-1/prices?product_ids={product_id}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return datetime.fromisoformat((await response.json())["items"][0]["starts_at"])


def _coupon(page: Page, section: str, name: str) -> Any:
    return page.locator(f"{section} li.coupon").filter(has_text=name)


@contextlib.asynccontextmanager
async def _browser_page(**options: Any) -> AsyncIterator[tuple[Page, list[str]]]:
    """Headless Debian chromium with one page (``options`` for ``new_page``), the step
    timeouts set; the page's uncaught errors collect in the list. Skips (fails in CI)
    without chromium or Playwright."""
    executable = _chromium()
    if async_playwright is None:
        _missing("playwright is not installed (pip install -e '.[test]')")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, headless=True)
        try:
            page = await browser.new_page(**options)
            page.set_default_timeout(STEP_TIMEOUT_MS)
            expect.set_options(timeout=STEP_TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            yield page, errors
        finally:
            await browser.close()


async def test_storefront_in_a_browser(
    backend: str, settings: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Product page, 券后价, claiming, my coupons, an error, joining and the gift pack."""
    viewport = {"width": 1280, "height": 900}
    async with (
        demo_server(tmp_path / "server", backend) as server,
        _browser_page(viewport=viewport, timezone_id=BROWSER_TIMEZONE) as (page, errors),
    ):
        steps = Steps(page, backend, capsys)
        await _walk_through(page, steps, server)
        assert errors == [], errors


async def _walk_through(page: Page, steps: Steps, server: DemoServer) -> None:
    # 1. The product page, anonymous: list price, store promotion and the post-coupon price.
    await page.goto(server.base_url + "/demo")
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    detail = page.locator("#detail")
    await expect(detail.locator("#detail-title")).to_have_text("保温杯 500ml")
    await expect(detail).to_contain_text("¥399.00")
    await expect(detail).to_contain_text("¥369.00")
    # 满299减50 on the promotion price: 369 - 50.
    await expect(page.locator("#final-price")).to_have_text("¥319.00")
    await expect(page.locator("#product-list")).to_contain_text("券后 ¥319.00")
    await steps.shot("product-anonymous")

    # 2. A new shopper signs in; opening the product auto-claims its coupon.
    await page.click("#new-shopper")
    await expect(page.locator("#who")).to_have_text(re.compile(r"Signed in as demo-"))
    await expect(page.locator("#toasts")).to_contain_text("Auto-claimed on open: 保温杯进店立减20")
    await expect(detail).to_contain_text("Auto-claimed when you opened this page")
    await expect(page.locator("#final-price")).to_have_text("¥319.00")
    await steps.shot("product-signed-in")

    # 3. Claim 满299减50 from the widget; the button turns into "Claimed".
    welcome = _coupon(page, "#widget", "全店满299减50")
    await welcome.get_by_role("button", name="Claim").click()
    await expect(page.locator("#toasts")).to_contain_text("Claimed 全店满299减50")
    await expect(welcome.get_by_role("button")).to_have_text("Claimed")
    await expect(welcome.get_by_role("button")).to_be_disabled()
    await steps.shot("claimed")

    # 4. It is in my coupons, with "use now" opening the redeem page.
    wallet = page.locator("#wallet")
    mine = _coupon(page, "#wallet", "全店满299减50")
    await expect(mine).to_contain_text("valid until")
    await mine.get_by_role("link", name="Use now").click()
    redeem = page.locator("#redeem")
    await expect(redeem).to_be_visible()
    await expect(redeem.locator("#redeem-page")).to_contain_text("pages/coupon/use?coupon_id=")
    await expect(redeem).to_contain_text("¥319.00")
    await steps.shot("my-coupons-use-now")
    await page.click("#redeem-close")
    await expect(redeem).to_be_hidden()

    # 5. Errors read as a person would want: a stale widget and an unknown code.
    token = await page.evaluate("sessionStorage.getItem('bff-demo-token')")
    await _claim_through_api(server, token, "茶叶9折券")
    await _coupon(page, "#widget", "茶叶9折券").get_by_role("button", name="Claim").click()
    await expect(page.locator("#toasts")).to_contain_text("You already have this coupon.")
    await page.fill("#code-input", "NOPE-0000")
    await page.click("#code-form button[type=submit]")
    await expect(page.locator("#toasts")).to_contain_text("We don't know this code.")
    await page.fill("#code-input", "DEMO-0001")
    await page.click("#code-form button[type=submit]")
    await expect(page.locator("#toasts")).to_contain_text("Code accepted: 短信券 满99减10")
    # One message at a time, in the top bar's status line: none piles up over a button.
    await expect(page.locator("#toasts .toast")).to_have_count(1)
    await expect(page.locator("header.topbar #toasts")).to_have_count(1)
    await expect(wallet).to_contain_text("短信券 满99减10")
    await steps.shot("errors-and-code")

    # 6. Join the membership: the new-member pack pops up; claiming it is a lottery reveal.
    await page.locator("#member-section").scroll_into_view_if_needed()
    await page.click("#join")
    popup = page.locator("#popup")
    await expect(popup).to_be_visible()
    await expect(popup.locator("#popup-title")).to_have_text("新会员礼包")
    await expect(popup).to_contain_text("2 coupons and a gift inside")
    await steps.shot("member-popup")
    await page.click("#popup-claim")
    prizes = popup.locator("#popup-prizes .prize.revealed")
    await expect(prizes).to_have_count(3)
    await expect(popup).to_contain_text("赠品：帆布袋")
    # The gift is not counted as a coupon, and nothing reads "1 coupons".
    await expect(popup).to_contain_text("You got them all: 2 coupons and a gift.")
    await expect(page.locator("#toasts")).to_contain_text(
        "新会员礼包 claimed: 2 coupons and a gift added to My coupons."
    )
    await page.wait_for_timeout(1200)  # let the reveal animation finish for the screenshot
    await steps.shot("gift-pack-revealed")
    await page.click("#popup-close")
    await expect(popup).to_be_hidden()
    pack = page.locator("#member li.pack").filter(has_text="新会员礼包")
    await expect(pack.get_by_role("button")).to_have_text("Claimed")
    assert (await pack.inner_text()).count("新会员礼包") == 1  # the row names its pack once
    await expect(page.locator("#member-status")).to_contain_text("Member, level 0")
    await expect(wallet).to_contain_text("礼包券 满199减30")
    await expect(wallet).to_contain_text("from a gift pack")
    await page.locator("#member-section").scroll_into_view_if_needed()
    await steps.shot("member-center")

    # 7. Points exchange: a new member has no points yet, and every offer says so.
    points = page.locator("#points")
    await expect(points.locator("#points-balance")).to_have_text("0 points")
    offer = points.locator("li.coupon").first.get_by_role("button")
    await expect(offer).to_have_text("Not enough points")
    await page.locator("#points-section").scroll_into_view_if_needed()
    await steps.shot("points")

    # 8. The live room: an exclusive price live now; buying from the room pays it.
    live = page.locator("#live")
    await expect(live).to_contain_text("Live now")
    await expect(live).to_contain_text("¥299.00")
    # Times in the shop's zone, not the browser's.
    await expect(live.locator("#live-zone")).to_contain_text("Asia/Shanghai")
    starts_at = await _live_start(server, "cup-1")
    await expect(live).to_contain_text(
        starts_at.astimezone(SHOP_TIMEZONE).strftime("%Y-%m-%d %H:%M")
    )
    await live.get_by_role("button", name="Buy in the live room").click()
    await expect(page.locator("#final-price")).to_have_text("¥299.00")
    await expect(detail).to_contain_text("coupons do not apply")
    await page.locator("#detail-section").scroll_into_view_if_needed()
    await steps.shot("live-room")


# --- CORS: a front end on another origin ---------------------------------------------------
FRONT_END_PAGE = "<!doctype html><title>another origin</title><pre id='out'></pre>"
# Runs in the page: a cross-origin fetch with a bearer token (so the browser preflights),
# the reply's status, body and an exposed header, or the browser's refusal.
CROSS_ORIGIN_FETCH = """async ({api, token}) => {
  try {
    const reply = await fetch(api + "/api/v1/shops/demo/me/coupons?status=all", {
      headers: {"Authorization": "Bearer " + token, "X-Request-Id": "cors-browser-1"},
    });
    const body = await reply.json();
    const result = {status: reply.status, items: body.items.length,
                    request_id: reply.headers.get("X-Request-Id")};
    document.getElementById("out").textContent = JSON.stringify(result);
    return result;
  } catch (error) {
    document.getElementById("out").textContent = String(error);
    return {refused: String(error)};
  }
}"""


@contextlib.asynccontextmanager
async def _front_end_server() -> AsyncIterator[int]:
    """A second, tiny web server: the page of a front end hosted elsewhere."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=FRONT_END_PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


async def test_a_page_on_another_origin_calls_the_api_through_cors(
    backend: str, settings: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Listed origin (127.0.0.1:<port>): the reply arrives; the same page served as
    localhost:<port>, an origin not listed, is refused by the browser."""
    async with _front_end_server() as page_port:
        allowed = f"http://127.0.0.1:{page_port}"
        async with (
            demo_server(tmp_path / "server", backend, BFF_CORS_ORIGINS=allowed) as server,
            _browser_page(viewport={"width": 800, "height": 400}) as (page, _),
        ):
            steps = Steps(page, f"{backend}-cors", capsys)
            call = {"api": server.base_url, "token": server.token}
            await page.goto(allowed + "/")
            answered = await page.evaluate(CROSS_ORIGIN_FETCH, call)
            assert answered["status"] == 200 and answered["items"] >= 0, answered
            assert answered["request_id"] == "cors-browser-1", answered
            await steps.shot("allowed-origin")
            await page.goto(f"http://localhost:{page_port}/")
            refused = await page.evaluate(CROSS_ORIGIN_FETCH, call)
            assert "Failed to fetch" in refused.get("refused", ""), refused
            await steps.shot("refused-origin")


async def test_docs_page_tries_an_operation_in_a_browser(
    backend: str, settings: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """/docs (issue 19 item 5): a stored token, Send and its reply, curl, full sidebar
    paths, an int64 limit shown exactly, a favicon; nothing from the internet."""
    async with (
        demo_server(tmp_path / "server", backend) as server,
        _browser_page(viewport={"width": 1280, "height": 900}) as (page, errors),
    ):
        foreign: list[str] = []
        page.on(
            "request",
            lambda request: (
                foreign.append(request.url)
                if not request.url.startswith((server.base_url, "data:"))
                else None
            ),
        )
        missing: list[str] = []
        page.on(
            "response",
            lambda response: (
                missing.append(response.url)
                if response.status == 404 and "/api/" not in response.url
                else None
            ),
        )
        steps = Steps(page, f"{backend}-docs", capsys)
        await _try_the_docs(page, steps, server)
        assert errors == [], errors
        assert foreign == [], foreign
        assert missing == [], missing


async def _try_the_docs(page: Page, steps: Steps, server: DemoServer) -> None:
    await page.goto(server.base_url + "/docs")
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await expect(page.locator('link[rel="icon"]')).to_have_attribute("href", "/favicon.ico")
    icon = await page.request.get(server.base_url + "/favicon.ico")
    assert icon.ok and icon.headers["content-type"] == "image/svg+xml"

    # The sidebar shows every operation's whole path: none is cut off, so they differ.
    sidebar = page.locator("#sidebar .ops a[href^='#op-']")
    paths = await sidebar.locator(".p").all_inner_texts()
    assert "/api/v1/shops/{shop_id}/admin/coupon-templates/{template_id}/codes/import" in paths
    cut = await sidebar.evaluate_all(
        "links => links.filter(a => a.scrollWidth > a.clientWidth + 1).map(a => a.title)"
    )
    assert cut == [], cut
    # int64 limits exactly as the document says them, not rounded by JSON.parse.
    await expect(page.locator("#schemas")).to_contain_text("max: 9223372036854775807")
    assert "9223372036854776000" not in await page.locator("main").inner_text()

    # The token is kept by the page (localStorage) across a reload.
    await page.fill("#token", server.token)
    await page.reload()
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await expect(page.locator("#token")).to_have_value(server.token)

    # My coupons: prefilled with the demo shop, sent with the token; the reply is shown.
    operation = page.locator("#op-my_coupons")
    await operation.locator("> summary").click()
    trial = operation.locator(".try")
    await expect(trial.locator("input[name=shop_id]")).to_have_value("demo")
    curl = trial.locator("pre.curl")
    await expect(curl).to_contain_text(f"{server.base_url}/api/v1/shops/demo/me/coupons")
    await expect(curl).to_contain_text(f"Authorization: Bearer {server.token}")
    await trial.get_by_role("button", name="Send").click()
    await expect(trial.locator(".reply [data-status]")).to_have_text("200")
    await expect(trial.locator(".reply-headers")).to_contain_text("content-type: application/json")
    await expect(trial.locator(".reply-body")).to_contain_text('"items"')
    await operation.scroll_into_view_if_needed()
    await steps.shot("docs-try-it-out")

    # A refusal is shown as it came, in the error shape; the examples list its code.
    claim = page.locator("#op-claim")
    await claim.locator("> summary").click()
    await expect(claim).to_contain_text("409 SOLD_OUT")
    body = claim.locator(".try textarea[name=body]")
    await body.fill('{"template_id": 999999, "request_id": "docs-try-1"}')
    await claim.locator(".try").get_by_role("button", name="Send").click()
    await expect(claim.locator(".reply [data-status]")).to_have_text("404")
    await expect(claim.locator(".reply-body")).to_contain_text('"code": "NOT_FOUND"')
    await claim.locator(".try").scroll_into_view_if_needed()
    await steps.shot("docs-refusal")
