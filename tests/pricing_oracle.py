"""A reference implementation (oracle) of DOMAIN.md "Post-coupon price (券后价) and checkout price".

Written from DOMAIN.md's text alone, for readability, not speed: it prices one combination
of coupons by the three numbered steps, and finds the best combination by trying every
subset of the candidates. ``tests/test_pricing_rules.py`` compares the engine
(``bff.pricing.engine``) with it. Nothing here is taken from the engine but its input
dataclasses (``Line``, ``Candidate``); ``docs/PRICING.md`` says how each rule is
encoded and what was decided where the text is unclear.

Vocabulary (all money in cents):

* a line's *unit price* is its base price in the combination, its *amount* is unit price x
  quantity, and what is *left* of it is its amount less what the coupons took so far;
* a coupon's *scope lines* are the lines it may take from: lines in its scope (by product id,
  category, or the whole shop), never a live-room exclusive-price line; for a fixed-price
  coupon (``exchange``, ``gift``) only the scope lines of its own product.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import combinations
from typing import Any

from bff.pricing.engine import Candidate, Line

GIFT_PRICE = 1  # a gift (赠品权益) is bought for 1 cent
NEVER = datetime.max.replace(tzinfo=UTC)  # the expiry of a coupon that never expires

FIXED = ("exchange", "gift")
AMOUNT_OFF = ("threshold", "no_threshold")
DISCOUNT = ("discount",)


# --- results ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class OracleLine:
    product_id: str
    quantity: int
    unit_price: int
    amount: int
    discount: int
    payable: int


@dataclass(frozen=True)
class OracleCoupon:
    candidate: Candidate
    discount: int
    shares: tuple[int, ...]  # one per line of the quote, in line order


@dataclass(frozen=True)
class OracleQuote:
    lines: tuple[OracleLine, ...]
    coupons: tuple[OracleCoupon, ...]  # in the order they were applied
    total: int
    discount: int
    payable: int

    def keys(self) -> set[str]:
        return {applied.candidate.key for applied in self.coupons}


@dataclass(frozen=True)
class Priced:
    """One combination priced: ``quote`` when it is usable, else ``None``.

    ``problems`` maps the key of each coupon that makes it unusable to why:
    ``not_in_scope``, ``threshold_not_met``, ``no_unit``, ``takes_nothing``. ``stacking``
    is False when the combination breaks the stacking rules (then nothing is priced).
    """

    quote: OracleQuote | None
    problems: dict[str, str] = field(default_factory=dict)
    stacking: bool = True

    @property
    def usable(self) -> bool:
        return self.quote is not None


# --- small rules -----------------------------------------------------------------------------
def kind(candidate: Candidate) -> str:
    """``fixed``, ``amount_off`` or ``discount``: which numbered step applies the coupon."""
    benefit_type = candidate.benefit["type"]
    if benefit_type in FIXED:
        return "fixed"
    if benefit_type in AMOUNT_OFF:
        return "amount_off"
    if benefit_type in DISCOUNT:
        return "discount"
    raise ValueError(f"unknown benefit type {benefit_type!r}")


def fixed_price(candidate: Candidate) -> int:
    """The price a fixed-price coupon sets for one unit of its product."""
    if candidate.benefit["type"] == "gift":
        return GIFT_PRICE
    return int(candidate.benefit["price"])


def threshold_of(candidate: Candidate) -> int | None:
    """A coupon's own threshold, or None when it has none (discount coupons may have one)."""
    benefit = candidate.benefit
    if benefit["type"] == "threshold":
        return int(benefit["threshold"])
    if benefit["type"] == "discount" and benefit.get("threshold") is not None:
        return int(benefit["threshold"])
    return None


def in_scope(scope: dict[str, Any], line: Line) -> bool:
    """Whether ``line`` is in ``scope``. A live-room exclusive-price line is in no scope."""
    if line.exclusive_price is not None:
        return False
    if scope["type"] == "shop":
        return True
    if scope["type"] == "products":
        return line.product_id in scope["product_ids"]
    if scope["type"] == "categories":
        return line.category is not None and line.category in scope["categories"]
    raise ValueError(f"unknown scope type {scope['type']!r}")


def scope_lines(candidate: Candidate, lines: Sequence[Line]) -> list[int]:
    """Indexes (cart order) of the lines ``candidate`` may take from."""
    indexes = [i for i, line in enumerate(lines) if in_scope(candidate.scope, line)]
    if kind(candidate) == "fixed":
        product_id = candidate.benefit["product_id"]
        indexes = [i for i in indexes if lines[i].product_id == product_id]
    return indexes


def stacking_ok(combo: Sequence[Candidate]) -> bool:
    """The stacking rules alone: a single coupon, or all stackable, one per template, at most
    one discount coupon."""
    if len(combo) <= 1:
        return True
    if not all(candidate.with_other_coupons for candidate in combo):
        return False
    templates = [candidate.template_id for candidate in combo]
    if len(set(templates)) != len(templates):
        return False
    return sum(1 for candidate in combo if kind(candidate) == "discount") <= 1


