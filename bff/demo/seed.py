"""The demo shop: every widget has something to show, seeded through the app's own HTTP API.

``python run.py --demo`` calls :func:`seed_app`, which starts the app on a
loopback port of its own, seeds through the same endpoints a merchant tool
would call (so every rule and cache invalidation applies), stops it, and then
the real server starts. Seeding over HTTP rather than through the service
objects also makes it work unchanged on either backend, and keeps the seed an
example of the merchant API.

Idempotent: products and live rooms have fixed ids and are PUT; templates and
gift packs are looked up by name before creating; exchange offers by template;
the sold-out claim and the points grant carry fixed request ids. A second run
creates nothing and only moves windows that are about to close (claim ends,
pack ends, the live window), so a demo shop seeded last month still works.

Points (issue 6) may be absent from a build: :func:`seed_points` runs only
when the app's OpenAPI document lists its endpoints, and otherwise leaves a
note in the report.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import Any

import aiohttp
from aiohttp import web

from bff.auth import Role, TokenCodec
from bff.clock import Clock, SystemClock
from config.loader import Settings

DEMO_SHOP = "demo"
DEMO_USER = "demo-shopper"
EARLY_BIRD = "demo-early-bird"
MERCHANT_SUB = "demo-merchant"
LIVE_ROOM = "room-1"
USER_LEVEL = 2
USER_POINTS = 3000
CODE_COUNT = 100
TOKEN_TTL = timedelta(hours=24)
# Windows closer than this to their end are moved on a re-run; new ones stay open this long.
REFRESH_MARGIN = timedelta(days=7)
OPEN_FOR = timedelta(days=30)
LIVE_FOR = timedelta(hours=6)
CLAIM_PAGE = "pages/index/index"
REDEEM_PAGE = "pages/coupon/use"
API = "/api/v1"
POINTS_PATHS = (
    API + "/shops/{shop_id}/admin/exchange-offers",
    API + "/shops/{shop_id}/admin/members/{user_id}/points",
)


def demo_codes() -> list[str]:
    """The codes "sent by SMS" for the code template; the page hints at them."""
    return [f"DEMO-{n:04d}" for n in range(1, CODE_COUNT + 1)]


# --- what the shop holds ---------------------------------------------------------------------
PRODUCTS: dict[str, dict[str, Any]] = {
    "cup-1": {
        "title": "保温杯 500ml",
        "list_price": 39900,
        "promo_price": 36900,
        "category": "cups",
    },
    "tea-1": {"title": "西湖龙井礼盒", "list_price": 29900, "category": "tea"},
    "kettle-1": {
        "title": "电热水壶",
        "list_price": 59900,
        "promo_price": 49900,
        "category": "kitchen",
    },
    "mug-1": {"title": "陶瓷马克杯", "list_price": 8900, "category": "cups"},
    "bag-1": {"title": "帆布袋", "list_price": 4900, "category": "gifts"},
}
PRODUCT_IDS = tuple(PRODUCTS)
AUTO_CLAIM_PRODUCT = "cup-1"


@dataclass(frozen=True)
class TemplateSeed:
    """One demo template: ``name`` is its identity (looked up before creating)."""

    key: str
    name: str
    description: str
    benefit: dict[str, Any]
    methods: tuple[str, ...]
    scope: dict[str, Any] = field(default_factory=lambda: {"type": "shop"})
    stock: int | None = 1000
    per_user_limit: int = 1
    valid_days: int = 7
    audience: dict[str, Any] = field(default_factory=lambda: {"type": "all"})
    codes: dict[str, Any] = field(default_factory=lambda: {"type": "none"})
    # Where the claim window starts, from now; the window stays open OPEN_FOR after that.
    starts_in: timedelta = timedelta(days=-1)
    # Ended by PATCH after creation (a window in the past would drop off the widget in a day).
    ended: bool = False

    def body(self, now: datetime) -> dict[str, Any]:
        start = now + self.starts_in
        body: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "benefit": self.benefit,
            "scope": self.scope,
            "claim_start": start.isoformat(),
            "claim_end": (max(start, now) + OPEN_FOR).isoformat(),
            "validity": {
                "type": "relative",
                "effective_after_days": 0,
                "valid_days": self.valid_days,
            },
            "codes": self.codes,
            "claim_methods": list(self.methods),
            "per_user_limit": self.per_user_limit,
            "audience": self.audience,
            "claim_page": CLAIM_PAGE,
            "redeem_page": REDEEM_PAGE,
        }
        if self.codes["type"] not in ("imported", "pregenerated"):
            body["stock"] = (
                {"type": "unlimited"}
                if self.stock is None
                else {"type": "limited", "total": self.stock}
            )
        return body


def _threshold(off_yuan: int, over_yuan: int) -> dict[str, Any]:
    return {"type": "threshold", "amount_off": off_yuan * 100, "threshold": over_yuan * 100}


def _no_threshold(off_yuan: int) -> dict[str, Any]:
    return {"type": "no_threshold", "amount_off": off_yuan * 100}


# Free store coupons top out at 100/500 (0.2): the points coupons beat every one of them,
# as the points policy's strength rule asks (DOMAIN.md, points exchange).
TEMPLATES: tuple[TemplateSeed, ...] = (
    TemplateSeed(
        "welcome", "全店满299减50", "全店通用，每人限领1张", _threshold(50, 299), ("widget",)
    ),
    TemplateSeed(
        "no_threshold",
        "无门槛立减10元",
        "下单立减，领取后2天内有效，每人2张",
        _no_threshold(10),
        ("widget",),
        stock=500,
        per_user_limit=2,
        valid_days=2,
    ),
    TemplateSeed(
        "tea_discount",
        "茶叶9折券",
        "茶叶类目9折，最高减50元",
        {"type": "discount", "rate_permille": 900, "max_off": 5000},
        ("widget",),
        scope={"type": "categories", "categories": ["tea"]},
    ),
    TemplateSeed(
        "exchange",
        "9.9元换购马克杯",
        "下单加9.9元换购陶瓷马克杯一只",
        {"type": "exchange", "product_id": "mug-1", "price": 990},
        ("widget",),
        scope={"type": "products", "product_ids": ["mug-1"]},
    ),
    TemplateSeed(
        "auto",
        "保温杯进店立减20",
        "打开保温杯详情页自动领取",
        _no_threshold(20),
        ("auto",),
        scope={"type": "products", "product_ids": [AUTO_CLAIM_PRODUCT]},
    ),
    TemplateSeed(
        "sold_out",
        "限量1张 满199减20",
        "手慢无：只有1张",
        _threshold(20, 199),
        ("widget",),
        stock=1,
    ),
    TemplateSeed(
        "not_started",
        "双12预热 满399减60",
        "两周后开抢",
        _threshold(60, 399),
        ("widget",),
        starts_in=timedelta(days=14),
    ),
    TemplateSeed(
        "ended", "已结束 满99减5", "活动已结束", _threshold(5, 99), ("widget",), ended=True
    ),
    TemplateSeed(
        "gold",
        "金卡专享 满500减100",
        "3级及以上会员可领",
        _threshold(100, 500),
        ("widget",),
        audience={"type": "members", "min_level": 3},
    ),
    TemplateSeed(
        "code",
        "短信券 满99减10",
        "凭短信兑换码领取（DEMO-0001 至 DEMO-0100）",
        _threshold(10, 99),
        ("code",),
        codes={"type": "imported"},
        stock=None,
    ),
    TemplateSeed(
        "gift",
        "赠品：帆布袋",
        "新会员礼包赠品，1分钱带走帆布袋",
        {"type": "gift", "product_id": "bag-1"},
        ("gift_pack",),
        stock=500,
    ),
    TemplateSeed(
        "pack_199", "礼包券 满199减30", "新会员礼包专享", _threshold(30, 199), ("gift_pack",)
    ),
    TemplateSeed("pack_5", "礼包券 无门槛5元", "新会员礼包专享", _no_threshold(5), ("gift_pack",)),
    TemplateSeed(
        "member_pack", "会员礼包 满399减60", "会员礼包专享", _threshold(60, 399), ("gift_pack",)
    ),
    TemplateSeed(
        "points_60", "积分兑换 满299减60", "600积分兑换", _threshold(60, 299), ("points",)
    ),
    TemplateSeed(
        "points_150", "积分兑换 满599减150", "1500积分兑换", _threshold(150, 599), ("points",)
    ),
)
EXCHANGE_OFFERS = {"points_60": 600, "points_150": 1500}


@dataclass(frozen=True)
class PackSeed:
    name: str
    kind: str
    coupons: tuple[str, ...]
    gift: tuple[str, int] | None = None
    min_level: int = 0

    def body(self, now: datetime, ids: Mapping[str, int]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": self.kind,
            "name": self.name,
            "starts_at": (now - timedelta(days=1)).isoformat(),
            "ends_at": (now + OPEN_FOR).isoformat(),
            "coupon_template_ids": [ids[key] for key in self.coupons],
        }
        if self.kind == "member":
            body["min_level"] = self.min_level
        if self.gift is not None:
            body["gift"] = {"template_id": ids[self.gift[0]], "quantity": self.gift[1]}
        return body


PACKS: tuple[PackSeed, ...] = (
    PackSeed("新会员礼包", "new_member", ("pack_199", "pack_5"), gift=("gift", 200)),
    PackSeed("会员礼包", "member", ("member_pack",), min_level=1),
)


def live_room_items(now: datetime) -> list[dict[str, Any]]:
    """cup-1 live now (直播中), kettle-1 in tomorrow's stream (预告)."""
    tomorrow = now + timedelta(days=1)
    return [
        {
            "product_id": "cup-1",
            "exclusive_price": 29900,
            "starts_at": (now - timedelta(hours=1)).isoformat(),
            "ends_at": (now + LIVE_FOR).isoformat(),
        },
        {
            "product_id": "kettle-1",
            "exclusive_price": 39900,
            "starts_at": tomorrow.isoformat(),
            "ends_at": (tomorrow + timedelta(hours=3)).isoformat(),
        },
    ]


