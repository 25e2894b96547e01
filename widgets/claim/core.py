"""Pure core of the claim widget: one template's state for one viewer. No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

STATES = (
    "claimable",
    "claimed",
    "sold_out",
    "not_started",
    "ended",
    "not_eligible",
    "wallet_full",
)


@dataclass(frozen=True, slots=True)
class Viewer:
    """What the widget knows of the caller; ``None`` fields for an anonymous caller."""

    signed_in: bool
    eligible: bool = True
    wallet_full: bool = False


def widget_state(
    *,
    status: str,
    claim_start: datetime,
    claim_end: datetime,
    now: datetime,
    held: int,
    per_user_limit: int,
    sold_out: bool,
    viewer: Viewer,
) -> str:
    """The state shown on the widget button.

    Window first (a coupon that has ended is ended for everyone); then what the
    user holds: holding the limit, or holding some when no more can be had, is
    ``claimed``; holding fewer than the limit while more are available stays
    ``claimable``. Anonymous callers see no user-specific state.
    """
    if status == "ended" or now >= claim_end:
        return "ended"
    if now < claim_start:
        return "not_started"
    if held >= per_user_limit or (held > 0 and sold_out):
        return "claimed"
    if viewer.signed_in and not viewer.eligible:
        return "not_eligible"
    if sold_out:
        return "sold_out"
    if viewer.signed_in and viewer.wallet_full:
        return "wallet_full"
    return "claimable"


def in_scope(scope: dict[str, Any], product_id: str | None, category: str | None) -> bool:
    """Whether a template shows on this product's widget (all shop templates without one)."""
    if product_id is None or scope["type"] == "shop":
        return True
    if scope["type"] == "products":
        return product_id in scope["product_ids"]
    return category is not None and category in scope["categories"]
