"""The demo storefront in a real browser: headless Chromium drives ``/demo`` end to end.

The server is the newcomer's: ``python run.py --demo`` as a subprocess (on the
embedded default and on MariaDB + Redis). The browser is Debian's ``chromium``
(``.ci/run`` installs it), driven by Playwright's Python package, whose wheel
ships its driver; nothing is downloaded. Each step saves a screenshot under
``artifacts/screenshots/`` and prints its path.

Without chromium or Playwright the test skips here, and fails with ``CI=true``.
"""

from __future__ import annotations

import re
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

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


async def test_storefront_in_a_browser(
    backend: str, settings: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Product page, 券后价, claiming, my coupons, an error, joining and the gift pack."""
    executable = _chromium()
    if async_playwright is None:
        _missing("playwright is not installed (pip install -e '.[test]')")
    async with demo_server(tmp_path / "server", backend) as server, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, headless=True)
        try:
            page = await browser.new_page(
                viewport={"width": 1280, "height": 900}, timezone_id=BROWSER_TIMEZONE
            )
            page.set_default_timeout(STEP_TIMEOUT_MS)
            expect.set_options(timeout=STEP_TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            steps = Steps(page, backend, capsys)
            await _walk_through(page, steps, server)
            assert errors == [], errors
        finally:
            await browser.close()


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