# --- talking to the app ----------------------------------------------------------------------
class SeedError(Exception):
    """The app refused a seeding call: the message names the call and the app's answer."""


class DemoApi:
    """The app's HTTP API as the seed uses it: a session, the server's base URL, a merchant."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, merchant_token: str):
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.merchant_token = merchant_token

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json: Any = None,
        data: Any = None,
    ) -> tuple[int, Any]:
        """(status, JSON body or None); ``path`` under the demo shop unless it starts at /api."""
        url = self.base_url + (path if path.startswith(API) else shop_path(path))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(
            method, url, json=json, data=data, headers=headers
        ) as response:
            body = await response.json() if response.content_type == "application/json" else None
            return response.status, body

    async def admin(self, method: str, path: str, *, json: Any = None, data: Any = None) -> Any:
        """A merchant call that must succeed (2xx); its JSON body."""
        status, body = await self.request(
            method, "/admin" + path, token=self.merchant_token, json=json, data=data
        )
        if not 200 <= status < 300:
            raise SeedError(f"{method} /admin{path} answered {status}: {body}")
        return body

    async def all_items(self, path: str) -> list[dict[str, Any]]:
        """Every item of an admin list, following cursors."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            query = "?limit=100" + (f"&cursor={cursor}" if cursor else "")
            page = await self.admin("GET", path + query)
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return items


