"""The points-for-coupons policy and an offer's state for a shopper. Pure: no I/O.

The platform's rules (Tmall's "积分换优惠券", reference/002): points coupons come
in their own denominations; free store coupons in theirs; and "积分兑换的优惠券折扣
力度必须大于商家店铺内自设优惠券折扣力度" (store 299-50 means the points coupon must
be at least 299-55). Violations cost a shop every coupon venue for three months,
so where a benefit cannot be shown to be stronger, the offer is refused.

How benefits compare with a free store threshold coupon S off T (the strength rule):

* ``threshold`` a off t: the ratio, strictly: a / t > S / T (DOMAIN.md);
* ``no_threshold`` a and ``discount``: what it takes off an order of exactly T (the
  smallest order the store coupon serves) must be more than S; a discount whose own
  threshold is above T takes nothing there, so it loses;
* ``exchange`` (a fixed price for one product) has no amount to compare: it loses
  to any store coupon. (``gift`` templates cannot carry the points method at all.)

Denominations are whole yuan; only amount-off benefits (threshold, no_threshold)
have one, so with the points denomination rule on, only those can be sold for points.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from http import HTTPStatus
from typing import Any

from bff.errors import ApiError
from config.loader import PointsSettings

AMOUNT_OFF_TYPES = ("threshold", "no_threshold")
# Methods through which a coupon is had for nothing (all but points).
FREE_METHODS = frozenset({"widget", "auto", "code", "gift_pack"})

OFFER_STATES = (
    "available",
    "insufficient_points",
    "sold_out",
    "limit_reached",
    "not_started",
    "ended",
)


@dataclass(frozen=True, slots=True)
class StoreCoupon:
    """An active free shop-scope threshold coupon: what a points coupon must beat."""

    id: int
    name: str
    amount_off: int
    threshold: int


@dataclass(frozen=True)
class Violation:
    rule: str
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def error(self) -> ApiError:
        return ApiError(
            HTTPStatus.BAD_REQUEST,
            "POLICY_VIOLATION",
            self.message,
            {"rule": self.rule, **self.details},
        )


def is_free(claim_methods: Iterable[str]) -> bool:
    return any(method in FREE_METHODS for method in claim_methods)


def is_store_coupon(spec: Mapping[str, Any]) -> bool:
    """A free, shop-scope threshold coupon (the strength rule's yardstick)."""
    return (
        spec["scope"]["type"] == "shop"
        and spec["benefit"]["type"] == "threshold"
        and is_free(spec["claim_methods"])
    )


def discount_at(benefit: Mapping[str, Any], subtotal: int) -> int | None:
    """Cents a benefit takes off an order of ``subtotal``; None when it has no amount."""
    kind = benefit["type"]
    if kind == "threshold":
        return benefit["amount_off"] if subtotal >= benefit["threshold"] else 0
    if kind == "no_threshold":
        return min(benefit["amount_off"], subtotal)
    if kind == "discount":
        threshold = benefit.get("threshold")
        if threshold is not None and subtotal < threshold:
            return 0
        off = subtotal * (1000 - benefit["rate_permille"]) // 1000
        max_off = benefit.get("max_off")
        return off if max_off is None else min(off, max_off)
    return None


def beats(benefit: Mapping[str, Any], store: StoreCoupon) -> bool:
    """Whether ``benefit`` is strictly stronger than the store coupon (see the module doc)."""
    if benefit["type"] == "threshold":
        # a / t > S / T, in integers.
        return benefit["amount_off"] * store.threshold > store.amount_off * benefit["threshold"]
    off = discount_at(benefit, store.threshold)
    return off is not None and off > store.amount_off


def _strongest_first(stores: Iterable[StoreCoupon]) -> list[StoreCoupon]:
    """By ratio S / T descending, then id: the first one a benefit loses to is named."""

    def key(store: StoreCoupon) -> tuple[Fraction, int]:
        return (-Fraction(store.amount_off, store.threshold), store.id)

    return sorted(stores, key=key)


def min_amount_off(benefit: Mapping[str, Any], stores: Sequence[StoreCoupon]) -> int | None:
    """The least amount_off (cents) that would beat every store coupon, for amount-offs."""
    if not stores:
        return None
    if benefit["type"] == "threshold":
        return max(s.amount_off * benefit["threshold"] // s.threshold + 1 for s in stores)
    if benefit["type"] == "no_threshold":
        return max(s.amount_off + 1 for s in stores)
    return None


def _yuan_in(amount_off: int, denominations: Iterable[int]) -> bool:
    return amount_off % 100 == 0 and amount_off // 100 in set(denominations)


class Policy:
    """The configured rules; each check returns the first violation or None."""

    def __init__(self, settings: PointsSettings) -> None:
        self.settings = settings

    def check_offer(
        self, benefit: Mapping[str, Any], stores: Iterable[StoreCoupon]
    ) -> Violation | None:
        """A points coupon: its denomination, then its strength against the shop's coupons."""
        settings = self.settings
        allowed = sorted(settings.points_denominations)
        if settings.points_denomination_rule:
            if benefit["type"] not in AMOUNT_OFF_TYPES:
                return Violation(
                    "points_denomination",
                    "a points coupon must take a fixed amount off (满减 or 无门槛) in one of "
                    "the points denominations",
                    {"benefit_type": benefit["type"], "allowed_yuan": allowed},
                )
            if not _yuan_in(benefit["amount_off"], allowed):
                return Violation(
                    "points_denomination",
                    "a points coupon's amount off must be one of the points denominations",
                    {"amount_off": benefit["amount_off"], "allowed_yuan": allowed},
                )
        if settings.strength_rule:
            ranked = _strongest_first(stores)
            lost_to = next((s for s in ranked if not beats(benefit, s)), None)
            if lost_to is not None:
                details: dict[str, Any] = {
                    "store_coupon": {
                        "id": lost_to.id,
                        "name": lost_to.name,
                        "amount_off": lost_to.amount_off,
                        "threshold": lost_to.threshold,
                    }
                }
                least = min_amount_off(benefit, ranked)
                if least is not None:
                    details["min_amount_off"] = least
                return Violation(
                    "stronger_than_store_coupons",
                    f"a points coupon must be strictly stronger than the shop's free coupon "
                    f"{lost_to.name!r}",
                    details,
                )
        return None

    def check_free_template(self, data: Mapping[str, Any]) -> Violation | None:
        """A free store coupon's denomination (when that rule is on)."""
        settings = self.settings
        benefit = data["benefit"]
        if (
            not settings.free_denomination_rule
            or not is_free(data["claim_methods"])
            or data["scope"]["type"] != "shop"
            or benefit["type"] not in AMOUNT_OFF_TYPES
        ):
            return None
        allowed = sorted(settings.free_denominations)
        if _yuan_in(benefit["amount_off"], allowed):
            return None
        return Violation(
            "free_denomination",
            "a free store coupon's amount off must be one of the free denominations",
            {"amount_off": benefit["amount_off"], "allowed_yuan": allowed},
        )

    def raise_free_template(self, data: Mapping[str, Any]) -> None:
        """For the template service's creation checks."""
        violation = self.check_free_template(data)
        if violation is not None:
            raise violation.error()


# --- an offer for one shopper ----------------------------------------------------------------
def offer_window(
    claim_start: datetime,
    claim_end: datetime,
    starts_at: datetime | None,
    ends_at: datetime | None,
) -> tuple[datetime, datetime]:
    """When an offer can be exchanged: the template's claim window, narrowed by the offer's."""
    start = claim_start if starts_at is None else max(claim_start, starts_at)
    end = claim_end if ends_at is None else min(claim_end, ends_at)
    return start, end


def offer_state(
    *,
    now: datetime,
    starts_at: datetime,
    ends_at: datetime,
    template_status: str,
    held: int,
    per_user_limit: int,
    sold_out: bool,
    balance: int,
    points_cost: int,
) -> str:
    """The state shown on an offer, in the order the exchange refuses.

    Window first (ended is ended for everyone); then the claim rules (per-user
    limit before stock, as DOMAIN.md orders them); points last, because the
    exchange charges points only after the coupon could be issued: a user short
    of points on a sold-out offer hears ``sold_out``, which more points would
    not change.
    """
    if template_status == "ended" or now >= ends_at:
        return "ended"
    if now < starts_at:
        return "not_started"
    if held >= per_user_limit:
        return "limit_reached"
    if sold_out:
        return "sold_out"
    if balance < points_cost:
        return "insufficient_points"
    return "available"
