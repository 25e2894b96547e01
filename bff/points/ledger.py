"""The points ledger (积分): a balance row per member and shop, and one ledger row per change.

Why two tables. ``points_ledger`` is append-only (delta, reason, reference,
balance after, time): the history a member sees and an auditor sums.
``points_balances`` is the row every writer locks: the conditional
``UPDATE ... SET balance = balance + :delta WHERE balance + :delta >= 0`` decides
under that row's lock, so no interleaving of exchanges and merchant changes can
take a balance below zero (and a CHECK refuses any writer that forgets). Both are
written in the same transaction, so ``balance_after`` of the newest row is always
the balance.

Idempotency: each ledger row carries the request key of the write that made it,
unique per shop. The gate answers concurrent copies; this key answers a retry
after the gate lost its keys: the second insert fails, its transaction (and the
balance change) rolls back, and the first row is replayed.
"""

from __future__ import annotations

from datetime import datetime
from http import HTTPStatus
from typing import Any

import sqlalchemy.exc
from sqlalchemy import insert, select, update
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from bff.clock import Clock
from bff.db import tables
from bff.db.engine import Database
from bff.db.paging import newest_first
from bff.errors import ApiError, conflict, not_found, validation_failed
from bff.events import outbox
from bff.gate.base import Gate
from bff.idempotency import Reply, body_hash, idempotency_conflict, run_once
from bff.members import fetch_member

B = tables.points_balances
L = tables.points_ledger
# Bounds that keep every sum exact in BIGINT and in a JavaScript number.
MAX_BALANCE = 10**12
MAX_DELTA = 10**9


def insufficient_points(balance: int, needed: int) -> ApiError:
    return conflict(
        "INSUFFICIENT_POINTS",
        "not enough points",
        {"balance": balance, "needed": needed},
    )


async def points_balance(conn: AsyncConnection, shop_id: str, user_id: str) -> int:
    """The member's points in this shop (0 when they never had any)."""
    value = await conn.scalar(
        select(B.c.balance).where(B.c.shop_id == shop_id, B.c.user_id == user_id)
    )
    return int(value or 0)


async def entry_by_key(conn: AsyncConnection, shop_id: str, request_key: str) -> Any:
    """The ledger row a request made, if it made one (the durable idempotency record)."""
    query = select(L).where(L.c.shop_id == shop_id, L.c.request_key == request_key)
    return (await conn.execute(query)).first()


async def ensure_balance_row(
    conn: AsyncConnection, is_sqlite: bool, shop_id: str, user_id: str, now: datetime
) -> None:
    """A zero row if there is none, with its exclusive lock taken at once on MariaDB.

    (INSERT IGNORE would take a shared lock on an existing row, and two writers
    upgrading it would deadlock; the no-op upsert takes the exclusive lock.)
    """
    values = {"shop_id": shop_id, "user_id": user_id, "balance": 0, "updated_at": now}
    if is_sqlite:
        await conn.execute(sqlite.insert(B).values(values).on_conflict_do_nothing())
        return
    statement = mysql.insert(B).values(values)
    await conn.execute(statement.on_duplicate_key_update(user_id=statement.inserted.user_id))


async def apply_change(
    conn: AsyncConnection, shop_id: str, user_id: str, delta: int, now: datetime
) -> int | None:
    """Add ``delta`` if the balance stays within [0, MAX_BALANCE]; the new balance, or None."""
    changed = await conn.execute(
        update(B)
        .where(
            B.c.shop_id == shop_id,
            B.c.user_id == user_id,
            B.c.balance + delta >= 0,
            B.c.balance + delta <= MAX_BALANCE,
        )
        .values(balance=B.c.balance + delta, updated_at=now)
    )
    if changed.rowcount != 1:
        return None
    return await points_balance(conn, shop_id, user_id)


