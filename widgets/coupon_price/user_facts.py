"""A signed-in price's facts about the user: one statement, the rules applied in Python.

:data:`USER_FACTS` reads, in one round trip, every coupon the user was ever
issued in the shop (the few columns the rules need), their membership and
whether they took a new-member exclusive: a one-row anchor outer-joined to
the three, so a user with no coupons still gets their membership. From those
rows :func:`user_facts_from` derives what used to be four statements, with
the same rules:

* usable coupons: ``bff.redemption.locks.unused_now`` (a lapsed lock is
  unused, by ``effective_status``) and valid now;
* held per template: every coupon ever issued (``bff.coupons.counts.held_per_template``);
* the wallet's count: unexpired ``unused`` or ``locked`` coupons
  (``bff.coupons.wallet.unused_counts``; a lock counts, lapsed or not).

``tests/test_signed_in_price_cache.py`` checks both forms agree on coupons in
every state. Where only the usable coupons matter (checkout, redemption),
:data:`USABLE` filters them in SQL instead.

Statements are built once with bind parameters: building a select per request
cost more than executing it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, literal_column, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bff.coupons.rules import MemberView
from bff.coupons.wallet import counts_against_wallet
from bff.db import tables
from bff.db.engine import Database, DirectRead
from bff.redemption.locks import effective_status, unused_now

C = tables.coupons
M = tables.members
X = tables.exclusive_takes

_SHOP = bindparam("shop_id")
_USER = bindparam("user_id")
_ANCHOR = select(literal_column("1").label("one")).subquery("anchor")
_MEMBER = and_(M.c.shop_id == _SHOP, M.c.user_id == _USER)

# Membership and the exclusive are uncorrelated scalar subqueries (one primary-key lookup
# each, evaluated once); the coupons hang off a one-row anchor, so a user without coupons
# still gets a row. (Not a chain of outer joins: SQLAlchemy's MySQL compiler takes one for
# a cartesian product and warns.)
USER_FACTS = select(
    select(M.c.level).where(_MEMBER).scalar_subquery().label("member_level"),
    select(M.c.left_at.is_(None)).where(_MEMBER).scalar_subquery().label("member_active"),
    select(X.c.template_id)
    .where(X.c.shop_id == _SHOP, X.c.user_id == _USER)
    .scalar_subquery()
    .label("exclusive_template_id"),
    C.c.id,
    C.c.template_id,
    C.c.status,
    C.c.valid_from,
    C.c.valid_to,
    C.c.updated_at,
).select_from(
    _ANCHOR.outerjoin(
        C, and_(_ANCHOR.c.one == literal_column("1"), C.c.shop_id == _SHOP, C.c.user_id == _USER)
    )
)

USABLE = select(C.c.id, C.c.template_id, C.c.valid_to).where(
    C.c.shop_id == _SHOP,
    C.c.user_id == _USER,
    unused_now(bindparam("deadline")),  # a lapsed lock is over
    C.c.valid_from <= bindparam("now"),
    C.c.valid_to > bindparam("now"),
)


@dataclass(frozen=True, slots=True)
class HeldCoupon:
    """A coupon the user can use now."""

    coupon_id: int
    template_id: int
    valid_to: datetime


@dataclass(frozen=True)
class UserFacts:
    """One user's facts that decide what they may still claim."""

    held_counts: dict[int, int]  # coupons ever issued per template (per_user_limit counts them)
    unused: int  # what counts against the wallet cap
    member: MemberView | None
    took_exclusive: bool  # already took a new-member exclusive


def usable_now(
    status: str,
    updated_at: datetime,
    valid_from: datetime,
    valid_to: datetime,
    now: datetime,
    deadline: datetime,
) -> bool:
    """:data:`USABLE`'s condition for one coupon (``deadline`` = now - lock timeout)."""
    return (
        effective_status(status, updated_at, deadline) == "unused" and valid_from <= now < valid_to
    )


def user_facts_from(
    rows: Iterable[Any], now: datetime, deadline: datetime
) -> tuple[list[HeldCoupon], UserFacts]:
    """The usable coupons and the claim facts from :data:`USER_FACTS`'s rows."""
    held: list[HeldCoupon] = []
    counts: dict[int, int] = {}
    unused = 0
    member: MemberView | None = None
    took = False
    first = True
    # Plain tuples: attribute access by name on each row costs more than the rules.
    for level, active, exclusive, coupon_id, template_id, status, starts, ends, updated in rows:
        if first:
            first = False
            if level is not None:
                member = MemberView(level, bool(active))
            took = exclusive is not None
        if coupon_id is None:
            continue  # no coupons: the anchor's row carries the membership alone
        counts[template_id] = counts.get(template_id, 0) + 1
        if counts_against_wallet(status, ends, now):
            unused += 1
        if usable_now(status, updated, starts, ends, now, deadline):
            held.append(HeldCoupon(coupon_id, template_id, ends))
    return held, UserFacts(counts, unused, member, took)


def next_change(rows: Iterable[Any], now: datetime, lock_timeout: timedelta) -> datetime | None:
    """The first moment after ``now`` at which :func:`user_facts_from` of the same rows
    would answer differently with no write at all: an unused or locked coupon becoming
    valid (``valid_from``) or expiring (``valid_to``), or a lock lapsing (``updated_at``
    + the timeout). None if nothing changes by time alone."""
    soonest: datetime | None = None
    for *_, coupon_id, _template_id, status, starts, ends, updated in rows:
        if coupon_id is None or status not in ("unused", "locked"):
            continue  # used, revoked, expired: final until a write moves them
        moments = (starts, ends, updated + lock_timeout) if status == "locked" else (starts, ends)
        for moment in moments:
            if moment > now and (soonest is None or moment < soonest):
                soonest = moment
    return soonest


async def read_user_rows(conn: AsyncConnection, shop_id: str, user_id: str) -> list[Any]:
    """:data:`USER_FACTS`'s rows, kept (for :func:`user_facts_from` and :func:`next_change`)."""
    return list(await conn.execute(USER_FACTS, {"shop_id": shop_id, "user_id": user_id}))


async def read_user_facts(
    conn: AsyncConnection, shop_id: str, user_id: str, now: datetime, deadline: datetime
) -> tuple[list[HeldCoupon], UserFacts]:
    return user_facts_from(await read_user_rows(conn, shop_id, user_id), now, deadline)


async def read_usable(
    conn: AsyncConnection, shop_id: str, user_id: str, now: datetime, deadline: datetime
) -> list[HeldCoupon]:
    params = {"shop_id": shop_id, "user_id": user_id, "now": now, "deadline": deadline}
    return [HeldCoupon(*row) for row in await conn.execute(USABLE, params)]


# A signed-in price's one statement when the shop's facts know the catalog.
USER_FACTS_DIRECT = DirectRead(USER_FACTS)

# A checkout's one statement when the shop's facts know its products and specs.
USABLE_DIRECT = DirectRead(USABLE, packed=True)


async def fetch_usable(
    db: Database, shop_id: str, user_id: str, now: datetime, deadline: datetime
) -> list[HeldCoupon]:
    """:func:`read_usable` as a read of its own (straight through the driver on MariaDB)."""
    params = {"shop_id": shop_id, "user_id": user_id, "now": now, "deadline": deadline}
    return [HeldCoupon(*row) for row in await db.fetch(USABLE_DIRECT, params)]
