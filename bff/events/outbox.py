"""The transactional outbox: every coupon and points change writes its event here.

An event is inserted by the writer of the change, on the writer's connection and
inside its transaction (:func:`append`): it commits with the change or rolls back
with it, so no event reports a change that did not commit and none is lost for one
that did. A batch appends all its events in one call: one multi-row INSERT, no
round trip per event. What reads the table:

* the relay (:mod:`bff.events.relay`), which publishes unpublished rows to RabbitMQ
  and marks them published once the broker confirmed them;
* the pull feed (:mod:`bff.events.feed`, ``GET /admin/events``);
* the pruner (:func:`prune`), which bounds the table.

Later consumers (signed webhooks, expiry reminders) use the same two ends: reminders
write through :func:`append`, webhook deliveries are rows keyed by the event id.

The event's shape (docs/EVENTS.md): ``{"id", "type", "schema_version", "shop_id",
"occurred_at", "data"}``. ``id`` is the row's id: unique, stable across redelivery.
The constructors below are the one place each type's fields are named.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bff import jsonutil
from bff.db import tables

E = tables.coupon_events
SCHEMA_VERSION = 1

COUPON_CLAIMED = "coupon.claimed"
COUPON_REVOKED = "coupon.revoked"
COUPON_LOCKED = "coupon.locked"
COUPON_USED = "coupon.used"
COUPON_RETURNED = "coupon.returned"
COUPON_LOCK_LAPSED = "coupon.lock_lapsed"
COUPON_EXPIRING = "coupon.expiring"  # written by the expiry reminders (issue 20, part 2)
COUPON_EXPIRED = "coupon.expired"  # likewise
GIFT_PACK_CLAIMED = "gift_pack.claimed"
POINTS_CHANGED = "points.changed"
TEMPLATE_SOLD_OUT = "template.sold_out"
GRANT_FINISHED = "grant.finished"

EVENT_TYPES = (
    COUPON_CLAIMED,
    COUPON_REVOKED,
    COUPON_LOCKED,
    COUPON_USED,
    COUPON_RETURNED,
    COUPON_LOCK_LAPSED,
    COUPON_EXPIRING,
    COUPON_EXPIRED,
    GIFT_PACK_CLAIMED,
    POINTS_CHANGED,
    TEMPLATE_SOLD_OUT,
    GRANT_FINISHED,
)


# Built once: the batch path runs it per batch (compiled once per parameter shape).
_INSERT = E.insert()


@dataclass(frozen=True)
class Event:
    """One event before it has an id (the insert gives it one)."""

    type: str
    shop_id: str
    occurred_at: datetime
    data: Mapping[str, Any]


async def append(conn: AsyncConnection, events: Iterable[Event]) -> None:
    """Insert ``events`` in the caller's transaction: one statement for all of them.

    (A list of parameter sets: aiomysql sends one multi-row INSERT, SQLite runs the
    prepared statement per row in-process.)
    """
    rows = [
        {
            "shop_id": event.shop_id,
            "type": event.type,
            "occurred_at": event.occurred_at,
            "schema_version": SCHEMA_VERSION,
            "data": jsonutil.dumps_str(event.data),
            "published_at": None,
            "lease_until": None,
            "lease_owner": None,
        }
        for event in events
    ]
    if rows:
        await conn.execute(_INSERT, rows)


def envelope(row: Any) -> dict[str, Any]:
    """The event as consumers see it (feed, broker, webhooks), from its outbox row."""
    return {
        "id": row.id,
        "type": row.type,
        "schema_version": row.schema_version,
        "shop_id": row.shop_id,
        "occurred_at": row.occurred_at,
        "data": jsonutil.loads(row.data),
    }


def encode(row: Any) -> bytes:
    """The event's JSON bytes, as published."""
    return jsonutil.dumps(envelope(row))


# --- the events, one constructor per type ---------------------------------------------------
def coupon_claimed(coupon: Any, at: datetime) -> Event:
    """A coupon issued by any path: ``source`` says which (widget, auto, code, ...)."""
    return Event(
        COUPON_CLAIMED,
        coupon.shop_id,
        at,
        {
            "coupon_id": coupon.id,
            "template_id": coupon.template_id,
            "user_id": coupon.user_id,
            "source": coupon.source,
            "code": coupon.code,
            "valid_from": coupon.valid_from,
            "valid_to": coupon.valid_to,
        },
    )


