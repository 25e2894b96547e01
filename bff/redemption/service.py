"""Redemption (核销) and returns (退券) for the order system: lock, confirm, cancel.

The order system locks an order's coupons when the order is placed
(``POST /redemptions``), confirms when it is paid, or cancels. Words follow the
payment platforms' coupon APIs: use (lock + confirm), return (cancel).

Lock. One transaction: the order is priced by the same code as the checkout
preview (``PriceService.order_quote``: the coupons must be the user's, usable
now, fit the items and combine), the order row is inserted (its primary key,
shop + order id, is the durable idempotency key), then the coupons move from
``unused`` to ``locked`` in one conditional write::

    UPDATE coupons SET status='locked', order_id=:order
     WHERE id IN (:ids) AND shop_id=:shop AND user_id=:user AND status='unused'
       AND valid_from <= :now AND valid_to > :now

which must change exactly as many rows as coupons were asked for. A coupon
locked by another order a moment earlier makes it change fewer: then the
transaction rolls back (order row included) and the first coupon that failed
is named with its reason. So one coupon can never be held by two orders,
whatever the concurrency, on either database. The order row goes in before
the coupons so that a copy of the same order (another process, the gate's
keys lost) waits on that key and is then answered as a replay. A copy that
prices only after the first one committed sees its own coupons locked
(READ COMMITTED); a refusal is therefore checked against a stored order under
the same id before it is answered.

Idempotent by order id: the gate elects one runner per order id (copies wait
for its reply), and the stored reply answers any retry later; another body
under the same order id is ``IDEMPOTENCY_CONFLICT``. Refusals are not kept: a
retry is decided again.

Confirm and cancel lock the order row first, then touch its coupons, the
same order :func:`bff.redemption.locks.release_lapsed` follows, so a confirm
racing a cancel (or a lapse) ends in one consistent state. Both are
idempotent: the same call again answers the same reply.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from http import HTTPStatus
from typing import Any

import sqlalchemy.exc
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bff import jsonutil
from bff.clock import Clock
from bff.coupons.wallet import coupon_status
from bff.db import tables
from bff.db.engine import Database
from bff.errors import ApiError, conflict, not_found
from bff.events import outbox
from bff.gate.base import Gate
from bff.idempotency import Reply, body_hash, idempotency_conflict, run_once
from bff.redemption.locks import (
    effective_status,
    outcome_on_release,
    record_outcomes,
    release_lapsed,
)
from bff.versions import touch
from widgets.coupon_price.service import PriceService, quote_view

C = tables.coupons
T = tables.coupon_templates
R = tables.redemptions
RC = tables.redemption_coupons

RETURNED = "returned"
# The order id is the idempotency key: a conflict names it, not a request_id.
ORDER_KEY = "order_id"


def coupon_not_usable(coupon_id: int, reason: str) -> ApiError:
    return conflict(
        "COUPON_NOT_USABLE",
        f"coupon {coupon_id} cannot be used on this order: {reason}",
        {"coupon_id": coupon_id, "reason": reason},
    )


def lock_expired(order_id: str) -> ApiError:
    return conflict(
        "LOCK_EXPIRED",
        "the order's coupon lock lapsed before it was confirmed; its coupons were released",
        {"order_id": order_id},
    )


def order_cancelled(order_id: str) -> ApiError:
    return conflict("ORDER_CANCELLED", "the order was cancelled", {"order_id": order_id})


class RedemptionService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        gate: Gate,
        prices: PriceService,
        *,
        lock_timeout: timedelta,
        ttl_seconds: int,
    ) -> None:
        self.db = db
        self.clock = clock
        self.gate = gate
        self.prices = prices
        self.lock_timeout = lock_timeout
        self.ttl = ttl_seconds

    # --- lock ---------------------------------------------------------------------------------
    async def lock(self, shop_id: str, body: dict[str, Any]) -> Reply:
        order_id = body["order_id"]
        order = {
            "user_id": body["user_id"],
            "items": body["items"],
            "coupon_ids": body["coupon_ids"],
            "live_room_id": body["live_room_id"],
        }
        digest = body_hash({"op": "redemption", **order})

        async def locked(conn: AsyncConnection) -> Reply:
            return await self._lock(conn, shop_id, order_id, order, digest)

        async def replayed(conn: AsyncConnection) -> Reply | None:
            return await self._replay(conn, shop_id, order_id, digest)

        async def work() -> Reply:
            try:
                return await self.db.transaction(locked)
            except (sqlalchemy.exc.IntegrityError, ApiError) as error:
                # A copy of this order, in another process (the gate had lost its keys),
                # committed first: this one then hit the order row's key, or, pricing after
                # that commit (READ COMMITTED), found its own coupons locked. Either way
                # answer as a replay of what the copy stored.
                if isinstance(error, ApiError) and error.code != "COUPON_NOT_USABLE":
                    raise
                reply = await self.db.read(replayed)
                if reply is None:
                    raise
                return reply

        key = f"idem:{{{shop_id}:orders}}:{order_id}"
        return await run_once(
            self.gate, key, digest, work, ttl_seconds=self.ttl, key_name=ORDER_KEY
        )

    async def _lock(
        self,
        conn: AsyncConnection,
        shop_id: str,
        order_id: str,
        order: dict[str, Any],
        digest: str,
    ) -> Reply:
        replay = await self._replay(conn, shop_id, order_id, digest)
        if replay is not None:
            return replay
        now = self.clock.now()
        user_id = order["user_id"]
        coupon_ids: list[int] = order["coupon_ids"]
        touch(shop_id, [user_id])  # the coupons it locks leave their prices (bff.versions)
        await release_lapsed(conn, shop_id, now, self.lock_timeout, user_id=user_id)
        quote = await self.prices.order_quote(
            conn, shop_id, user_id, order["items"], coupon_ids, order["live_room_id"]
        )
        view = quote_view(quote)
        template_of = {a.candidate.coupon_id: a.candidate.template_id for a in quote.coupons}
        for entry in view["coupons"]:
            entry["template_id"] = template_of[entry["coupon_id"]]
        reply = {
            "order_id": order_id,
            "user_id": user_id,
            "status": "locked",
            **view,
            "live_room_id": order["live_room_id"],
            "locked_at": now,
            "lock_expires_at": now + self.lock_timeout,
        }
        await conn.execute(
            insert(R).values(
                shop_id=shop_id,
                order_id=order_id,
                user_id=user_id,
                status="locked",
                body_hash=digest,
                reply=jsonutil.dumps_str(reply),
                live_room_id=order["live_room_id"],
                total=quote.total,
                discount=quote.discount,
                payable=quote.payable,
                locked_at=now,
            )
        )
        if coupon_ids:
            await conn.execute(
                insert(RC),
                [
                    {
                        "shop_id": shop_id,
                        "order_id": order_id,
                        "coupon_id": entry["coupon_id"],
                        "template_id": entry["template_id"],
                        "discount": entry["discount"],
                        "outcome": None,
                    }
                    for entry in view["coupons"]
                ],
            )
            changed = await conn.execute(
                update(C)
                .where(
                    C.c.id.in_(sorted(coupon_ids)),
                    C.c.shop_id == shop_id,
                    C.c.user_id == user_id,
                    C.c.status == "unused",
                    C.c.valid_from <= now,
                    C.c.valid_to > now,
                )
                .values(status="locked", order_id=order_id, updated_at=now)
            )
            if changed.rowcount != len(coupon_ids):
                # Taken by another order (or changed) since it was priced: roll back.
                coupon_id, reason = await self._first_refused(
                    conn, shop_id, user_id, order_id, coupon_ids, now
                )
                raise coupon_not_usable(coupon_id, reason)
            await outbox.append(
                conn,
                [
                    outbox.order_coupon(
                        outbox.COUPON_LOCKED,
                        shop_id,
                        now,
                        coupon_id=entry["coupon_id"],
                        template_id=entry["template_id"],
                        user_id=user_id,
                        order_id=order_id,
                        discount=entry["discount"],
                    )
                    for entry in view["coupons"]
                ],
            )
        return Reply(HTTPStatus.CREATED, jsonutil.loads(jsonutil.dumps(reply)))

    async def _replay(
        self, conn: AsyncConnection, shop_id: str, order_id: str, digest: str
    ) -> Reply | None:
        row = (
            await conn.execute(
                select(R.c.body_hash, R.c.reply).where(
                    R.c.shop_id == shop_id, R.c.order_id == order_id
                )
            )
        ).first()
        if row is None:
            return None
        if row.body_hash != digest:
            raise idempotency_conflict(ORDER_KEY)
        return Reply(HTTPStatus.CREATED, jsonutil.loads(row.reply), replayed=True)

    async def _first_refused(
        self,
        conn: AsyncConnection,
        shop_id: str,
        user_id: str,
        order_id: str,
        coupon_ids: list[int],
        now: datetime,
    ) -> tuple[int, str]:
        """The first asked-for coupon this order could not lock, and why."""
        rows = {
            row.id: row
            for row in await conn.execute(
                select(C).where(
                    C.c.id.in_(coupon_ids), C.c.shop_id == shop_id, C.c.user_id == user_id
                )
            )
        }
        deadline = now - self.lock_timeout
        missed: list[int] = []
        for coupon_id in coupon_ids:
            row = rows.get(coupon_id)
            if row is None:
                return coupon_id, "not_found"
            if row.status == "locked" and row.order_id == order_id:
                continue  # locked by this very write
            missed.append(coupon_id)
            status = coupon_status(
                effective_status(row.status, row.updated_at, deadline), row.valid_to, now
            )
            if status == "unused" and row.valid_from > now:
                return coupon_id, "not_yet_valid"
            if status != "unused":
                return coupon_id, status
        # Unused again by now (locked by an order that was cancelled a moment later): it
        # was held by another order when this one tried, so that is the reason.
        return (missed or coupon_ids)[0], "locked"

    # --- confirm ------------------------------------------------------------------------------
    async def confirm(self, shop_id: str, order_id: str) -> dict[str, Any]:
        async def work(conn: AsyncConnection) -> Any:
            now = self.clock.now()
            row = await self._order(conn, shop_id, order_id)
            if row is None:
                raise not_found("order")
            if row.status != "locked":
                return row
            touch(shop_id, [row.user_id])  # the user's coupons change (bff.versions)
            released = await release_lapsed(
                conn, shop_id, now, self.lock_timeout, order_ids=[order_id]
            )
            if released:
                return await self._order(conn, shop_id, order_id)  # expired: committed first
            held = await self._held(conn, shop_id, order_id)
            changed = await conn.execute(
                update(C)
                .where(C.c.shop_id == shop_id, C.c.order_id == order_id, C.c.status == "locked")
                .values(status="used", updated_at=now)
            )
            if changed.rowcount != len(held):  # pragma: no cover - the order row lock rules it out
                raise RuntimeError(
                    f"order {order_id} holds {len(held)} coupons, {changed.rowcount} locked"
                )
            await outbox.append(
                conn,
                [
                    outbox.order_coupon(
                        outbox.COUPON_USED,
                        shop_id,
                        now,
                        coupon_id=entry.coupon_id,
                        template_id=entry.template_id,
                        user_id=row.user_id,
                        order_id=order_id,
                        discount=entry.discount,
                    )
                    for entry in held
                ],
            )
            await conn.execute(
                update(R)
                .where(R.c.shop_id == shop_id, R.c.order_id == order_id, R.c.status == "locked")
                .values(status="used", confirmed_at=now)
            )
            return await self._order(conn, shop_id, order_id)

        row = await self.db.transaction(work)
        if row.status == "expired":
            raise lock_expired(order_id)
        if row.status == "cancelled":
            raise order_cancelled(order_id)
        return {"order_id": order_id, "status": "used", "confirmed_at": row.confirmed_at}

    # --- cancel -------------------------------------------------------------------------------
    async def cancel(self, shop_id: str, order_id: str) -> dict[str, Any]:
        async def work(conn: AsyncConnection) -> Any:
            now = self.clock.now()
            row = await self._order(conn, shop_id, order_id)
            if row is None:
                raise not_found("order")
            if row.status == "cancelled":
                return row, await self._outcomes(conn, shop_id, order_id)
            touch(shop_id, [row.user_id])  # coupons may come back (bff.versions)
            if row.status == "locked":
                released = await release_lapsed(
                    conn, shop_id, now, self.lock_timeout, order_ids=[order_id]
                )
                if not released:
                    await self._give_back(conn, shop_id, order_id, now, spent=False)
            elif row.status == "used":
                # A return cannot raise the wallet above the user's facts in the gate:
                # they count used coupons still valid (bff/coupons/ledger.py, _facts).
                await self._give_back(conn, shop_id, order_id, now, spent=True)
            # "expired": the lapse already released the coupons and recorded how.
            await conn.execute(
                update(R)
                .where(R.c.shop_id == shop_id, R.c.order_id == order_id)
                .values(status="cancelled", cancelled_at=now)
            )
            return await self._order(conn, shop_id, order_id), await self._outcomes(
                conn, shop_id, order_id
            )

        row, outcomes = await self.db.transaction(work)
        return {
            "order_id": order_id,
            "status": "cancelled",
            "returned": [coupon_id for coupon_id, outcome in outcomes if outcome == RETURNED],
            "not_returned": [
                {"coupon_id": coupon_id, "reason": outcome}
                for coupon_id, outcome in outcomes
                if outcome != RETURNED
            ],
            "cancelled_at": row.cancelled_at,
        }

    async def _give_back(
        self, conn: AsyncConnection, shop_id: str, order_id: str, now: datetime, *, spent: bool
    ) -> None:
        """Return an order's coupons on cancel, recording each one's outcome.

        Locked (never spent): every coupon comes back. Used (``spent``): only where
        the template allows return (``return_on_cancel``); one past ``valid_to``
        comes back expired, as DOMAIN.md says ("an expired one stays expired").
        """
        rows = list(
            await conn.execute(
                select(
                    RC.c.coupon_id,
                    RC.c.template_id,
                    RC.c.discount,
                    C.c.user_id,
                    C.c.valid_to,
                    T.c.spec,
                )
                .join(C, C.c.id == RC.c.coupon_id)
                .join(T, T.c.id == RC.c.template_id)
                .where(RC.c.shop_id == shop_id, RC.c.order_id == order_id)
            )
        )
        outcomes: list[tuple[str, int, str]] = []
        back: list[int] = []
        events: list[outbox.Event] = []
        for row in rows:
            if spent and not row.spec.get("return_on_cancel", True):
                outcomes.append((order_id, row.coupon_id, "not_returnable"))
                continue
            outcome = outcome_on_release(row.valid_to, now)
            outcomes.append((order_id, row.coupon_id, outcome))
            back.append(row.coupon_id)
            events.append(
                outbox.order_coupon(
                    outbox.COUPON_RETURNED,
                    shop_id,
                    now,
                    coupon_id=row.coupon_id,
                    template_id=row.template_id,
                    user_id=row.user_id,
                    order_id=order_id,
                    discount=row.discount,
                    outcome=outcome,
                    after_payment=spent,
                )
            )
        if back:
            await conn.execute(
                update(C)
                .where(
                    C.c.id.in_(sorted(back)),
                    C.c.shop_id == shop_id,
                    C.c.order_id == order_id,
                    C.c.status == ("used" if spent else "locked"),
                )
                .values(status="unused", order_id=None, updated_at=now)
            )
        await record_outcomes(conn, shop_id, outcomes)
        await outbox.append(conn, events)

    # --- reads --------------------------------------------------------------------------------
    async def _order(self, conn: AsyncConnection, shop_id: str, order_id: str) -> Any:
        query = select(R).where(R.c.shop_id == shop_id, R.c.order_id == order_id)
        if conn.dialect.name != "sqlite":
            query = query.with_for_update()
        return (await conn.execute(query)).first()

    async def _held(self, conn: AsyncConnection, shop_id: str, order_id: str) -> list[Any]:
        """The order's coupons: id, template and apportioned discount."""
        rows = await conn.execute(
            select(RC.c.coupon_id, RC.c.template_id, RC.c.discount)
            .where(RC.c.shop_id == shop_id, RC.c.order_id == order_id)
            .order_by(RC.c.coupon_id)
        )
        return list(rows)

    async def _outcomes(
        self, conn: AsyncConnection, shop_id: str, order_id: str
    ) -> list[tuple[int, str]]:
        rows = await conn.execute(
            select(RC.c.coupon_id, RC.c.outcome)
            .where(RC.c.shop_id == shop_id, RC.c.order_id == order_id)
            .order_by(RC.c.coupon_id)
        )
        return [(int(coupon_id), str(outcome)) for coupon_id, outcome in rows]
