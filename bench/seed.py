"""The bench's shop, through the public admin API only, and its users' tokens.

Only HTTP is used to seed, so the bench measures whatever the app on this
branch does with its data, whatever its tables look like.

Shop ``bench``:

* 50 products (``p-0001`` ...), list and promotion prices, three categories;
* 20 templates every "holder" user was granted (``HOLDERS`` users, 20 coupons
  each: thresholds, no-threshold, discounts, shop/category/product scopes, a few
  stackable) and 10 more each can still claim (widget and auto);
* live room ``room-1``: exclusive prices for the first 20 products, live now;
* per claim run, a fresh template (large stock) and a sold-out one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from bff.auth import Role, TokenCodec
from bff.clock import SystemClock
from config.loader import JwtSettings

SHOP = "bench"
PRODUCTS = 50
HELD_TEMPLATES = 20
CLAIMABLE_TEMPLATES = 10
ROOM = "room-1"


def product_id(n: int) -> str:
    return f"p-{n:04d}"


# Claim templates are scoped to a product no price route asks for, so the signed-in price
# runs still see exactly 20 held and 10 claimable coupons.
CLAIM_SCOPE = {"type": "products", "product_ids": [product_id(50)]}


# --- tokens ----------------------------------------------------------------------------------
class Minter:
    """User tokens as the app's TokenCodec makes them, fast enough for 100,000s of users.

    The first token of each role comes from TokenCodec itself; the rest reuse its
    header and claim set with another ``sub`` and are signed the same way (HS256).
    A sample is decoded by the codec, so a change in the token format fails here
    rather than as 401s in the middle of a run.
    """

    def __init__(self, secret: str) -> None:
        self.secret = secret.encode()
        self.codec = TokenCodec(JwtSettings(secret=secret), SystemClock())

    def one(self, sub: str, role: Role = Role.USER, shop: str | None = None) -> str:
        return self.codec.mint(sub, role, shop)[0]

    def many(self, subs: list[str]) -> list[str]:
        if not subs:
            return []
        first = self.one(subs[0])
        header, payload_b64, _ = first.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)))
        out = [first]
        for sub in subs[1:]:
            claims["sub"] = sub
            payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
            signing_input = f"{header}.{payload}".encode()
            signature = _b64(hmac.new(self.secret, signing_input, hashlib.sha256).digest())
            out.append(f"{header}.{payload}.{signature}")
        for token in out[:: max(1, len(out) // 5)]:
            self.codec.decode(token)  # raises if the app would refuse it
        return out


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def write_tokens(path: Path, tokens: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(tokens) + "\n")
    return path


# --- the shop --------------------------------------------------------------------------------
@dataclass
class Shop:
    base: str
    merchant: str
    held_template_ids: list[int] = field(default_factory=list)
    claimable_template_ids: list[int] = field(default_factory=list)
    holders: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.base}/api/v1/shops/{SHOP}{path}"


def _iso(instant: datetime) -> str:
    return instant.isoformat()


def template_body(n: int, **overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    rng = random.Random(n)
    kind = n % 5
    if kind == 0:
        benefit = {"type": "no_threshold", "amount_off": rng.choice([300, 500, 1000])}
    elif kind == 4:
        benefit = {
            "type": "discount",
            "rate_permille": rng.choice([850, 900, 950]),
            "max_off": 5000,
        }
        if n % 2:
            benefit["threshold"] = rng.choice([10000, 20000])
    else:
        threshold = rng.choice([9900, 19900, 29900, 49900])
        benefit = {"type": "threshold", "amount_off": threshold // 10, "threshold": threshold}
    scope: dict[str, Any]
    if n % 3 == 0:
        scope = {"type": "shop"}
    elif n % 3 == 1:
        scope = {"type": "categories", "categories": ["cups", "tea"]}
    else:
        scope = {"type": "products", "product_ids": [product_id(i) for i in range(1, 31)]}
    body: dict[str, Any] = {
        "name": f"bench {n}",
        "description": "benchmark template",
        "benefit": benefit,
        "scope": scope,
        "claim_start": _iso(now - timedelta(days=1)),
        "claim_end": _iso(now + timedelta(days=10)),
        "validity": {"type": "relative", "effective_after_days": 0, "valid_days": 7},
        "stock": {"type": "limited", "total": 1_000_000},
        "codes": {"type": "none"},
        "claim_methods": ["widget", "auto"],
        "per_user_limit": 1,
        "stacking": {"with_store_promotions": n % 4 != 3, "with_other_coupons": n % 6 == 5},
        "claim_page": "pages/index/index",
        "redeem_page": "pages/coupon/use",
    }
    body.update(overrides)
    return body


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, token: str, body: Any, ok: int
) -> Any:
    async with session.request(
        method, url, json=body, headers={"Authorization": f"Bearer {token}"}
    ) as reply:
        payload = await reply.json()
        if reply.status != ok:
            raise RuntimeError(f"{method} {url} -> {reply.status} {str(payload)[:300]}")
        return payload


async def create_template(
    session: aiohttp.ClientSession, shop: Shop, n: int, **overrides: Any
) -> int:
    body = template_body(n, **overrides)
    created = await _call(
        session, "POST", shop.url("/admin/coupon-templates"), shop.merchant, body, 201
    )
    return int(created["id"])


async def seed_shop(base: str, minter: Minter, holders: int) -> Shop:
    shop = Shop(base, minter.one("m1", Role.MERCHANT, SHOP))
    now = datetime.now(UTC)
    rng = random.Random(42)
    async with aiohttp.ClientSession() as session:
        for n in range(1, PRODUCTS + 1):
            list_price = rng.randrange(9900, 59900, 100)
            body = {
                "title": f"bench product {n}",
                "list_price": list_price,
                "promo_price": list_price - 1000 if n % 2 else None,
                "category": ("cups", "tea", "snacks")[n % 3],
            }
            if body["promo_price"] is None:
                del body["promo_price"]
            await _call(
                session,
                "PUT",
                shop.url(f"/admin/products/{product_id(n)}"),
                shop.merchant,
                body,
                200,
            )
        for n in range(HELD_TEMPLATES):
            shop.held_template_ids.append(await create_template(session, shop, n))
        for n in range(HELD_TEMPLATES, HELD_TEMPLATES + CLAIMABLE_TEMPLATES):
            shop.claimable_template_ids.append(await create_template(session, shop, n))
        shop.holders = [f"h-{i:05d}" for i in range(holders)]
        for template_id in shop.held_template_ids:
            result = await _call(
                session,
                "POST",
                shop.url(f"/admin/coupon-templates/{template_id}/grants"),
                shop.merchant,
                {"user_ids": shop.holders, "request_id": f"seed-grant-{template_id}"},
                201,
            )
            if result["failed"]:
                raise RuntimeError(f"grant failed for some holders: {result['failed'][:3]}")
        room = {
            "items": [
                {
                    "product_id": product_id(n),
                    "exclusive_price": 5000 + n,
                    "starts_at": _iso(now - timedelta(hours=1)),
                    "ends_at": _iso(now + timedelta(days=1)),
                }
                for n in range(1, 21)
            ]
        }
        await _call(
            session, "PUT", shop.url(f"/admin/live-rooms/{ROOM}/prices"), shop.merchant, room, 200
        )
    return shop
