"""Exchange offers (积分兑换): a coupon template sold for points, under the platform policy.

Merchants create and list offers; the policy (bff.points.policy) is checked at
creation against the shop's free store coupons as they are at that moment.
Shoppers see the offers with their balance and each offer's state for them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bff.clock import Clock
from bff.coupons.counts import held_per_template, issued_on
from bff.coupons.rules import MemberView, audience_refusal, needs_membership, shop_day
from bff.coupons.templates import fetch_row, fetch_rows, template_from_row
from bff.coupons.wallet import unused_counts
from bff.db import tables
from bff.db.engine import Database
from bff.db.paging import newest_first
from bff.errors import not_found, validation_failed
from bff.members import fetch_member
from bff.points.ledger import points_balance
from bff.points.policy import Policy, StoreCoupon, is_store_coupon, offer_state, offer_window
from config.loader import Settings

OFFERS = tables.exchange_offers
T = tables.coupon_templates
# Offers whose window ended longer ago than this no longer show to shoppers.
ENDED_SHOWN_FOR = timedelta(days=1)
# The shopper's page lists at most this many offers (oldest first).
MAX_OFFERS_SHOWN = 100


def template_summary(row: Any) -> dict[str, Any]:
    template = template_from_row(row)
    return {
        key: template[key]
        for key in (
            "id",
            "name",
            "description",
            "benefit",
            "validity",
            "status",
            "claim_start",
            "claim_end",
            "per_user_limit",
            "remaining",
            "redeem_page",
        )
    }


def offer_view(offer: Any, template: Any) -> dict[str, Any]:
    return {
        "id": offer.id,
        "template_id": offer.template_id,
        "points_cost": offer.points_cost,
        "starts_at": offer.starts_at,
        "ends_at": offer.ends_at,
        "template": template_summary(template),
        "created_at": offer.created_at,
    }


async def fetch_offer(conn: AsyncConnection, shop_id: str, offer_id: int) -> Any:
    query = select(OFFERS).where(OFFERS.c.shop_id == shop_id, OFFERS.c.id == offer_id)
    return (await conn.execute(query)).first()


async def store_coupons(conn: AsyncConnection, shop_id: str, now: datetime) -> list[StoreCoupon]:
    """The shop's active free threshold store coupons whose claiming has not ended."""
    rows = await conn.execute(
        select(T.c.id, T.c.name, T.c.spec).where(
            T.c.shop_id == shop_id,
            T.c.status == "active",
            T.c.benefit_type == "threshold",
            T.c.claim_end > now,
        )
    )
    return [
        StoreCoupon(
            id=row.id,
            name=row.name,
            amount_off=row.spec["benefit"]["amount_off"],
            threshold=row.spec["benefit"]["threshold"],
        )
        for row in rows
        if is_store_coupon(row.spec)
    ]


