"""Merchant statistics per coupon template (数据统计), counted from the ledger's rows.

Definitions (DOMAIN.md "Statistics"; every number is read from rows, none is
kept as a separate counter that could drift):

* ``issued``: the template's ``issued`` counter, every coupon made from it by
  any channel (merchant grants included, revoked ones too). Per source, the
  coupons of that source.
* ``claimed``: the coupon rows of the template (every channel lands a coupon
  in a wallet). It equals ``issued``: the counter and the rows are written in
  one transaction, so a difference would show a ledger bug.
* ``claim_users``: distinct users holding one of them.
* ``used``: coupons spent: status ``used`` now (confirmed orders, and coupons
  kept by a cancelled order because their template refuses returns).
* ``redeem_users``: distinct users with a used coupon.
* ``redemption_rate`` (核券率): redeem_users / claim_users, 0 when nobody
  claimed; rounded to 4 places.
* ``discount_total``: the discounts the engine apportioned to this
  template's coupons on orders that are confirmed and not cancelled.
* ``gmv``: the payable of those orders (an order holds at most one coupon of a
  template, so each order counts once).
* ``roi``: gmv / discount_total, rounded to 4 places; null when nothing was
  discounted (there is no return on nothing spent).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, distinct, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bff.clock import Clock
from bff.coupons.templates import fetch_row
from bff.db import tables
from bff.db.engine import Database
from bff.errors import not_found

C = tables.coupons
R = tables.redemptions
RC = tables.redemption_coupons

SOURCES = ("widget", "auto", "gift_pack", "points", "code", "grant")


def rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def roi(gmv: int, discount: int) -> float | None:
    return round(gmv / discount, 4) if discount else None


def figures(
    *,
    issued: int,
    claimed: int,
    claim_users: int,
    used: int,
    redeem_users: int,
    discount_total: int,
    gmv: int,
) -> dict[str, Any]:
    return {
        "issued": issued,
        "claimed": claimed,
        "claim_users": claim_users,
        "used": used,
        "redeem_users": redeem_users,
        "redemption_rate": rate(redeem_users, claim_users),
        "discount_total": discount_total,
        "gmv": gmv,
        "roi": roi(gmv, discount_total),
    }


class StatsService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def template(self, shop_id: str, template_id: int) -> dict[str, Any]:
        async def work(conn: AsyncConnection) -> dict[str, Any]:
            template = await fetch_row(conn, shop_id, template_id)
            if template is None:
                raise not_found("coupon template")
            return await self._count(conn, template)

        return await self.db.read(work)

    async def _count(self, conn: AsyncConnection, template: Any) -> dict[str, Any]:
        used = C.c.status == "used"
        holders = (
            select(
                C.c.source,
                func.count(),
                func.count(distinct(C.c.user_id)),
                func.sum(case((used, 1), else_=0)),
                func.count(distinct(case((used, C.c.user_id), else_=None))),
            )
            .where(C.c.template_id == template.id, C.c.shop_id == template.shop_id)
            .group_by(C.c.source)
        )
        per_source = {
            source: (int(rows), int(users), int(spent or 0), int(redeemers))
            for source, rows, users, spent, redeemers in await conn.execute(holders)
        }
        users = (
            await conn.execute(
                select(
                    func.count(distinct(C.c.user_id)),
                    func.count(distinct(case((used, C.c.user_id), else_=None))),
                ).where(C.c.template_id == template.id, C.c.shop_id == template.shop_id)
            )
        ).one()
        money = (
            select(C.c.source, func.sum(RC.c.discount), func.sum(R.c.payable))
            .select_from(RC)
            .join(R, (R.c.shop_id == RC.c.shop_id) & (R.c.order_id == RC.c.order_id))
            .join(C, C.c.id == RC.c.coupon_id)
            .where(
                RC.c.template_id == template.id,
                RC.c.shop_id == template.shop_id,
                R.c.status == "used",
            )
            .group_by(C.c.source)
        )
        spent_by_source = {
            source: (int(discount or 0), int(gmv or 0))
            for source, discount, gmv in await conn.execute(money)
        }
        by_source: dict[str, Any] = {}
        for source in SOURCES:
            rows, holders_n, spent, redeemers = per_source.get(source, (0, 0, 0, 0))
            discount, gmv = spent_by_source.get(source, (0, 0))
            by_source[source] = figures(
                issued=rows,
                claimed=rows,
                claim_users=holders_n,
                used=spent,
                redeem_users=redeemers,
                discount_total=discount,
                gmv=gmv,
            )
        return {
            "template_id": template.id,
            "as_of": self.clock.now(),
            **figures(
                issued=int(template.issued),
                claimed=sum(v[0] for v in per_source.values()),
                claim_users=int(users[0]),
                used=sum(v[2] for v in per_source.values()),
                redeem_users=int(users[1]),
                discount_total=sum(v[0] for v in spent_by_source.values()),
                gmv=sum(v[1] for v in spent_by_source.values()),
            ),
            "by_source": by_source,
        }