def split(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` cents in proportion to ``weights``, by largest remainder.

    Each share is first rounded down; the cents still missing go one each to the largest
    remainders, the earlier position first among equal remainders.
    """
    weight_sum = sum(weights)
    if total == 0 or weight_sum == 0:
        return [0 for _ in weights]
    shares = [total * weight // weight_sum for weight in weights]
    remainders = [total * weight % weight_sum for weight in weights]
    missing = total - sum(shares)
    by_remainder = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    for i in by_remainder[:missing]:
        shares[i] += 1
    return shares


# --- base prices -----------------------------------------------------------------------------
def base_unit_prices(lines: Sequence[Line], combo: Sequence[Candidate]) -> list[int]:
    """Each line's unit price in this combination.

    The live-room exclusive price when the line has one; else the list price when the line is
    in the scope of a coupon of the combination with ``with_store_promotions=false``; else the
    store promotion price when the product has one; else the list price.
    """
    prices = []
    for line in lines:
        if line.exclusive_price is not None:
            prices.append(line.exclusive_price)
        elif any(
            not candidate.with_store_promotions and in_scope(candidate.scope, line)
            for candidate in combo
        ):
            prices.append(line.list_price)
        elif line.promo_price is not None:
            prices.append(line.promo_price)
        else:
            prices.append(line.list_price)
    return prices


# --- pricing one combination -----------------------------------------------------------------
def price(lines: Sequence[Line], combo: Sequence[Candidate]) -> Priced:
    """Price ``lines`` with exactly the coupons of ``combo``."""
    combo = list(combo)
    if not stacking_ok(combo):
        return Priced(None, {}, stacking=False)
    units = base_unit_prices(lines, combo)
    amounts = [unit * line.quantity for unit, line in zip(units, lines, strict=True)]
    problems: dict[str, str] = {}

    # Checks made before any coupon: a line in scope, and the coupon's own threshold on the
    # eligible subtotal (its scope lines' amounts at this combination's base prices).
    for candidate in combo:
        indexes = scope_lines(candidate, lines)
        if not indexes:
            problems[candidate.key] = "not_in_scope"
            continue
        threshold = threshold_of(candidate)
        if threshold is not None and sum(amounts[i] for i in indexes) < threshold:
            problems[candidate.key] = "threshold_not_met"

    left = list(amounts)
    shares: dict[str, list[int]] = {candidate.key: [0] * len(lines) for candidate in combo}
    order: list[Candidate] = []

    # Step 1: fixed-price coupons, in template id order; each on a unit of its own, taken
    # from the first line of its product (cart order) that still has a unit no fixed price
    # has taken.
    taken_units = [0] * len(lines)
    fixed = sorted((c for c in combo if kind(c) == "fixed"), key=lambda c: (c.template_id, c.key))
    for candidate in fixed:
        order.append(candidate)
        if candidate.key in problems:
            continue
        free = [i for i in scope_lines(candidate, lines) if taken_units[i] < lines[i].quantity]
        if not free:
            problems[candidate.key] = "no_unit"
            continue
        i = free[0]
        taken_units[i] += 1
        take = max(units[i] - fixed_price(candidate), 0)
        shares[candidate.key][i] += take
        left[i] -= take

    # Step 2: amount-off coupons: those scoped to products or categories before shop-wide
    # ones, each group in template id order.
    amount_offs = sorted(
        (c for c in combo if kind(c) == "amount_off"),
        key=lambda c: (c.scope["type"] == "shop", c.template_id, c.key),
    )
    for candidate in amount_offs:
        order.append(candidate)
        took = take_amount_off(
            int(candidate.benefit["amount_off"]), scope_lines(candidate, lines), amounts, left
        )
        for i, cents in took.items():
            shares[candidate.key][i] += cents

    # Step 3: the discount coupon last, on what is left of its own lines.
    discounts = sorted(
        (c for c in combo if kind(c) == "discount"), key=lambda c: (c.template_id, c.key)
    )
    for candidate in discounts:
        order.append(candidate)
        indexes = scope_lines(candidate, lines)
        remaining = sum(left[i] for i in indexes)
        cents = remaining * (1000 - int(candidate.benefit["rate_permille"])) // 1000
        if candidate.benefit.get("max_off") is not None:
            cents = min(cents, int(candidate.benefit["max_off"]))
        for i, share in zip(indexes, split(cents, [left[i] for i in indexes]), strict=True):
            shares[candidate.key][i] += share
            left[i] -= share

    # No coupon is spent for nothing: one that takes no cent makes the combination unusable.
    for candidate in order:
        if candidate.key not in problems and sum(shares[candidate.key]) == 0:
            problems[candidate.key] = "takes_nothing"
    if problems:
        return Priced(None, problems)

    assert all(value >= 0 for value in left), left
    line_quotes = []
    for i, line in enumerate(lines):
        discount = sum(shares[candidate.key][i] for candidate in combo)
        line_quotes.append(
            OracleLine(
                line.product_id,
                line.quantity,
                units[i],
                amounts[i],
                discount,
                amounts[i] - discount,
            )
        )
    coupons = tuple(
        OracleCoupon(candidate, sum(shares[candidate.key]), tuple(shares[candidate.key]))
        for candidate in order
    )
    total = sum(amounts)
    discount = sum(applied.discount for applied in coupons)
    return Priced(OracleQuote(tuple(line_quotes), coupons, total, discount, total - discount))


def take_amount_off(
    amount_off: int, indexes: Sequence[int], amounts: Sequence[int], left: list[int]
) -> dict[int, int]:
    """Step 2 for one coupon: what it takes from each of its scope lines (``left`` updated).

    It takes at most what is left of its lines. The amount is split over its scope lines in
    proportion to their amounts (at the base price, not what is left); a share that would
    take a line below zero stops at zero, and the rest is split again over the scope lines
    that still have something left, in proportion to their amounts, until all is taken or
    nothing is left.
    """
    took = {i: 0 for i in indexes}
    rest = min(amount_off, sum(left[i] for i in indexes))
    among = list(indexes)
    while rest > 0 and among:
        taken_now = 0
        for i, share in zip(among, split(rest, [amounts[i] for i in among]), strict=True):
            cents = min(share, left[i])
            took[i] += cents
            left[i] -= cents
            taken_now += cents
        rest -= taken_now
        among = [i for i in among if left[i] > 0]
    return took


# --- the best combination --------------------------------------------------------------------
def expiry(combo: Sequence[Candidate]) -> datetime:
    """The earliest expiry among the coupons (``NEVER`` for none, or none that expires)."""
    return min((c.expires_at for c in combo if c.expires_at is not None), default=NEVER)


def preference(candidate: Candidate) -> tuple[Any, ...]:
    """Among coupons of one template: held first, then the earliest expiry, then the key."""
    return (candidate.needs_claim, candidate.expires_at or NEVER, candidate.key)


def rank(payable: int, combo: Sequence[Candidate]) -> tuple[Any, ...]:
    """The order of preference among usable minimal combinations: lower is better."""
    by_template = sorted(combo, key=lambda c: (c.template_id, preference(c)))
    return (
        payable,
        sum(1 for c in combo if c.needs_claim),
        expiry(combo),
        len(combo),
        tuple(c.template_id for c in by_template),
        tuple(preference(c) for c in by_template),
    )


@dataclass(frozen=True)
class Best:
    quote: OracleQuote
    combo: tuple[Candidate, ...]
    usable: int  # how many subsets were usable (for the tests' own sanity)
    minimal: int  # how many of those were minimal


def priced_again(lines: Sequence[Line], combo: Sequence[Candidate]) -> int:
    """What ``combo`` pays "priced again" (DOMAIN: "removing that one coupon and pricing
    the rest again"): the coupons of it that cannot apply are left out, again until every
    one left applies (leaving out one that refuses store promotions changes the base
    prices, so another's threshold may fail next)."""
    combo = list(combo)
    while True:
        priced = price(lines, combo)
        if priced.quote is not None:
            return priced.quote.payable
        combo = [c for c in combo if c.key not in priced.problems]


def best(
    lines: Sequence[Line], candidates: Sequence[Candidate], max_to_claim: int | None = None
) -> Best:
    """The best combination by brute force over every subset of ``candidates``.

    A subset is usable when the stacking rules allow it, it holds at most ``max_to_claim``
    coupons to claim, and it prices (every coupon has a line in scope, meets its threshold,
    has a unit of its own when it is a fixed price, and takes something). It is minimal when
    dropping any one coupon and pricing the rest again (``priced_again``: what cannot
    apply then is left out) pays strictly more, and, when it is not empty, it pays strictly
    less than no coupon. The best is the lowest ``rank`` among the usable minimal subsets.
    """
    candidates = list(candidates)
    memo: dict[frozenset[int], OracleQuote | None] = {}

    def usable(members: frozenset[int]) -> OracleQuote | None:
        if members not in memo:
            combo = [candidates[i] for i in sorted(members)]
            claims = sum(1 for c in combo if c.needs_claim)
            if max_to_claim is not None and claims > max_to_claim:
                memo[members] = None
            else:
                memo[members] = price(lines, combo).quote
        return memo[members]

    chosen: tuple[tuple[Any, ...], frozenset[int], OracleQuote] | None = None
    n_usable = n_minimal = 0
    nothing = price(lines, []).quote
    assert nothing is not None
    for size in range(len(candidates) + 1):
        for members_tuple in combinations(range(len(candidates)), size):
            members = frozenset(members_tuple)
            quote = usable(members)
            if quote is None:
                continue
            n_usable += 1
            if members and quote.payable >= nothing.payable:
                continue  # dropping them all would not raise the payable
            minimal = True
            for i in members:
                rest = [candidates[j] for j in sorted(members - {i})]
                if priced_again(lines, rest) <= quote.payable:
                    minimal = False
                    break
            if not minimal:
                continue
            n_minimal += 1
            key = rank(quote.payable, [candidates[i] for i in members])
            if chosen is None or key < chosen[0]:
                chosen = (key, members, quote)
    assert chosen is not None  # the empty subset is always usable and minimal
    combo = tuple(candidates[i] for i in sorted(chosen[1]))
    return Best(chosen[2], combo, n_usable, n_minimal)
