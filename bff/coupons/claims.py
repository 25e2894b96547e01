"""Claiming (领券): the checks in DOMAIN.md's order, then the batched ledger write.

Order: template exists in this shop, is active and allows the method; claim
window; audience; risk check (when the template asks for it); the user's rate
limit; then, inside the ledger's transaction: per-user limit, wallet cap,
stock, daily limit.

Hot-path shape: the template definition comes from a per-process cache
(``claim.template_cache_seconds``; the ledger re-reads the row under its lock,
so a pause is never missed by a write). A widget claim on a template whose
checks need no I/O (no audience, no risk check) runs those checks first, in
memory, then makes one gate call (:meth:`Gate.claim_begin`) for its
idempotency marker and the user's rate limit, which also refuses it SOLD_OUT
(or DAILY_SOLD_OUT) when this process knows the template is out and the
user's facts in the gate show that neither the per-user limit nor the wallet
cap comes first (see :mod:`bff.coupons.ledger`), or the user has no facts and
the shop's holders filter shows they hold no coupon of the shop at all (see
:mod:`bff.coupons.holders`: a new user). A sold-out storm is then answered
without the database; everything else goes on to the ledger's batch.
Why not zero round trips: the rate limit comes before stock in DOMAIN.md's
order and is counted across processes, and a retry of a claim that
succeeded must be replayed, which only the gate (or the database) knows.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bff import fastdump
from bff.clock import Clock
from bff.coupons.holders import Holders
from bff.coupons.ledger import IssueRequest, IssueResult, Ledger
from bff.coupons.risk import Device, RiskContext, RiskEngine
from bff.coupons.rules import MemberView, needs_membership, precheck, refuse, shop_day
from bff.coupons.templates import fetch_row
from bff.coupons.wallet import CouponSchema, WalletService
from bff.db import tables
from bff.db.engine import Database
from bff.errors import ApiError
from bff.gate.base import FactsCheck, Gate, IdemState, facts_key, window_key
from bff.idempotency import Begin, Reply, body_hash, run_once
from bff.members import fetch_member
from config.loader import Settings

CODES = tables.coupon_codes
COUPONS = tables.coupons
# Unknown codes one user may try per window before claim-by-code answers 429.
CODE_MISSES_ALLOWED = 10
CODE_MISS_WINDOW_SECONDS = 600
COUPON_SCHEMA = CouponSchema()


class TemplateCache:
    """Template rows per process for a short time; admin writes in this process drop them.

    Misses are single-flight: when an entry expires under a burst, the claims in
    flight share one read instead of each reading the row (bench/run.py measured
    162 reads in 6 s at 64 concurrent claims, 8 % of the claim path's CPU).
    """

    def __init__(self, db: Database, ttl_seconds: float) -> None:
        self.db = db
        self.ttl = ttl_seconds
        self._rows: dict[int, tuple[float, Any]] = {}
        self._loading: dict[tuple[str, int], asyncio.Future[Any]] = {}

    async def get(self, shop_id: str, template_id: int) -> Any:
        cached = self._rows.get(template_id)
        if cached is not None and cached[0] > time.monotonic():
            row = cached[1]
        else:
            row = await self._load(shop_id, template_id)
            if row is None:
                return None
        return row if row.shop_id == shop_id else None

    async def _load(self, shop_id: str, template_id: int) -> Any:
        key = (shop_id, template_id)
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._loading[key] = future

        async def work(conn: AsyncConnection) -> Any:
            return await fetch_row(conn, shop_id, template_id)

        try:
            row = await self.db.read(work)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here: waiters re-raise it, nobody else must
            raise
        finally:
            self._loading.pop(key, None)
        future.set_result(row)
        if row is not None:
            self._rows[template_id] = (time.monotonic() + self.ttl, row)
        return row

    def forget(self, template_id: int) -> None:
        self._rows.pop(template_id, None)

    def forget_shop(self, shop_id: str | None) -> None:
        """Drop a shop's rows (every shop's for None)."""
        for template_id, (_, row) in list(self._rows.items()):
            if shop_id is None or row.shop_id == shop_id:
                del self._rows[template_id]


@dataclass(frozen=True)
class ClaimContext:
    shop_id: str
    user_id: str
    device: Device | None
    ip: str | None


class ClaimService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        gate: Gate,
        ledger: Ledger,
        risk: RiskEngine,
        wallet: WalletService,
        settings: Settings,
    ) -> None:
        self.db = db
        self.clock = clock
        self.gate = gate
        self.ledger = ledger
        self.risk = risk
        self.wallet = wallet
        self.settings = settings
        self.templates = TemplateCache(db, settings.claim.template_cache_seconds)
        # The ledger's, so that a claim and a write agree on the shops' filters.
        self.holders = ledger.holders or Holders(
            db, gate, enabled=False, users=1, error=0.5, ttl_seconds=1
        )

    async def changed(self, template_id: int) -> None:
        """A template's definition or stock changed here (committed): forget it everywhere.

        Here at once; in the gate (its sold-out flags); in other processes through the
        price-change message that the admin write publishes.
        """
        self.templates.forget(template_id)
        await self.ledger.drop_marks(template_id)

    def forget_shop(self, shop_id: str | None) -> None:
        """A shop changed in some process (pub/sub), or messages may have been lost (None)."""
        self.templates.forget_shop(shop_id)
        self.ledger.forget_shop(shop_id)

    # --- public operations --------------------------------------------------------------------
    async def claim(
        self, context: ClaimContext, template_id: int, request_id: str, method: str = "widget"
    ) -> Reply:
        digest = body_hash(
            {"op": "claim", "template_id": template_id, "device": _device_dict(context.device)}
        )
        request_key = f"c:{context.user_id}:{request_id}"
        template = await self.templates.get(context.shop_id, template_id)
        fast = None
        if template is not None:
            fast = await self._fast_begin(context, template, method, request_key, digest)

        async def work() -> Reply:
            if template is None:
                raise refuse("NOT_FOUND").error()
            result = await self.attempt(
                context, template, method, request_key, digest, rate_checked=fast is not None
            )
            return self._reply(result, template)

        begin, decided = fast if fast is not None else (None, None)
        return await self.once(
            context, f"c:{request_id}", digest, work, begin=begin, decided=decided
        )

    async def _fast_begin(
        self, context: ClaimContext, template: Any, method: str, request_key: str, digest: str
    ) -> tuple[Begin, Any] | None:
        """The one gate call of a claim whose checks before the ledger need no I/O.

        None when the template needs a membership read or a risk check, or when a
        check refuses: the general path then decides (and replays a claim that
        succeeded before the check changed). Otherwise the rate limit is counted in
        the same call, and a known sold-out template refused there when the user's
        facts allow (see :class:`FactsCheck`).
        """
        spec = template.spec
        if needs_membership(spec) or spec.get("risk_check"):
            return None
        now = self.clock.now()
        if precheck(template, method, now, None) is not None:
            return None
        limit = self.settings.risk.user_claims_per_minute
        rate = None
        retry_after = 0
        if limit:
            key, retry_after = window_key(self._rate_prefix(context), now, 60)
            rate = (key, limit, 60)
        code = await self.ledger.out_of_stock(template, shop_day(now, self.settings.shop.timezone))
        check = FactsCheck(
            facts_key(context.shop_id, context.user_id),
            request_key,
            template.id,
            template.per_user_limit,
            self.settings.wallet.max_unused_per_shop,
            sold_out=code is not None,
            holders_key=self.holders.key(context.shop_id) if code is not None else None,
            user_id=context.user_id,
        )

        async def begin(key: str, body: str, pending_seconds: int) -> IdemState:
            state = await self.gate.claim_begin(key, body, pending_seconds, rate, check)
            if state.rebuild:
                self.holders.rebuild_soon(context.shop_id)
            return state

        async def decided(state: IdemState) -> Reply:
            if state.state == "refused":
                raise refuse(code or "SOLD_OUT").error()
            # Rate limited: a retry of a claim that succeeded is still replayed. The
            # user's facts may already tell it is no retry; else the database does.
            replay = None
            if state.state != "limited_new":
                replay = await self._replay(context, request_key, digest)
            if replay is None:
                raise refuse("RATE_LIMITED").error({"Retry-After": str(retry_after)})
            return replay

        return begin, decided

    async def claim_by_code(self, context: ClaimContext, code: str, request_id: str) -> Reply:
        digest = body_hash({"op": "code", "code": code})
        request_key = f"c:{context.user_id}:{request_id}"

        async def work() -> Reply:
            now = self.clock.now()
            replay = await self._replay(context, request_key, digest)
            if replay is not None:
                return replay
            # Every call counts, before the lookup: a guesser cannot try codes for free.
            retry_after = await self._rate_limited(context, now) or await self._guessing(
                context, now
            )
            if retry_after:
                raise refuse("RATE_LIMITED").error({"Retry-After": str(retry_after)})
            found = await self._code(context.shop_id, code)
            template = None
            if found is not None:
                template = await self.templates.get(context.shop_id, found.template_id)
            if template is None:
                await self._count_miss(context, now)
                raise ApiError(HTTPStatus.NOT_FOUND, "NOT_FOUND", "unknown code")
            result = await self.attempt(
                context, template, "code", request_key, digest, code=code, rate_checked=True
            )
            return self._reply(result, template)

        return await self.once(context, f"c:{request_id}", digest, work)

    async def attempt(
        self,
        context: ClaimContext,
        template: Any,
        method: str,
        request_key: str,
        digest: str,
        *,
        code: str | None = None,
        rate_checked: bool = False,
    ) -> IssueResult:
        """Every claim check, then the ledger. Refusals come back in the result.

        A refusal decided before the ledger is first checked against the ledger's
        durable record of this request, so a retry of a claim that succeeded (after
        the gate lost its reply) is replayed, not refused by a check that changed
        since (window closed, template paused, rate window full).
        """
        now = self.clock.now()
        member = await self._member(context, template)
        refusal = precheck(template, method, now, member)
        if refusal is None and template.spec.get("risk_check"):
            verdict = await self.risk.check(
                RiskContext(
                    context.shop_id, context.user_id, template.id, context.device, context.ip, now
                )
            )
            if not verdict.allowed:
                refusal = refuse("RISK_REJECTED", rule=verdict.rule)
        retry_after = 0
        if refusal is None and not rate_checked:
            retry_after = await self._rate_limited(context, now)
        if refusal is not None or retry_after:
            earlier = await self._issued(context.shop_id, request_key)
            if earlier is not None:
                if earlier.body_hash != digest:
                    return IssueResult(refusal=refuse("IDEMPOTENCY_CONFLICT"))
                return IssueResult(coupon=earlier, replayed=True)
            if retry_after:
                raise refuse("RATE_LIMITED").error({"Retry-After": str(retry_after)})
            return IssueResult(refusal=refusal)
        return await self.ledger.issue(
            IssueRequest(
                shop_id=context.shop_id,
                user_id=context.user_id,
                template_id=template.id,
                source=method,
                request_key=request_key,
                body_hash=digest,
                code=code,
            )
        )

    # --- helpers ------------------------------------------------------------------------------
    def _reply(self, result: IssueResult, template: Any) -> Reply:
        if result.refusal is not None:
            raise result.refusal.error()
        return Reply(
            HTTPStatus.CREATED,
            {"coupon": fastdump.dump(COUPON_SCHEMA, self.wallet.view(result.coupon, template))},
            replayed=result.replayed,
        )

    async def once(
        self,
        context: ClaimContext,
        purpose: str,
        digest: str,
        work: Any,
        *,
        begin: Begin | None = None,
        decided: Any = None,
    ) -> Reply:
        key = f"idem:{{{context.shop_id}:{context.user_id}}}:{purpose}"
        return await run_once(
            self.gate,
            key,
            digest,
            work,
            ttl_seconds=self.settings.claim.idempotency_ttl_seconds,
            begin=begin,
            decided=decided,
        )

    @staticmethod
    def _rate_prefix(context: ClaimContext) -> str:
        return f"rl:{{{context.shop_id}:{context.user_id}}}:claims"

    async def _rate_limited(self, context: ClaimContext, now: datetime) -> int:
        """0 within the user's claims per minute, else the seconds until the next window."""
        limit = self.settings.risk.user_claims_per_minute
        if not limit:
            return 0
        key, seconds_left = window_key(self._rate_prefix(context), now, 60)
        return 0 if await self.gate.hit(key, limit, 60) else seconds_left

    def _misses_key(self, context: ClaimContext, now: datetime) -> tuple[str, int]:
        prefix = f"rl:{{{context.shop_id}:{context.user_id}}}:code-misses"
        return window_key(prefix, now, CODE_MISS_WINDOW_SECONDS)

    async def _guessing(self, context: ClaimContext, now: datetime) -> int:
        """0 while the user has unknown-code tries left in this window, else seconds to wait."""
        key, seconds_left = self._misses_key(context, now)
        return seconds_left if await self.gate.count(key) >= CODE_MISSES_ALLOWED else 0

    async def _count_miss(self, context: ClaimContext, now: datetime) -> None:
        key, _ = self._misses_key(context, now)
        await self.gate.hit(key, CODE_MISSES_ALLOWED, CODE_MISS_WINDOW_SECONDS)

    async def _replay(self, context: ClaimContext, request_key: str, digest: str) -> Reply | None:
        earlier = await self._issued(context.shop_id, request_key)
        if earlier is None:
            return None
        if earlier.body_hash != digest:
            raise refuse("IDEMPOTENCY_CONFLICT").error()
        template = await self.templates.get(context.shop_id, earlier.template_id)
        return self._reply(IssueResult(coupon=earlier, replayed=True), template)

    async def _issued(self, shop_id: str, request_key: str) -> Any:
        """The coupon the ledger issued for this request key, if any (the durable record)."""

        async def work(conn: AsyncConnection) -> Any:
            query = select(COUPONS).where(
                COUPONS.c.shop_id == shop_id, COUPONS.c.request_key == request_key
            )
            return (await conn.execute(query)).first()

        return await self.db.read(work)

    async def _member(self, context: ClaimContext, template: Any) -> MemberView | None:
        if not needs_membership(template.spec):
            return None

        async def work(conn: AsyncConnection) -> Any:
            return await fetch_member(conn, context.shop_id, context.user_id)

        row = await self.db.read(work)
        return None if row is None else MemberView(level=row.level, active=row.left_at is None)

    async def _code(self, shop_id: str, code: str) -> Any:
        async def work(conn: AsyncConnection) -> Any:
            query = select(CODES).where(CODES.c.shop_id == shop_id, CODES.c.code == code)
            return (await conn.execute(query)).first()

        return await self.db.read(work)


def _device_dict(device: Device | None) -> dict[str, Any] | None:
    if device is None:
        return None
    return {"id": device.id, "emulator": device.emulator, "multi_open": device.multi_open}
