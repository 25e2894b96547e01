"""The wallet (我的券): what a user holds, the coupon shape, and merchant revoke."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from marshmallow import Schema, fields, validate
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bff.clock import Clock
from bff.coupons.schemas import BENEFIT_SCHEMAS
from bff.db import tables
from bff.db.engine import Database
from bff.db.paging import newest_first
from bff.errors import conflict, not_found
from bff.events import outbox
from bff.redemption.locks import DEFAULT_LOCK_TIMEOUT, effective_status
from bff.schemas import Discriminated, PageQuery
from bff.versions import touch

C = tables.coupons
T = tables.coupon_templates
WALLET_FILTERS = ("usable", "used", "expired", "all")


class CouponSchema(Schema):
    coupon_id = fields.Integer(required=True)
    template_id = fields.Integer(required=True)
    name = fields.String(required=True)
    benefit = Discriminated(BENEFIT_SCHEMAS, required=True)
    code = fields.String(allow_none=True)
    status = fields.String(
        required=True, validate=validate.OneOf(("unused", "locked", "used", "expired", "revoked"))
    )
    source = fields.String(required=True)
    valid_from = fields.AwareDateTime(required=True)
    valid_to = fields.AwareDateTime(required=True)
    expiring_soon = fields.Boolean(
        required=True, metadata={"description": "到期提醒: within 3 days"}
    )
    redeem_page = fields.String(required=True, metadata={"description": "where 'use now' jumps"})


class CouponReplySchema(Schema):
    coupon = fields.Nested(CouponSchema, required=True)
    replayed = fields.Boolean(metadata={"description": "true when this is a repeated request"})


class WalletQuerySchema(PageQuery):
    status = fields.String(load_default="usable", validate=validate.OneOf(WALLET_FILTERS))


def coupon_status(status: str, valid_to: datetime, now: datetime) -> str:
    """Expiry is derived from valid_to, never stored."""
    if status in ("unused", "locked") and valid_to <= now:
        return "expired"
    return status


def coupon_view(
    row: Any,
    name: str,
    spec: dict[str, Any],
    now: datetime,
    expiring_days: int,
    lock_deadline: datetime | None = None,
) -> dict[str, Any]:
    """``lock_deadline`` (now - lock timeout): a lock that began by then has lapsed."""
    stored = row.status
    if lock_deadline is not None:
        stored = effective_status(row.status, row.updated_at, lock_deadline)
    status = coupon_status(stored, row.valid_to, now)
    return {
        "coupon_id": row.id,
        "template_id": row.template_id,
        "name": name,
        "benefit": spec["benefit"],
        "code": row.code,
        "status": status,
        "source": row.source,
        "valid_from": row.valid_from,
        "valid_to": row.valid_to,
        "expiring_soon": status == "unused" and row.valid_to - now <= timedelta(days=expiring_days),
        "redeem_page": spec["redeem_page"],
    }


def counts_against_wallet(status: str, valid_to: datetime, now: datetime) -> bool:
    """:func:`unused_counts`'s condition for one coupon: unexpired, unused or held by an order."""
    return status in ("unused", "locked") and valid_to > now


async def unused_counts(
    conn: AsyncConnection, shop_id: str, user_ids: list[str], now: datetime
) -> dict[str, int]:
    """What counts against the wallet cap: unexpired coupons per user in a shop that are
    unused or held by an order (locked), since a cancelled order gives those back."""
    rows = await conn.execute(
        select(C.c.user_id, func.count())
        .where(
            C.c.shop_id == shop_id,
            C.c.user_id.in_(user_ids),
            C.c.status.in_(("unused", "locked")),
            C.c.valid_to > now,
        )
        .group_by(C.c.user_id)
    )
    return {user: int(count) for user, count in rows}


class WalletService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        expiring_days: int,
        lock_timeout: timedelta = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        self.db = db
        self.clock = clock
        self.expiring_days = expiring_days
        self.lock_timeout = lock_timeout

    def view(self, row: Any, template: Any) -> dict[str, Any]:
        now = self.clock.now()
        return coupon_view(
            row, template.name, template.spec, now, self.expiring_days, now - self.lock_timeout
        )

    async def list(
        self, shop_id: str, user_id: str, status: str, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        now = self.clock.now()
        query = (
            select(C, T.c.name.label("template_name"), T.c.spec.label("template_spec"))
            .join(T, T.c.id == C.c.template_id)
            .where(C.c.shop_id == shop_id, C.c.user_id == user_id)
        )
        if status == "usable":
            # Locked coupons stay listed (as "locked") while an order holds them: they come
            # back if the order is cancelled, and a lapsed lock reads as unused.
            query = query.where(C.c.status.in_(("unused", "locked")), C.c.valid_to > now)
        elif status == "used":
            query = query.where(C.c.status == "used")
        elif status == "expired":
            query = query.where(C.c.status.in_(("unused", "locked")), C.c.valid_to <= now)
        rows, next_cursor = await newest_first(self.db, query, C.c.id, limit, cursor)
        deadline = now - self.lock_timeout
        items = [
            coupon_view(
                row, row.template_name, row.template_spec, now, self.expiring_days, deadline
            )
            for row in rows
        ]
        return {"items": items, "next_cursor": next_cursor}

    async def revoke(self, shop_id: str, coupon_id: int) -> dict[str, Any]:
        now = self.clock.now()

        async def work(conn: AsyncConnection) -> dict[str, Any]:
            changed = await conn.execute(
                update(C)
                .where(
                    C.c.id == coupon_id,
                    C.c.shop_id == shop_id,
                    C.c.status == "unused",
                    C.c.valid_to > now,  # an expired coupon is no longer "unused"
                )
                .values(status="revoked", updated_at=now)
            )
            row = (
                await conn.execute(
                    select(C, T.c.name.label("template_name"), T.c.spec.label("template_spec"))
                    .join(T, T.c.id == C.c.template_id)
                    .where(C.c.id == coupon_id, C.c.shop_id == shop_id)
                )
            ).first()
            if row is None:
                raise not_found("coupon")
            if changed.rowcount == 1:
                touch(shop_id, [row.user_id])  # their signed-in prices change (bff.versions)
                await outbox.append(conn, [outbox.coupon_revoked(row, now)])
            if changed.rowcount != 1:
                raise conflict(
                    "COUPON_NOT_USABLE",
                    "only an unused coupon can be revoked",
                    {
                        "coupon_id": coupon_id,
                        "status": coupon_status(row.status, row.valid_to, now),
                    },
                )
            return coupon_view(row, row.template_name, row.template_spec, now, self.expiring_days)

        return await self.db.transaction(work)
