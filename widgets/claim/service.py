"""The claim widget's I/O shell: one read per kind of data, then the pure core."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bff.catalog import fetch_product
from bff.clock import Clock
from bff.coupons.counts import held_per_template, issued_on, took_exclusive
from bff.coupons.rules import MemberView, audience_refusal, needs_membership, shop_day
from bff.coupons.templates import template_from_row
from bff.coupons.wallet import unused_counts
from bff.db import tables
from bff.db.engine import Database
from bff.members import fetch_member
from config.loader import Settings
from widgets.claim.core import Viewer, in_scope, widget_state

T = tables.coupon_templates
C = tables.coupons
# Templates whose claim window ended longer ago than this no longer show.
ENDED_SHOWN_FOR = timedelta(days=1)


class ClaimWidgetService:
    def __init__(self, db: Database, clock: Clock, settings: Settings) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings

    async def widget(
        self, shop_id: str, user_id: str | None, product_id: str | None
    ) -> dict[str, Any]:
        now = self.clock.now()
        day = shop_day(now, self.settings.shop.timezone)

        async def work(conn: AsyncConnection) -> dict[str, Any]:
            rows = list(
                await conn.execute(
                    select(T)
                    .where(
                        T.c.shop_id == shop_id,
                        T.c.status.in_(("active", "ended")),
                        T.c.claim_end > now - ENDED_SHOWN_FOR,
                    )
                    .order_by(T.c.id)
                )
            )
            category = None
            if product_id is not None:
                product = await fetch_product(conn, shop_id, product_id)
                category = product.category if product is not None else None
            templates = [
                row
                for row in rows
                if "widget" in row.spec["claim_methods"]
                and in_scope(row.spec["scope"], product_id, category)
            ]
            ids = [row.id for row in templates]
            daily = await issued_on(conn, ids, day)
            held: dict[int, int] = {}
            viewer = Viewer(signed_in=False)
            member: MemberView | None = None
            took = False
            if user_id is not None:
                took = await took_exclusive(conn, shop_id, user_id)
                held = await held_per_template(conn, shop_id, user_id, ids)
                in_wallet = (await unused_counts(conn, shop_id, [user_id], now)).get(user_id, 0)
                row = await fetch_member(conn, shop_id, user_id)
                if row is not None:
                    member = MemberView(level=row.level, active=row.left_at is None)
                viewer = Viewer(
                    signed_in=True,
                    wallet_full=in_wallet >= self.settings.wallet.max_unused_per_shop,
                )
            coupons = []
            for row in templates:
                spec = row.spec
                remaining = template_from_row(row)["remaining"]
                sold_out = remaining == 0 or (
                    row.daily_limit is not None and daily.get(row.id, 0) >= row.daily_limit
                )
                eligible = not (
                    viewer.signed_in
                    and needs_membership(spec)
                    and audience_refusal(spec, member) is not None
                )
                if spec.get("new_member_exclusive") and took:
                    eligible = False  # one new-member exclusive per member, ever
                state = widget_state(
                    status=row.status,
                    claim_start=row.claim_start,
                    claim_end=row.claim_end,
                    now=now,
                    held=held.get(row.id, 0),
                    per_user_limit=row.per_user_limit,
                    sold_out=sold_out,
                    viewer=Viewer(viewer.signed_in, eligible, viewer.wallet_full),
                )
                coupons.append(
                    {
                        "template_id": row.id,
                        "name": row.name,
                        "description": spec["description"],
                        "benefit": spec["benefit"],
                        "validity": template_from_row(row)["validity"],
                        "claim_page": spec["claim_page"],
                        "state": state,
                        "held": held.get(row.id, 0),
                        "remaining": remaining,
                    }
                )
            return {"claim_page": self.settings.shop.default_claim_page, "coupons": coupons}

        return await self.db.read(work)
