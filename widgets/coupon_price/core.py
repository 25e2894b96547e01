"""Pure rules around the engine: which coupons are candidates, and the price shapes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bff.coupons.rules import MemberView, audience_refusal, needs_membership
from bff.pricing.engine import Candidate, Line, Quote

CLAIMABLE_METHODS = ("widget", "auto")


class Offer:
    """A template the shop offers to claim, as a price sees it: what decides whether a
    viewer could claim it now and use it at once on this order.

    What depends on neither the moment nor the viewer (status, claim methods, stock and
    today's count as the shop's facts were read, the audience, how validity is given) is
    decided once, when the shop's facts are read (``widgets.coupon_price.facts``);
    :meth:`candidate` decides the rest per request. A fixed validity window's candidate
    is the same for every request inside the window and is built once.
    """

    __slots__ = (
        "_fixed_candidate",
        "audience_all",
        "available",
        "claim_end",
        "claim_start",
        "exclusive",
        "fixed",
        "needs_member",
        "per_user_limit",
        "relative",
        "row",
        "spec",
        "template_id",
    )

    def __init__(self, row: Any, daily_issued: int) -> None:
        spec = row.spec
        self.row = row
        self.spec = spec
        self.template_id: int = row.id
        self.available: bool = (
            row.status == "active"
            # Which products may show an auto-only coupon: see offered_on.
            and any(method in spec["claim_methods"] for method in CLAIMABLE_METHODS)
            and (row.stock_total is None or row.issued < row.stock_total)
            and (row.daily_limit is None or daily_issued < row.daily_limit)
        )
        self.claim_start: datetime = row.claim_start
        self.claim_end: datetime = row.claim_end
        self.per_user_limit: int = row.per_user_limit
        self.needs_member = needs_membership(spec)
        self.exclusive = bool(spec.get("new_member_exclusive"))
        self.audience_all = spec["audience"]["type"] == "all" and not self.exclusive
        # When a coupon claimed now expires, if usable at once: decided here as far as
        # the moment does not matter.
        validity = spec["validity"]
        self.relative: timedelta | None = None
        self.fixed: tuple[datetime, datetime] | None = None
        if validity["type"] == "relative":
            if not validity["effective_after_days"]:
                self.relative = timedelta(days=validity["valid_days"])
        else:
            self.fixed = (
                datetime.fromisoformat(validity["start"]),
                datetime.fromisoformat(validity["end"]),
            )
        self._fixed_candidate: Candidate | None = None

    def candidate(
        self,
        now: datetime,
        *,
        signed_in: bool,
        held: int,
        member: MemberView | None,
        wallet_full: bool,
    ) -> Candidate | None:
        """This template as a to-claim candidate for a viewer at ``now``, or None when
        they could not claim it now or not use it at once. ``held``: the viewer's
        coupons of it (0 when anonymous)."""
        if not self.available or not (self.claim_start <= now < self.claim_end):
            return None
        if signed_in:
            if held >= self.per_user_limit or wallet_full:
                return None
            if self.needs_member and audience_refusal(self.spec, member) is not None:
                return None
        elif not self.audience_all:
            return None
        if self.relative is not None:
            return candidate_from(
                self.template_id,
                self.spec,
                needs_claim=True,
                coupon_id=None,
                expires_at=now + self.relative,
            )
        if self.fixed is None or not (self.fixed[0] <= now < self.fixed[1]):
            return None  # usable only days after the claim, or outside its window now
        if self._fixed_candidate is None:
            self._fixed_candidate = candidate_from(
                self.template_id,
                self.spec,
                needs_claim=True,
                coupon_id=None,
                expires_at=self.fixed[1],
            )
        return self._fixed_candidate


def offered_on(candidate: Candidate, spec: dict[str, Any], product: Any) -> bool:
    """A to-claim coupon counts on a product only if the shopper can claim it there:
    from the widget anywhere, or by auto-claim on a product that lists its template."""
    if "widget" in spec["claim_methods"]:
        return True
    return candidate.template_id in (product.auto_claim_template_ids or [])


def candidate_from(
    template_id: int,
    spec: dict[str, Any],
    *,
    needs_claim: bool,
    coupon_id: int | None,
    expires_at: datetime | None,
) -> Candidate:
    stacking = spec["stacking"]
    return Candidate(
        key=f"t:{template_id}" if needs_claim else f"c:{coupon_id}",
        template_id=template_id,
        benefit=spec["benefit"],
        scope=spec["scope"],
        with_store_promotions=stacking["with_store_promotions"],
        with_other_coupons=stacking["with_other_coupons"],
        needs_claim=needs_claim,
        coupon_id=coupon_id,
        expires_at=expires_at,
    )


def line_for(product: Any, quantity: int, exclusive_price: int | None) -> Line:
    return Line(
        product_id=product.product_id,
        quantity=quantity,
        list_price=product.list_price,
        promo_price=product.promo_price,
        category=product.category,
        exclusive_price=exclusive_price,
    )


def applied_coupons(quote: Quote) -> list[dict[str, Any]]:
    out = []
    for applied in quote.coupons:
        candidate = applied.candidate
        entry: dict[str, Any] = {"needs_claim": candidate.needs_claim, "discount": applied.discount}
        if candidate.needs_claim:
            entry["template_id"] = candidate.template_id
        else:
            entry["coupon_id"] = candidate.coupon_id
        out.append(entry)
    return out


def price_view(line: Line, quote: Quote) -> dict[str, Any]:
    """API.md's price object for one product line."""
    return {
        "list_price": line.list_price,
        "promo_price": line.promo_price,
        "exclusive_price": line.exclusive_price,
        "final_price": quote.payable,
        "saving": line.list_price * line.quantity - quote.payable,
        "coupons": applied_coupons(quote),
    }


def live_status(starts_at: datetime, ends_at: datetime, now: datetime) -> str:
    if now < starts_at:
        return "upcoming"
    return "live" if now < ends_at else "ended"
