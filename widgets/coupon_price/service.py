"""Prices for product pages, list pages and checkout: the engine's I/O shell.

One read per kind of data for a whole request, whatever the number of
products: products, the room's live prices, the shop's templates, and for a
signed-in user their usable coupons, held counts, wallet size and membership.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bff.catalog import product_from_row
from bff.clock import Clock
from bff.coupons.counts import held_per_template, issued_on, took_exclusive
from bff.coupons.rules import MemberView, shop_day
from bff.coupons.wallet import coupon_status, unused_counts
from bff.db import tables
from bff.db.engine import Database
from bff.errors import conflict, not_found
from bff.members import fetch_member
from bff.pricing.engine import (
    Candidate,
    Line,
    NotApplicable,
    Quote,
    allowed,
    best_quote,
    evaluate,
    scope_lines,
)
from bff.redemption.locks import effective_status, unused_now
from config.loader import Settings
from widgets.coupon_price.core import (
    TemplateFacts,
    candidate_from,
    claimable_candidate,
    line_for,
    live_status,
    offered_on,
    price_view,
)

P = tables.products
T = tables.coupon_templates
C = tables.coupons
LIVE = tables.live_room_prices

_REASONS = {
    "threshold not met": "threshold_not_met",
    "no product in scope": "out_of_scope",
    "takes nothing off": "no_discount",
}


@dataclass
class PricingData:
    products: dict[str, Any]
    live: dict[str, Any] = field(default_factory=dict)
    held: list[Any] = field(default_factory=list)  # usable coupons rows (+ template spec)
    # To-claim candidates with their template spec (for where they may be claimed).
    claimable: list[tuple[Candidate, dict[str, Any]]] = field(default_factory=list)


class PriceService:
    def __init__(self, db: Database, clock: Clock, settings: Settings) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.lock_timeout = timedelta(minutes=settings.redemption.lock_timeout_minutes)

    # --- public operations --------------------------------------------------------------------
    async def product(
        self,
        shop_id: str,
        user_id: str | None,
        product_id: str,
        quantity: int,
        live_room_id: str | None,
    ) -> dict[str, Any]:
        data = await self._load(shop_id, user_id, [product_id], live_room_id, with_claimable=True)
        product = data.products.get(product_id)
        if product is None:
            raise not_found("product")
        return {"product": product_from_row(product), "price": self._price(data, product, quantity)}

    async def prices(
        self, shop_id: str, user_id: str | None, items: list[dict[str, Any]]
    ) -> dict[str, Any]:
        ids = list(dict.fromkeys(item["product_id"] for item in items))
        data = await self._load(shop_id, user_id, ids, None, with_claimable=True)
        out = []
        for item in items:
            product = data.products.get(item["product_id"])
            if product is not None:
                out.append(
                    {
                        "product_id": product.product_id,
                        "price": self._price(data, product, item["quantity"]),
                    }
                )
        return {"items": out}

    async def checkout(
        self,
        shop_id: str,
        user_id: str,
        items: list[dict[str, Any]],
        coupon_ids: list[int] | None,
        live_room_id: str | None,
    ) -> dict[str, Any]:
        async def work(conn: AsyncConnection) -> Quote:
            return await self.order_quote(conn, shop_id, user_id, items, coupon_ids, live_room_id)

        return quote_view(await self.db.read(work))

    async def order_quote(
        self,
        conn: AsyncConnection,
        shop_id: str,
        user_id: str,
        items: list[dict[str, Any]],
        coupon_ids: list[int] | None,
        live_room_id: str | None,
    ) -> Quote:
        """An order's price on ``conn``: the checkout preview, and redemption inside its lock.

        Unknown product: 404. Chosen coupons are validated, the first refused one named
        (409 COUPON_NOT_USABLE); without ``coupon_ids`` the best held ones are chosen.
        """
        ids = list(dict.fromkeys(item["product_id"] for item in items))
        data = await self._load(
            shop_id, user_id, ids, live_room_id, with_claimable=False, conn=conn
        )
        missing = [pid for pid in ids if pid not in data.products]
        if missing:
            raise not_found(f"product {missing[0]}")
        lines = [
            line_for(
                data.products[item["product_id"]],
                item["quantity"],
                self._exclusive(data, data.products[item["product_id"]]),
            )
            for item in items
        ]
        held = [self._held_candidate(row) for row in data.held]
        if coupon_ids is None:
            return best_quote(lines, held)
        return await self._chosen(conn, shop_id, user_id, lines, held, coupon_ids)

    async def auto_claim_templates(self, shop_id: str, product_id: str) -> list[int]:
        async def work(conn: AsyncConnection) -> Any:
            query = select(P.c.auto_claim_template_ids).where(
                P.c.shop_id == shop_id, P.c.product_id == product_id
            )
            return (await conn.execute(query)).first()

        row = await self.db.read(work)
        if row is None:
            raise not_found("product")
        return [int(template_id) for template_id in row.auto_claim_template_ids]

    async def auto_claimed(
        self, shop_id: str, user_id: str, template_ids: list[int]
    ) -> dict[int, int]:
        """For templates this user already auto-claimed: how many coupons they hold of each."""
        if not template_ids:
            return {}

        async def work(conn: AsyncConnection) -> dict[int, int]:
            rows = await conn.execute(
                select(
                    C.c.template_id,
                    func.count(),
                    func.sum(case((C.c.source == "auto", 1), else_=0)),
                )
                .where(
                    C.c.shop_id == shop_id,
                    C.c.user_id == user_id,
                    C.c.template_id.in_(template_ids),
                )
                .group_by(C.c.template_id)
            )
            return {tid: int(count) for tid, count, autos in rows if int(autos or 0) > 0}

        return await self.db.read(work)

    # --- pricing ------------------------------------------------------------------------------
    def _price(self, data: PricingData, product: Any, quantity: int) -> dict[str, Any]:
        line = line_for(product, quantity, self._exclusive(data, product))
        candidates = [self._held_candidate(row) for row in data.held]
        candidates += [c for c, spec in data.claimable if offered_on(c, spec, product)]
        return price_view(line, best_quote([line], candidates))

    def _exclusive(self, data: PricingData, product: Any) -> int | None:
        live = data.live.get(product.product_id)
        if live is None:
            return None
        if live_status(live.starts_at, live.ends_at, self.clock.now()) != "live":
            return None
        # Never above the normal price: the list or promotion price may have dropped
        # below the exclusive price since the room was set.
        normal = product.promo_price if product.promo_price is not None else product.list_price
        return min(live.exclusive_price, normal)

    @staticmethod
    def _held_candidate(row: Any) -> Candidate:
        return candidate_from(
            row.template_id,
            row.template_spec,
            needs_claim=False,
            coupon_id=row.id,
            expires_at=row.valid_to,
        )

    async def _chosen(
        self,
        conn: AsyncConnection,
        shop_id: str,
        user_id: str,
        lines: list[Line],
        held: list[Candidate],
        coupon_ids: list[int],
    ) -> Any:
        """Price with exactly the coupons asked for; the first refused one is named."""
        by_id = {c.coupon_id: c for c in held}
        chosen: list[Candidate] = []
        for coupon_id in coupon_ids:
            candidate = by_id.get(coupon_id)
            if candidate is None:
                raise _not_usable(
                    coupon_id, await self._why_not_usable(conn, shop_id, user_id, coupon_id)
                )
            if not scope_lines(candidate, lines):
                raise _not_usable(coupon_id, "out_of_scope")
            chosen.append(candidate)
            if not allowed(chosen):
                raise _not_usable(coupon_id, "not_combinable")
        try:
            return evaluate(lines, chosen)
        except NotApplicable as exc:
            reason = _REASONS.get(exc.reason, "not_applicable")
            raise _not_usable(exc.candidate.coupon_id, reason) from exc

    async def _why_not_usable(
        self, conn: AsyncConnection, shop_id: str, user_id: str, coupon_id: int
    ) -> str:
        now = self.clock.now()
        query = select(C).where(C.c.id == coupon_id, C.c.shop_id == shop_id)
        row = (await conn.execute(query.where(C.c.user_id == user_id))).first()
        if row is None:
            return "not_found"  # also another user's or shop's: never reveal it exists
        stored = effective_status(row.status, row.updated_at, now - self.lock_timeout)
        status = coupon_status(stored, row.valid_to, now)
        if status == "unused" and row.valid_from > now:
            return "not_yet_valid"
        return status

    # --- loading ------------------------------------------------------------------------------
    async def _load(
        self,
        shop_id: str,
        user_id: str | None,
        product_ids: list[str],
        live_room_id: str | None,
        *,
        with_claimable: bool,
        conn: AsyncConnection | None = None,
    ) -> PricingData:
        """One read for a whole request; on ``conn`` when the caller is inside a transaction."""
        now = self.clock.now()
        settings = self.settings

        async def work(conn: AsyncConnection) -> PricingData:
            rows = await conn.execute(
                select(P).where(P.c.shop_id == shop_id, P.c.product_id.in_(product_ids))
            )
            data = PricingData(products={row.product_id: row for row in rows})
            if live_room_id is not None and data.products:
                live_rows = await conn.execute(
                    select(LIVE).where(
                        LIVE.c.shop_id == shop_id,
                        LIVE.c.room_id == live_room_id,
                        LIVE.c.product_id.in_(list(data.products)),
                    )
                )
                data.live = {row.product_id: row for row in live_rows}
            member: MemberView | None = None
            held_counts: dict[int, int] = {}
            wallet_full = False
            if user_id is not None:
                data.held = list(
                    await conn.execute(
                        select(C, T.c.spec.label("template_spec"))
                        .join(T, T.c.id == C.c.template_id)
                        .where(
                            C.c.shop_id == shop_id,
                            C.c.user_id == user_id,
                            unused_now(now - self.lock_timeout),  # a lapsed lock is over
                            C.c.valid_from <= now,
                            C.c.valid_to > now,
                        )
                    )
                )
            if not with_claimable:
                return data
            templates = list(
                await conn.execute(
                    select(T).where(
                        T.c.shop_id == shop_id,
                        T.c.status == "active",
                        T.c.claim_start <= now,
                        T.c.claim_end > now,
                    )
                )
            )
            if not templates:
                return data
            ids = [row.id for row in templates]
            day = shop_day(now, settings.shop.timezone)
            daily = await issued_on(conn, ids, day)
            if user_id is not None:
                held_counts = await held_per_template(conn, shop_id, user_id, ids)
                unused = (await unused_counts(conn, shop_id, [user_id], now)).get(user_id, 0)
                wallet_full = unused >= settings.wallet.max_unused_per_shop
                member_row = await fetch_member(conn, shop_id, user_id)
                if member_row is not None:
                    member = MemberView(member_row.level, member_row.left_at is None)
                exclusive = [t for t in templates if t.spec.get("new_member_exclusive")]
                if exclusive and await took_exclusive(conn, shop_id, user_id):
                    templates = [t for t in templates if t not in exclusive]
            for row in templates:
                facts = TemplateFacts(
                    row, int(daily.get(row.id, 0)), int(held_counts.get(row.id, 0))
                )
                candidate = claimable_candidate(
                    facts,
                    now,
                    signed_in=user_id is not None,
                    member=member,
                    wallet_full=wallet_full,
                )
                if candidate is not None:
                    data.claimable.append((candidate, row.spec))
            return data

        if conn is not None:
            return await work(conn)
        return await self.db.read(work)


def quote_view(quote: Quote) -> dict[str, Any]:
    """API.md's checkout shape (also the redemption reply's): lines, coupons, totals."""
    return {
        "lines": [
            {
                "product_id": line.product_id,
                "quantity": line.quantity,
                "unit_price": line.unit_price,
                "amount": line.amount,
                "discount": line.discount,
                "payable": line.payable,
            }
            for line in quote.lines
        ],
        "coupons": [
            {"coupon_id": applied.candidate.coupon_id, "discount": applied.discount}
            for applied in quote.coupons
        ],
        "total": quote.total,
        "discount": quote.discount,
        "payable": quote.payable,
    }


def _not_usable(coupon_id: int | None, reason: str) -> Exception:
    return conflict(
        "COUPON_NOT_USABLE",
        f"coupon {coupon_id} cannot be used on this order: {reason}",
        {"coupon_id": coupon_id, "reason": reason},
    )
