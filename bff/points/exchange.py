"""The exchange (积分兑换): points deducted and the coupon issued in one transaction.

Checks, in order (each a refusal that changes nothing):

1. the offer exists in this shop (404 ``NOT_FOUND``);
2. the claim core's precheck with method ``points``: template paused
   (``CLAIM_PAUSED``) or ended, the window (``NOT_STARTED``, ``CLAIM_ENDED``),
   which is the template's claim window narrowed by the offer's, and the
   audience (``NOT_ELIGIBLE``); points belong to members, so an exchange also
   needs an active membership (``NOT_ELIGIBLE``, reason ``members only``);
3. the risk check when the template asks for it (``RISK_REJECTED``), and the
   user's claim rate limit (``RATE_LIMITED``): an exchange is a claim;
4. in one database transaction: the coupon ledger's ``issue_in`` (per-user
   limit ``LIMIT_REACHED``, wallet cap ``WALLET_FULL``, stock ``SOLD_OUT``,
   ``DAILY_SOLD_OUT``), then the conditional points deduction
   (``INSUFFICIENT_POINTS``), then the ledger row. Any refusal raises, and
   the transaction rolls back the coupon with it.

``INSUFFICIENT_POINTS`` comes last on purpose: a user short of points on a
sold-out offer hears ``SOLD_OUT``, the answer more points would not change,
and the shopper page's states follow the same order.

Lock order: the template row, then the wallet row (as every coupon writer),
then the points balance row. Merchant points changes lock only the balance
row, so no cycle can form.

Idempotency: the gate answers concurrent copies; durably, the coupon's request
key ``p:<user>:<request_id>`` and the ledger row's ``x:<user>:<request_id>``
are written in the same transaction, so a retry after the gate lost its keys
finds both and is replayed, never charged again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from typing import Any

import sqlalchemy.exc
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bff import fastdump
from bff.clock import Clock
from bff.coupons.claims import ClaimContext, ClaimService
from bff.coupons.ledger import IssueRequest, Ledger
from bff.coupons.risk import RiskContext
from bff.coupons.rules import MemberView, Refusal, precheck, refuse
from bff.coupons.templates import fetch_row
from bff.coupons.wallet import CouponSchema, WalletService
from bff.db import tables
from bff.db.engine import Database
from bff.errors import not_found
from bff.gate.base import Gate
from bff.idempotency import Reply, body_hash, idempotency_conflict, run_once
from bff.members import fetch_member
from bff.points.ledger import (
    append_entry,
    apply_change,
    entry_by_key,
    insufficient_points,
    points_balance,
)
from bff.points.offers import fetch_offer
from bff.points.policy import offer_window

C = tables.coupons
COUPON_SCHEMA = CouponSchema()
REASON = "exchange"


@dataclass(frozen=True)
class _Window:
    """A template as the precheck sees it, with the offer's window in place of its own."""

    status: str
    spec: dict[str, Any]
    claim_start: datetime
    claim_end: datetime


@dataclass(frozen=True)
class _Found:
    offer: Any
    template: Any
    member: MemberView | None
    # An earlier copy's result: its ledger row, coupon and the coupon's template.
    entry: Any
    coupon: Any
    coupon_template: Any


