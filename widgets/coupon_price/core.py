"""Pure rules around the engine: which coupons are candidates, and the price shapes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bff.coupons.rules import MemberView, audience_refusal
from bff.pricing.engine import Candidate, Line, Quote

CLAIMABLE_METHODS = ("widget", "auto")


@dataclass(frozen=True)
class TemplateFacts:
    """What decides whether a template is claimable now for a viewer."""

    row: Any  # coupon_templates row
    daily_issued: int
    held: int  # the viewer's coupons of this template (0 when anonymous)


def usable_at_once(spec: dict[str, Any], now: datetime) -> datetime | None:
    """When a coupon claimed now would expire, if it is usable right away; else None."""
    validity = spec["validity"]
    if validity["type"] == "relative":
        if validity["effective_after_days"]:
            return None
        return now + timedelta(days=validity["valid_days"])
    start = datetime.fromisoformat(validity["start"])
    end = datetime.fromisoformat(validity["end"])
    return end if start <= now < end else None


def claimable_candidate(
    facts: TemplateFacts,
    now: datetime,
    *,
    signed_in: bool,
    member: MemberView | None,
    wallet_full: bool,
) -> Candidate | None:
    """A template the viewer could claim now and use on this order, as a candidate."""
    row = facts.row
    spec = row.spec
    if row.status != "active" or not (row.claim_start <= now < row.claim_end):
        return None
    if not any(method in spec["claim_methods"] for method in CLAIMABLE_METHODS):
        return None  # which products may show an auto-only coupon: see offered_on
    if row.stock_total is not None and row.issued >= row.stock_total:
        return None
    if row.daily_limit is not None and facts.daily_issued >= row.daily_limit:
        return None
    if signed_in:
        if facts.held >= row.per_user_limit or wallet_full:
            return None
        if audience_refusal(spec, member) is not None:
            return None
    elif spec["audience"]["type"] != "all" or spec.get("new_member_exclusive"):
        return None
    expires = usable_at_once(spec, now)
    if expires is None:
        return None
    return candidate_from(row.id, spec, needs_claim=True, coupon_id=None, expires_at=expires)


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
