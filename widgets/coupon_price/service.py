"""Prices for product pages, list pages and checkout: the engine's I/O shell.

What is the same for every shopper (the shop's active templates, today's
issued counts, products, live rows) comes from a per-process cache cleared with
the reply cache (widgets.coupon_price.facts). What is the user's (their usable
coupons, held counts, wallet size, membership) comes, for product and list
prices, from a per-process cache checked against the user's version in the gate
on every request (widgets.coupon_price.user_cache, bff.versions); the checkout
preview reads it every time. Inside the redemption transaction (``order_quote``)
everything is read on the caller's connection.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bff.cache import ShopCache
from bff.catalog import product_from_row
from bff.clock import Clock
from bff.coupons.rules import shop_day
from bff.coupons.wallet import coupon_status
from bff.db import tables
from bff.db.engine import Database
from bff.errors import conflict, not_found
from bff.pricing.engine import (
    Candidate,
    Line,
    NotApplicable,
    Quote,
    QuoteMemo,
    allowed,
    best_quote,
    evaluate,
    scope_lines,
    unneeded,
)
from bff.redemption.locks import effective_status
from bff.versions import UserVersions
from config.loader import Settings
from widgets.coupon_price.core import (
    candidate_from,
    line_for,
    live_status,
    offered_on,
    price_view,
)
from widgets.coupon_price.facts import (
    ShopFacts,
    known_catalog,
    read_catalog,
    read_shop_facts,
    read_specs,
)
from widgets.coupon_price.user_cache import Entry, UserFactsCache
from widgets.coupon_price.user_facts import (
    USER_FACTS_DIRECT,
    HeldCoupon,
    UserFacts,
    fetch_usable,
    next_change,
    read_usable,
    read_user_facts,
    read_user_rows,
    user_facts_from,
)

log = logging.getLogger("bff.prices")

# After the gate failed to give a user's version: this long without asking it (and without
# the user cache), so a gate that hangs costs one request its timeout, not every request.
GATE_PAUSE_SECONDS = 1.0

P = tables.products
C = tables.coupons

_REASONS = {
    "threshold not met": "threshold_not_met",
    "no product in scope": "out_of_scope",
    "takes nothing off": "no_discount",
    "no unit of its own": "not_combinable",  # two fixed prices on one unit
}


@dataclass
class PricingData:
    products: dict[str, Any]
    live: dict[str, Any] = field(default_factory=dict)
    # The user's usable coupons, each with its template's spec.
    held: list[tuple[HeldCoupon, dict[str, Any]]] = field(default_factory=list)
    # To-claim candidates with their template spec (for where they may be claimed).
    claimable: list[tuple[Candidate, dict[str, Any]]] = field(default_factory=list)
    # How many more coupons the signed-in user's wallet can take (None: anonymous): a
    # price never counts more coupons to claim than that.
    claim_room: int | None = None
    # ``held`` as engine candidates: built once (by the user cache, or by the first price).
    held_candidates: list[Candidate] | None = None


class PriceService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: Settings,
        versions: UserVersions | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.lock_timeout = timedelta(minutes=settings.redemption.lock_timeout_minutes)
        # The shop's facts shared by every shopper; the app clears them with the reply
        # cache (bff.cache.Invalidator), in this process and through pub/sub in the others.
        self.facts: ShopCache[ShopFacts] = ShopCache(settings.cache.ttl_seconds, clock)
        # Each user's facts, while their version in the gate stands (None: off).
        self.versions = versions
        self.users: UserFactsCache | None = None
        cache = settings.cache
        if versions is not None and versions.enabled and cache.user_facts_entries > 0:
            self.users = UserFactsCache(cache.user_facts_entries, cache.user_facts_bytes)
            versions.listeners.append(self.users.drop)
        self.max_age = timedelta(seconds=cache.user_facts_max_age_seconds)
        self._gate_paused_until = 0.0
        # Best quotes by the shape of their input: exact, bounded (bff.pricing.engine).
        self.quotes = (
            QuoteMemo(cache.quote_memo_entries, cache.quote_memo_bytes)
            if cache.quote_memo_entries
            else None
        )

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
        return quote_view(
            await self._quote(None, shop_id, user_id, items, coupon_ids, live_room_id)
        )

    async def order_quote(
        self,
        conn: AsyncConnection,
        shop_id: str,
        user_id: str,
        items: list[dict[str, Any]],
        coupon_ids: list[int] | None,
        live_room_id: str | None,
    ) -> Quote:
        """An order's price on ``conn``: redemption, inside its lock.

        The checkout preview's rules, read in the caller's transaction (products,
        live prices and the user's coupons as that transaction sees them).
        Unknown product: 404. Chosen coupons are validated, the first refused one named
        (409 COUPON_NOT_USABLE); without ``coupon_ids`` the best held ones are chosen.
        """
        return await self._quote(conn, shop_id, user_id, items, coupon_ids, live_room_id)

    async def _quote(
        self,
        conn: AsyncConnection | None,
        shop_id: str,
        user_id: str,
        items: list[dict[str, Any]],
        coupon_ids: list[int] | None,
        live_room_id: str | None,
    ) -> Quote:
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
        held = [self._held_candidate(coupon, spec) for coupon, spec in data.held]
        if coupon_ids is None:
            return best_quote(lines, held, memo=self.quotes)
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
        if data.held_candidates is None:  # once per request, not per product of a list
            data.held_candidates = [self._held_candidate(c, spec) for c, spec in data.held]
        offered = (c for c, spec in data.claimable if offered_on(c, spec, product))
        candidates = [*data.held_candidates, *offered]
        quote = best_quote([line], candidates, max_to_claim=data.claim_room, memo=self.quotes)
        return price_view(line, quote)

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
    def _held_candidate(coupon: HeldCoupon, spec: dict[str, Any]) -> Candidate:
        return candidate_from(
            coupon.template_id,
            spec,
            needs_claim=False,
            coupon_id=coupon.coupon_id,
            expires_at=coupon.valid_to,
        )

    async def _chosen(
        self,
        conn: AsyncConnection | None,
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
            quote = evaluate(lines, chosen)
        except NotApplicable as exc:
            reason = _REASONS.get(exc.reason, "not_applicable")
            raise _not_usable(exc.candidate.coupon_id, reason) from exc
        spare = unneeded(lines, chosen, quote)
        if spare is not None:  # no coupon is spent for nothing
            raise _not_usable(spare.coupon_id, "not_needed")
        return quote

    async def _why_not_usable(
        self, conn: AsyncConnection | None, shop_id: str, user_id: str, coupon_id: int
    ) -> str:
        """Why a coupon the user named is not among their usable ones (on ``conn``, or a
        read of its own)."""
        if conn is None:

            async def work(conn: AsyncConnection) -> str:
                return await self._why_not_usable(conn, shop_id, user_id, coupon_id)

            return await self.db.read(work)
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
    async def _shop_facts(self, shop_id: str, now: datetime) -> ShopFacts:
        """The shop's shared facts (widgets.coupon_price.facts), read once per TTL."""
        day = shop_day(now, self.settings.shop.timezone)

        async def build() -> ShopFacts:
            async def work(conn: AsyncConnection) -> ShopFacts:
                return await read_shop_facts(conn, shop_id, now, day)

            return await self.db.read(work)

        return await self.facts.cached(shop_id, day, build)

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
        """What a request prices with: the shop's shared facts from the per-process cache,
        the user's read fresh (one statement, two when a held coupon's template is outside
        the cached set). On ``conn`` (the caller is inside a transaction) products, live
        rows, templates and the user's coupons are read there; only template specs, whose
        pricing parts never change, may come from the cache."""
        now = self.clock.now()

        async def read(conn: AsyncConnection, facts: ShopFacts | None, fresh: bool) -> PricingData:
            return await self._read(
                conn,
                shop_id,
                user_id,
                product_ids,
                live_room_id,
                now,
                facts,
                with_claimable,
                fresh=fresh,
            )

        if conn is not None:
            day = shop_day(now, self.settings.shop.timezone)
            cached = self.facts.get(shop_id, day)  # no load here: not on another connection
            return await read(conn, cached, True)
        facts = await self._shop_facts(shop_id, now)
        if user_id is None:
            known = known_catalog(facts, product_ids, live_room_id)
            if known is not None:  # an anonymous price with nothing to read
                data = PricingData(products=known[0], live=known[1])
                if with_claimable:
                    self._add_claimable(data, facts, now, None)
                return data
        elif with_claimable and self.users is not None:
            return await self._signed_in(shop_id, user_id, product_ids, live_room_id, now, facts)
        elif not with_claimable:
            # A checkout preview whose products the shop's facts know: its one statement,
            # the user's usable coupons, as a direct read (bff.db.engine.DirectRead).
            known = known_catalog(facts, product_ids, live_room_id)
            if known is not None:
                deadline = now - self.lock_timeout
                held = await fetch_usable(self.db, shop_id, user_id, now, deadline)
                pairs = _known_specs(held, facts)
                if pairs is not None:
                    return PricingData(products=known[0], live=known[1], held=pairs)
        return await self.db.read(lambda conn: read(conn, facts, False))

    async def _version(self, shop_id: str, user_id: str) -> str | None:
        """The user's version, or None when the gate cannot say (nothing cached is used)."""
        assert self.versions is not None and self.users is not None
        if self._gate_paused_until > time.monotonic():
            return None
        try:
            return await self.versions.current(shop_id, user_id)
        except Exception as exc:
            # Bumps fail as reads do: what this process kept may have missed some. Forget it
            # all, and price from the database until the gate answers again.
            self.users.clear()
            self._gate_paused_until = time.monotonic() + GATE_PAUSE_SECONDS
            log.warning("gate gave no user version; signed-in prices read the database: %r", exc)
            return None

    async def _signed_in(
        self,
        shop_id: str,
        user_id: str,
        product_ids: list[str],
        live_room_id: str | None,
        now: datetime,
        facts: ShopFacts,
    ) -> PricingData:
        """A product or list price for a signed-in user: their facts from the user cache
        while their version stands (asked before any read, see bff.versions), else read
        with whatever the shop's facts lack, in one database read."""
        assert self.users is not None
        version = await self._version(shop_id, user_id)
        entry = None if version is None else self.users.get(shop_id, user_id, version, now)
        known = known_catalog(facts, product_ids, live_room_id)
        if entry is None and known is not None:
            # The catalog known: the user's facts are the one statement, a direct read
            # (bff.db.engine.DirectRead), unless a coupon's template is not in the facts.
            rows = await self.db.fetch(USER_FACTS_DIRECT, {"shop_id": shop_id, "user_id": user_id})
            entry = self._entry_from(rows, now, facts)
            if entry is not None and version is not None:
                entry.version = version
                self.users.put(shop_id, user_id, entry)
        if entry is None or known is None:
            cached = entry

            async def work(conn: AsyncConnection) -> tuple[Any, Any, Entry]:
                if known is None:
                    products, live = await read_catalog(
                        conn, shop_id, product_ids, live_room_id, facts
                    )
                else:
                    products, live = known
                if cached is not None:
                    return products, live, cached
                return products, live, await self._user_entry(conn, shop_id, user_id, now, facts)

            products, live, entry = await self.db.read(work)
            if cached is None and version is not None:
                entry.version = version
                self.users.put(shop_id, user_id, entry)
        else:
            products, live = known
        if entry.candidates is None:  # built once per entry, not per request
            entry.candidates = [self._held_candidate(coupon, spec) for coupon, spec in entry.held]
        data = PricingData(
            products=products, live=live, held=entry.held, held_candidates=entry.candidates
        )
        self._add_claimable(data, facts, now, entry.user, signed_in=True)
        return data

    async def _user_entry(
        self,
        conn: AsyncConnection,
        shop_id: str,
        user_id: str,
        now: datetime,
        facts: ShopFacts,
    ) -> Entry:
        rows = await read_user_rows(conn, shop_id, user_id)
        held, user = user_facts_from(rows, now, now - self.lock_timeout)
        with_specs = await self._with_specs(conn, shop_id, held, facts)
        return Entry("", with_specs, user, now, self._expiry(rows, now))

    def _entry_from(self, rows: list[Any], now: datetime, facts: ShopFacts) -> Entry | None:
        """:meth:`_user_entry` from rows already read; None when a held coupon's template
        is not in the shop's facts (its spec needs a read)."""
        held, user = user_facts_from(rows, now, now - self.lock_timeout)
        with_specs = _known_specs(held, facts)
        if with_specs is None:
            return None
        return Entry("", with_specs, user, now, self._expiry(rows, now))

    def _expiry(self, rows: list[Any], now: datetime) -> datetime:
        """When an entry of these rows must be read again: at the max age, or sooner when
        time alone changes them (user_facts.next_change)."""
        expires = now + self.max_age
        changes = next_change(rows, now, self.lock_timeout)
        if changes is not None and changes < expires:
            expires = changes
        return expires

    async def _read(
        self,
        conn: AsyncConnection,
        shop_id: str,
        user_id: str | None,
        product_ids: list[str],
        live_room_id: str | None,
        now: datetime,
        facts: ShopFacts | None,
        with_claimable: bool,
        *,
        fresh: bool,
    ) -> PricingData:
        """One read for a whole request: what ``facts`` lacks, then the user's facts.
        ``fresh``: the shop's facts as this transaction sees them, not ``facts``'."""
        catalog = None if fresh else facts
        products, live = await read_catalog(conn, shop_id, product_ids, live_room_id, catalog)
        data = PricingData(products=products, live=live)
        shop = catalog
        if shop is None and with_claimable:
            day = shop_day(now, self.settings.shop.timezone)
            shop = await read_shop_facts(conn, shop_id, now, day)
        user: UserFacts | None = None
        if user_id is not None:
            deadline = now - self.lock_timeout
            if with_claimable and shop is not None and shop.claimable:
                held, user = await read_user_facts(conn, shop_id, user_id, now, deadline)
            else:
                held = await read_usable(conn, shop_id, user_id, now, deadline)
            data.held = await self._with_specs(conn, shop_id, held, facts)
        if with_claimable and shop is not None:
            self._add_claimable(data, shop, now, user, signed_in=user_id is not None)
        return data

    @staticmethod
    async def _with_specs(
        conn: AsyncConnection, shop_id: str, held: list[HeldCoupon], facts: ShopFacts | None
    ) -> list[tuple[HeldCoupon, dict[str, Any]]]:
        """Each held coupon with its template's spec: from ``facts``, and in one statement
        for templates outside them (paused, ended, not yet remembered)."""
        specs = facts.specs if facts is not None else {}
        missing = sorted({c.template_id for c in held if c.template_id not in specs})
        if missing:
            found = await read_specs(conn, shop_id, missing)
            if facts is not None:
                facts.specs.update(found)
            specs = {**specs, **found}
        return [(c, specs[c.template_id]) for c in held if c.template_id in specs]

    def _add_claimable(
        self,
        data: PricingData,
        shop: ShopFacts,
        now: datetime,
        user: UserFacts | None,
        *,
        signed_in: bool = False,
    ) -> None:
        """The to-claim candidates: the shop's claimable templates this viewer may take."""
        if user is not None:
            data.claim_room = max(self.settings.wallet.max_unused_per_shop - user.unused, 0)
        wallet_full = data.claim_room == 0
        held_counts = user.held_counts if user is not None else {}
        member = user.member if user is not None else None
        took_exclusive = user is not None and user.took_exclusive
        for offer in shop.offers:
            held = held_counts.get(offer.template_id, 0)
            if signed_in and held >= offer.per_user_limit:
                continue  # the commonest refusal, and the cheapest (Offer.candidate's too)
            if took_exclusive and offer.exclusive:
                continue  # one new-member exclusive per member, ever
            candidate = offer.candidate(
                now, signed_in=signed_in, held=held, member=member, wallet_full=wallet_full
            )
            if candidate is not None:
                data.claimable.append((candidate, offer.spec))


def _known_specs(
    held: list[HeldCoupon], facts: ShopFacts
) -> list[tuple[HeldCoupon, dict[str, Any]]] | None:
    """Each held coupon with its template's spec from the shop's facts alone (what
    ``PriceService._with_specs`` gives without a read), or None if one is not there."""
    specs = facts.specs
    if any(coupon.template_id not in specs for coupon in held):
        return None
    return [(coupon, specs[coupon.template_id]) for coupon in held]


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
