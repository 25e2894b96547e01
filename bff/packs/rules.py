"""Pure gift-pack rules: contents, windows, remaining packs, eligibility, a user's state.

No I/O: the pack service gathers template rows and counts, these functions decide.
Rules are DOMAIN.md's "Member center and gift packs" and the Tmall guide it
distils (reference/001): 1 to 3 store-wide coupon templates that allow the
``gift_pack`` method, at most one gift (a ``gift`` template) with a quantity no
more than its stock, and as many packs as the scarcest benefit allows.

Gift quantity is the number of gifts set aside for the pack (礼品数), not a
per-pack count: each pack gives one gift coupon, so the pack ends when its
gifts are given, whatever stock the gift template has left for other uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bff.coupons.rules import Refusal, refuse
from bff.members import is_new_member

KINDS = ("new_member", "member")
PACK_STATUSES = ("active", "ended")
MAX_COUPONS = 3
STATES = ("claimable", "claimed", "sold_out", "not_eligible", "ended")


def template_remaining(row: Any) -> int | None:
    """What a template can still issue; None when unlimited."""
    if row.stock_total is None:
        return None
    return max(row.stock_total - row.issued, 0)


def content_errors(
    data: dict[str, Any], templates: dict[int, Any], gift_template: Any | None
) -> dict[str, list[str]]:
    """Field -> messages for a pack's contents against its templates (empty when fine).

    ``data`` is the merged pack (create body, or the stored pack with a patch on top);
    ``templates`` the shop's rows for its coupon template ids (missing ones absent).
    """
    errors: dict[str, list[str]] = {}
    ids = data["coupon_template_ids"]
    if not 1 <= len(ids) <= MAX_COUPONS:
        errors["coupon_template_ids"] = [f"A pack holds 1 to {MAX_COUPONS} coupon templates."]
    elif len(set(ids)) != len(ids):
        errors["coupon_template_ids"] = ["A template may appear once."]
    for index, template_id in enumerate(ids):
        field = f"coupon_template_ids.{index}"
        row = templates.get(template_id)
        if row is None:
            errors[field] = [f"No coupon template {template_id} in this shop."]
        elif row.spec["benefit"]["type"] == "gift":
            errors[field] = ["A gift template goes in gift, not among the coupons."]
        elif row.spec["scope"]["type"] != "shop":
            errors[field] = ["Only store-wide (shop scope) coupons can go in a pack."]
        elif "gift_pack" not in row.spec["claim_methods"]:
            errors[field] = ["The template must allow the gift_pack claim method."]
        elif row.status == "ended":
            errors[field] = ["The template has ended."]
    gift = data.get("gift")
    if gift is not None:
        if gift_template is None:
            errors["gift.template_id"] = [f"No coupon template {gift['template_id']} in this shop."]
        elif gift_template.spec["benefit"]["type"] != "gift":
            errors["gift.template_id"] = ["The gift must be a template of benefit type gift."]
        elif "gift_pack" not in gift_template.spec["claim_methods"]:
            errors["gift.template_id"] = ["The template must allow the gift_pack claim method."]
        elif gift_template.status == "ended":
            errors["gift.template_id"] = ["The template has ended."]
        else:
            left = template_remaining(gift_template)
            if left is not None and gift["quantity"] > left:
                errors["gift.quantity"] = [f"Must be no more than the gift's stock ({left})."]
    return errors


def window_errors(data: dict[str, Any]) -> dict[str, list[str]]:
    """Window order, the popup inside the pack window, min_level for member packs only."""
    errors: dict[str, list[str]] = {}
    if data["starts_at"] >= data["ends_at"]:
        errors["ends_at"] = ["Must be after starts_at."]
    popup_start, popup_end = data.get("popup_starts_at"), data.get("popup_ends_at")
    if (popup_start is None) != (popup_end is None):
        field = "popup_ends_at" if popup_end is None else "popup_starts_at"
        errors[field] = ["Give both popup_starts_at and popup_ends_at, or neither."]
    elif popup_start is not None and popup_end is not None:
        if popup_start >= popup_end:
            errors["popup_ends_at"] = ["Must be after popup_starts_at."]
        elif popup_start < data["starts_at"] or popup_end > data["ends_at"]:
            errors["popup_starts_at"] = ["The popup window must lie inside the pack window."]
    if data["kind"] == "new_member" and data.get("min_level"):
        errors["min_level"] = ["Only a member pack has a minimum level."]
    return errors


def overlaps(a_start: datetime, a_end: datetime, b_start: datetime, b_end: datetime) -> bool:
    return a_start < b_end and b_start < a_end


def pack_remaining(
    coupon_templates: list[Any], gift_template: Any | None, gift_left: int | None
) -> int | None:
    """Packs left: the scarcest benefit (None when every benefit is unlimited)."""
    counts = [template_remaining(row) for row in coupon_templates]
    if gift_template is not None:
        counts.append(template_remaining(gift_template))
        counts.append(gift_left)
    known = [count for count in counts if count is not None]
    return min(known) if known else None


@dataclass(frozen=True, slots=True)
class PackView:
    """What eligibility and state need of a pack row."""

    kind: str
    status: str
    starts_at: datetime
    ends_at: datetime
    min_level: int


def eligibility_refusal(pack: PackView, member: Any, now: datetime) -> Refusal | None:
    """NOT_ELIGIBLE with a reason, or None.

    New-member pack: first join within 24 hours and never rejoined. Member pack:
    an active member of at least ``min_level``.
    """
    if member is None or member.left_at is not None:
        return refuse("NOT_ELIGIBLE", reason="members only")
    if pack.kind == "new_member":
        if not is_new_member(member, now):
            return refuse("NOT_ELIGIBLE", reason="new members only (first join within 24 hours)")
        return None
    if member.level < pack.min_level:
        return refuse("NOT_ELIGIBLE", reason=f"members of level {pack.min_level} or above")
    return None


def window_refusal(pack: PackView, now: datetime) -> Refusal | None:
    if pack.status == "ended" or now >= pack.ends_at:
        return refuse("CLAIM_ENDED")
    if now < pack.starts_at:
        return refuse("NOT_STARTED", starts_at=pack.starts_at.isoformat())
    return None


def pack_state(
    pack: PackView, member: Any, claimed: bool, remaining: int | None, now: datetime
) -> str:
    """The state the member center shows: claimed wins, then ended, eligibility, stock."""
    if claimed:
        return "claimed"
    if pack.status == "ended" or now >= pack.ends_at:
        return "ended"
    if eligibility_refusal(pack, member, now) is not None:
        return "not_eligible"
    if remaining is not None and remaining <= 0:
        return "sold_out"
    return "claimable"
