"""Counts several readers need: issued today, held by one user, exclusives taken."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bff.db import tables

C = tables.coupons
DAILY = tables.template_daily
X = tables.exclusive_takes


async def issued_on(conn: AsyncConnection, template_ids: list[int], day: str) -> dict[int, int]:
    """Coupons issued on ``day`` (the shop's calendar day) per template."""
    if not template_ids:
        return {}
    rows = await conn.execute(
        select(DAILY.c.template_id, DAILY.c.issued).where(
            DAILY.c.template_id.in_(template_ids), DAILY.c.day == day
        )
    )
    return {template_id: int(issued) for template_id, issued in rows}


async def held_per_template(
    conn: AsyncConnection, shop_id: str, user_id: str, template_ids: list[int]
) -> dict[int, int]:
    """Coupons of each template the user was ever issued (what per_user_limit counts)."""
    if not template_ids:
        return {}
    rows = await conn.execute(
        select(C.c.template_id, func.count())
        .where(C.c.shop_id == shop_id, C.c.user_id == user_id, C.c.template_id.in_(template_ids))
        .group_by(C.c.template_id)
    )
    return {template_id: int(count) for template_id, count in rows}


async def exclusive_takers(conn: AsyncConnection, shop_id: str, users: list[str]) -> set[str]:
    """Which of ``users`` already took a new-member exclusive (one per member, ever)."""
    query = select(X.c.user_id).where(X.c.shop_id == shop_id, X.c.user_id.in_(users))
    return {user for (user,) in await conn.execute(query)}


async def took_exclusive(conn: AsyncConnection, shop_id: str, user_id: str) -> bool:
    return user_id in await exclusive_takers(conn, shop_id, [user_id])