class OfferService:
    def __init__(self, db: Database, clock: Clock, policy: Policy, settings: Settings) -> None:
        self.db = db
        self.clock = clock
        self.policy = policy
        self.settings = settings

    async def create(self, shop_id: str, data: dict[str, Any]) -> dict[str, Any]:
        """Create an offer; 404 for a template of another shop, 400 for a policy violation."""
        now = self.clock.now()

        async def work(conn: AsyncConnection) -> dict[str, Any]:
            template = await fetch_row(conn, shop_id, data["template_id"])
            if template is None:
                raise not_found("coupon template")
            _check_template(template, data, now)
            violation = self.policy.check_offer(
                template.spec["benefit"], await store_coupons(conn, shop_id, now)
            )
            if violation is not None:
                raise violation.error()
            result = await conn.execute(
                insert(OFFERS).values(
                    shop_id=shop_id,
                    template_id=template.id,
                    points_cost=data["points_cost"],
                    starts_at=data["starts_at"],
                    ends_at=data["ends_at"],
                    created_at=now,
                )
            )
            offer = await fetch_offer(conn, shop_id, int(result.inserted_primary_key[0]))
            return offer_view(offer, template)

        return await self.db.transaction(work)

    async def get(self, shop_id: str, offer_id: int) -> dict[str, Any]:
        async def work(conn: AsyncConnection) -> dict[str, Any]:
            offer = await fetch_offer(conn, shop_id, offer_id)
            if offer is None:
                raise not_found("exchange offer")
            return offer_view(offer, await fetch_row(conn, shop_id, offer.template_id))

        return await self.db.read(work)

    async def list(self, shop_id: str, limit: int, cursor: str | None) -> dict[str, Any]:
        query = select(OFFERS).where(OFFERS.c.shop_id == shop_id)
        offers, next_cursor = await newest_first(self.db, query, OFFERS.c.id, limit, cursor)
        ids = sorted({offer.template_id for offer in offers})
        templates = await self.db.read(lambda conn: fetch_rows(conn, shop_id, ids))
        items = [offer_view(offer, templates[offer.template_id]) for offer in offers]
        return {"items": items, "next_cursor": next_cursor}

    async def shopper_page(self, shop_id: str, user_id: str) -> dict[str, Any]:
        """The caller's balance and each offer's state for them, in one read.

        Offers of paused templates, and of templates whose audience the caller is
        not in, are left out: they cannot be exchanged, and the fixed state list
        has no word for them.
        """
        now = self.clock.now()
        settings = self.settings

        async def work(conn: AsyncConnection) -> dict[str, Any]:
            shown_after = now - ENDED_SHOWN_FOR
            offers = list(
                await conn.execute(
                    select(OFFERS)
                    .join(T, T.c.id == OFFERS.c.template_id)
                    .where(
                        OFFERS.c.shop_id == shop_id,
                        T.c.shop_id == shop_id,
                        T.c.status.in_(("active", "ended")),
                        T.c.claim_end > shown_after,
                        or_(OFFERS.c.ends_at.is_(None), OFFERS.c.ends_at > shown_after),
                    )
                    .order_by(OFFERS.c.id)
                    .limit(MAX_OFFERS_SHOWN)
                )
            )
            ids = sorted({offer.template_id for offer in offers})
            templates = await fetch_rows(conn, shop_id, ids)
            balance = await points_balance(conn, shop_id, user_id)
            row = await fetch_member(conn, shop_id, user_id)
            member = None if row is None else MemberView(row.level, row.left_at is None)
            held = await held_per_template(conn, shop_id, user_id, ids)
            in_wallet = (await unused_counts(conn, shop_id, [user_id], now)).get(user_id, 0)
            daily = await issued_on(conn, ids, shop_day(now, settings.shop.timezone))
            items = []
            for offer in offers:
                template = templates[offer.template_id]
                spec = template.spec
                if needs_membership(spec) and audience_refusal(spec, member) is not None:
                    continue
                starts_at, ends_at = offer_window(
                    template.claim_start, template.claim_end, offer.starts_at, offer.ends_at
                )
                summary = template_summary(template)
                sold_out = summary["remaining"] == 0 or (
                    template.daily_limit is not None
                    and daily.get(template.id, 0) >= template.daily_limit
                )
                state = offer_state(
                    now=now,
                    starts_at=starts_at,
                    ends_at=ends_at,
                    template_status=template.status,
                    held=held.get(template.id, 0),
                    per_user_limit=template.per_user_limit,
                    sold_out=sold_out,
                    balance=balance,
                    points_cost=offer.points_cost,
                )
                items.append(
                    {
                        "offer_id": offer.id,
                        "template": summary,
                        "points_cost": offer.points_cost,
                        "starts_at": starts_at,
                        "ends_at": ends_at,
                        "state": state,
                        "held": held.get(template.id, 0),
                    }
                )
            return {
                "balance": balance,
                "member": member is not None and member.active,
                "wallet_full": in_wallet >= settings.wallet.max_unused_per_shop,
                "offers": items,
            }

        return await self.db.read(work)


def _check_template(template: Any, data: dict[str, Any], now: datetime) -> None:
    """What an offer's template must be, each failure naming its field."""
    errors: dict[str, list[str]] = {}
    if "points" not in template.spec["claim_methods"]:
        errors["template_id"] = ["The template must allow the points claim method."]
    elif template.status == "ended" or template.claim_end <= now:
        errors["template_id"] = ["The template's claiming has ended."]
    starts_at, ends_at = data["starts_at"], data["ends_at"]
    if ends_at is not None and ends_at <= max(template.claim_start, now):
        errors["ends_at"] = ["Must be after now and after the template's claim_start."]
    if starts_at is not None and starts_at >= template.claim_end:
        errors["starts_at"] = ["Must be before the template's claim_end."]
    if errors:
        raise validation_failed(errors)
