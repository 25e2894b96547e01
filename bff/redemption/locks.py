"""Coupon locks that lapse: the one place that says when a lock is over, and ends it.

An order locks its coupons (``POST /redemptions``) and should confirm or cancel
soon. If it does neither within ``redemption.lock_timeout_minutes``, the lock
lapses: readers (the wallet, prices) count the coupon as unused at once, and
the next write that touches the order, the user's coupons or the coupon itself
releases it for good (:func:`release_lapsed`). No cron is needed for
correctness; a sweeper could call the same function.

When a lock started: a locked coupon's ``updated_at`` is the instant it was
locked, since the lock sets it and every later write moves the coupon out of
``locked``. The order row's ``locked_at`` holds the same instant (one
transaction). So readers need no join to know whether a lock has lapsed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bff.db import tables
from bff.events import outbox

C = tables.coupons
R = tables.redemptions
RC = tables.redemption_coupons

DEFAULT_LOCK_TIMEOUT = timedelta(minutes=30)


def lapsed_lock(deadline: datetime) -> ColumnElement[bool]:
    """SQL: a coupon whose lock began at or before ``deadline`` (= now - timeout)."""
    return and_(C.c.status == "locked", C.c.updated_at <= deadline)


def unused_now(deadline: datetime) -> ColumnElement[bool]:
    """SQL: a coupon that is unused, or whose order lock has lapsed (status only, not dates)."""
    return or_(C.c.status == "unused", lapsed_lock(deadline))


def effective_status(status: str, updated_at: datetime, deadline: datetime) -> str:
    """The stored status with a lapsed lock read as ``unused`` (expiry is applied after)."""
    if status == "locked" and updated_at <= deadline:
        return "unused"
    return status


def outcome_on_release(valid_to: datetime, now: datetime) -> str:
    """A coupon leaving an order unspent comes back usable, unless it has expired meanwhile."""
    return "returned" if valid_to > now else "expired"


async def release_lapsed(
    conn: AsyncConnection,
    shop_id: str,
    now: datetime,
    lock_timeout: timedelta,
    *,
    user_id: str | None = None,
    order_ids: Iterable[str] | None = None,
) -> list[str]:
    """End the lapsed locks of a user's orders (or of these orders), in the caller's transaction.

    Each lapsed order becomes ``expired``; its coupons go back to ``unused`` and
    their outcome is recorded (``returned``, or ``expired`` past ``valid_to``).
    The order rows are locked first (as confirm and cancel do) and every write is
    conditional on the state it leaves, so two transactions releasing the same
    order at once change it once. Returns the orders released.
    """
    deadline = now - lock_timeout
    query = select(R.c.order_id).where(
        R.c.shop_id == shop_id, R.c.status == "locked", R.c.locked_at <= deadline
    )
    if user_id is not None:
        query = query.where(R.c.user_id == user_id)
    if order_ids is not None:
        query = query.where(R.c.order_id.in_(sorted(set(order_ids))))
    if conn.dialect.name != "sqlite":
        # Order rows first, then coupons: the order every writer of an order follows.
        # A locking read sees the latest commit, so an order confirmed meanwhile drops out.
        query = query.order_by(R.c.order_id).with_for_update()
    lapsed = sorted((await conn.scalars(query)).all())
    if not lapsed:
        return []
    held = list(
        await conn.execute(
            select(
                RC.c.order_id,
                RC.c.coupon_id,
                RC.c.template_id,
                RC.c.discount,
                C.c.user_id,
                C.c.valid_to,
            )
            .join(C, C.c.id == RC.c.coupon_id)
            .where(RC.c.shop_id == shop_id, RC.c.order_id.in_(lapsed))
        )
    )
    await conn.execute(
        update(C)
        .where(C.c.shop_id == shop_id, C.c.status == "locked", C.c.order_id.in_(lapsed))
        .values(status="unused", order_id=None, updated_at=now)
    )
    outcomes = [
        (row.order_id, row.coupon_id, outcome_on_release(row.valid_to, now)) for row in held
    ]
    await record_outcomes(conn, shop_id, outcomes)
    await outbox.append(
        conn,
        [
            outbox.order_coupon(
                outbox.COUPON_LOCK_LAPSED,
                shop_id,
                now,
                coupon_id=row.coupon_id,
                template_id=row.template_id,
                user_id=row.user_id,
                order_id=row.order_id,
                discount=row.discount,
                outcome=outcome,
            )
            for row, (_, _, outcome) in zip(held, outcomes, strict=True)
        ],
    )
    await conn.execute(
        update(R)
        .where(R.c.shop_id == shop_id, R.c.order_id.in_(lapsed), R.c.status == "locked")
        .values(status="expired", released_at=now)
    )
    return lapsed


async def record_outcomes(
    conn: AsyncConnection, shop_id: str, outcomes: list[tuple[str, int, str]]
) -> None:
    """Set (order_id, coupon_id) -> outcome; one statement per order and outcome."""
    grouped: dict[tuple[str, str], list[int]] = {}
    for order_id, coupon_id, outcome in outcomes:
        grouped.setdefault((order_id, outcome), []).append(coupon_id)
    for (order_id, outcome), coupon_ids in sorted(grouped.items()):
        await conn.execute(
            update(RC)
            .where(
                RC.c.shop_id == shop_id,
                RC.c.order_id == order_id,
                RC.c.coupon_id.in_(sorted(coupon_ids)),
                RC.c.outcome.is_(None),
            )
            .values(outcome=outcome)
        )
