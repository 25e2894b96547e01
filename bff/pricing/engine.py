"""The pure price engine (券后价 / 到手价): best coupons, stacking, apportionment. No I/O.

Rules (DOMAIN.md "Post-coupon price"):

* Base price: the store promotion price when the product has one, else the
  list price. A coupon with ``with_store_promotions=false`` prices the lines in
  its scope at list price instead; the search tries combinations with and
  without such coupons, so both ways are compared.
* Coupons combine only if every one has ``with_other_coupons=true``; at most
  one per template and one ``discount`` coupon per order.
* Thresholds are checked on the eligible subtotal before any coupon. Amount-off
  coupons (threshold, no_threshold, exchange, gift) apply first, narrowest
  scope first; a discount coupon applies to what they leave, capped by
  ``max_off``. Nothing goes below zero. A coupon that would take nothing is not
  used.
* Lines at a live-room exclusive price are never in any coupon's scope.
* Best = lowest payable; ties go to fewer coupons still to be claimed, then to
  the earliest expiry, then to fewer coupons.
* Each coupon's discount is split over the lines in its scope in proportion to
  what they still cost, in whole cents by largest remainder: the line shares
  sum exactly to the coupon's discount and no line goes negative.

Cost. Evaluating one combination is O(c·n) for c coupons and n lines. The
search evaluates every single coupon, then, for the coupons that stack, one
combination per subset of the stackable coupons that refuse store promotions
(usually none or one): adding an amount-off coupon that keeps store
promotions never raises the payable, so all of them are taken (those that end
up taking nothing are dropped); the discount coupon applies last, so each one
is scored in O(n) on what they leave and only the best is priced. That is
O(2^f·(c + d)·n) in all (d discount coupons, f store-promotion refusers,
exact up to ``MAX_REFUSERS_EXACT``): linear in coupons × lines for a fixed f. The winner is
then trimmed once (coupons it does not need are dropped, for the tie-breaks);
between combinations of equal payable the tie-break sees untrimmed sets.
Measured by ``bench/pricing_engine.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import combinations
from typing import Any

AMOUNT_OFF = ("threshold", "no_threshold", "exchange", "gift")
GIFT_PRICE = 1  # a gift is bought for 1 cent
MAX_REFUSERS_EXACT = 10  # 2^10 subsets; beyond, refusers are added greedily


@dataclass(frozen=True, slots=True)
class Line:
    product_id: str
    quantity: int
    list_price: int
    promo_price: int | None = None
    category: str | None = None
    # A live-room exclusive price (直播专享价): the price, and no coupon applies.
    exclusive_price: int | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A coupon that could apply: one the user holds, or one they could claim now."""

    key: str
    template_id: int
    benefit: dict[str, Any]
    scope: dict[str, Any]
    with_store_promotions: bool = True
    with_other_coupons: bool = False
    needs_claim: bool = False
    coupon_id: int | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class LineQuote:
    product_id: str
    quantity: int
    unit_price: int
    amount: int
    discount: int
    payable: int


@dataclass(frozen=True, slots=True)
class AppliedCoupon:
    candidate: Candidate
    discount: int


@dataclass(frozen=True)
class Quote:
    lines: tuple[LineQuote, ...]
    coupons: tuple[AppliedCoupon, ...]
    total: int
    discount: int
    payable: int
    rank: tuple[Any, ...] = field(default=(), compare=False, repr=False)
    # Some coupon took less than it offered: another coupon may be redundant.
    saturated: bool = field(default=False, compare=False, repr=False)


class NotApplicable(Exception):
    """A combination that cannot be used (threshold not met, a coupon taking nothing)."""

    def __init__(self, candidate: Candidate, reason: str) -> None:
        super().__init__(reason)
        self.candidate = candidate
        self.reason = reason


def in_scope(scope: dict[str, Any], line: Line) -> bool:
    if line.exclusive_price is not None:
        return False
    kind = scope["type"]
    if kind == "shop":
        return True
    if kind == "products":
        return line.product_id in scope["product_ids"]
    return line.category is not None and line.category in scope["categories"]


def scope_lines(candidate: Candidate, lines: Sequence[Line]) -> list[int]:
    """Indexes of the lines a coupon may discount (exchange and gift: their product only)."""
    benefit = candidate.benefit
    indexes = [i for i, line in enumerate(lines) if in_scope(candidate.scope, line)]
    if benefit["type"] in ("exchange", "gift"):
        indexes = [i for i in indexes if lines[i].product_id == benefit["product_id"]]
    return indexes


