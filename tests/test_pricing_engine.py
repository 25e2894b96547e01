"""The pure price engine: exact examples, and properties against a brute force."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from bff.pricing import engine
from bff.pricing.engine import (
    Candidate,
    Line,
    QuoteMemo,
    apportion,
    best_quote,
    evaluate,
)
from tests import pricing_oracle as oracle
from tests.test_pricing_rules import candidate_lists, carts

NOW = datetime(2026, 11, 20, tzinfo=UTC)
SHOP = {"type": "shop"}


def coupon(
    key, benefit, *, template=None, scope=SHOP, stack=False, promo=True, claim=False, days=7
):
    return Candidate(
        key=key,
        template_id=template if template is not None else hash(key) % 10_000,
        benefit=benefit,
        scope=scope,
        with_store_promotions=promo,
        with_other_coupons=stack,
        needs_claim=claim,
        coupon_id=None if claim else abs(hash(key)) % 10_000,
        expires_at=NOW + timedelta(days=days),
    )


def off(amount, threshold=None):
    if threshold is None:
        return {"type": "no_threshold", "amount_off": amount}
    return {"type": "threshold", "amount_off": amount, "threshold": threshold}


def test_threshold_met_and_not_met():
    lines = [Line("p1", 1, 30000)]
    assert best_quote(lines, [coupon("a", off(5000, 29900))]).payable == 25000
    assert best_quote([Line("p1", 1, 29800)], [coupon("a", off(5000, 29900))]).payable == 29800


def test_discount_with_cap():
    lines = [Line("p1", 2, 10000)]
    rate = {"type": "discount", "rate_permille": 800}
    assert best_quote(lines, [coupon("d", rate)]).payable == 16000
    capped = {**rate, "max_off": 1000}
    assert best_quote(lines, [coupon("d", capped)]).payable == 19000


def test_store_promotion_exclusion_compared_both_ways():
    lines = [Line("p1", 1, 10000, promo_price=8000)]
    refuses = coupon("r", off(1500), promo=False)
    # 10000 - 1500 = 8500 is worse than the promotion alone (8000): keep the promotion.
    quote = best_quote(lines, [refuses])
    assert quote.payable == 8000 and quote.coupons == ()
    bigger = coupon("r", off(2500), promo=False)
    quote = best_quote(lines, [bigger])
    assert quote.payable == 7500 and quote.lines[0].unit_price == 10000


def test_two_stackable_coupons_sum_and_best_single_among_non_stackables():
    lines = [Line("p1", 1, 20000)]
    a, b = coupon("a", off(1000), stack=True), coupon("b", off(2000), stack=True)
    assert best_quote(lines, [a, b]).payable == 17000
    c, d = coupon("c", off(1000)), coupon("d", off(2500))
    quote = best_quote(lines, [c, d])
    assert quote.payable == 17500 and [x.candidate.key for x in quote.coupons] == ["d"]


def test_discount_applies_after_amount_off():
    lines = [Line("p1", 1, 10000)]
    amount = coupon("a", off(2000), stack=True)
    rate = coupon("d", {"type": "discount", "rate_permille": 900}, stack=True)
    quote = best_quote(lines, [amount, rate])
    assert quote.payable == 7200  # (10000 - 2000) * 0.9


def test_one_discount_and_one_per_template():
    lines = [Line("p1", 1, 10000)]
    d1 = coupon("d1", {"type": "discount", "rate_permille": 900}, stack=True)
    d2 = coupon("d2", {"type": "discount", "rate_permille": 800}, stack=True)
    assert best_quote(lines, [d1, d2]).payable == 8000
    same1 = coupon("s1", off(1000), template=7, stack=True)
    same2 = coupon("s2", off(1000), template=7, stack=True)
    assert best_quote(lines, [same1, same2]).payable == 9000


def test_tie_breaks_held_then_expiry_then_fewer():
    lines = [Line("p1", 1, 10000)]
    held = coupon("held", off(1000), days=9)
    to_claim = coupon("claim", off(1000), claim=True, days=1)
    assert best_quote(lines, [to_claim, held]).coupons[0].candidate.key == "held"
    early = coupon("early", off(1000), days=1)
    late = coupon("late", off(1000), days=9)
    assert best_quote(lines, [late, early]).coupons[0].candidate.key == "early"


def test_nothing_below_zero_and_gift_at_one_cent():
    lines = [Line("p1", 1, 500)]
    quote = best_quote(lines, [coupon("big", off(2000))])
    assert quote.payable == 0 and quote.discount == 500
    gift = coupon("g", {"type": "gift", "product_id": "gift-1"})
    quote = best_quote([Line("p1", 1, 5000), Line("gift-1", 1, 3000)], [gift])
    assert quote.lines[1].payable == 1 and quote.payable == 5001


def test_exchange_prices_one_unit():
    exchange = coupon("x", {"type": "exchange", "product_id": "p1", "price": 990})
    quote = best_quote([Line("p1", 2, 3000)], [exchange])
    assert quote.payable == 3000 + 990


def test_three_line_apportionment_sums_exactly():
    lines = [Line("a", 1, 3333), Line("b", 2, 1111), Line("c", 1, 5555)]
    quote = evaluate(lines, [coupon("x", off(1001))])
    # 1001 x (3333, 2222, 5555) / 11110 = 300.3, 200.2, 500.5: the spare cent goes to .5
    assert [line.discount for line in quote.lines] == [300, 200, 501]
    assert sum(line.discount for line in quote.lines) == 1001


def test_live_lines_take_no_coupon():
    lines = [Line("p1", 1, 10000, exclusive_price=6000)]
    quote = best_quote(lines, [coupon("a", off(1000))])
    assert quote.payable == 6000 and quote.coupons == ()


# --- properties ----------------------------------------------------------------------------
# The engine against a brute force written from DOMAIN.md: tests/test_pricing_rules.py.
@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=20), st.data())
def test_apportion_is_exact_and_never_exceeds_a_weight(weights, data):
    total = data.draw(st.integers(0, sum(weights)))
    shares = apportion(total, weights)
    assert sum(shares) == total
    assert all(0 <= share <= weight for share, weight in zip(shares, weights, strict=True))


def test_which_coupon_stands_for_a_template_does_not_change_the_price():
    """Found by a 20,000-example run: same-template coupons were ordered by their keys."""
    lines = [
        Line("p0", 2, 4, None, "c2"),
        Line("p1", 1, 1, None, "c1"),
        Line("p2", 1, 1, None, "c1"),
        Line("p3", 1, 1, None, "c2"),
    ]
    c2 = {"type": "categories", "categories": ["c2"]}
    p01 = {"type": "products", "product_ids": ["p0", "p1"]}
    candidates = [
        coupon("k0", off(4, 5), template=2, scope=c2, stack=True, promo=False, days=1),
        coupon("k1", off(2, 3), template=0, scope=p01, stack=True, promo=False, days=1),
        coupon("k2", off(2, 3), template=0, scope=p01, stack=True, promo=False, days=1),
        coupon("k3", off(4, 5), template=2, scope=c2, stack=True, promo=False, days=1),
        coupon(
            "k4",
            {"type": "discount", "rate_permille": 1},
            template=4,
            scope=p01,
            stack=True,
            promo=False,
            days=1,
        ),
    ]
    # 3 under the split by the lines' amounts (DOMAIN.md step 2); the old split by what
    # was left gave 2.
    assert (
        best_quote(lines, candidates).payable == oracle.best(lines, candidates).quote.payable == 3
    )


# --- the cut walk on many stacking coupons --------------------------------------------------
@st.composite
def many_stacking(draw):
    """9-12 stacking coupons on 1-2 lines: walks that the bound cuts (over SMALL_WALK)."""
    lines = [
        Line(f"p{i}", draw(st.integers(1, 2)), draw(st.integers(100, 3000)), None, "c1")
        for i in range(draw(st.integers(1, 2)))
    ]
    candidates = []
    for i in range(draw(st.integers(9, 12))):
        kind = draw(st.sampled_from(["off", "off", "threshold", "discount"]))
        if kind == "off":
            benefit = off(draw(st.integers(1, 800)))
        elif kind == "threshold":
            benefit = off(draw(st.integers(1, 800)), draw(st.integers(100, 4000)))
        else:
            benefit = {"type": "discount", "rate_permille": draw(st.integers(100, 999))}
            if draw(st.booleans()):
                benefit["max_off"] = draw(st.integers(1, 1000))
        candidates.append(
            coupon(
                f"k{i}",
                benefit,
                template=i,
                stack=True,
                promo=draw(st.booleans()),
                claim=draw(st.booleans()),
                days=draw(st.integers(1, 9)),
            )
        )
    return lines, candidates


@settings(
    max_examples=int(os.environ.get("PRICING_EXAMPLES", "300")) // 6,
    deadline=None,
    derandomize=True,
)
@given(many_stacking())
def test_the_cut_walk_equals_the_oracle_on_many_stacking_coupons(case):
    lines, candidates = case
    expected = oracle.best(lines, candidates)
    quote = best_quote(lines, candidates)
    assert quote.payable == expected.quote.payable
    assert {a.candidate.key for a in quote.coupons} == {c.key for c in expected.combo}


# --- one coupon alone, without the splits -----------------------------------------------------
@settings(
    max_examples=int(os.environ.get("PRICING_EXAMPLES", "300")),
    deadline=None,
    derandomize=True,
)
@given(st.data())
def test_one_coupon_alone_pays_what_applying_it_leaves(data):
    """engine._alone (the closed form best_quote prices each coupon alone with) equals
    applying the coupon with its splits (engine._run), on every line of every cart."""
    lines = data.draw(carts())
    base = engine._Prices(lines, frozenset())
    for candidate in data.draw(candidate_lists(lines)):
        coupon = engine._prepare(candidate, lines)
        run = engine._run(lines, [coupon], strict=False)
        assert engine._alone(lines, base, coupon) == (None if run is None else sum(run[1]))


# --- the memo of best quotes by shape -----------------------------------------------------------
def _quote_facts(quote):
    return (
        quote.payable,
        quote.total,
        quote.lines,
        [(a.candidate.key, a.candidate.coupon_id, a.discount, a.shares) for a in quote.coupons],
    )


@settings(
    max_examples=int(os.environ.get("PRICING_EXAMPLES", "300")),
    deadline=None,
    derandomize=True,
)
@given(st.data())
def test_a_remembered_quote_is_the_quote_the_engine_finds(data):
    """Another shopper's coupons of the same templates (the benefit and scope objects
    shared, as the shop's specs are): new keys and coupon ids, and expiries moved
    together or drawn anew. With the memo the answer is what the engine finds without
    it, every time."""
    lines = data.draw(carts())
    candidates = data.draw(candidate_lists(lines))
    room = data.draw(st.one_of(st.none(), st.integers(0, 3)))
    # "same": every expiry moved by the same time (the same shape: the memo answers);
    # "near": the same keys, some coupons still to claim or not, expiries drawn anew
    # (some shapes equal by chance, most not); "other": keys drawn anew as well.
    mode = data.draw(st.sampled_from(["same", "near", "other"]))
    twin = []
    for n, candidate in enumerate(candidates):
        needs_claim = candidate.needs_claim
        if mode == "same":
            expires = candidate.expires_at and candidate.expires_at + timedelta(days=17)
        else:
            days = data.draw(st.one_of(st.none(), st.integers(0, 3)))
            expires = None if days is None else NOW + timedelta(minutes=days)
            if data.draw(st.integers(0, 3)) == 0:
                needs_claim = not needs_claim
        key = "z" + candidate.key if mode != "other" else f"o{data.draw(st.integers(0, 99))}-{n}"
        twin.append(
            replace(
                candidate,
                key=key,
                needs_claim=needs_claim,
                coupon_id=None if needs_claim else 10_000 + n,
                expires_at=expires,
            )
        )
    memo = QuoteMemo(entries=8)
    first = best_quote(lines, candidates, max_to_claim=room, memo=memo)
    assert _quote_facts(first) == _quote_facts(best_quote(lines, candidates, max_to_claim=room))
    if mode != "same":  # the wallet's room may differ too
        room = data.draw(st.one_of(st.none(), st.integers(0, 3)))
    second = best_quote(lines, twin, max_to_claim=room, memo=memo)
    assert _quote_facts(second) == _quote_facts(best_quote(lines, twin, max_to_claim=room))
    if mode == "same":
        assert memo.hits == 1


def test_the_memo_keeps_at_most_its_entries():
    memo = QuoteMemo(entries=3)
    for n in range(10):
        line = Line(f"p{n}", 1, 1000)
        best_quote([line], [coupon("a", off(100))], memo=memo)
    assert len(memo) == 3 and memo.misses == 10
    best_quote(
        [Line("p9", 1, 1000)], [coupon("b", off(100), template=hash("a") % 10_000)], memo=memo
    )
    assert memo.hits == 0  # another benefit object: another shape
    # Bounded in bytes too (an estimate per entry): the oldest go first.
    small = QuoteMemo(entries=100, max_bytes=3 * engine.entry_bytes(1, 1))
    held = [coupon("a", off(100))]
    for n in range(10):
        best_quote([Line(f"p{n}", 1, 1000)], held, memo=small)
    assert len(small) == 3 and small.bytes == 3 * engine.entry_bytes(1, 1)
    best_quote([Line("p9", 1, 1000)], held, memo=small)
    best_quote([Line("p0", 1, 1000)], held, memo=small)
    assert small.hits == 1  # the newest stayed, the oldest went


@settings(
    max_examples=int(os.environ.get("PRICING_EXAMPLES", "300")) // 3,
    deadline=None,
    derandomize=True,
)
@given(st.data())
def test_many_shoppers_through_one_memo_get_the_engines_answers(data):
    """Requests from a small space (two carts, four templates whose spec objects every
    request shares, coupons held or to claim, few expiries, a few wallet rooms), so
    that shapes meet often: every answer through one memo is the engine's own."""
    carts_ = [data.draw(carts()) for _ in range(2)]
    pool = data.draw(candidate_lists(carts_[0]))
    templates = {c.template_id: c for c in pool}
    if not templates:
        return
    memo = QuoteMemo(entries=64)
    for n in range(30):
        lines = carts_[data.draw(st.integers(0, 1))]
        room = data.draw(st.sampled_from([None, 0, 1, 2]))
        chosen = data.draw(st.lists(st.sampled_from(sorted(templates)), min_size=1, max_size=6))
        candidates = []
        for k, template_id in enumerate(chosen):
            needs_claim = data.draw(st.booleans())
            minutes = data.draw(st.sampled_from([None, 0, 1, 2]))
            candidates.append(
                replace(
                    templates[template_id],
                    key=f"r{n}-{k}",
                    needs_claim=needs_claim,
                    coupon_id=None if needs_claim else 100 * n + k,
                    expires_at=None if minutes is None else NOW + timedelta(minutes=minutes),
                )
            )
        got = best_quote(lines, candidates, max_to_claim=room, memo=memo)
        assert _quote_facts(got) == _quote_facts(best_quote(lines, candidates, max_to_claim=room))