async def append_entry(
    conn: AsyncConnection,
    *,
    shop_id: str,
    user_id: str,
    delta: int,
    reason: str,
    ref: str | None,
    balance_after: int,
    request_key: str,
    digest: str,
    now: datetime,
) -> Any:
    result = await conn.execute(
        insert(L).values(
            shop_id=shop_id,
            user_id=user_id,
            delta=delta,
            reason=reason,
            ref=ref,
            balance_after=balance_after,
            request_key=request_key,
            body_hash=digest,
            at=now,
        )
    )
    entry_id = int(result.inserted_primary_key[0])
    entry = (await conn.execute(select(L).where(L.c.id == entry_id))).first()
    await outbox.append(conn, [outbox.points_changed(entry)])
    return entry


def entry_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "delta": row.delta,
        "reason": row.reason,
        "ref": row.ref,
        "balance_after": row.balance_after,
        "at": row.at,
    }


class PointsService:
    """Merchant grants and deductions, and a member's history."""

    def __init__(self, db: Database, clock: Clock, gate: Gate, ttl_seconds: int) -> None:
        self.db = db
        self.clock = clock
        self.gate = gate
        self.ttl = ttl_seconds

    async def adjust(
        self,
        shop_id: str,
        user_id: str,
        delta: int,
        reason: str,
        ref: str | None,
        request_id: str,
    ) -> Reply:
        """Grant (delta > 0) or deduct (delta < 0) a member's points, once per request_id.

        The member must have joined the shop (now or before: a merchant may still
        correct a former member's points); anyone else is 404. A deduction below
        zero is 409 INSUFFICIENT_POINTS and changes nothing.
        """
        digest = body_hash(
            {"op": "points", "user_id": user_id, "delta": delta, "reason": reason, "ref": ref}
        )
        request_key = f"m:{request_id}"

        async def change(conn: AsyncConnection) -> Reply:
            earlier = await entry_by_key(conn, shop_id, request_key)
            if earlier is not None:
                return _replay(earlier, digest)
            if await fetch_member(conn, shop_id, user_id) is None:
                raise not_found("member")
            now = self.clock.now()
            await ensure_balance_row(conn, self.db.is_sqlite, shop_id, user_id, now)
            balance = await apply_change(conn, shop_id, user_id, delta, now)
            if balance is None:
                current = await points_balance(conn, shop_id, user_id)
                if delta < 0:
                    raise insufficient_points(current, -delta)
                raise validation_failed(
                    {"delta": [f"Would take the balance above {MAX_BALANCE} points."]}
                )
            entry = await append_entry(
                conn,
                shop_id=shop_id,
                user_id=user_id,
                delta=delta,
                reason=reason,
                ref=ref,
                balance_after=balance,
                request_key=request_key,
                digest=digest,
                now=now,
            )
            return Reply(HTTPStatus.OK, _reply_body(entry))

        async def work() -> Reply:
            try:
                return await self.db.transaction(change)
            except sqlalchemy.exc.IntegrityError:
                # A copy committed the same request key first (the gate had lost it).
                earlier = await self.db.read(lambda conn: entry_by_key(conn, shop_id, request_key))
                if earlier is None:
                    raise
                return _replay(earlier, digest)

        key = f"idem:{{{shop_id}:merchant}}:points:{request_id}"
        return await run_once(self.gate, key, digest, work, ttl_seconds=self.ttl)

    async def history(
        self, shop_id: str, user_id: str, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        """The balance and the ledger, newest first, one page."""
        query = select(L).where(L.c.shop_id == shop_id, L.c.user_id == user_id)
        rows, next_cursor = await newest_first(self.db, query, L.c.id, limit, cursor)
        balance = await self.db.read(lambda conn: points_balance(conn, shop_id, user_id))
        return {
            "user_id": user_id,
            "balance": balance,
            "ledger": [entry_view(row) for row in rows],
            "next_cursor": next_cursor,
        }


def _reply_body(entry: Any) -> dict[str, Any]:
    """JSON-ready, as the gate keeps it for replays."""
    view = {**entry_view(entry), "at": entry.at.isoformat()}
    return {"user_id": entry.user_id, "balance": entry.balance_after, "entry": view}


def _replay(entry: Any, digest: str) -> Reply:
    if entry.body_hash != digest:
        raise idempotency_conflict()
    return Reply(HTTPStatus.OK, _reply_body(entry), replayed=True)