def issued(template: Any, coupons: Iterable[Any], at: datetime, *, sold_out: bool) -> list[Event]:
    """A ledger batch's events: one ``coupon.claimed`` per coupon, and ``template.sold_out``
    when the batch took a limited template's last unit."""
    events = [coupon_claimed(coupon, at) for coupon in coupons]
    if sold_out and events:
        events.append(template_sold_out(template, at))
    return events


def template_sold_out(template: Any, at: datetime) -> Event:
    """The claim that took a limited template's last unit committed."""
    return Event(
        TEMPLATE_SOLD_OUT,
        template.shop_id,
        at,
        {"template_id": template.id, "stock_total": template.stock_total},
    )


def coupon_revoked(coupon: Any, at: datetime) -> Event:
    return Event(
        COUPON_REVOKED,
        coupon.shop_id,
        at,
        {"coupon_id": coupon.id, "template_id": coupon.template_id, "user_id": coupon.user_id},
    )


def order_coupon(
    kind: str,
    shop_id: str,
    at: datetime,
    *,
    coupon_id: int,
    template_id: int,
    user_id: str,
    order_id: str,
    discount: int,
    **extra: Any,
) -> Event:
    """``coupon.locked``, ``coupon.used``, ``coupon.returned``, ``coupon.lock_lapsed``."""
    return Event(
        kind,
        shop_id,
        at,
        {
            "coupon_id": coupon_id,
            "template_id": template_id,
            "user_id": user_id,
            "order_id": order_id,
            "discount": discount,
            **extra,
        },
    )


def gift_pack_claimed(
    shop_id: str,
    pack_id: int,
    user_id: str,
    coupons: list[Any],
    gift_template_id: int | None,
    at: datetime,
) -> Event:
    return Event(
        GIFT_PACK_CLAIMED,
        shop_id,
        at,
        {
            "pack_id": pack_id,
            "user_id": user_id,
            "coupons": [
                {"coupon_id": c.id, "template_id": c.template_id}
                for c in coupons
                if c.template_id != gift_template_id
            ],
            "gift": next(
                (
                    {"coupon_id": c.id, "template_id": c.template_id}
                    for c in coupons
                    if c.template_id == gift_template_id
                ),
                None,
            ),
        },
    )


def points_changed(entry: Any) -> Event:
    return Event(
        POINTS_CHANGED,
        entry.shop_id,
        entry.at,
        {
            "user_id": entry.user_id,
            "entry_id": entry.id,
            "delta": entry.delta,
            "reason": entry.reason,
            "ref": entry.ref,
            "balance_after": entry.balance_after,
        },
    )


def grant_finished(
    shop_id: str,
    template_id: int,
    request_id: str,
    granted: int,
    failed: list[Mapping[str, Any]],
    at: datetime,
) -> Event:
    """A merchant grant's result: how many issued, how many refused and why (per code)."""
    refused: dict[str, int] = {}
    for failure in failed:
        refused[failure["code"]] = refused.get(failure["code"], 0) + 1
    return Event(
        GRANT_FINISHED,
        shop_id,
        at,
        {
            "template_id": template_id,
            "request_id": request_id,
            "granted": granted,
            "failed": len(failed),
            "failed_by_code": dict(sorted(refused.items())),
        },
    )


# --- pruning --------------------------------------------------------------------------------
PRUNE_CHUNK = 2000


async def prunable_ids(
    conn: AsyncConnection, before: datetime, *, published_only: bool
) -> list[int]:
    """Ids of rows past the retention (and published, with a relay): one chunk."""
    query = select(E.c.id).where(E.c.occurred_at < before)
    if published_only:
        query = query.where(E.c.published_at.is_not(None))
    rows = await conn.scalars(query.order_by(E.c.id).limit(PRUNE_CHUNK))
    return list(rows)


async def delete_ids(conn: AsyncConnection, ids: list[int]) -> int:
    if not ids:
        return 0
    result = await conn.execute(delete(E).where(E.c.id.in_(ids)))
    return int(result.rowcount or 0)
