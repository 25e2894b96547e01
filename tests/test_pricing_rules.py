"""The price engine against DOMAIN.md "Post-coupon price", through an independent oracle.

``tests/pricing_oracle.py`` encodes the section's text (base prices, thresholds, the three
numbered steps, the choice of the best combination by brute force). This module:

* (d) works each rule through hand-computed examples, on the oracle and on the engine alike
  (the figures in the comments are worked out from the rule, not from running anything);
* (a) compares ``best_quote`` with the oracle's brute force on random carts and coupons;
* (b) compares ``evaluate`` with the oracle's pricing of random allowed combinations;
* (c) checks what must hold whatever the combination (sums, no negative line, never above
  the price without coupons).

Examples per property: ``PRICING_EXAMPLES`` (default 300, derandomized, as in CI); run
``PRICING_EXAMPLES=3000`` or more locally after changing the engine.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from bff.pricing import engine
from bff.pricing.engine import Candidate, Line, NotApplicable
from tests import pricing_oracle as oracle

EXAMPLES = int(os.environ.get("PRICING_EXAMPLES", "300"))
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

NOW = datetime(2026, 11, 20, 4, 0, tzinfo=UTC)
SHOP: dict[str, Any] = {"type": "shop"}


# --- building inputs -------------------------------------------------------------------------
def line(
    product_id: str,
    quantity: int,
    list_price: int,
    promo: int | None = None,
    category: str | None = None,
    exclusive: int | None = None,
) -> Line:
    return Line(product_id, quantity, list_price, promo, category, exclusive)


def coupon(
    key: str,
    template_id: int,
    benefit: dict[str, Any],
    scope: dict[str, Any] = SHOP,
    *,
    stacks: bool = True,
    with_promotions: bool = True,
    claim: bool = False,
    expires: int | None = None,
) -> Candidate:
    """A candidate; ``expires`` is minutes after NOW (None: never expires)."""
    return Candidate(
        key=key,
        template_id=template_id,
        benefit=benefit,
        scope=scope,
        with_store_promotions=with_promotions,
        with_other_coupons=stacks,
        needs_claim=claim,
        coupon_id=None if claim else template_id * 100 + len(key),
        expires_at=None if expires is None else NOW + timedelta(minutes=expires),
    )


def off(amount: int, threshold: int | None = None) -> dict[str, Any]:
    if threshold is None:
        return {"type": "no_threshold", "amount_off": amount}
    return {"type": "threshold", "amount_off": amount, "threshold": threshold}


def rate(permille: int, threshold: int | None = None, max_off: int | None = None) -> dict[str, Any]:
    benefit: dict[str, Any] = {"type": "discount", "rate_permille": permille}
    if threshold is not None:
        benefit["threshold"] = threshold
    if max_off is not None:
        benefit["max_off"] = max_off
    return benefit


def exchange(product_id: str, price: int) -> dict[str, Any]:
    return {"type": "exchange", "product_id": product_id, "price": price}


def gift(product_id: str) -> dict[str, Any]:
    return {"type": "gift", "product_id": product_id}


def products(*product_ids: str) -> dict[str, Any]:
    return {"type": "products", "product_ids": list(product_ids)}


def categories(*names: str) -> dict[str, Any]:
    return {"type": "categories", "categories": list(names)}


# --- one view of a quote, from the engine or the oracle --------------------------------------
MISSING = "<no shares attribute>"


def view(quote: Any) -> dict[str, Any]:
    """A quote as plain data: lines, per-coupon discounts and shares (by key), totals."""
    return {
        "lines": [
            (q.product_id, q.quantity, q.unit_price, q.amount, q.discount, q.payable)
            for q in quote.lines
        ],
        "coupons": {a.candidate.key: a.discount for a in quote.coupons},
        "shares": {
            a.candidate.key: tuple(a.shares) if hasattr(a, "shares") else MISSING
            for a in quote.coupons
        },
        "total": quote.total,
        "discount": quote.discount,
        "payable": quote.payable,
    }


class Refused(Exception):
    """The implementation refused the combination; ``keys`` are the coupons it blamed."""

    def __init__(self, keys: set[str]) -> None:
        super().__init__(keys)
        self.keys = keys


class Oracle:
    name = "oracle"

    @staticmethod
    def evaluate(lines: Sequence[Line], combo: Sequence[Candidate]) -> dict[str, Any]:
        priced = oracle.price(lines, combo)
        if priced.quote is None:
            raise Refused(set(priced.problems))
        return view(priced.quote)

    @staticmethod
    def best(
        lines: Sequence[Line], candidates: Sequence[Candidate], max_to_claim: int | None = None
    ) -> dict[str, Any]:
        return view(oracle.best(lines, candidates, max_to_claim).quote)


class Engine:
    name = "engine"

    @staticmethod
    def evaluate(lines: Sequence[Line], combo: Sequence[Candidate]) -> dict[str, Any]:
        try:
            return view(engine.evaluate(lines, combo))
        except NotApplicable as refusal:
            raise Refused({refusal_key(refusal)}) from refusal

    @staticmethod
    def best(
        lines: Sequence[Line], candidates: Sequence[Candidate], max_to_claim: int | None = None
    ) -> dict[str, Any]:
        return view(engine_best(lines, candidates, max_to_claim))


def refusal_key(refusal: NotApplicable) -> str:
    candidate = getattr(refusal, "candidate", None)
    if candidate is None and refusal.args:
        candidate = refusal.args[0]
    return candidate.key if isinstance(candidate, Candidate) else str(candidate)


def engine_best(
    lines: Sequence[Line], candidates: Sequence[Candidate], max_to_claim: int | None = None
) -> Any:
    # max_to_claim is passed only when set, so a call without it works on any engine.
    if max_to_claim is None:
        return engine.best_quote(lines, candidates)
    return engine.best_quote(lines, candidates, max_to_claim=max_to_claim)


@pytest.fixture(params=[Oracle, Engine], ids=["oracle", "engine"])
def impl(request: pytest.FixtureRequest) -> Any:
    return request.param


def check(
    got: dict[str, Any],
    *,
    payable: int,
    lines: list[tuple[int, int]] | None = None,
    coupons: dict[str, int] | None = None,
    shares: dict[str, tuple[int, ...]] | None = None,
    units: list[int] | None = None,
) -> None:
    """Assert a quote's figures, the coarse ones first so a failure says the most.

    ``lines`` is each line's (discount, payable); ``units`` each line's unit price.
    """
    assert got["payable"] == payable, got
    if units is not None:
        assert [row[2] for row in got["lines"]] == units, got
    if lines is not None:
        assert [(row[4], row[5]) for row in got["lines"]] == lines, got
    if coupons is not None:
        assert got["coupons"] == coupons, got
    if shares is not None:
        assert got["shares"] == shares, got
    assert got["total"] - got["discount"] == got["payable"], got


def refused(impl: Any, lines: Sequence[Line], combo: Sequence[Candidate]) -> set[str]:
    with pytest.raises(Refused) as caught:
        impl.evaluate(lines, combo)
    return caught.value.keys


# === (d) one rule at a time, hand-computed ===================================================
# --- base prices -----------------------------------------------------------------------------
def test_base_price_is_the_store_promotion_price(impl):
    lines = [line("p1", 1, 1000, promo=800), line("p2", 1, 500)]
    a = coupon("a", 1, off(100), products("p1"))
    # p1 at its promotion price 800, p2 (no promotion) at list 500; a takes 100 from p1.
    check(impl.evaluate(lines, [a]), payable=1200, units=[800, 500], lines=[(100, 700), (0, 500)])


def test_coupon_refusing_promotions_prices_its_scope_at_list(impl):
    lines = [line("p1", 1, 1000, promo=800), line("p2", 1, 500, promo=400)]
    r = coupon("r", 1, off(300), products("p1"), with_promotions=False)
    # Only p1 (in r's scope) goes back to list 1000; p2 keeps 400. 1000 - 300 + 400 = 1100.
    got = impl.evaluate(lines, [r])
    check(got, payable=1100, units=[1000, 400], lines=[(300, 700), (0, 400)])
    assert got["total"] == 1400, got
    # Compared both ways: 1100 beats 800 + 400 = 1200 without the coupon.
    check(impl.best(lines, [r]), payable=1100, coupons={"r": 300})
    # A smaller one (1000 - 150 + 400 = 1250) loses to the promotion prices (1200).
    small = coupon("s", 1, off(150), products("p1"), with_promotions=False)
    check(impl.best(lines, [small]), payable=1200, coupons={}, units=[800, 400])


def test_exclusive_price_line_is_in_no_scope(impl):
    lines = [line("p1", 1, 1000, exclusive=600), line("p2", 1, 1000)]
    shop = coupon("s", 1, off(300))
    # The live-room line costs 600 and takes nothing; the shop coupon takes 300 from p2.
    check(
        impl.evaluate(lines, [shop]),
        payable=1300,
        units=[600, 1000],
        lines=[(0, 600), (300, 700)],
        shares={"s": (0, 300)},
    )
    only_p1 = coupon("o", 2, off(300), products("p1"))
    assert refused(impl, lines, [only_p1]) == {"o"}
    check(impl.best(lines, [only_p1]), payable=1600, coupons={})


# --- thresholds ------------------------------------------------------------------------------
def test_threshold_is_checked_before_any_coupon(impl):
    lines = [line("p1", 1, 1000)]
    a = coupon("a", 1, off(600))
    b = coupon("b", 2, off(100, threshold=1000))
    # b's threshold is met on 1000, though only 400 is left once a took 600.
    check(impl.evaluate(lines, [a, b]), payable=300, coupons={"a": 600, "b": 100})


def test_threshold_counts_only_the_scope_lines(impl):
    t = coupon("t", 1, off(100, threshold=1000), categories("a"))
    one = [line("p1", 1, 600, category="a"), line("p2", 1, 600, category="b")]
    assert refused(impl, one, [t]) == {"t"}  # 600 of category a < 1000
    two = [line("p1", 2, 600, category="a"), line("p2", 1, 600, category="b")]
    check(impl.evaluate(two, [t]), payable=1700, lines=[(100, 1100), (0, 600)])


def test_threshold_on_the_combinations_base_price(impl):
    lines = [line("p1", 1, 1000, promo=900)]
    b = coupon("b", 1, off(200, threshold=1000))
    c = coupon("c", 2, off(50), products("p1"), with_promotions=False)
    assert refused(impl, lines, [b]) == {"b"}  # at the promotion price 900 < 1000
    # With c, p1 is at list 1000: b's threshold is met. c (products) first: 1000 - 50 = 950,
    # then b (shop-wide): 950 - 200 = 750; better than 900 (none) or 950 (c alone).
    check(impl.evaluate(lines, [b, c]), payable=750, units=[1000], coupons={"b": 200, "c": 50})
    check(impl.best(lines, [b, c]), payable=750, coupons={"b": 200, "c": 50})


def test_discount_coupons_have_their_own_threshold(impl):
    lines = [line("p1", 1, 1000)]
    assert refused(impl, lines, [coupon("d", 1, rate(800, threshold=1001))]) == {"d"}
    check(impl.evaluate(lines, [coupon("d", 1, rate(800, threshold=1000))]), payable=800)
    # Checked before the amount-off: 1000 >= 1000; then 20 % of the 500 left = 100.
    a = coupon("a", 2, off(500))
    d = coupon("d", 1, rate(800, threshold=1000))
    check(impl.evaluate(lines, [a, d]), payable=400, coupons={"a": 500, "d": 100})


# --- step 1: fixed prices --------------------------------------------------------------------
def test_fixed_price_takes_one_unit_down_to_its_price(impl):
    lines = [line("p1", 3, 1000)]
    # An exchange at 300: one unit 1000 -> 300, 700 off; 3000 - 700 = 2300.
    check(impl.evaluate(lines, [coupon("x", 1, exchange("p1", 300))]), payable=2300)
    # A gift: one unit for 1 cent, 999 off; 3000 - 999 = 2001.
    check(impl.evaluate(lines, [coupon("g", 1, gift("p1"))]), payable=2001, coupons={"g": 999})


def test_fixed_price_above_the_unit_price_takes_nothing(impl):
    lines = [line("p1", 1, 1000)]
    x = coupon("x", 1, exchange("p1", 1200))
    assert refused(impl, lines, [x]) == {"x"}  # max(1000 - 1200, 0) = 0: spent for nothing
    check(impl.best(lines, [x]), payable=1000, coupons={})


@pytest.mark.parametrize("gift_first", [True, False])
def test_issue15_two_fixed_prices_never_share_a_unit(impl, gift_first):
    """P2 at 19900 with a held gift and an exchange at 16297: 1 cent, not 0."""
    g = coupon("g", 1 if gift_first else 2, gift("p2"))
    x = coupon("x", 2 if gift_first else 1, exchange("p2", 16297))
    one = [line("p2", 1, 19900)]
    # The lower template id takes the only unit; the other has no unit of its own.
    assert refused(impl, one, [g, x]) == {"x" if gift_first else "g"}
    check(impl.best(one, [g, x]), payable=1, coupons={"g": 19899})
    # Two units: the gift takes 19899 off one, the exchange 19900 - 16297 = 3603 off the
    # other: 39800 - 23502 = 16298.
    two = [line("p2", 2, 19900)]
    check(impl.best(two, [g, x]), payable=16298, coupons={"g": 19899, "x": 3603})


@pytest.mark.parametrize("gift_first", [True, False])
def test_fixed_prices_take_units_from_the_first_line_with_one_free(impl, gift_first):
    lines = [line("p1", 1, 1000), line("p2", 1, 500), line("p1", 1, 1000)]
    g = coupon("g", 1 if gift_first else 2, gift("p1"))
    x = coupon("x", 2 if gift_first else 1, exchange("p1", 400))
    # In template id order: the first takes p1's first line, the second p1's second line.
    first, second = ("g", "x") if gift_first else ("x", "g")
    takes = {"g": 999, "x": 600}
    shares = {first: (takes[first], 0, 0), second: (0, 0, takes[second])}
    got = impl.evaluate(lines, [g, x])
    check(got, payable=2500 - 1599, coupons=takes, shares=shares)
    # A third fixed price for p1 finds no unit left (the cart holds two).
    third = coupon("z", 3, exchange("p1", 100))
    assert refused(impl, lines, [g, x, third]) == {"z"}


def test_fixed_price_units_are_those_in_scope(impl):
    # The live-room unit of p1 is in no scope: only the second line's unit counts.
    lines = [line("p1", 1, 1000, exclusive=800), line("p1", 1, 1000)]
    g = coupon("g", 1, gift("p1"))
    check(impl.evaluate(lines, [g]), payable=800 + 1, shares={"g": (0, 999)})
    h = coupon("h", 2, gift("p1"))
    assert refused(impl, lines, [g, h]) == {"h"}
    # An exchange whose scope leaves p1 out has no line in scope.
    out = coupon("o", 3, exchange("p1", 100), categories("other"))
    assert refused(impl, [line("p1", 1, 1000, category="cups")], [out]) == {"o"}


def test_fixed_prices_come_before_amount_offs_which_split_by_amounts(impl):
    lines = [line("p1", 2, 1000), line("p2", 1, 1000)]
    x = coupon("x", 2, exchange("p1", 100))
    a = coupon("a", 1, off(600))
    # x first (step 1) whatever the ids: one p1 unit 1000 -> 100, p1 left 2000 - 900 = 1100.
    # a splits 600 by the amounts 2000 / 1000 (not what is left): 400 / 200.
    check(
        impl.evaluate(lines, [a, x]),
        payable=1500,
        lines=[(1300, 700), (200, 800)],
        shares={"x": (900, 0), "a": (400, 200)},
    )


# --- step 2: amount-offs ---------------------------------------------------------------------
def test_issue15_narrower_amount_off_first_and_split_by_amounts(impl):
    """P1, P2 at 1000; T1 1000 off shop-wide, T2 500 off P2, T3 pays 50 % on P1: 250."""
    lines = [line("P1", 1, 1000), line("P2", 1, 1000)]
    t1 = coupon("T1", 1, off(1000))
    t2 = coupon("T2", 2, off(500), products("P2"))
    t3 = coupon("T3", 3, rate(500), products("P1"))
    # T2 (products) before T1 (shop) though its id is higher: P2 1000 -> 500.
    # T1 split 500 / 500 by the lines' amounts: P1 1000 -> 500, P2 500 -> 0.
    # T3 halves the 500 left of P1: 250 off. Payable 250 (the old answer was 334).
    expected = dict(
        payable=250,
        lines=[(750, 250), (1000, 0)],
        coupons={"T1": 1000, "T2": 500, "T3": 250},
        shares={"T1": (500, 500), "T2": (0, 500), "T3": (250, 0)},
    )
    check(impl.evaluate(lines, [t1, t2, t3]), **expected)
    check(impl.best(lines, [t3, t1, t2]), **expected)


def test_amount_offs_of_one_group_in_template_id_order(impl):
    lines = [line("p1", 1, 1000)]
    a = coupon("a", 2, off(700))
    b = coupon("b", 1, off(600))
    # b (id 1) first: 600; a takes what is left: 400. Both needed for 0 (a alone: 300).
    expected = dict(payable=0, coupons={"a": 400, "b": 600})
    check(impl.evaluate(lines, [a, b]), **expected)
    check(impl.best(lines, [a, b]), **expected)
    # The same among product-scoped ones.
    a2 = coupon("a", 2, off(700), products("p1"))
    b2 = coupon("b", 1, off(600), products("p1"))
    check(impl.evaluate(lines, [a2, b2]), **expected)


def test_issue15_crediting_below_zero_follows_the_named_order(impl):
    lines = [line("p1", 1, 1000), line("p2", 1, 1000)]
    s = coupon("S", 1, off(1500))  # shop-wide, the lower id
    p = coupon("P", 2, off(800), products("p1"))
    # P first (narrower): p1 1000 -> 200. S takes at most the 1200 left: split 600 / 600 by
    # the amounts, p1 stops at zero after 200, the other 400 goes to p2: 200 + 1000.
    # Credited: P 800, S 1200 (S first would have been S 1500, P 250).
    expected = dict(
        payable=0,
        lines=[(1000, 0), (1000, 0)],
        coupons={"S": 1200, "P": 800},
        shares={"S": (200, 1000), "P": (800, 0)},
    )
    check(impl.evaluate(lines, [s, p]), **expected)
    check(impl.best(lines, [s, p]), **expected)


def test_amount_off_rest_split_again_by_amounts(impl):
    lines = [line("p1", 1, 1000), line("p2", 1, 1000), line("p3", 1, 2000)]
    p = coupon("P", 2, off(900), products("p1"))
    s = coupon("S", 1, off(2000))
    # P: p1 1000 -> 100. S: 2000 by the amounts 1000 / 1000 / 2000 -> 500 / 500 / 1000;
    # p1 stops at zero after 100; the rest 400 goes to p2, p3 by their amounts 1000 / 2000:
    # 133.33 / 266.67 -> 133 / 266 and the leftover cent to the larger remainder (p3): 267.
    # S: 100 / 633 / 1267. Lines pay 0 / 367 / 733.
    expected = dict(
        payable=1100,
        lines=[(1000, 0), (633, 367), (1267, 733)],
        coupons={"P": 900, "S": 2000},
        shares={"P": (900, 0, 0), "S": (100, 633, 1267)},
    )
    check(impl.evaluate(lines, [p, s]), **expected)
    check(impl.best(lines, [s, p]), **expected)


def test_amount_off_takes_at_most_what_is_left(impl):
    lines = [line("p1", 1, 500)]
    check(impl.evaluate(lines, [coupon("a", 1, off(800))]), payable=0, coupons={"a": 500})


def test_largest_remainder_and_equal_remainders_to_the_earlier_line(impl):
    three = [line("p1", 1, 1000), line("p2", 1, 1000), line("p3", 1, 1000)]
    # 100 / 3 = 33.33 each: the extra cent to the earliest line.
    check(
        impl.evaluate(three, [coupon("a", 1, off(100))]), payable=2900, shares={"a": (34, 33, 33)}
    )
    # 200 / 3 = 66.67 each: two extra cents, to the first two lines.
    check(
        impl.evaluate(three, [coupon("a", 1, off(200))]), payable=2800, shares={"a": (67, 67, 66)}
    )
    # 100 over 100 / 200: 33.33 / 66.67, the extra cent to the larger remainder.
    two = [line("p1", 1, 100), line("p2", 1, 200)]
    check(impl.evaluate(two, [coupon("a", 1, off(100))]), payable=200, shares={"a": (33, 67)})


# --- step 3: the discount coupon -------------------------------------------------------------
def test_discount_last_on_what_is_left_split_by_what_is_left(impl):
    lines = [line("p1", 1, 1000), line("p2", 1, 3000)]
    a = coupon("a", 2, off(1000), products("p2"))
    d = coupon("d", 1, rate(900))  # 10 % off, the lower id, still last
    # a: p2 3000 -> 2000. d: 10 % of 1000 + 2000 = 300, split 100 / 200 by what is left.
    check(
        impl.evaluate(lines, [d, a]),
        payable=2700,
        lines=[(100, 900), (1200, 1800)],
        shares={"a": (0, 1000), "d": (100, 200)},
    )


def test_discount_rounded_down_then_capped(impl):
    lines = [line("p1", 1, 999)]
    # floor(999 * 150 / 1000) = floor(149.85) = 149.
    check(impl.evaluate(lines, [coupon("d", 1, rate(850))]), payable=850, coupons={"d": 149})
    check(impl.evaluate(lines, [coupon("d", 1, rate(850, max_off=100))]), payable=899)
    # 10 % of 333 + 667 = 100, split 33.3 / 66.7 -> 33 / 67.
    two = [line("p1", 1, 333), line("p2", 1, 667)]
    check(impl.evaluate(two, [coupon("d", 1, rate(900))]), payable=900, shares={"d": (33, 67)})


def test_discount_on_nothing_left_takes_nothing(impl):
    lines = [line("p1", 1, 1000)]
    a = coupon("a", 1, off(1000))
    d = coupon("d", 2, rate(500))
    assert refused(impl, lines, [a, d]) == {"d"}
    check(impl.best(lines, [a, d]), payable=0, coupons={"a": 1000})


# --- the best combination --------------------------------------------------------------------
@pytest.mark.parametrize("small_first", [True, False])
def test_issue15_no_coupon_spent_for_nothing(impl, small_first):
    """P1 at 999, held 100 off (expiring earlier) and 6777 off: the 6777 alone, payable 0."""
    lines = [line("P1", 1, 999)]
    small = coupon("small", 1 if small_first else 2, off(100), expires=1)
    large = coupon("large", 2 if small_first else 1, off(6777), expires=2)
    check(impl.best(lines, [small, large]), payable=0, coupons={"large": 999})
    if small_first:
        # Named together they still price (100, then 899): the best never holds the spare one.
        check(impl.evaluate(lines, [small, large]), payable=0, coupons={"small": 100, "large": 899})
    else:
        # The 6777 one (lower id) takes all 999 first: the 100 one takes nothing.
        assert refused(impl, lines, [small, large]) == {"small"}


def test_a_coupon_taking_nothing_is_not_used_even_to_lift_a_threshold(impl):
    """Decision (docs/PRICING.md): a coupon that takes no cent makes a combination
    unusable, as ``evaluate`` refuses it, even where it would help another coupon."""
    lines = [line("p1", 1, 1000, promo=900)]
    b = coupon("b", 1, off(300, threshold=1000))
    # c refuses store promotions, so with it p1 is at list 1000 and b's threshold is met
    # (1000 - 300 = 700), but c itself takes max(1000 - 1000, 0) = 0: spent for nothing.
    c = coupon("c", 2, exchange("p1", 1000), with_promotions=False)
    assert refused(impl, lines, [b, c]) == {"c"}
    check(impl.best(lines, [b, c]), payable=900, coupons={})


def test_held_before_claimable_at_the_same_price(impl):
    lines = [line("p1", 1, 1000)]
    held = coupon("h", 2, off(100), stacks=False, expires=9)
    claimable = coupon("k", 1, off(100), stacks=False, claim=True, expires=1)
    check(impl.best(lines, [claimable, held]), payable=900, coupons={"h": 100})
    # The price comes first: a better coupon to claim beats a held one.
    better = coupon("b", 3, off(150), stacks=False, claim=True)
    check(impl.best(lines, [held, better]), payable=850, coupons={"b": 150})


def test_earliest_expiry_then_fewer_coupons(impl):
    lines = [line("p1", 1, 1000)]
    # {a, b} and {c} both pay 500; a expires first, so {a, b} wins before "fewer coupons".
    a = coupon("a", 1, off(300), expires=1)
    b = coupon("b", 2, off(200))
    c = coupon("c", 3, off(500), stacks=False, expires=5)
    check(impl.best(lines, [a, b, c]), payable=500, coupons={"a": 300, "b": 200})
    # With no expiry to choose by, fewer coupons: {c}.
    a = coupon("a", 1, off(300), expires=5)
    check(impl.best(lines, [a, b, c]), payable=500, coupons={"c": 500})


def test_a_dated_coupon_before_one_that_never_expires(impl):
    lines = [line("p1", 1, 1000)]
    never = coupon("n", 1, off(100), stacks=False)
    dated = coupon("d", 2, off(100), stacks=False, expires=60 * 24 * 30)
    check(impl.best(lines, [never, dated]), payable=900, coupons={"d": 100})


def test_lower_template_ids_then_the_coupon_of_a_template(impl):
    lines = [line("p1", 1, 1000)]
    high = coupon("a", 5, off(100), stacks=False)
    low = coupon("b", 3, off(100), stacks=False)
    check(impl.best(lines, [high, low]), payable=900, coupons={"b": 100})
    # Pairs that pay the same: (1, 2) before (1, 4) and (2, 4), element by element.
    two = [line("p1", 1, 200)]
    pair = [coupon(f"t{t}", t, off(100)) for t in (4, 2, 1)]
    check(impl.best(two, pair), payable=0, coupons={"t1": 100, "t2": 100})
    # Two coupons of one template, alike but for the key: the lower key.
    twins = [coupon("z", 7, off(100)), coupon("y", 7, off(100))]
    check(impl.best(lines, twins), payable=900, coupons={"y": 100})
    # ... and the earlier expiring one before the key.
    twins = [coupon("z", 7, off(100), expires=1), coupon("y", 7, off(100), expires=2)]
    check(impl.best(lines, twins), payable=900, coupons={"z": 100})


def test_wallet_room_limits_the_coupons_to_claim(impl):
    lines = [line("p1", 1, 1000)]
    k1 = coupon("k1", 1, off(100), claim=True)
    k2 = coupon("k2", 2, off(200), claim=True)
    held = coupon("h", 3, off(50))
    check(impl.best(lines, [k1, k2, held]), payable=650, coupons={"k1": 100, "k2": 200, "h": 50})
    check(impl.best(lines, [k1, k2, held], 2), payable=650)
    check(impl.best(lines, [k1, k2, held], 1), payable=750, coupons={"k2": 200, "h": 50})
    check(impl.best(lines, [k1, k2, held], 0), payable=950, coupons={"h": 50})


def test_stacking_rules():
    single = coupon("a", 1, off(100), stacks=False)
    stackable = coupon("b", 2, off(100))
    same_template = coupon("c", 2, off(100))
    d1, d2 = coupon("d1", 3, rate(900)), coupon("d2", 4, rate(800))
    fixed = coupon("x", 5, gift("p1"))
    for allowed in (engine.allowed, oracle.stacking_ok):
        assert allowed([]) and allowed([single]) and allowed([d1])
        assert not allowed([single, stackable])
        assert not allowed([stackable, same_template])
        assert not allowed([d1, d2])
        assert allowed([stackable, d1, fixed])


def test_non_stackable_coupons_do_not_combine(impl):
    lines = [line("p1", 1, 1000)]
    a = coupon("a", 1, off(100), stacks=False)
    b = coupon("b", 2, off(200))
    c = coupon("c", 3, off(250))
    # a cannot join b and c (450 together); b + c beat a alone.
    check(impl.best(lines, [a, b, c]), payable=550, coupons={"b": 200, "c": 250})
    big = coupon("a", 1, off(500), stacks=False)
    check(impl.best(lines, [big, b, c]), payable=500, coupons={"a": 500})


# --- the oracle's own pieces ------------------------------------------------------------------
def test_oracle_split_by_largest_remainder():
    assert oracle.split(100, [1, 1, 1]) == [34, 33, 33]
    assert oracle.split(5000, [10000, 14000, 6001]) == [1667, 2333, 1000]
    assert oracle.split(7, [0, 5, 5]) == [0, 4, 3]
    assert oracle.split(0, [3, 4]) == [0, 0]
    assert oracle.split(3, [0, 0]) == [0, 0]


def test_oracle_take_amount_off_rounds():
    left = [100, 1000, 2000]
    took = oracle.take_amount_off(2000, [0, 1, 2], [1000, 1000, 2000], left)
    assert took == {0: 100, 1: 633, 2: 1267} and left == [0, 367, 733]
    left = [5, 0, 10]
    # At most what is left (15); round 1 over all scope lines by amounts 10 / 10 / 10:
    # 5 / 5 / 5 -> 5, 0, 5; the rest 5 goes to the only line with something left.
    took = oracle.take_amount_off(20, [0, 1, 2], [10, 10, 10], left)
    assert took == {0: 5, 1: 0, 2: 10} and left == [0, 0, 0]


def test_oracle_counts_what_it_tried():
    lines = [line("p1", 1, 999)]
    found = oracle.best(lines, [coupon("s", 1, off(100)), coupon("l", 2, off(6777))])
    # usable: {}, {s}, {l}, {s, l}; minimal: all but {s, l} (dropping s still pays 0).
    assert (found.usable, found.minimal) == (4, 3)
    assert [c.key for c in found.combo] == ["l"]


# === (a), (b), (c): random carts against the oracle ==========================================
POOL = ["p1", "p2", "p3"]
CATEGORIES = ["a", "b", "a", "b", "c"]  # "c": a category no product has


@st.composite
def carts(draw: st.DrawFn) -> list[Line]:
    """1-4 lines; products share categories, a product may be on two lines (same prices)."""
    catalog: dict[str, tuple[int, int | None, str | None]] = {}
    for product_id in POOL:
        list_price = draw(st.integers(1, 2000))
        promo = draw(st.one_of(st.none(), st.integers(1, list_price)))
        category = draw(st.sampled_from(["a", "b", "a", "b", None]))
        catalog[product_id] = (list_price, promo, category)
    result = []
    for _ in range(draw(st.integers(1, 4))):
        product_id = draw(st.sampled_from(POOL))
        list_price, promo, category = catalog[product_id]
        live = draw(st.sampled_from([False] * 7 + [True]))  # a live-room line, now and then
        exclusive = draw(st.integers(1, list_price)) if live else None
        quantity = draw(st.integers(1, 3))
        result.append(Line(product_id, quantity, list_price, promo, category, exclusive))
    return result


def benefits(products_to_name: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    amounts = st.integers(1, 2000)
    thresholds = st.integers(0, 3000)
    permille = st.one_of(st.integers(1, 999), st.sampled_from([1, 500, 800, 900, 999]))
    optional = lambda values: st.one_of(st.none(), values)  # noqa: E731
    named = st.sampled_from(products_to_name)
    return st.one_of(
        st.builds(off, amounts, thresholds),
        st.builds(off, amounts),
        st.builds(rate, permille, optional(thresholds), optional(st.integers(1, 1500))),
        st.builds(exchange, named, st.integers(0, 2000)),
        st.builds(gift, named),
    )


def scopes(products_to_name: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.just(SHOP),
        st.builds(
            lambda ids: products(*ids),
            st.lists(st.sampled_from(products_to_name), min_size=1, max_size=3, unique=True),
        ),
        st.builds(
            lambda names: categories(*names),
            st.lists(st.sampled_from(CATEGORIES), min_size=1, max_size=2, unique=True),
        ),
    )


@st.composite
def candidate_lists(draw: st.DrawFn, lines: Sequence[Line] = ()) -> list[Candidate]:
    """0-8 candidates; coupons of one template share its benefit, scope and stacking.

    Products the coupons name are mostly the cart's (so that most coupons have a line in
    scope), sometimes any of the pool's.
    """
    in_cart = sorted({line.product_id for line in lines})
    products_to_name = [*in_cart, *in_cart, *POOL] if in_cart else POOL
    template_ids = draw(st.lists(st.integers(1, 9), min_size=1, max_size=6, unique=True))
    all_stack = draw(st.booleans())  # half the cases: every template stacks
    templates = {
        template_id: (
            draw(benefits(products_to_name)),
            draw(scopes(products_to_name)),
            draw(st.sampled_from([True, True, False])),  # with_store_promotions
            all_stack or draw(st.sampled_from([True, True, True, False])),  # with_other_coupons
        )
        for template_id in template_ids
    }
    result = []
    for i in range(draw(st.one_of(st.integers(0, 8), st.integers(4, 8)))):
        template_id = draw(st.sampled_from(template_ids))
        benefit, scope, with_promotions, stacks = templates[template_id]
        claim = draw(st.booleans())
        expires = draw(st.one_of(st.none(), st.integers(0, 3)))
        result.append(
            Candidate(
                key=f"k{i}",
                template_id=template_id,
                benefit=benefit,
                scope=scope,
                with_store_promotions=with_promotions,
                with_other_coupons=stacks,
                needs_claim=claim,
                coupon_id=None if claim else 1000 + i,
                expires_at=None if expires is None else NOW + timedelta(minutes=expires),
            )
        )
    return result


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[Line], list[Candidate]]:
    """A random cart and random candidates for it."""
    lines = draw(carts())
    return lines, draw(candidate_lists(lines))


def max_claims() -> st.SearchStrategy[int | None]:
    return st.one_of(st.none(), st.none(), st.integers(0, 2))


def assert_same(got: dict[str, Any], expected: dict[str, Any]) -> None:
    """Equal payable, chosen coupons, lines, per-coupon discounts and shares (in that order)."""
    assert got["payable"] == expected["payable"], (got, expected)
    assert set(got["coupons"]) == set(expected["coupons"]), (got, expected)
    assert got["lines"] == expected["lines"], (got, expected)
    assert got["coupons"] == expected["coupons"], (got, expected)
    assert got["shares"] == expected["shares"], (got, expected)
    assert (got["total"], got["discount"]) == (expected["total"], expected["discount"])


def assert_consistent(quote: Any, lines: Sequence[Line]) -> None:
    """(c): what holds for any quote."""
    assert len(quote.lines) == len(lines)
    for i, row in enumerate(quote.lines):
        assert row.amount == row.unit_price * row.quantity, row
        assert 0 <= row.discount <= row.amount and row.payable == row.amount - row.discount, row
        taken = sum(applied.shares[i] for applied in quote.coupons)
        assert taken == row.discount, (i, quote)
    for applied in quote.coupons:
        assert len(applied.shares) == len(lines), applied
        assert all(share >= 0 for share in applied.shares), applied
        assert sum(applied.shares) == applied.discount > 0, applied
    assert quote.total == sum(row.amount for row in quote.lines), quote
    assert quote.discount == sum(row.discount for row in quote.lines), quote
    assert quote.discount == sum(applied.discount for applied in quote.coupons), quote
    assert quote.payable == quote.total - quote.discount >= 0, quote


# --- (a) best_quote against the brute force --------------------------------------------------
@PROPERTY
@given(cases(), max_claims())
def test_best_quote_equals_the_brute_force(case, max_to_claim):
    lines, candidates = case
    note(f"lines = {lines!r}\ncandidates = {candidates!r}")
    expected = oracle.best(lines, candidates, max_to_claim)
    quote = engine_best(lines, candidates, max_to_claim)
    assert_same(view(quote), view(expected.quote))


# --- (b) evaluate against the oracle's pricing -----------------------------------------------
def allowed_subset(candidates: Sequence[Candidate], picks: Sequence[int]) -> list[Candidate]:
    """The picked candidates, keeping each only while the stacking rules still allow it."""
    combo: list[Candidate] = []
    for i in picks:
        if oracle.stacking_ok([*combo, candidates[i]]):
            combo.append(candidates[i])
    return combo


@PROPERTY
@given(cases(), st.data())
def test_evaluate_equals_the_oracle(case, data):
    lines, candidates = case
    note(f"lines = {lines!r}\ncandidates = {candidates!r}")
    picks = data.draw(st.permutations(range(len(candidates))))
    combo = allowed_subset(candidates, picks[: data.draw(st.integers(0, len(candidates)))])
    note(f"combo = {[c.key for c in combo]}")
    assert engine.allowed(combo)
    priced = oracle.price(lines, combo)
    if priced.usable:
        assert_same(view(engine.evaluate(lines, combo)), view(priced.quote))
    else:
        with pytest.raises(NotApplicable) as caught:
            engine.evaluate(lines, combo)
        assert refusal_key(caught.value) in priced.problems, (caught.value, priced.problems)


@PROPERTY
@given(candidate_lists(), st.data())
def test_allowed_equals_the_stacking_rules(candidates, data):
    combo = (
        data.draw(st.lists(st.sampled_from(candidates), unique_by=lambda c: c.key))
        if candidates
        else []
    )
    assert engine.allowed(combo) == oracle.stacking_ok(combo)


# --- (c) what holds regardless --------------------------------------------------------------
@PROPERTY
@given(cases(), max_claims())
def test_best_quote_adds_up(case, max_to_claim):
    lines, candidates = case
    note(f"lines = {lines!r}\ncandidates = {candidates!r}")
    quote = engine_best(lines, candidates, max_to_claim)
    assert_consistent(quote, lines)
    assert engine.allowed([applied.candidate for applied in quote.coupons])
    assert quote.payable <= engine.evaluate(lines, []).payable
    if max_to_claim is not None:
        claims = sum(1 for applied in quote.coupons if applied.candidate.needs_claim)
        assert claims <= max_to_claim, quote


@PROPERTY
@given(cases(), st.data())
def test_evaluate_adds_up(case, data):
    lines, candidates = case
    note(f"lines = {lines!r}\ncandidates = {candidates!r}")
    picks = data.draw(st.permutations(range(len(candidates))))
    combo = allowed_subset(candidates, picks[: data.draw(st.integers(0, len(candidates)))])
    try:
        quote = engine.evaluate(lines, combo)
    except NotApplicable:
        return
    assert_consistent(quote, lines)


@PROPERTY
@given(cases(), max_claims())
def test_the_oracle_adds_up(case, max_to_claim):
    """The oracle on its own: consistent, and its best is at least as good as any usable one."""
    lines, candidates = case
    note(f"lines = {lines!r}\ncandidates = {candidates!r}")
    found = oracle.best(lines, candidates, max_to_claim)
    assert_consistent(found.quote, lines)
    assert oracle.stacking_ok(found.combo)
    no_coupon = oracle.price(lines, []).quote
    assert no_coupon is not None and found.quote.payable <= no_coupon.payable
    for candidate in candidates:
        single = oracle.price(lines, [candidate]).quote
        if single is not None and (max_to_claim is None or max_to_claim >= candidate.needs_claim):
            assert found.quote.payable <= single.payable