class ExchangeService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        gate: Gate,
        ledger: Ledger,
        claims: ClaimService,
        wallet: WalletService,
        ttl_seconds: int,
    ) -> None:
        self.db = db
        self.clock = clock
        self.gate = gate
        self.ledger = ledger
        self.claims = claims
        self.wallet = wallet
        self.ttl = ttl_seconds

    async def redeem(self, context: ClaimContext, offer_id: int, request_id: str) -> Reply:
        device = context.device
        device_body = None if device is None else [device.id, device.emulator, device.multi_open]
        digest = body_hash({"op": "points_exchange", "offer_id": offer_id, "device": device_body})
        coupon_key = f"p:{context.user_id}:{request_id}"
        points_key = f"x:{context.user_id}:{request_id}"

        async def work() -> Reply:
            found = await self._find(context, offer_id, coupon_key, points_key)
            if found.entry is not None:
                return self._replay(found.coupon, found.coupon_template, found.entry, digest)
            if found.offer is None or found.template is None:
                raise not_found("exchange offer")
            refusal = await self._admit(context, found)
            if refusal is not None:
                raise refusal.error()

            async def exchange(conn: AsyncConnection) -> Reply:
                return await self._exchange(conn, context, found, coupon_key, points_key, digest)

            try:
                return await self.db.transaction(exchange)
            except sqlalchemy.exc.IntegrityError:
                # A copy committed this request first (the gate had lost its key).
                again = await self._find(context, offer_id, coupon_key, points_key)
                if again.entry is None:
                    raise
                return self._replay(again.coupon, again.coupon_template, again.entry, digest)

        key = f"idem:{{{context.shop_id}:{context.user_id}}}:x:{request_id}"
        return await run_once(self.gate, key, digest, work, ttl_seconds=self.ttl)

    async def _find(
        self, context: ClaimContext, offer_id: int, coupon_key: str, points_key: str
    ) -> _Found:
        """The offer, its template, the membership and any earlier result, in one read."""

        async def work(conn: AsyncConnection) -> _Found:
            entry = await entry_by_key(conn, context.shop_id, points_key)
            coupon = coupon_template = None
            if entry is not None:
                query = select(C).where(
                    C.c.shop_id == context.shop_id, C.c.request_key == coupon_key
                )
                coupon = (await conn.execute(query)).first()
                if coupon is None:  # pragma: no cover - both are written in one transaction
                    raise RuntimeError("exchange ledger row without its coupon")
                coupon_template = await fetch_row(conn, context.shop_id, coupon.template_id)
            offer = await fetch_offer(conn, context.shop_id, offer_id)
            template = None
            if offer is not None:
                template = await fetch_row(conn, context.shop_id, offer.template_id)
            row = await fetch_member(conn, context.shop_id, context.user_id)
            member = None if row is None else MemberView(row.level, row.left_at is None)
            return _Found(offer, template, member, entry, coupon, coupon_template)

        return await self.db.read(work)

    async def _admit(self, context: ClaimContext, found: _Found) -> Refusal | None:
        """The claim checks before the ledger (see the module doc); RATE_LIMITED raises."""
        now = self.clock.now()
        template = found.template
        start, end = offer_window(
            template.claim_start, template.claim_end, found.offer.starts_at, found.offer.ends_at
        )
        window = _Window(template.status, template.spec, start, end)
        refusal = precheck(window, "points", now, found.member)
        if refusal is None and (found.member is None or not found.member.active):
            refusal = refuse("NOT_ELIGIBLE", reason="members only")
        if refusal is None and template.spec.get("risk_check"):
            verdict = await self.claims.risk.check(
                RiskContext(
                    context.shop_id, context.user_id, template.id, context.device, context.ip, now
                )
            )
            if not verdict.allowed:
                refusal = refuse("RISK_REJECTED", rule=verdict.rule)
        if refusal is None:
            # An exchange issues a coupon: it counts against the user's claims per minute.
            retry_after = await self.claims._rate_limited(context, now)
            if retry_after:
                raise refuse("RATE_LIMITED").error({"Retry-After": str(retry_after)})
        return refusal

    async def _exchange(
        self,
        conn: AsyncConnection,
        context: ClaimContext,
        found: _Found,
        coupon_key: str,
        points_key: str,
        digest: str,
    ) -> Reply:
        shop_id, user_id = context.shop_id, context.user_id
        cost = found.offer.points_cost
        result = await self.ledger.issue_in(
            conn,
            IssueRequest(
                shop_id=shop_id,
                user_id=user_id,
                template_id=found.template.id,
                source="points",
                request_key=coupon_key,
                body_hash=digest,
            ),
        )
        if result.refusal is not None:
            raise result.refusal.error()
        if result.replayed:
            # A copy of this request committed the coupon, and with it the charge.
            entry = await entry_by_key(conn, shop_id, points_key)
            if entry is None:  # pragma: no cover - both are written in one transaction
                raise RuntimeError("exchange coupon without its ledger row")
            return self._replay(result.coupon, found.template, entry, digest)
        now = self.clock.now()
        balance = await apply_change(conn, shop_id, user_id, -cost, now)
        if balance is None:
            raise insufficient_points(await points_balance(conn, shop_id, user_id), cost)
        coupon = result.coupon
        await append_entry(
            conn,
            shop_id=shop_id,
            user_id=user_id,
            delta=-cost,
            reason=REASON,
            ref=f"offer:{found.offer.id}/coupon:{coupon.id}",
            balance_after=balance,
            request_key=points_key,
            digest=digest,
            now=now,
        )
        return Reply(HTTPStatus.CREATED, self._body(coupon, found.template, balance))

    def _body(self, coupon: Any, template: Any, balance: int) -> dict[str, Any]:
        return {
            "coupon": fastdump.dump(COUPON_SCHEMA, self.wallet.view(coupon, template)),
            "balance": balance,
        }

    def _replay(self, coupon: Any, template: Any, entry: Any, digest: str) -> Reply:
        """The first reply again: the coupon as it is now, the balance that charge left."""
        if entry.body_hash != digest:
            raise idempotency_conflict()
        return Reply(
            HTTPStatus.CREATED, self._body(coupon, template, entry.balance_after), replayed=True
        )