def test_the_memo_tells_coupons_to_claim_and_the_wallets_room_apart():
    """Shapes that differ only in what random requests rarely meet: which coupons are
    still to claim (fewer to claim wins a tie), and the wallet's room."""
    memo = QuoteMemo()
    lines = [Line("p1", 1, 1000)]
    a, b, c = off(100), off(100), off(200)

    def request(claim: bool, room: int | None = None) -> set[int]:
        candidates = [
            coupon("a", a, template=1, stack=True, claim=claim, days=1),
            coupon("b", b, template=2, stack=True, claim=claim, days=1),
            coupon("c", c, template=3, claim=claim, days=2),
        ]
        quote = best_quote(lines, candidates, max_to_claim=room, memo=memo)
        assert _quote_facts(quote) == _quote_facts(best_quote(lines, candidates, max_to_claim=room))
        return {applied.candidate.template_id for applied in quote.coupons}

    # A + B and C both pay 800: held, the earlier expiry wins; to claim, fewer to claim.
    assert request(claim=False) == {1, 2}
    assert request(claim=True) == {3}
    # Room for one coupon to claim: C alone, whatever was remembered with more room.
    assert request(claim=True, room=5) == {3}
    memo.clear()
    stacking = [
        coupon(k, off(100 * n), template=n, stack=True, claim=True) for n, k in ((1, "x"), (2, "y"))
    ]
    both = best_quote(lines, stacking, max_to_claim=2, memo=memo)
    one = best_quote(lines, stacking, max_to_claim=1, memo=memo)
    assert both.payable == 700 and one.payable == 800
