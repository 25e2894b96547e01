"""The coupon ledger's write path: issuing coupons in batches that never oversell.

Why batches. One transaction per claim holds the template row's lock across
several round trips plus a log flush, which caps a flash claim near 2,300
claims/s on this machine however the code is written (``SELECT ... FOR
UPDATE`` designs get ~2,050). So each process gathers the claims for one
template for a couple of milliseconds (``claim.batch_window_ms``) and writes
them in one transaction: one locked read of the template row, one guarded
counter update, one multi-row insert. Each request awaits its batch's commit
before it answers, so every 201 is durable, and counts stay exact.

Why it cannot oversell, whatever the gate says:

* every writer of a template's coupons first locks its row (``FOR UPDATE`` on
  MariaDB; ``BEGIN IMMEDIATE`` serializes SQLite), then decides per request,
  in DOMAIN.md's order: per-user limit, wallet cap, stock, daily limit;
* ``UPDATE ... SET issued = issued + :n WHERE issued + :n <= stock_total`` and
  a CHECK constraint guard the counter; ``UNIQUE(template_id, user_id, slot)``
  guards the per-user limit; ``UNIQUE(shop_id, request_key)`` makes a retry a
  replay; ``UNIQUE(shop_id, code)`` hands a code out once;
* the wallet cap holds across templates because writers also lock the
  user's ``wallets`` row, exclusively and in user order;
* a request that breaks a unique key anyway (a race the checks did not
  foresee) fails alone: the batch is re-run one request at a time.

Sold out. Once a batch leaves a template without stock, this process answers
its claims for ``claim.sold_out_seconds`` from a plain read batch: no row lock,
no write, the same decisions in the same order (a user at the limit still
hears LIMIT_REACHED, a retry is still replayed). If that read sees stock again
(a merchant added some, in any process), the batch takes the write path.

Many processes may share one database: the row lock, not process memory,
orders them. Deadlocks and lock timeouts are retried whole by
:meth:`bff.db.engine.Database.transaction`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy.exc
from sqlalchemy import func, select, update
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from bff.clock import Clock
from bff.coupons.codegen import random_code
from bff.coupons.counts import exclusive_takers, issued_on
from bff.coupons.rules import Refusal, refuse, shop_day
from bff.coupons.wallet import unused_counts
from bff.db import tables
from bff.db.engine import Database

log = logging.getLogger("bff.coupons.ledger")

C = tables.coupons
T = tables.coupon_templates
CODES = tables.coupon_codes
DAILY = tables.template_daily
W = tables.wallets
X = tables.exclusive_takes


@dataclass
class IssueRequest:
    """One coupon to issue to one user from one template."""

    shop_id: str
    user_id: str
    template_id: int
    source: str
    request_key: str
    body_hash: str
    # claim-by-code: this exact code; else the next free code when the template has codes.
    code: str | None = None
    # Merchant grants skip the claim window (they are not claims).
    check_window: bool = True
    # Gift packs grant one coupon of each template whatever its per_user_limit.
    check_limit: bool = True
    future: asyncio.Future[IssueResult] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class IssueResult:
    coupon: Any | None = None  # the coupons row
    replayed: bool = False
    refusal: Refusal | None = None


def validity_window(spec: dict[str, Any], claimed_at: datetime) -> tuple[datetime, datetime]:
    validity = spec["validity"]
    if validity["type"] == "absolute":
        start = datetime.fromisoformat(validity["start"]).astimezone(UTC)
        end = datetime.fromisoformat(validity["end"]).astimezone(UTC)
        return start, end
    start = claimed_at + timedelta(days=validity["effective_after_days"])
    return start, start + timedelta(days=validity["valid_days"])


class Ledger:
    """Issues coupons: ``issue`` for one request (batched per template)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        wallet_cap: int,
        timezone: str,
        window_ms: float,
        batch_max: int,
        sold_out_seconds: float = 1.0,
    ) -> None:
        self.db = db
        self.clock = clock
        self.wallet_cap = wallet_cap
        self.timezone = timezone
        self.window = window_ms / 1000
        self.batch_max = batch_max
        self._queues: dict[int, list[IssueRequest]] = defaultdict(list)
        self._draining: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # template id -> until when this process treats it as sold out (see _refuse_sold_out)
        self._sold_out: dict[int, float] = {}
        self.sold_out_seconds = sold_out_seconds

    async def issue(self, request: IssueRequest) -> IssueResult:
        loop = asyncio.get_running_loop()
        request.future = loop.create_future()
        self._queues[request.template_id].append(request)
        if request.template_id not in self._draining:
            self._draining.add(request.template_id)
            task = loop.create_task(self._drain(request.template_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(request.future)

    async def issue_in(self, conn: AsyncConnection, request: IssueRequest) -> IssueResult:
        """Issue one coupon inside the caller's transaction (no batching).

        For writes that must commit together with something else: a points exchange
        (points deducted in the same transaction) or a gift pack (several templates,
        all or nothing). The same locks, checks and guards as a batch; the caller
        rolls back when the result is a refusal. Lock templates in id order first
        when issuing from several, as batches lock one template then wallets.
        """
        results = await self.issue_batch(conn, request.template_id, [request])
        assert results is not None  # only read-only batches answer None
        return results[0]

    async def close(self) -> None:
        """Let queued batches finish (the app is stopping)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _drain(self, template_id: int) -> None:
        try:
            while True:
                await asyncio.sleep(self.window)
                queue = self._queues.get(template_id)
                if not queue:
                    self._queues.pop(template_id, None)
                    return
                batch = queue[: self.batch_max]
                del queue[: self.batch_max]
                await self._flush(template_id, batch)
        finally:
            self._draining.discard(template_id)
            # A request that arrived after the last look must not be stranded.
            if self._queues.get(template_id):
                self._draining.add(template_id)
                task = asyncio.get_running_loop().create_task(self._drain(template_id))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    # --- sold out ---------------------------------------------------------------------------
    def _mark_sold_out(self, template_id: int) -> None:
        self._sold_out[template_id] = time.monotonic() + self.sold_out_seconds

    def forget(self, template_id: int) -> None:
        """The template changed (say, more stock): stop treating it as sold out."""
        self._sold_out.pop(template_id, None)

    def _seen_sold_out(self, template_id: int) -> bool:
        until = self._sold_out.get(template_id)
        if until is not None and until <= time.monotonic():
            del self._sold_out[template_id]
            return False
        return until is not None

    async def _refuse_sold_out(
        self, template_id: int, batch: list[IssueRequest]
    ) -> list[IssueResult] | None:
        """Answer a batch for a template seen sold out without locking anything.

        Under a flash sale most claims arrive after the stock is gone; deciding them
        in a plain read keeps them off the template row's lock, in DOMAIN.md's order
        (a user at the limit still hears LIMIT_REACHED). None when stock is back.
        """
        results = await self.db.read(
            lambda conn: self.issue_batch(conn, template_id, batch, read_only=True)
        )
        if results is None:
            self.forget(template_id)
        return results

    async def _flush(
        self, template_id: int, batch: list[IssueRequest], *, alone: bool = False
    ) -> None:
        try:
            results = None
            if self._seen_sold_out(template_id):
                results = await self._refuse_sold_out(template_id, batch)
            if results is None:
                results = await self.db.transaction(
                    lambda conn: self.issue_batch(conn, template_id, batch)
                )
        except sqlalchemy.exc.IntegrityError as exc:
            if alone:
                _fail(batch, exc)
                return
            # A unique key the checks did not foresee (say, a copy of a request committed
            # by another process): run each request alone, so one failure stays its own
            # and a committed copy is found and replayed.
            log.warning("batch hit a unique key; issuing its %d requests one by one", len(batch))
            await asyncio.gather(*(self._flush(template_id, [r], alone=True) for r in batch))
            return
        except Exception as exc:
            _fail(batch, exc)
            return
        for request, result in zip(batch, results, strict=True):
            if request.future is not None and not request.future.done():
                request.future.set_result(result)

    async def issue_batch(
        self,
        conn: AsyncConnection,
        template_id: int,
        batch: list[IssueRequest],
        *,
        read_only: bool = False,
    ) -> list[IssueResult] | None:
        """Decide and write a batch for one template inside the caller's transaction.

        ``read_only``: for a template seen sold out, decide without any lock or write
        (each request is refused in the usual order, or replayed); None if stock is
        available again, and the batch must take the write path.
        """
        now = self.clock.now()
        template = await self._lock_template(conn, template_id, lock=not read_only)
        results: list[IssueResult | None] = [None] * len(batch)
        if template is None:
            return [IssueResult(refusal=refuse("NOT_FOUND"))] * len(batch)
        sold_out = template.stock_total is not None and template.issued >= template.stock_total
        if read_only and not sold_out:
            return None
        shop_id = template.shop_id
        spec = template.spec

        users = sorted({r.user_id for r in batch})
        if not read_only:
            await self.lock_wallets(conn, shop_id, users)
        # After the wallet lock: every copy of a request key is one user's, so a copy
        # committed by another process (a different template) is visible now.
        existing = await self._existing(conn, shop_id, [r.request_key for r in batch])
        held = await self._held_slots(conn, template_id, users)
        # New-member exclusives: one of them per member, once, ever (under the wallet lock,
        # which every writer of this user's coupons holds).
        exclusive = bool(spec.get("new_member_exclusive"))
        took_exclusive = await exclusive_takers(conn, shop_id, users) if exclusive else set()
        in_wallet = await unused_counts(conn, shop_id, users, now)
        day = shop_day(now, self.timezone)
        daily_issued = (
            (await issued_on(conn, [template_id], day)).get(template_id, 0)
            if template.daily_limit
            else 0
        )
        stock_left = (
            None if template.stock_total is None else template.stock_total - template.issued
        )

        codes_type = spec["codes"]["type"]
        wanted_codes = await self._wanted_codes(conn, shop_id, template_id, batch)
        free_codes: list[Any] = []
        if codes_type in ("pregenerated", "imported"):
            free_codes = await self._free_codes(conn, template_id, len(batch))

        rows: list[dict[str, Any]] = []
        code_ids: dict[str, int] = {}
        seen_keys: set[str] = set()
        for index, request in enumerate(batch):
            found = existing.get(request.request_key)
            if found is not None or request.request_key in seen_keys:
                if found is not None and found.body_hash != request.body_hash:
                    results[index] = IssueResult(refusal=refuse("IDEMPOTENCY_CONFLICT"))
                continue  # a replay: resolved after the insert below
            refusal = _window_refusal(template, now) if request.check_window else None
            if refusal is None and template.status != "active":
                refusal = refuse("CLAIM_PAUSED" if template.status == "paused" else "CLAIM_ENDED")
            code: str | None = None
            if refusal is None and request.code is not None:
                code_row = wanted_codes.get(request.code)
                if code_row is None or code_row.template_id != template_id:
                    refusal = refuse("NOT_FOUND")
                elif code_row.coupon_id is not None or request.code in code_ids:
                    refusal = refuse("ALREADY_CLAIMED")
            user_slot = held.get(request.user_id, 0)
            if refusal is None and request.check_limit and user_slot >= template.per_user_limit:
                refusal = refuse("LIMIT_REACHED")
            if (
                refusal is None
                and exclusive
                and request.source != "gift_pack"
                and request.user_id in took_exclusive
            ):
                refusal = refuse("ALREADY_CLAIMED", reason="new_member_exclusive")
            if refusal is None and in_wallet.get(request.user_id, 0) >= self.wallet_cap:
                refusal = refuse("WALLET_FULL")
            if refusal is None and stock_left is not None and stock_left <= 0:
                refusal = refuse("SOLD_OUT")
            if refusal is None and template.daily_limit and daily_issued >= template.daily_limit:
                refusal = refuse("DAILY_SOLD_OUT")
            if (
                refusal is None
                and request.code is None
                and codes_type in ("pregenerated", "imported")
            ):
                pick = next((c for c in free_codes if c.code not in code_ids), None)
                if pick is None:
                    refusal = refuse("SOLD_OUT")
                else:
                    code = pick.code
            elif refusal is None and request.code is not None:
                code = request.code
            elif refusal is None and codes_type == "random":
                code = random_code()
            if refusal is not None:
                results[index] = IssueResult(refusal=refusal)
                continue
            if code is not None and codes_type in ("pregenerated", "imported"):
                code_ids[code] = (
                    wanted_codes[code].id
                    if request.code is not None
                    else next(c.id for c in free_codes if c.code == code)
                )
            valid_from, valid_to = validity_window(spec, now)
            held[request.user_id] = user_slot + 1
            if exclusive and request.source != "gift_pack":
                took_exclusive.add(request.user_id)
            in_wallet[request.user_id] = in_wallet.get(request.user_id, 0) + 1
            if stock_left is not None:
                stock_left -= 1
            daily_issued += 1
            seen_keys.add(request.request_key)
            rows.append(
                {
                    "shop_id": shop_id,
                    "template_id": template_id,
                    "user_id": request.user_id,
                    "slot": user_slot + 1,
                    "code": code,
                    "status": "unused",
                    "source": request.source,
                    "request_key": request.request_key,
                    "body_hash": request.body_hash,
                    "valid_from": valid_from,
                    "valid_to": valid_to,
                    "claimed_at": now,
                    "order_id": None,
                    "updated_at": now,
                }
            )
        if rows and read_only:  # pragma: no cover - stock_left <= 0 refuses every request
            raise RuntimeError("a read-only batch decided to issue")
        if rows:
            await self._write(conn, template, rows, day, code_ids)
            if exclusive:
                await self._record_exclusive(conn, rows, now)
        if stock_left is not None and stock_left <= 0:
            self._mark_sold_out(template_id)
        written = await self._existing(conn, shop_id, [r.request_key for r in batch])
        new_keys = {row["request_key"] for row in rows}
        for index, request in enumerate(batch):
            if results[index] is None:
                coupon = written.get(request.request_key)
                if coupon is None:  # pragma: no cover - the insert above guarantees it
                    raise RuntimeError("issued coupon not found after insert")
                replayed = request.request_key not in new_keys or _is_second_copy(batch, index)
                if coupon.body_hash != request.body_hash:
                    results[index] = IssueResult(refusal=refuse("IDEMPOTENCY_CONFLICT"))
                else:
                    results[index] = IssueResult(coupon=coupon, replayed=replayed)
        return [r for r in results if r is not None]

    # --- the statements -------------------------------------------------------------------
    async def _lock_template(
        self, conn: AsyncConnection, template_id: int, *, lock: bool = True
    ) -> Any:
        query = select(T).where(T.c.id == template_id)
        if lock and not self.db.is_sqlite:
            query = query.with_for_update()
        return (await conn.execute(query)).first()

    async def _existing(
        self, conn: AsyncConnection, shop_id: str, keys: list[str]
    ) -> dict[str, Any]:
        rows = await conn.execute(
            select(C).where(C.c.shop_id == shop_id, C.c.request_key.in_(sorted(set(keys))))
        )
        return {row.request_key: row for row in rows}

    async def lock_wallets(self, conn: AsyncConnection, shop_id: str, users: list[str]) -> None:
        if self.db.is_sqlite:
            return  # BEGIN IMMEDIATE already serializes every writer
        # An upsert takes each row's exclusive lock at once, in user order. (INSERT IGNORE
        # then SELECT FOR UPDATE would take a shared lock first, and two batches sharing
        # a user would deadlock upgrading it.)
        statement = mysql.insert(W).values([{"shop_id": shop_id, "user_id": u} for u in users])
        await conn.execute(statement.on_duplicate_key_update(user_id=statement.inserted.user_id))

    async def _held_slots(
        self, conn: AsyncConnection, template_id: int, users: list[str]
    ) -> dict[str, int]:
        rows = await conn.execute(
            select(C.c.user_id, func.max(C.c.slot))
            .where(C.c.template_id == template_id, C.c.user_id.in_(users))
            .group_by(C.c.user_id)
        )
        return {user: int(slot) for user, slot in rows}

    async def _record_exclusive(
        self, conn: AsyncConnection, rows: list[dict[str, Any]], now: datetime
    ) -> None:
        takes = [
            {
                "shop_id": row["shop_id"],
                "user_id": row["user_id"],
                "template_id": row["template_id"],
                "request_key": row["request_key"],
                "taken_at": now,
            }
            for row in rows
            if row["source"] != "gift_pack"
        ]
        if takes:  # the primary key refuses a second take even if the check above raced
            await conn.execute(X.insert(), takes)

    async def _wanted_codes(
        self, conn: AsyncConnection, shop_id: str, template_id: int, batch: list[IssueRequest]
    ) -> dict[str, Any]:
        wanted = sorted({r.code for r in batch if r.code is not None})
        if not wanted:
            return {}
        rows = await conn.execute(
            select(CODES).where(CODES.c.shop_id == shop_id, CODES.c.code.in_(wanted))
        )
        return {row.code: row for row in rows}

    async def _free_codes(self, conn: AsyncConnection, template_id: int, limit: int) -> list[Any]:
        rows = await conn.execute(
            select(CODES.c.id, CODES.c.code)
            .where(CODES.c.template_id == template_id, CODES.c.coupon_id.is_(None))
            .order_by(CODES.c.id)
            .limit(limit)
        )
        return list(rows)

    async def _write(
        self,
        conn: AsyncConnection,
        template: Any,
        rows: list[dict[str, Any]],
        day: str,
        code_ids: dict[str, int],
    ) -> None:
        count = len(rows)
        await conn.execute(C.insert(), rows)
        guarded = await conn.execute(
            update(T)
            .where(
                T.c.id == template.id,
                (T.c.stock_total.is_(None)) | (T.c.issued + count <= T.c.stock_total),
            )
            .values(issued=T.c.issued + count)
        )
        if guarded.rowcount != 1:
            # Cannot happen under the row lock; if it ever does, nothing is written.
            raise RuntimeError("stock guard refused a batch decided under the template lock")
        if template.daily_limit:
            await self._add_daily(conn, template.id, day, count, template.daily_limit)
        if code_ids:
            issued = await conn.execute(
                select(C.c.id, C.c.code).where(
                    C.c.template_id == template.id, C.c.code.in_(sorted(code_ids))
                )
            )
            for coupon_id, code in issued:
                marked = await conn.execute(
                    update(CODES)
                    .where(CODES.c.id == code_ids[code], CODES.c.coupon_id.is_(None))
                    .values(coupon_id=coupon_id)
                )
                if marked.rowcount != 1:
                    raise RuntimeError("a code was handed out twice under the template lock")

    async def _add_daily(
        self, conn: AsyncConnection, template_id: int, day: str, count: int, limit: int
    ) -> None:
        statement = (sqlite.insert(DAILY) if self.db.is_sqlite else mysql.insert(DAILY)).values(
            template_id=template_id, day=day, issued=count
        )
        if self.db.is_sqlite:
            statement = statement.on_conflict_do_update(
                index_elements=["template_id", "day"],
                set_={"issued": DAILY.c.issued + count},
            )
        else:
            statement = statement.on_duplicate_key_update(issued=DAILY.c.issued + count)
        await conn.execute(statement)
        total = (await issued_on(conn, [template_id], day)).get(template_id, 0)
        if total > limit:
            raise RuntimeError("daily guard exceeded under the template lock")


def _fail(batch: list[IssueRequest], exc: BaseException) -> None:
    for request in batch:
        if request.future is not None and not request.future.done():
            request.future.set_exception(exc)


def _window_refusal(template: Any, now: datetime) -> Refusal | None:
    if now < template.claim_start:
        return refuse("NOT_STARTED")
    if now >= template.claim_end:
        return refuse("CLAIM_ENDED")
    return None


def _is_second_copy(batch: list[IssueRequest], index: int) -> bool:
    """Two copies of one request in one batch: the later one is a replay."""
    key = batch[index].request_key
    return any(r.request_key == key for r in batch[:index])