def shop_path(path: str) -> str:
    return f"{API}/shops/{DEMO_SHOP}{path}"


# --- the report ------------------------------------------------------------------------------
@dataclass
class SeedReport:
    shop_id: str
    user_id: str
    user_token: str
    merchant_token: str
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    template_ids: dict[str, int] = field(default_factory=dict)
    pack_ids: dict[str, int] = field(default_factory=dict)
    points: bool = False

    def lines(self, base_url: str, where: str) -> list[str]:
        """What ``run.py --demo`` prints: where to go, a ready token, what changed."""
        out = [
            f'Demo shop "{self.shop_id}" is ready on {where}.',
            f"  Storefront:  {base_url}/demo#token={self.user_token}",
            f"  API docs:    {base_url}/docs",
            f"  Shopper token ({self.user_id}, valid 24 h):",
            f"    {self.user_token}",
            f"  Merchant token (shop {self.shop_id}, valid 24 h):",
            f"    {self.merchant_token}",
            "  The page's 'New shopper' button signs in a fresh user (dev:<user_id>).",
        ]
        if self.created:
            kinds = Counter(item.split(" ", 1)[0].replace("-", " ") for item in self.created)
            made = ", ".join(
                f"{count} {kind}{'s' if count > 1 else ''}" for kind, count in kinds.items()
            )
            out.append(f"  Created: {made}.")
        else:
            out.append("  Nothing new: the demo shop was already there.")
        if self.updated:
            out.append(f"  Moved windows forward: {', '.join(self.updated)}.")
        out.extend(f"  Note: {note}" for note in self.notes)
        return out


