"""Pure cores of points: the policy, offer windows and states, and the [points] settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bff.errors import ApiError
from bff.points.policy import (
    OFFER_STATES,
    Policy,
    StoreCoupon,
    beats,
    discount_at,
    is_store_coupon,
    min_amount_off,
    offer_state,
    offer_window,
)
from config.loader import ConfigError, PointsSettings, load_settings

STORE_299_50 = StoreCoupon(id=1, name="满299减50", amount_off=5000, threshold=29900)
NOW = datetime(2026, 11, 20, 4, 0, tzinfo=UTC)


def threshold(amount_off: int, at: int) -> dict[str, Any]:
    return {"type": "threshold", "amount_off": amount_off, "threshold": at}


def policy(**changes: Any) -> Policy:
    return Policy(PointsSettings(**changes))


# --- the platform's example ------------------------------------------------------------------
def test_store_299_50_needs_at_least_299_55():
    check = policy().check_offer
    lost = check(threshold(5000, 29900), [STORE_299_50])
    assert lost is not None and lost.rule == "stronger_than_store_coupons"
    assert lost.details["store_coupon"]["id"] == 1
    assert check(threshold(5500, 29900), [STORE_299_50]) is None


def test_equal_ratio_is_not_stronger():
    # 598-100 is exactly 299-50's ratio: refused (strictly stronger); 598-150 passes
    assert not beats(threshold(10000, 59800), STORE_299_50)
    assert policy().check_offer(threshold(15000, 59800), [STORE_299_50]) is None


def test_violation_error_shape():
    error = policy().check_offer(threshold(5000, 29900), [STORE_299_50]).error()
    assert (error.status, error.code) == (400, "POLICY_VIOLATION")
    assert error.details["rule"] == "stronger_than_store_coupons"
    assert error.details["store_coupon"] == {
        "id": 1,
        "name": "满299减50",
        "amount_off": 5000,
        "threshold": 29900,
    }
    assert error.details["min_amount_off"] == 5001


def test_no_store_coupons_means_no_strength_violation():
    assert policy().check_offer(threshold(500, 100000), []) is None


# --- benefits other than 满减 ---------------------------------------------------------------
def test_no_threshold_compares_on_an_order_at_the_store_threshold():
    assert not beats({"type": "no_threshold", "amount_off": 5000}, STORE_299_50)
    assert beats({"type": "no_threshold", "amount_off": 5500}, STORE_299_50)
    assert min_amount_off({"type": "no_threshold", "amount_off": 1}, [STORE_299_50]) == 5001


def test_discount_compares_on_an_order_at_the_store_threshold():
    # 80% of 299 takes 59.80 off: stronger than 50
    assert beats({"type": "discount", "rate_permille": 800}, STORE_299_50)
    # capped at 40: weaker
    assert not beats({"type": "discount", "rate_permille": 800, "max_off": 4000}, STORE_299_50)
    # its own threshold above 299 takes nothing off a 299 order: refused
    assert not beats({"type": "discount", "rate_permille": 500, "threshold": 30000}, STORE_299_50)


def test_exchange_benefit_cannot_be_shown_stronger():
    benefit = {"type": "exchange", "product_id": "p1", "price": 100}
    assert discount_at(benefit, 29900) is None
    assert not beats(benefit, STORE_299_50)
    loose = policy(points_denomination_rule=False)
    assert loose.check_offer(benefit, []) is None
    assert loose.check_offer(benefit, [STORE_299_50]).rule == "stronger_than_store_coupons"


# --- denominations ---------------------------------------------------------------------------
@pytest.mark.parametrize("yuan", [5, 10, 20, 25, 30, 40, 50, 55, 60, 70, 80, 100, 150, 200, 1000])
def test_points_denominations_accepted(yuan):
    assert policy().check_offer(threshold(yuan * 100, 10**7), []) is None


@pytest.mark.parametrize("amount_off", [100, 300, 4500, 5050, 1001, 2000 * 100])
def test_points_denominations_refused(amount_off):
    violation = policy().check_offer(threshold(amount_off, 10**7), [])
    assert violation is not None and violation.rule == "points_denomination"
    assert violation.details["amount_off"] == amount_off


def test_denomination_comes_before_strength():
    violation = policy().check_offer(threshold(4500, 29900), [STORE_299_50])
    assert violation.rule == "points_denomination"


def test_rules_can_be_turned_off():
    off = policy(points_denomination_rule=False, strength_rule=False)
    assert off.check_offer(threshold(4501, 29900), [STORE_299_50]) is None
    assert off.check_offer({"type": "discount", "rate_permille": 900}, [STORE_299_50]) is None


def _template(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "benefit": threshold(4500, 29900),
        "claim_methods": ["widget"],
        "scope": {"type": "shop"},
    }
    data.update(overrides)
    return data


def test_free_denomination_rule_is_off_by_default():
    assert policy().check_free_template(_template()) is None


def test_free_denomination_rule_when_on():
    on = policy(free_denomination_rule=True)
    assert on.check_free_template(_template()).rule == "free_denomination"
    assert on.check_free_template(_template(benefit=threshold(5000, 29900))) is None
    assert on.check_free_template(_template(claim_methods=["points"])) is None
    assert (
        on.check_free_template(_template(scope={"type": "categories", "categories": ["c"]})) is None
    )
    assert on.check_free_template(_template(claim_methods=["gift_pack"])) is not None
    with pytest.raises(ApiError) as raised:
        on.raise_free_template(_template())
    assert raised.value.code == "POLICY_VIOLATION"


def test_store_coupon_is_free_shop_threshold():
    spec = _template()
    assert is_store_coupon(spec)
    assert not is_store_coupon(_template(claim_methods=["points"]))
    assert not is_store_coupon(_template(scope={"type": "products", "product_ids": ["p"]}))
    assert not is_store_coupon(_template(benefit={"type": "no_threshold", "amount_off": 500}))
    assert is_store_coupon(_template(claim_methods=["points", "auto"]))


# --- properties ------------------------------------------------------------------------------
stores = st.lists(
    st.builds(
        lambda n, a, extra: StoreCoupon(id=n, name=f"s{n}", amount_off=a, threshold=a + extra),
        st.integers(1, 1000),
        st.integers(1, 100_000),
        st.integers(1, 1_000_000),
    ),
    min_size=1,
    max_size=6,
)


@given(stores, st.integers(1, 1_000_000), st.integers(1, 1_000_000))
def test_threshold_strength_is_the_exact_ratio(found, amount_off, extra):
    benefit = threshold(amount_off, amount_off + extra)
    ratio = Fraction(amount_off, amount_off + extra)
    for store in found:
        assert beats(benefit, store) == (ratio > Fraction(store.amount_off, store.threshold))


@given(stores, st.integers(1, 1_000_000))
def test_min_amount_off_is_the_least_that_beats_every_store(found, at):
    least = min_amount_off(threshold(1, at), found)
    assert all(beats(threshold(least, at), s) for s in found)
    assert least == 1 or not all(beats(threshold(least - 1, at), s) for s in found)


@given(stores, st.integers(1, 1_000_000), st.integers(1, 1_000_000))
def test_named_store_coupon_is_one_it_loses_to_and_the_strongest(found, amount_off, extra):
    benefit = threshold(amount_off, amount_off + extra)
    violation = policy(points_denomination_rule=False).check_offer(benefit, found)
    losing = [s for s in found if not beats(benefit, s)]
    if not losing:
        assert violation is None
        return
    named = violation.details["store_coupon"]
    assert named["id"] in {s.id for s in losing}
    strongest = max(Fraction(s.amount_off, s.threshold) for s in found)
    assert Fraction(named["amount_off"], named["threshold"]) == strongest


benefits = st.one_of(
    st.builds(threshold, st.integers(1, 10**6), st.integers(10**6 + 1, 10**7)),
    st.builds(lambda a: {"type": "no_threshold", "amount_off": a}, st.integers(1, 10**7)),
    st.builds(
        lambda r, t, m: {"type": "discount", "rate_permille": r, "threshold": t, "max_off": m},
        st.integers(1, 999),
        st.none() | st.integers(1, 10**7),
        st.none() | st.integers(1, 10**7),
    ),
)


@given(benefits, st.integers(0, 10**8))
def test_discount_is_never_negative_nor_above_the_order(benefit, subtotal):
    off = discount_at(benefit, subtotal)
    assert off is not None and 0 <= off <= subtotal


# --- windows and states ----------------------------------------------------------------------
instants = st.integers(-1000, 1000).map(lambda h: NOW + timedelta(hours=h))


@given(instants, instants, st.none() | instants, st.none() | instants)
def test_offer_window_is_inside_both(claim_start, claim_end, starts_at, ends_at):
    start, end = offer_window(claim_start, claim_end, starts_at, ends_at)
    assert start >= claim_start and end <= claim_end
    assert starts_at is None or start >= starts_at
    assert ends_at is None or end <= ends_at
    assert start in (claim_start, starts_at) and end in (claim_end, ends_at)


@given(
    instants,
    st.sampled_from(["active", "ended"]),
    st.integers(0, 3),
    st.integers(1, 3),
    st.booleans(),
    st.integers(0, 1000),
    st.integers(1, 1000),
)
def test_offer_state_follows_the_refusal_order(now, status, held, limit, sold_out, balance, cost):
    start, end = NOW, NOW + timedelta(hours=100)
    state = offer_state(
        now=now,
        starts_at=start,
        ends_at=end,
        template_status=status,
        held=held,
        per_user_limit=limit,
        sold_out=sold_out,
        balance=balance,
        points_cost=cost,
    )
    assert state in OFFER_STATES
    if status == "ended" or now >= end:
        assert state == "ended"
    elif now < start:
        assert state == "not_started"
    elif held >= limit:
        assert state == "limit_reached"
    elif sold_out:
        assert state == "sold_out"
    else:
        assert state == ("insufficient_points" if balance < cost else "available")


# --- settings --------------------------------------------------------------------------------
def test_points_defaults_are_the_platforms(tmp_path):
    points = load_settings({}, base_dir=tmp_path).points
    assert points.points_denominations == (
        5, 10, 20, 25, 30, 40, 50, 55, 60, 70, 80, 100, 150, 200, 250, 300, 500, 1000,
    )  # fmt: skip
    assert points.free_denominations == (3, 5, 10, 20, 50, 100)
    assert points.points_denomination_rule is True
    assert points.free_denomination_rule is False
    assert points.strength_rule is True


def test_points_settings_from_a_file_and_the_environment(tmp_path):
    extra = tmp_path / "bff.toml"
    extra.write_text("[points]\nfree_denominations = [5, 10]\nstrength_rule = false\n")
    points = load_settings(
        {
            "BFF_CONFIG": str(extra),
            "BFF_POINTS_DENOMINATIONS": "10, 20,30",
            "BFF_FREE_DENOMINATION_RULE": "true",
        },
        base_dir=tmp_path,
    ).points
    assert points.free_denominations == (5, 10)
    assert points.points_denominations == (10, 20, 30)
    assert points.free_denomination_rule is True
    assert points.strength_rule is False


@pytest.mark.parametrize("value", ["", "5,x", "0", "-5", "5,200000"])
def test_bad_denominations_raise_one_line(tmp_path, value):
    with pytest.raises(ConfigError) as raised:
        load_settings({"BFF_POINTS_DENOMINATIONS": value}, base_dir=tmp_path)
    assert "points.points_denominations" in str(raised.value)
    assert "\n" not in str(raised.value)
