"""What a price needs that is the same for every shopper of a shop, kept per process.

A signed-in price used to read the shop's active templates (with their JSON
specs), today's issued counts and the products on every request, for every
user alike. :class:`ShopFacts` holds them per shop and calendar day in a
:class:`bff.cache.ShopCache` for the reply cache's TTL (``cache.ttl_seconds``),
cleared by the same invalidation: an admin write that changes prices clears the
shop here before it replies and, through pub/sub, in every other process. So
a signed-in price may be as stale as an anonymous one, and no more: stock and
daily counts that move with claims by at most the TTL (a sold-out template is
offered to claim for at most that long; the claim itself is refused), what a
merchant writes not at all in the writing process and until the message lands
in the others (the TTL if it is lost). The user's own facts are never kept
here (widgets.coupon_price.user_facts).

What does not depend on the moment is read once per entry; what does (claim
windows opening or closing, live windows, validity) is decided per request by
the caller with its own ``now``. Products, live-room rows and the specs of
templates outside the active set are filled on demand, one statement for all
the missing ones of a request, and live and die with the entry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bff.coupons.counts import issued_on
from bff.db import tables
from widgets.coupon_price.core import CLAIMABLE_METHODS, Offer

P = tables.products
T = tables.coupon_templates
LIVE = tables.live_room_prices

# Products and live rows remembered per entry (an entry lives one TTL): a crawler walking
# a huge catalog must not grow a process without bound.
CATALOG_MAX = 20_000

# What pricing reads of a spec (benefit, scope, stacking) never changes after a template is
# created: a PATCH changes only columns, the description and a limited stock
# (bff.coupons.templates), so a spec read once prices held coupons exactly, also inside
# the redemption lock.


@dataclass
class ShopFacts:
    day: str  # the shop's calendar day the daily counts are of
    # Active templates whose claim window had not ended when read, with a method the
    # price offers to claim (widget or auto) and stock left (also today's) when read:
    # coupon_templates rows, spec included.
    claimable: tuple[Any, ...]
    daily: dict[int, int]  # issued on ``day`` per template of ``claimable``
    # Template id -> spec, for pricing held coupons: the active templates, and others
    # added when a held coupon names one.
    specs: dict[int, dict[str, Any]] = field(default_factory=dict)
    products: dict[str, Any] = field(default_factory=dict)  # id -> row, None if not in the shop
    live: dict[tuple[str, str], Any] = field(default_factory=dict)  # (room, product) -> row|None

    @cached_property
    def offers(self) -> tuple[Offer, ...]:
        """``claimable`` with what decides a to-claim candidate made once (core.Offer)."""
        return tuple(Offer(row, self.daily.get(row.id, 0)) for row in self.claimable)

    def missing_products(self, product_ids: Iterable[str]) -> list[str]:
        return [pid for pid in product_ids if pid not in self.products]

    def missing_live(self, room_id: str, product_ids: Iterable[str]) -> list[str]:
        return [pid for pid in product_ids if (room_id, pid) not in self.live]

    def remember_products(self, asked: list[str], rows: dict[str, Any]) -> None:
        if len(self.products) + len(asked) > CATALOG_MAX:
            self.products.clear()
        for pid in asked:
            self.products[pid] = rows.get(pid)

    def remember_live(self, room_id: str, asked: list[str], rows: dict[str, Any]) -> None:
        if len(self.live) + len(asked) > CATALOG_MAX:
            self.live.clear()
        for pid in asked:
            self.live[(room_id, pid)] = rows.get(pid)


async def read_shop_facts(
    conn: AsyncConnection, shop_id: str, now: datetime, day: str
) -> ShopFacts:
    """Two statements: the active templates, and their issued counts on ``day``."""
    rows = list(
        await conn.execute(
            select(T).where(T.c.shop_id == shop_id, T.c.status == "active", T.c.claim_end > now)
        )
    )
    offered = [
        row
        for row in rows
        if any(method in row.spec["claim_methods"] for method in CLAIMABLE_METHODS)
        and (row.stock_total is None or row.issued < row.stock_total)
    ]
    daily = await issued_on(conn, [row.id for row in offered], day)
    # Sold out (for good or for today) as read: Offer.candidate would refuse it for
    # everyone on every request until the entry is read again.
    claimable = tuple(
        row for row in offered if row.daily_limit is None or daily.get(row.id, 0) < row.daily_limit
    )
    facts = ShopFacts(day=day, claimable=claimable, daily=daily)
    facts.specs.update({row.id: row.spec for row in rows})
    return facts


def known_catalog(
    facts: ShopFacts, product_ids: list[str], room_id: str | None
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(products, live rows) of these ids from ``facts`` alone, or None if any is unknown."""
    if facts.missing_products(product_ids):
        return None
    products = {pid: facts.products[pid] for pid in product_ids}
    products = {pid: row for pid, row in products.items() if row is not None}
    if room_id is None:
        return products, {}
    if facts.missing_live(room_id, products):
        return None
    live = {pid: facts.live[(room_id, pid)] for pid in products}
    return products, {pid: row for pid, row in live.items() if row is not None}


async def read_catalog(
    conn: AsyncConnection,
    shop_id: str,
    product_ids: list[str],
    room_id: str | None,
    facts: ShopFacts | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(products, live rows) of these ids: what ``facts`` knows, the rest read on ``conn``
    (one statement each, and remembered). Without ``facts``, all of it read on ``conn``."""
    known = facts.products if facts is not None else {}
    products = {pid: known[pid] for pid in product_ids if known.get(pid) is not None}
    missing = [pid for pid in product_ids if pid not in known]
    if missing:
        found = await read_products(conn, shop_id, missing)
        products.update(found)
        if facts is not None:
            facts.remember_products(missing, found)
    if room_id is None or not products:
        return products, {}
    known_live = facts.live if facts is not None else {}
    live = {
        pid: known_live[(room_id, pid)]
        for pid in products
        if known_live.get((room_id, pid)) is not None
    }
    missing = [pid for pid in products if (room_id, pid) not in known_live]
    if missing:
        found = await read_live(conn, shop_id, room_id, missing)
        live.update(found)
        if facts is not None:
            facts.remember_live(room_id, missing, found)
    return products, live


async def read_products(
    conn: AsyncConnection, shop_id: str, product_ids: list[str]
) -> dict[str, Any]:
    rows = await conn.execute(
        select(P).where(P.c.shop_id == shop_id, P.c.product_id.in_(product_ids))
    )
    return {row.product_id: row for row in rows}


async def read_live(
    conn: AsyncConnection, shop_id: str, room_id: str, product_ids: list[str]
) -> dict[str, Any]:
    rows = await conn.execute(
        select(LIVE).where(
            LIVE.c.shop_id == shop_id,
            LIVE.c.room_id == room_id,
            LIVE.c.product_id.in_(product_ids),
        )
    )
    return {row.product_id: row for row in rows}


async def read_specs(
    conn: AsyncConnection, shop_id: str, template_ids: list[int]
) -> dict[int, dict[str, Any]]:
    if not template_ids:
        return {}
    rows = await conn.execute(
        select(T.c.id, T.c.spec).where(T.c.shop_id == shop_id, T.c.id.in_(template_ids))
    )
    return {template_id: spec for template_id, spec in rows}
