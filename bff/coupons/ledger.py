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

Sold out, decided without a round trip of its own. Once a batch leaves a
template without stock (or without today's ``daily_limit``) and commits, this
process keeps a local flag for ``claim.sold_out_seconds`` and tells the gate
(``so:{tpl:ID}``, holding the stock total it was decided at, so an added
stock makes it void). When the local flag runs out the process asks the gate
once per template and second, not per claim. While the flag stands, a claim
is refused SOLD_OUT inside the one gate call every claim makes anyway
(idempotency and the user's rate limit, :meth:`Gate.claim_begin`), without
touching the database, but only where DOMAIN.md's order lets stock decide:
the user's facts in the gate (written by this ledger under the user's wallet
lock, see :class:`bff.gate.base.ClaimFacts`) say the user is below the
per-user limit and the wallet cap and holds no coupon of this request. Every
other claim on a sold-out template goes to a read batch: no template lock,
the same decisions in the same order (a user at the limit still hears
LIMIT_REACHED, a retry is still replayed), and the users' facts written for
their next try. If that read sees stock again (a merchant added some, in any
process), the batch takes the write path.

Why the facts can be trusted. Every writer of a user's coupons holds the
user's ``wallets`` row lock (``BEGIN IMMEDIATE`` on SQLite) from before it
reads the user's coupons until it commits, and writes the facts in between.
So facts are written from a state no other writer can change before the
commit, and a Redis flush at any moment only removes them (the next claim of
that user goes to the database). A writer that rolls back after writing them
leaves them too high, which is safe: they are only ever used to say "below".

New users, without their facts. A user the gate has no facts for is refused
in the gate too when the shop's holders filter (written by this ledger before
each commit, next to the facts; :mod:`bff.coupons.holders`) shows they never
held a coupon of the shop: nothing before stock can apply to them.

Many processes may share one database: the row lock, not process memory,
orders them. Deadlocks and lock timeouts are retried whole by
:meth:`bff.db.engine.Database.transaction`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict, namedtuple
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy.exc
from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from bff.clock import Clock
from bff.coupons.codegen import random_code
from bff.coupons.counts import exclusive_takers, issued_on
from bff.coupons.holders import Holders
from bff.coupons.rules import Refusal, refuse, shop_day
from bff.coupons.wallet import counts_against_wallet
from bff.db import tables
from bff.db.engine import Database
from bff.db.locks import lock_wallets
from bff.errors import is_unavailable
from bff.events import outbox
from bff.gate.base import ClaimFacts, Gate, facts_key
from bff.versions import touch

log = logging.getLogger("bff.coupons.ledger")

C = tables.coupons
T = tables.coupon_templates
CODES = tables.coupon_codes
DAILY = tables.template_daily
X = tables.exclusive_takes

# A coupon row as a SELECT would read it back: what the batch wrote, with its new id
# (INSERT ... RETURNING returns only the ids; parsing every column of every new row
# back from the driver cost more than the insert's own statement).
IssuedCoupon = namedtuple("IssuedCoupon", [column.name for column in C.c])


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


# The batch's statements, built once: building a select per batch (expression, cache key)
# cost more than compiling it from SQLAlchemy's cache.
_TEMPLATE = select(T).where(T.c.id == bindparam("template_id"))
_TEMPLATE_LOCKED = _TEMPLATE.with_for_update()
_OWNED = select(C).where(
    C.c.shop_id == bindparam("shop_id"), C.c.user_id.in_(bindparam("users", expanding=True))
)
_INSERT_RETURNING = C.insert().returning(C.c.request_key, C.c.id)
# The stock guard: never past stock_total, whatever the checks above decided.
_COUNT = bindparam("count")
_GUARDED_ADD = (
    update(T)
    .where(
        T.c.id == bindparam("id_"),
        (T.c.stock_total.is_(None)) | (T.c.issued + _COUNT <= T.c.stock_total),
    )
    .values(issued=T.c.issued + _COUNT)
)