# --- seeding ---------------------------------------------------------------------------------
async def seed(api: DemoApi, codec: TokenCodec, now: datetime) -> SeedReport:
    """Make the demo shop as described in the module doc; safe to run again."""
    user_token, _ = codec.mint(DEMO_USER, Role.USER)
    report = SeedReport(DEMO_SHOP, DEMO_USER, user_token, api.merchant_token)
    ids = await _templates(api, now, report)
    report.template_ids = ids
    await _codes(api, ids["code"])
    await _products(api, ids, report)
    await api.admin("PUT", f"/live-rooms/{LIVE_ROOM}/prices", json={"items": live_room_items(now)})
    await api.admin("PUT", f"/members/{DEMO_USER}", json={"level": USER_LEVEL})
    await _sell_out(api, codec, ids["sold_out"])
    report.pack_ids = await _packs(api, now, ids, report)
    if await points_available(api):
        report.points = True
        await seed_points(api, ids, report)
    else:
        report.notes.append(
            "points exchange is not in this build: skipped granting points and "
            "creating exchange offers (the page shows it as not available)."
        )
    return report


async def _templates(api: DemoApi, now: datetime, report: SeedReport) -> dict[str, int]:
    existing = {t["name"]: t for t in await api.all_items("/coupon-templates")}
    ids: dict[str, int] = {}
    for spec in TEMPLATES:
        template = existing.get(spec.name)
        if template is None:
            template = await api.admin("POST", "/coupon-templates", json=spec.body(now))
            report.created.append(f"template {spec.name}")
        elif template["status"] != "ended" and _closing(template["claim_end"], now):
            end = (now + OPEN_FOR).isoformat()
            template = await api.admin(
                "PATCH", f"/coupon-templates/{template['id']}", json={"claim_end": end}
            )
            report.updated.append(f"template {spec.name}")
        if spec.ended and template["status"] != "ended":
            await api.admin(
                "PATCH", f"/coupon-templates/{template['id']}", json={"status": "ended"}
            )
        ids[spec.key] = template["id"]
    return ids


def _closing(end: str, now: datetime) -> bool:
    return datetime.fromisoformat(end) < now + REFRESH_MARGIN


async def _codes(api: DemoApi, template_id: int) -> None:
    """Upload the SMS codes; known ones come back as duplicates, so a re-run adds none."""
    form = aiohttp.FormData()
    form.add_field("file", "\n".join(demo_codes()) + "\n", filename="codes.txt")
    await api.admin("POST", f"/coupon-templates/{template_id}/codes/import", data=form)


async def _products(api: DemoApi, ids: Mapping[str, int], report: SeedReport) -> None:
    for product_id, fields in PRODUCTS.items():
        body = dict(fields)
        if product_id == AUTO_CLAIM_PRODUCT:
            body["auto_claim_template_ids"] = [ids["auto"]]
        status, _ = await api.request("GET", f"/products/{product_id}", token=None)
        await api.admin("PUT", f"/products/{product_id}", json=body)
        if status == HTTPStatus.NOT_FOUND:
            report.created.append(f"product {product_id}")


async def _sell_out(api: DemoApi, codec: TokenCodec, template_id: int) -> None:
    """The one coupon of the sold-out template goes to another shopper, once."""
    token, _ = codec.mint(EARLY_BIRD, Role.USER)
    status, body = await api.request(
        "POST",
        "/coupons/claim",
        token=token,
        json={"template_id": template_id, "request_id": "demo-seed-early-bird"},
    )
    if status != HTTPStatus.CREATED and not (
        status == HTTPStatus.CONFLICT and body["error"]["code"] == "SOLD_OUT"
    ):
        raise SeedError(f"claiming the sold-out template answered {status}: {body}")