def apportion(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` cents over ``weights`` proportionally, largest remainder first.

    Requires ``0 <= total <= sum(weights)``; then every share is at most its weight.
    """
    whole = sum(weights)
    if total == 0 or whole == 0:
        return [0] * len(weights)
    shares = [total * w // whole for w in weights]
    remainders = [(total * w % whole, -i) for i, w in enumerate(weights)]
    left = total - sum(shares)
    for _, negative_index in sorted(remainders, reverse=True)[:left]:
        shares[-negative_index] += 1
    return shares


def evaluate(
    lines: Sequence[Line],
    combo: Sequence[Candidate],
    scopes: dict[str, list[int]] | None = None,
) -> Quote:
    """Price ``lines`` with exactly these coupons; raises NotApplicable if one cannot apply.

    ``scopes`` (candidate key -> line indexes) may be passed in when the same lines
    are priced many times.
    """
    at_list: set[int] = set()
    for candidate in combo:
        if not candidate.with_store_promotions:
            at_list.update(i for i, line in enumerate(lines) if in_scope(candidate.scope, line))
    units = []
    for i, line in enumerate(lines):
        if line.exclusive_price is not None:
            units.append(line.exclusive_price)
        elif line.promo_price is not None and i not in at_list:
            units.append(line.promo_price)
        else:
            units.append(line.list_price)
    amounts = [unit * line.quantity for unit, line in zip(units, lines, strict=True)]
    remaining = list(amounts)
    applied: dict[str, int] = {}
    capped = False

    # Thresholds see the eligible subtotal before any coupon.
    if scopes is None:
        scopes = {c.key: scope_lines(c, lines) for c in combo}
    for candidate in combo:
        indexes = scopes[candidate.key]
        if not indexes:
            raise NotApplicable(candidate, "no product in scope")
        threshold = candidate.benefit.get("threshold")
        if threshold is not None and sum(amounts[i] for i in indexes) < threshold:
            raise NotApplicable(candidate, "threshold not met")

    amount_off = [c for c in combo if c.benefit["type"] in AMOUNT_OFF]
    # Narrowest scope first; then by template, not by coupon, so which of a template's
    # coupons stands in a combination never changes what the combination takes off.
    amount_off.sort(key=lambda c: (len(scopes[c.key]), c.template_id, c.key))
    for candidate in amount_off:
        indexes = scopes[candidate.key]
        wanted = _amount_off(candidate, units, indexes)
        available = sum(remaining[i] for i in indexes)
        capped = capped or wanted > available
        _take(candidate, min(wanted, available), indexes, remaining, applied)
    for candidate in combo:
        if candidate.benefit["type"] != "discount":
            continue
        indexes = scopes[candidate.key]
        left = sum(remaining[i] for i in indexes)
        off = left * (1000 - candidate.benefit["rate_permille"]) // 1000
        max_off = candidate.benefit.get("max_off")
        if max_off is not None:
            capped = capped or off > max_off
            off = min(off, max_off)
        _take(candidate, off, indexes, remaining, applied)

    line_quotes = tuple(
        LineQuote(
            line.product_id,
            line.quantity,
            units[i],
            amounts[i],
            amounts[i] - remaining[i],
            remaining[i],
        )
        for i, line in enumerate(lines)
    )
    coupons = tuple(AppliedCoupon(c, applied[c.key]) for c in combo)
    total = sum(amounts)
    payable = sum(remaining)
    return Quote(
        line_quotes,
        coupons,
        total,
        total - payable,
        payable,
        _rank(payable, combo),
        saturated=capped or (payable == 0 and len(combo) > 1),
    )


def _amount_off(candidate: Candidate, units: Sequence[int], indexes: Sequence[int]) -> int:
    benefit = candidate.benefit
    kind = benefit["type"]
    if kind in ("threshold", "no_threshold"):
        return int(benefit["amount_off"])
    unit = max(units[i] for i in indexes)  # one unit of the named product
    price = benefit["price"] if kind == "exchange" else GIFT_PRICE
    return max(unit - price, 0)


def _take(
    candidate: Candidate,
    off: int,
    indexes: Sequence[int],
    remaining: list[int],
    applied: dict[str, int],
) -> None:
    if off <= 0:
        raise NotApplicable(candidate, "takes nothing off")
    shares = apportion(off, [remaining[i] for i in indexes])
    for i, share in zip(indexes, shares, strict=True):
        remaining[i] -= share
    applied[candidate.key] = off


def _rank(payable: int, combo: Sequence[Candidate]) -> tuple[Any, ...]:
    expiries = [c.expires_at.timestamp() for c in combo if c.expires_at is not None]
    return (
        payable,
        sum(1 for c in combo if c.needs_claim),
        min(expiries) if expiries else math.inf,
        len(combo),
        tuple(sorted(c.key for c in combo)),
    )


def allowed(combo: Sequence[Candidate]) -> bool:
    """The stacking rules: alone, or all stackable, one per template, one discount."""
    if len(combo) <= 1:
        return True
    if not all(c.with_other_coupons for c in combo):
        return False
    templates = [c.template_id for c in combo]
    if len(set(templates)) != len(templates):
        return False
    return sum(1 for c in combo if c.benefit["type"] == "discount") <= 1


def try_evaluate(
    lines: Sequence[Line],
    combo: Sequence[Candidate],
    scopes: dict[str, list[int]] | None = None,
) -> Quote | None:
    try:
        return evaluate(lines, combo, scopes)
    except NotApplicable:
        return None


def best_quote(lines: Sequence[Line], candidates: Iterable[Candidate]) -> Quote:
    """The best combination of ``candidates`` for ``lines`` (possibly no coupon)."""
    scopes = {c.key: scope_lines(c, lines) for c in candidates}
    pool = [c for c in candidates if scopes[c.key]]
    best = evaluate(lines, [], scopes)
    for candidate in pool:
        best = _better(best, try_evaluate(lines, [candidate], scopes))
    stackable = _representatives([c for c in pool if c.with_other_coupons])
    # Coupons that refuse store promotions change the base prices: try each subset of
    # them (with at most one discount coupon among them). Everything else is chosen
    # against those prices: every amount-off coupon that still takes something, then
    # the best discount coupon on what they leave.
    refusers = [c for c in stackable if not c.with_store_promotions]
    keeps = [c for c in stackable if c.with_store_promotions and c.benefit["type"] != "discount"]
    discounts = [
        c for c in stackable if c.with_store_promotions and c.benefit["type"] == "discount"
    ]
    for chosen in _refuser_subsets(refusers):
        if sum(1 for c in chosen if c.benefit["type"] == "discount") > 1:
            continue
        base = _fill(lines, list(chosen), keeps, scopes)
        if base is None:
            continue
        best = _better(best, base)
        if any(c.benefit["type"] == "discount" for c in chosen):
            continue
        pick = _best_discount(base, discounts, scopes)
        if pick is not None:
            combo = [a.candidate for a in base.coupons] + [pick]
            best = _better(best, try_evaluate(lines, combo, scopes))
    if best.saturated:
        # Tie-breaks: drop what the winner does not need. Done once, on the winner only.
        best = _trim(lines, best, scopes)
    return best


def _best_discount(
    base: Quote, discounts: list[Candidate], scopes: dict[str, list[int]]
) -> Candidate | None:
    """The discount coupon that takes most off what ``base`` leaves: O(n) per coupon."""
    best: tuple[tuple[Any, ...], Candidate] | None = None
    for candidate in discounts:
        indexes = scopes[candidate.key]
        threshold = candidate.benefit.get("threshold")
        if threshold is not None and sum(base.lines[i].amount for i in indexes) < threshold:
            continue
        left = sum(base.lines[i].payable for i in indexes)
        off = left * (1000 - candidate.benefit["rate_permille"]) // 1000
        if candidate.benefit.get("max_off") is not None:
            off = min(off, candidate.benefit["max_off"])
        if off <= 0:
            continue
        key = (-off, *_preference(candidate))
        if best is None or key < best[0]:
            best = (key, candidate)
    return best[1] if best is not None else None


def _representatives(stackable: list[Candidate]) -> list[Candidate]:
    """One coupon per template: held before to-claim, then the earliest expiry."""
    chosen: dict[int, Candidate] = {}
    for candidate in sorted(stackable, key=_preference):
        chosen.setdefault(candidate.template_id, candidate)
    return list(chosen.values())


def _preference(candidate: Candidate) -> tuple[Any, ...]:
    expiry = candidate.expires_at.timestamp() if candidate.expires_at else math.inf
    return (candidate.needs_claim, expiry, candidate.key)


def _refuser_subsets(refusers: list[Candidate]) -> Iterable[tuple[Candidate, ...]]:
    if len(refusers) <= MAX_REFUSERS_EXACT:
        for size in range(len(refusers) + 1):
            yield from combinations(refusers, size)
    else:  # pragma: no cover - a shop with over 10 such stackable coupons at once
        yield ()
        yield tuple(refusers)


def _fill(
    lines: Sequence[Line],
    fixed: list[Candidate],
    keeps: list[Candidate],
    scopes: dict[str, list[int]],
) -> Quote | None:
    """``fixed`` plus every coupon of ``keeps`` that still takes something off."""
    if fixed and try_evaluate(lines, fixed, scopes) is None:
        return None
    combo = [*fixed, *keeps]
    while True:
        try:
            quote = evaluate(lines, combo, scopes)
        except NotApplicable as exc:
            if exc.candidate in fixed:
                return None
            combo = [c for c in combo if c is not exc.candidate]
            continue
        return quote


def _trim(lines: Sequence[Line], quote: Quote, scopes: dict[str, list[int]]) -> Quote:
    """Drop coupons whose removal keeps the payable: ties prefer fewer, held, earlier ones.

    Only worth trying when some coupon was capped; otherwise each one's removal
    raises the payable by what it took.
    """
    # One pass, least preferred first (to-claim, latest expiry): O(c) evaluations.
    for applied_coupon in sorted(
        quote.coupons, key=lambda a: _preference(a.candidate), reverse=True
    ):
        candidate = applied_coupon.candidate
        rest = [a.candidate for a in quote.coupons if a.candidate is not candidate]
        smaller = try_evaluate(lines, rest, scopes)
        if smaller is not None and smaller.rank < quote.rank:
            quote = smaller
    return quote


def _better(current: Quote, other: Quote | None) -> Quote:
    return current if other is None or current.rank <= other.rank else other
