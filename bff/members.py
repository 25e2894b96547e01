"""Membership per shop (会员): level, first join (never reset), rejoin.

A new member (新会员) is one whose first join was less than 24 hours ago and who
never left and came back: leaving and joining again is a rejoin, never new.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy.exc
from marshmallow import Schema, fields, validate
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bff.clock import Clock
from bff.db import tables
from bff.db.engine import Database
from bff.schemas import Int
from bff.versions import touch

M = tables.members
NEW_MEMBER_WINDOW = timedelta(hours=24)


def is_new_member(row: Any, now: datetime) -> bool:
    """First joined within the last 24 hours, never rejoined, and still a member."""
    return (
        row is not None
        and row.left_at is None
        and not row.rejoined
        and now - row.first_joined_at < NEW_MEMBER_WINDOW
    )


@dataclass(frozen=True)
class Joined:
    member: dict[str, Any]
    row: Any
    # "joined" (first time), "rejoined" (left before), or "already" (was a member).
    outcome: str


class MemberLevelSchema(Schema):
    level = Int(required=True, validate=validate.Range(min=0, max=100, error="Must be 0-100."))


class MemberSchema(Schema):
    user_id = fields.String(required=True)
    level = fields.Integer(required=True)
    first_joined_at = fields.AwareDateTime(required=True)
    joined_at = fields.AwareDateTime(required=True)
    rejoined = fields.Boolean(required=True)
    active = fields.Boolean(required=True, metadata={"description": "false after the user left"})


def member_from_row(row: Any) -> dict[str, Any]:
    return {
        "user_id": row.user_id,
        "level": row.level,
        "first_joined_at": row.first_joined_at,
        "joined_at": row.joined_at,
        "rejoined": bool(row.rejoined),
        "active": row.left_at is None,
    }


async def fetch_member(
    conn: AsyncConnection, shop_id: str, user_id: str, *, lock: bool = False
) -> Any:
    query = select(M).where(M.c.shop_id == shop_id, M.c.user_id == user_id)
    if lock:
        query = query.with_for_update()
    return (await conn.execute(query)).first()


class MemberService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def join(self, shop_id: str, user_id: str) -> Joined:
        """Join the shop's membership; a second call changes nothing."""
        now = self.clock.now()

        async def work(conn: AsyncConnection) -> Joined:
            touch(shop_id, [user_id])  # membership prices coupons (bff.versions)
            row = await fetch_member(conn, shop_id, user_id, lock=not self.db.is_sqlite)
            if row is None:
                await conn.execute(
                    insert(M).values(
                        shop_id=shop_id,
                        user_id=user_id,
                        level=0,
                        first_joined_at=now,
                        joined_at=now,
                        left_at=None,
                        rejoined=False,
                        created_at=now,
                        updated_at=now,
                    )
                )
                outcome = "joined"
            elif row.left_at is not None:
                await conn.execute(
                    update(M)
                    .where(M.c.shop_id == shop_id, M.c.user_id == user_id)
                    .values(joined_at=now, left_at=None, rejoined=True, updated_at=now)
                )
                outcome = "rejoined"
            else:
                outcome = "already"
            row = await fetch_member(conn, shop_id, user_id)
            return Joined(member_from_row(row), row, outcome)

        try:
            return await self.db.transaction(work)
        except sqlalchemy.exc.IntegrityError:  # a concurrent first join won: now a member
            return await self.db.transaction(work)

    async def leave(self, shop_id: str, user_id: str) -> None:
        """Leave; first_joined_at stays, so joining again is a rejoin. Idempotent."""
        now = self.clock.now()

        async def work(conn: AsyncConnection) -> None:
            touch(shop_id, [user_id])
            await conn.execute(
                update(M)
                .where(M.c.shop_id == shop_id, M.c.user_id == user_id, M.c.left_at.is_(None))
                .values(left_at=now, updated_at=now)
            )

        await self.db.transaction(work)

    async def get(self, shop_id: str, user_id: str) -> Any:
        async def work(conn: AsyncConnection) -> Any:
            return await fetch_member(conn, shop_id, user_id)

        return await self.db.read(work)

    async def set_level(self, shop_id: str, user_id: str, level: int) -> dict[str, Any]:
        """Merchant sets a level; a user who never joined is enrolled now (a CRM import)."""
        now = self.clock.now()

        async def work(conn: AsyncConnection) -> dict[str, Any]:
            touch(shop_id, [user_id])
            changed = await conn.execute(
                update(M)
                .where(M.c.shop_id == shop_id, M.c.user_id == user_id)
                .values(level=level, updated_at=now)
            )
            if changed.rowcount == 0:
                await conn.execute(
                    insert(M).values(
                        shop_id=shop_id,
                        user_id=user_id,
                        level=level,
                        first_joined_at=now,
                        joined_at=now,
                        left_at=None,
                        rejoined=False,
                        created_at=now,
                        updated_at=now,
                    )
                )
            return member_from_row(await fetch_member(conn, shop_id, user_id))

        try:
            return await self.db.transaction(work)
        except sqlalchemy.exc.IntegrityError:
            return await self.db.transaction(work)
