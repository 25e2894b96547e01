"""Live-room prices: merchants set a room's exclusive prices; anyone reads them by room."""

from __future__ import annotations

from typing import Any

import sqlalchemy.exc
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bff.clock import Clock
from bff.db import tables
from bff.db.engine import Database
from bff.errors import validation_failed
from widgets.coupon_price.core import live_status

LIVE = tables.live_room_prices
PUT_ATTEMPTS = 5
P = tables.products


class LivePriceService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def put(self, shop_id: str, room_id: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Replace the room's exclusive prices."""
        now = self.clock.now()
        ids = [item["product_id"] for item in items]

        async def work(conn: AsyncConnection) -> dict[str, Any]:
            rows = await conn.execute(
                select(P.c.product_id, P.c.list_price, P.c.promo_price).where(
                    P.c.shop_id == shop_id, P.c.product_id.in_(ids)
                )
            )
            # An exclusive price must beat what everyone else pays: the promotion price
            # when there is one, else the list price.
            normal = {
                pid: promo if promo is not None else list_price
                for pid, list_price, promo in rows.all()
            }
            errors: dict[str, list[str]] = {}
            for index, item in enumerate(items):
                price = normal.get(item["product_id"])
                if price is None:
                    errors[f"items.{index}.product_id"] = ["No such product in this shop."]
                elif item["exclusive_price"] >= price:
                    errors[f"items.{index}.exclusive_price"] = [
                        f"Must be below the product's current price ({price})."
                    ]
            if errors:
                raise validation_failed(errors)
            await conn.execute(
                delete(LIVE).where(LIVE.c.shop_id == shop_id, LIVE.c.room_id == room_id)
            )
            if items:
                await conn.execute(
                    insert(LIVE),
                    [
                        {
                            "shop_id": shop_id,
                            "room_id": room_id,
                            "product_id": item["product_id"],
                            "exclusive_price": item["exclusive_price"],
                            "starts_at": item["starts_at"],
                            "ends_at": item["ends_at"],
                            "updated_at": now,
                        }
                        for item in items
                    ],
                )
            return await self._room(conn, shop_id, room_id, None)

        # PUTs to one room can race (READ COMMITTED lets both delete nothing, then
        # collide on insert): run again; the later one replaces the earlier.
        for _ in range(PUT_ATTEMPTS - 1):
            try:
                return await self.db.transaction(work)
            except sqlalchemy.exc.IntegrityError:
                continue
        return await self.db.transaction(work)

    async def get(self, shop_id: str, room_id: str, product_ids: list[str]) -> dict[str, Any]:
        async def work(conn: AsyncConnection) -> dict[str, Any]:
            return await self._room(conn, shop_id, room_id, product_ids)

        return await self.db.read(work)

    async def _room(
        self, conn: AsyncConnection, shop_id: str, room_id: str, product_ids: list[str] | None
    ) -> dict[str, Any]:
        now = self.clock.now()
        query = (
            select(LIVE, P.c.list_price)
            .join(P, (P.c.shop_id == LIVE.c.shop_id) & (P.c.product_id == LIVE.c.product_id))
            .where(LIVE.c.shop_id == shop_id, LIVE.c.room_id == room_id)
            .order_by(LIVE.c.product_id)
        )
        if product_ids is not None:
            query = query.where(LIVE.c.product_id.in_(product_ids))
        rows = list(await conn.execute(query))
        if product_ids is not None:
            order = {pid: i for i, pid in enumerate(product_ids)}
            rows.sort(key=lambda row: order[row.product_id])
        return {
            "room_id": room_id,
            "items": [
                {
                    "product_id": row.product_id,
                    "list_price": row.list_price,
                    "exclusive_price": row.exclusive_price,
                    "starts_at": row.starts_at,
                    "ends_at": row.ends_at,
                    "status": live_status(row.starts_at, row.ends_at, now),
                }
                for row in rows
            ],
        }