async def _packs(
    api: DemoApi, now: datetime, ids: Mapping[str, int], report: SeedReport
) -> dict[str, int]:
    existing = {p["name"]: p for p in await api.all_items("/gift-packs")}
    pack_ids: dict[str, int] = {}
    for spec in PACKS:
        pack = existing.get(spec.name)
        if pack is None:
            status, body = await api.request(
                "POST", "/admin/gift-packs", token=api.merchant_token, json=spec.body(now, ids)
            )
            if status == HTTPStatus.CONFLICT:
                report.notes.append(
                    f"gift pack {spec.name} not created: another active {spec.kind} pack "
                    "overlaps its window (end that one to see the demo's)."
                )
                continue
            if status != HTTPStatus.CREATED:
                raise SeedError(f"POST /admin/gift-packs answered {status}: {body}")
            pack = body
            report.created.append(f"gift-pack {spec.name}")
        elif pack["status"] == "active" and _closing(pack["ends_at"], now):
            end = (now + OPEN_FOR).isoformat()
            # The demo packs have no popup window of their own: it follows ends_at.
            pack = await api.admin("PATCH", f"/gift-packs/{pack['id']}", json={"ends_at": end})
            report.updated.append(f"gift-pack {spec.name}")
        pack_ids[spec.kind] = pack["id"]
    return pack_ids


# --- points (issue 6): only when the build has them -----------------------------------------
async def points_available(api: DemoApi) -> bool:
    """Whether the app registers the points endpoints (read from its own OpenAPI document)."""
    status, document = await api.request("GET", API + "/openapi.json")
    if status != HTTPStatus.OK:
        raise SeedError(f"GET {API}/openapi.json answered {status}")
    return all(path in document["paths"] for path in POINTS_PATHS)


async def seed_points(api: DemoApi, ids: Mapping[str, int], report: SeedReport) -> None:
    """Points for the demo shopper and the exchange offers; a refusal becomes a note."""
    status, body = await api.request(
        "POST",
        f"/admin/members/{DEMO_USER}/points",
        token=api.merchant_token,
        json={"delta": USER_POINTS, "reason": "演示积分", "request_id": "demo-seed-points"},
    )
    if status not in (HTTPStatus.OK, HTTPStatus.CREATED):
        report.notes.append(f"points not granted to {DEMO_USER}: {status} {body}")
    offered = {offer["template_id"] for offer in await api.all_items("/exchange-offers")}
    for key, cost in EXCHANGE_OFFERS.items():
        if ids[key] in offered:
            continue
        status, body = await api.request(
            "POST",
            "/admin/exchange-offers",
            token=api.merchant_token,
            json={"template_id": ids[key], "points_cost": cost},
        )
        if status == HTTPStatus.CREATED:
            report.created.append(f"exchange-offer {cost} points")
        else:
            report.notes.append(f"exchange offer for template {ids[key]} refused: {status} {body}")


# --- run.py --demo ---------------------------------------------------------------------------
def demo_codec(settings: Settings, clock: Clock) -> TokenCodec:
    """Mints the printed tokens: valid a day, so the printed link lasts a demo."""
    jwt = dataclasses.replace(settings.jwt, token_ttl_seconds=int(TOKEN_TTL.total_seconds()))
    return TokenCodec(jwt, clock)


async def seed_app(
    settings: Settings, *, create: Callable[[Settings], web.Application] | None = None
) -> SeedReport:
    """Start the app on a loopback port of its own, seed it over HTTP, stop it."""
    from bff.app import create_app  # the app imports every handler; only this path needs it

    clock = SystemClock()
    app = create(settings) if create is not None else create_app(settings, clock=clock)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        codec = demo_codec(settings, clock)
        merchant_token, _ = codec.mint(MERCHANT_SUB, Role.MERCHANT, DEMO_SHOP)
        async with aiohttp.ClientSession() as session:
            api = DemoApi(session, f"http://{host}:{port}", merchant_token)
            return await seed(api, codec, clock.now())
    finally:
        await runner.cleanup()