def sold_out_keys(template_id: int, day: str) -> list[str]:
    """The gate's sold-out and daily-sold-out flags of a template (one hash tag)."""
    return [f"so:{{tpl:{template_id}}}", f"ds:{{tpl:{template_id}}}:{day}"]


# How long the gate keeps a sold-out flag; the stock total it holds voids it sooner.
MARK_SECONDS = 600


@dataclass
class _Seen:
    """What a batch learned of its template, applied once its transaction committed."""

    template: Any = None
    sold_out: bool = False
    daily_out_day: str | None = None


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
        gate: Gate,
        *,
        wallet_cap: int,
        timezone: str,
        window_ms: float,
        batch_max: int,
        sold_out_seconds: float = 1.0,
        facts_ttl_seconds: int = 86400,
        holders: Holders | None = None,
    ) -> None:
        self.db = db
        # The shops' holders filters: the users this ledger issues to go in before the commit.
        self.holders = holders
        self.clock = clock
        self.gate = gate
        self.facts_ttl = facts_ttl_seconds
        self.wallet_cap = wallet_cap
        self.timezone = timezone
        self.window = window_ms / 1000
        self.batch_max = batch_max
        self._queues: dict[int, list[IssueRequest]] = defaultdict(list)
        self._draining: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # template id -> until when this process treats it as sold out (see _refuse_sold_out)
        self._sold_out: dict[int, float] = {}
        # template id -> (shop day, until when) it is treated as sold out for that day
        self._daily_out: dict[int, tuple[str, float]] = {}
        # template id -> when this process may next ask the gate about it
        self._asked: dict[int, float] = {}
        # template id -> its shop, for every template flagged here (forget_shop)
        self._shop_of: dict[int, str] = {}
        self._asking: dict[int, asyncio.Future[None]] = {}
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
    def _mark_sold_out(self, template_id: int, shop_id: str) -> None:
        self._sold_out[template_id] = time.monotonic() + self.sold_out_seconds
        self._shop_of[template_id] = shop_id

    def _mark_daily_out(self, template_id: int, shop_id: str, day: str) -> None:
        self._daily_out[template_id] = (day, time.monotonic() + self.sold_out_seconds)
        self._shop_of[template_id] = shop_id

    def forget(self, template_id: int) -> None:
        """The template changed (say, more stock): stop treating it as sold out."""
        self._sold_out.pop(template_id, None)
        self._daily_out.pop(template_id, None)
        self._asked.pop(template_id, None)

    def forget_shop(self, shop_id: str | None) -> None:
        """Another process changed something of this shop (every shop's for None)."""
        for template_id, shop in list(self._shop_of.items()):
            if shop_id is None or shop == shop_id:
                self.forget(template_id)
                del self._shop_of[template_id]

    async def drop_marks(self, template_id: int) -> None:
        """After an admin change commits: the gate's flags go, so no process re-learns them.

        Other processes' local flags go with the price-change message; if it is lost,
        they last ``sold_out_seconds`` at most (the gate then has nothing to renew).
        """
        self.forget(template_id)
        day = shop_day(self.clock.now(), self.timezone)
        try:
            await self.gate.drop_marks(sold_out_keys(template_id, day))
        except Exception:
            log.warning("could not drop a template's sold-out flags in the gate", exc_info=True)

    def _seen_sold_out(self, template_id: int) -> bool:
        until = self._sold_out.get(template_id)
        if until is not None and until <= time.monotonic():
            del self._sold_out[template_id]
            return False
        return until is not None

    def _seen_daily_out(self, template_id: int, day: str) -> bool:
        seen = self._daily_out.get(template_id)
        if seen is None:
            return False
        if seen[0] != day or seen[1] <= time.monotonic():
            del self._daily_out[template_id]
            return False
        return True

    async def out_of_stock(self, template: Any, day: str) -> str | None:
        """SOLD_OUT or DAILY_SOLD_OUT when this process knows the template has none left.

        Local flags first; when they ran out, the gate's flags, asked at most once
        per template every ``sold_out_seconds`` (one read shared by the claims in
        flight). A gate flag counts only if it was set at the template's current
        stock total (or daily limit), so stock added since voids it.
        """
        code = self._known_out(template.id, day)
        if code is not None:
            return code
        if self._asked.get(template.id, 0.0) > time.monotonic():
            return None
        pending = self._asking.get(template.id)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._asking[template.id] = pending
            try:
                await self._ask_gate(template, day)
            except Exception:  # unknown, then: the claim goes on to the ledger
                log.warning("could not read sold-out flags from the gate", exc_info=True)
            finally:
                self._asking.pop(template.id, None)
                self._asked[template.id] = time.monotonic() + self.sold_out_seconds
                pending.set_result(None)
        else:
            await asyncio.shield(pending)
        return self._known_out(template.id, day)

    def _known_out(self, template_id: int, day: str) -> str | None:
        if self._seen_sold_out(template_id):
            return "SOLD_OUT"
        if self._seen_daily_out(template_id, day):
            return "DAILY_SOLD_OUT"
        return None

    async def _ask_gate(self, template: Any, day: str) -> None:
        stock_mark, daily_mark = await self.gate.read_marks(sold_out_keys(template.id, day))
        if template.stock_total is not None and stock_mark == str(template.stock_total):
            self._mark_sold_out(template.id, template.shop_id)
        if template.daily_limit and daily_mark == str(template.daily_limit):
            self._mark_daily_out(template.id, template.shop_id, day)

    def _remember(self, seen: _Seen) -> None:
        """After a commit: keep what the batch learned, here at once, in the gate soon."""
        template = seen.template
        if template is None or not (seen.sold_out or seen.daily_out_day):
            return
        if seen.sold_out:
            self._mark_sold_out(template.id, template.shop_id)
        if seen.daily_out_day is not None:
            self._mark_daily_out(template.id, template.shop_id, seen.daily_out_day)
        # The replies do not wait for it: a committed batch answers at once.
        task = asyncio.get_running_loop().create_task(self._tell_gate(seen))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tell_gate(self, seen: _Seen) -> None:
        template = seen.template
        keys = sold_out_keys(template.id, seen.daily_out_day or "")
        try:
            if seen.sold_out:
                await self.gate.mark(keys[0], str(template.stock_total), MARK_SECONDS)
            if seen.daily_out_day is not None:
                await self.gate.mark(keys[1], str(template.daily_limit), MARK_SECONDS)
        except Exception:  # other processes learn it from their next batch instead
            log.warning("could not keep a sold-out flag in the gate", exc_info=True)

    async def _refuse_sold_out(
        self, template_id: int, batch: list[IssueRequest]
    ) -> list[IssueResult] | None:
        """Answer a batch for a template seen sold out without locking the template.

        Under a flash sale most claims arrive after the stock is gone; deciding them
        off the template row's lock keeps them off the write path, in DOMAIN.md's
        order (a user at the limit still hears LIMIT_REACHED). It holds the users'
        wallet locks only to write their facts, so their next claims are refused in
        the gate. None when stock is back.
        """
        results = await self.db.transaction(
            lambda conn: self.issue_batch(conn, template_id, batch, read_only=True)
        )
        if results is None:
            self.forget(template_id)
        else:
            self._mark_sold_out(template_id, batch[0].shop_id)
        return results

    async def _flush(
        self, template_id: int, batch: list[IssueRequest], *, alone: bool = False
    ) -> None:
        try:
            results = None
            if self._seen_sold_out(template_id):
                results = await self._refuse_sold_out(template_id, batch)
            if results is None:
                seen = _Seen()
                results = await self.db.transaction(
                    lambda conn: self.issue_batch(conn, template_id, batch, seen=seen)
                )
                self._remember(seen)
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
            if is_unavailable(exc):
                # The database did not answer within the deadline (or at all): the claims
                # queued behind this batch would each wait a deadline of their own. They
                # were never attempted, so they fail now with it, and nothing is written.
                queue = self._queues.get(template_id)
                if queue:
                    waiting = queue[:]
                    del queue[:]
                    _fail(waiting, exc)
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
        seen: _Seen | None = None,
    ) -> list[IssueResult] | None:
        """Decide and write a batch for one template inside the caller's transaction.

        ``read_only``: for a template seen sold out, decide without locking the
        template or writing coupons (each request is refused in the usual order, or
        replayed); None if stock is available again, and the batch must take the
        write path. ``seen`` collects what the caller should remember once committed.
        Either way the users' wallet locks are taken and their facts written to the
        gate before the caller commits.
        """
        now = self.clock.now()
        if seen is not None:  # a transaction retried after a deadlock starts afresh
            seen.template, seen.sold_out, seen.daily_out_day = None, False, None
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
        await lock_wallets(conn, shop_id, users)
        # After the wallet lock: every copy of a request key is one user's, so a copy
        # committed by another process (a different template) is visible now.
        owned = await self._owned(conn, shop_id, users)
        keys = {r.request_key for r in batch}
        existing = {c.request_key: c for cs in owned.values() for c in cs if c.request_key in keys}
        held = {
            user: max((c.slot for c in coupons if c.template_id == template_id), default=0)
            for user, coupons in owned.items()
        }
        # New-member exclusives: one of them per member, once, ever (under the wallet lock,
        # which every writer of this user's coupons holds).
        exclusive = bool(spec.get("new_member_exclusive"))
        took_exclusive = await exclusive_takers(conn, shop_id, users) if exclusive else set()
        in_wallet = {
            user: sum(1 for c in coupons if counts_against_wallet(c.status, c.valid_to, now))
            for user, coupons in owned.items()
        }
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
        if rows:  # their signed-in prices change when this commits (bff.versions)
            touch(shop_id, {row["user_id"] for row in rows})
        # The users' facts go to the gate while the database writes; both end before the
        # commit, and a failure of either fails the transaction.
        issued_to = sorted({row["user_id"] for row in rows})
        facts = asyncio.ensure_future(self._put_facts(_facts(owned, rows, now), shop_id, issued_to))
        inserted: dict[str, Any] = {}
        try:
            if rows:
                inserted = await self._write(conn, template, rows, day, code_ids)
                if exclusive:
                    await self._record_exclusive(conn, rows, now)
                # Their events, in this transaction: one insert for the batch (bff.events).
                await outbox.append(
                    conn, outbox.issued(template, inserted.values(), now, sold_out=stock_left == 0)
                )
        except BaseException:
            # Wait for the gate writes all the same: one still in flight after the rollback
            # released the wallet locks could overwrite a later writer's facts.
            with contextlib.suppress(Exception):
                await asyncio.shield(facts)
            raise
        await facts
        if seen is not None:
            seen.template = template
            seen.sold_out = stock_left is not None and stock_left <= 0
            if template.daily_limit and daily_issued >= template.daily_limit:
                seen.daily_out_day = day
        # The replies: this batch's rows as the insert returned them, and the rows of
        # requests that were already there (replays).
        written = {**existing, **inserted}
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
        query = _TEMPLATE_LOCKED if lock and not self.db.is_sqlite else _TEMPLATE
        return (await conn.execute(query, {"template_id": template_id})).first()

    async def _existing(
        self, conn: AsyncConnection, shop_id: str, keys: list[str]
    ) -> dict[str, Any]:
        rows = await conn.execute(
            select(C).where(C.c.shop_id == shop_id, C.c.request_key.in_(sorted(set(keys))))
        )
        return {row.request_key: row for row in rows}

    async def _owned(
        self, conn: AsyncConnection, shop_id: str, users: list[str]
    ) -> dict[str, list[Any]]:
        """Every coupon of these users in the shop (their limits, wallets, facts, replays)."""
        rows = await conn.execute(_OWNED, {"shop_id": shop_id, "users": users})
        owned: dict[str, list[Any]] = {user: [] for user in users}
        for row in rows:
            # utf8mb4_bin pads: "u1 " matches "u1" in SQL, not here (auth refuses such ids).
            if row.user_id in owned:
                owned[row.user_id].append(row)
        return owned

    async def _put_facts(
        self, facts: dict[str, ClaimFacts], shop_id: str, issued_to: list[str]
    ) -> None:
        """Write each user's facts as this transaction leaves them (see the module doc),
        and add the users it issues to to the shop's holders filter
        (:mod:`bff.coupons.holders`).

        Called holding the users' wallet locks, before the commit. If the gate cannot
        take them, the transaction fails: facts left from before it would be too low,
        and a filter without these users would call them holders of nothing.
        """
        writes = [
            self.gate.put_facts(facts_key(shop_id, user), value, self.facts_ttl)
            for user, value in facts.items()
        ]
        if self.holders is not None and issued_to:
            writes.append(self.holders.add(shop_id, issued_to))
        outcomes = await asyncio.gather(
            *writes,
            return_exceptions=True,  # every write has ended before this returns
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

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
    ) -> dict[str, Any]:
        """Insert the batch's coupons and move the counters; the new rows by request key."""
        count = len(rows)
        if conn.dialect.insert_executemany_returning:
            # MariaDB >= 10.5 and SQLite >= 3.35: one INSERT ... RETURNING for the batch.
            result = await conn.execute(_INSERT_RETURNING, rows)
            ids: dict[str, int] = {key: coupon_id for key, coupon_id in result}
            inserted = {row["request_key"]: _as_read(row, ids[row["request_key"]]) for row in rows}
        else:  # pragma: no cover - older servers read the rows back
            await conn.execute(C.insert(), rows)
            inserted = await self._existing(
                conn, template.shop_id, [r["request_key"] for r in rows]
            )
        guarded = await conn.execute(_GUARDED_ADD, {"id_": template.id, "count": count})
        if guarded.rowcount != 1:
            # Cannot happen under the row lock; if it ever does, nothing is written.
            raise RuntimeError("stock guard refused a batch decided under the template lock")
        if template.daily_limit:
            await self._add_daily(conn, template.id, day, count, template.daily_limit)
        for coupon in inserted.values():
            if coupon.code in code_ids:
                marked = await conn.execute(
                    update(CODES)
                    .where(CODES.c.id == code_ids[coupon.code], CODES.c.coupon_id.is_(None))
                    .values(coupon_id=coupon.id)
                )
                if marked.rowcount != 1:
                    raise RuntimeError("a code was handed out twice under the template lock")
        return inserted

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


def _facts(
    owned: dict[str, list[Any]], rows: list[dict[str, Any]], now: datetime
) -> dict[str, ClaimFacts]:
    """Each user's facts once ``rows`` are inserted next to the coupons they ``owned``.

    ``wallet`` also counts used coupons still in their validity: a cancelled order can
    give them back (``return_on_cancel``) without taking the wallet lock, and the facts
    must stay above what a return can make the wallet.
    """
    facts: dict[str, ClaimFacts] = {}
    for user, coupons in owned.items():
        mine = [
            (c.template_id, c.slot, c.status, c.valid_to, c.request_key, c.body_hash)
            for c in coupons
        ]
        mine += [
            (
                r["template_id"],
                r["slot"],
                r["status"],
                r["valid_to"],
                r["request_key"],
                r["body_hash"],
            )
            for r in rows
            if r["user_id"] == user
        ]
        held: dict[int, int] = {}
        keys: dict[str, str] = {}
        wallet = 0
        for template_id, slot, status, valid_to, request_key, digest in mine:
            held[template_id] = max(held.get(template_id, 0), slot)
            if request_key.startswith("c:"):
                keys[request_key] = digest
            wallet += status in ("unused", "locked", "used") and valid_to > now
        facts[user] = ClaimFacts(wallet, held, keys)
    return facts


def _as_read(row: dict[str, Any], coupon_id: int) -> IssuedCoupon:
    """``row`` as the database returns it: datetimes in UTC (bff.db.types.UtcDateTime
    keeps microseconds on both backends, so the instant is the same)."""
    values = {
        key: value.astimezone(UTC) if isinstance(value, datetime) else value
        for key, value in row.items()
    }
    return IssuedCoupon(**{**values, "id": coupon_id})


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
