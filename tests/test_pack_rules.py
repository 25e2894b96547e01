"""Pure gift-pack rules (bff/packs/rules.py): contents, windows, remaining, eligibility, state.

Rows are stand-ins with the attributes the rules read; hypothesis checks the
properties the HTTP tests can only sample.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bff.packs.rules import (
    MAX_COUPONS,
    STATES,
    PackView,
    content_errors,
    eligibility_refusal,
    overlaps,
    pack_remaining,
    pack_state,
    template_remaining,
    window_errors,
    window_refusal,
)

NOW = datetime(2026, 11, 20, 4, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


# --- stand-ins -------------------------------------------------------------------------------
def template(
    *,
    benefit: str = "threshold",
    scope: str = "shop",
    methods: tuple[str, ...] = ("gift_pack",),
    status: str = "active",
    total: int | None = 100,
    issued: int = 0,
) -> Any:
    spec = {
        "benefit": {"type": benefit},
        "scope": {"type": scope},
        "claim_methods": list(methods),
    }
    return SimpleNamespace(spec=spec, status=status, stock_total=total, issued=issued)


def gift(**overrides: Any) -> Any:
    return template(benefit="gift", **overrides)


def stock(total: int | None, issued: int = 0) -> Any:
    return SimpleNamespace(stock_total=total, issued=issued)


def member(
    *, level: int = 0, joined_ago: timedelta = HOUR, rejoined: bool = False, left: bool = False
) -> Any:
    return SimpleNamespace(
        level=level,
        first_joined_at=NOW - joined_ago,
        rejoined=rejoined,
        left_at=NOW if left else None,
    )


def pack(
    kind: str = "new_member",
    *,
    status: str = "active",
    starts: timedelta = -HOUR,
    ends: timedelta = timedelta(days=10),
    min_level: int = 0,
) -> PackView:
    return PackView(kind, status, NOW + starts, NOW + ends, min_level)


def contents(ids: list[int], gift_body: dict[str, int] | None = None) -> dict[str, Any]:
    return {"coupon_template_ids": ids, "gift": gift_body}


def window(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "kind": "new_member",
        "starts_at": NOW,
        "ends_at": NOW + timedelta(days=10),
        "popup_starts_at": None,
        "popup_ends_at": None,
        "min_level": 0,
    }
    data.update(overrides)
    return data


# --- template_remaining ----------------------------------------------------------------------
def test_unlimited_template_has_no_remaining() -> None:
    assert template_remaining(stock(None, 7)) is None


@given(total=st.integers(1, 10_000), issued=st.integers(0, 20_000))
def test_template_remaining_never_negative(total: int, issued: int) -> None:
    assert template_remaining(stock(total, issued)) == max(total - issued, 0)


# --- content_errors --------------------------------------------------------------------------
def test_valid_contents_have_no_errors() -> None:
    templates = {1: template(), 2: template(), 3: template()}
    assert content_errors(contents([1, 2, 3]), templates, None) == {}
    assert content_errors(contents([1], {"template_id": 9, "quantity": 5}), templates, gift()) == {}


@pytest.mark.parametrize("count", [0, MAX_COUPONS + 1])
def test_a_pack_holds_one_to_three_coupons(count: int) -> None:
    ids = list(range(1, count + 1))
    errors = content_errors(contents(ids), {i: template() for i in ids}, None)
    assert "coupon_template_ids" in errors


def test_a_coupon_appears_once() -> None:
    errors = content_errors(contents([1, 1]), {1: template()}, None)
    assert "coupon_template_ids" in errors


@pytest.mark.parametrize(
    "row",
    [
        pytest.param(None, id="missing"),
        pytest.param(gift(), id="gift-among-coupons"),
        pytest.param(template(scope="products"), id="product-coupon"),
        pytest.param(template(scope="categories"), id="category-coupon"),
        pytest.param(template(methods=("widget",)), id="no-gift-pack-method"),
        pytest.param(template(status="ended"), id="ended"),
    ],
)
def test_each_refused_coupon_names_its_index(row: Any) -> None:
    templates = {1: template()} if row is None else {1: template(), 2: row}
    assert set(content_errors(contents([1, 2]), templates, None)) == {"coupon_template_ids.1"}


def test_paused_coupon_may_go_in_a_pack() -> None:
    assert content_errors(contents([1]), {1: template(status="paused")}, None) == {}


@pytest.mark.parametrize(
    "row",
    [
        pytest.param(None, id="missing"),
        pytest.param(template(), id="not-a-gift"),
        pytest.param(gift(methods=("widget",)), id="no-gift-pack-method"),
        pytest.param(gift(status="ended"), id="ended"),
    ],
)
def test_a_refused_gift_names_gift_template_id(row: Any) -> None:
    errors = content_errors(contents([1], {"template_id": 9, "quantity": 1}), {1: template()}, row)
    assert set(errors) == {"gift.template_id"}


@given(total=st.integers(1, 1000), issued=st.integers(0, 1000), quantity=st.integers(1, 2000))
def test_gift_quantity_at_most_the_gifts_remaining_stock(
    total: int, issued: int, quantity: int
) -> None:
    row = gift(total=total, issued=min(issued, total))
    errors = content_errors(
        contents([1], {"template_id": 9, "quantity": quantity}), {1: template()}, row
    )
    too_many = quantity > total - min(issued, total)
    assert ("gift.quantity" in errors) == too_many
    assert set(errors) <= {"gift.quantity"}


@given(quantity=st.integers(1, 10**9))
def test_unlimited_gift_takes_any_quantity(quantity: int) -> None:
    body = contents([1], {"template_id": 9, "quantity": quantity})
    assert content_errors(body, {1: template()}, gift(total=None)) == {}


# --- window_errors ---------------------------------------------------------------------------
def test_a_valid_window_has_no_errors() -> None:
    assert window_errors(window()) == {}
    popup = window(popup_starts_at=NOW, popup_ends_at=NOW + timedelta(days=10))
    assert window_errors(popup) == {}
    assert window_errors(window(kind="member", min_level=3)) == {}


@pytest.mark.parametrize("ends", [NOW, NOW - HOUR])
def test_pack_ends_after_it_starts(ends: datetime) -> None:
    assert set(window_errors(window(ends_at=ends))) == {"ends_at"}


def test_popup_needs_both_ends() -> None:
    assert set(window_errors(window(popup_starts_at=NOW))) == {"popup_ends_at"}
    assert set(window_errors(window(popup_ends_at=NOW + HOUR))) == {"popup_starts_at"}


def test_popup_ends_after_it_starts() -> None:
    errors = window_errors(window(popup_starts_at=NOW + HOUR, popup_ends_at=NOW + HOUR))
    assert set(errors) == {"popup_ends_at"}


@pytest.mark.parametrize(
    ("start", "end"),
    [
        pytest.param(NOW - HOUR, NOW + HOUR, id="starts-before-the-pack"),
        pytest.param(NOW + HOUR, NOW + timedelta(days=11), id="ends-after-the-pack"),
    ],
)
def test_popup_inside_the_pack_window(start: datetime, end: datetime) -> None:
    errors = window_errors(window(popup_starts_at=start, popup_ends_at=end))
    assert set(errors) == {"popup_starts_at"}


def test_min_level_for_member_packs_only() -> None:
    assert set(window_errors(window(min_level=1))) == {"min_level"}
    assert window_errors(window(min_level=0)) == {}


# --- overlaps --------------------------------------------------------------------------------
intervals = st.tuples(st.integers(0, 50), st.integers(1, 20)).map(
    lambda pair: (NOW + timedelta(minutes=pair[0]), NOW + timedelta(minutes=pair[0] + pair[1]))
)


@given(a=intervals, b=intervals)
def test_overlap_means_a_shared_instant(
    a: tuple[datetime, datetime], b: tuple[datetime, datetime]
) -> None:
    # windows are half-open [start, end): on whole minutes a shared minute is a shared instant
    minutes = {NOW + timedelta(minutes=m) for m in range(80)}
    shared = any(a[0] <= t < a[1] and b[0] <= t < b[1] for t in minutes)
    assert overlaps(*a, *b) == shared
    assert overlaps(*a, *b) == overlaps(*b, *a)


def test_back_to_back_windows_do_not_overlap() -> None:
    assert not overlaps(NOW, NOW + HOUR, NOW + HOUR, NOW + 2 * HOUR)


# --- pack_remaining --------------------------------------------------------------------------
def test_remaining_is_the_scarcest_benefit() -> None:
    coupons = [stock(10_000), stock(5000)]
    assert pack_remaining(coupons, stock(500), 500) == 500
    assert pack_remaining(coupons, stock(1000), 120) == 120
    assert pack_remaining([stock(10_000), stock(30)], stock(500), 500) == 30


def test_remaining_is_none_when_everything_is_unlimited() -> None:
    assert pack_remaining([stock(None), stock(None)], None, None) is None
    assert pack_remaining([stock(None)], stock(None), 7) == 7


limits = st.one_of(st.none(), st.integers(1, 1000))


@given(
    coupons=st.lists(st.tuples(limits, st.integers(0, 1000)), min_size=1, max_size=3),
    gift_stock=st.one_of(st.none(), st.tuples(limits, st.integers(0, 1000))),
    gift_left=st.integers(0, 1000),
)
def test_remaining_is_the_least_known_count(
    coupons: list[tuple[int | None, int]],
    gift_stock: tuple[int | None, int] | None,
    gift_left: int,
) -> None:
    coupon_rows = [stock(total, min(issued, total or issued)) for total, issued in coupons]
    gift_row = None if gift_stock is None else stock(gift_stock[0], gift_stock[1])
    counts = [template_remaining(row) for row in coupon_rows]
    if gift_row is not None:
        counts += [template_remaining(gift_row), gift_left]
    known = [count for count in counts if count is not None]
    left = pack_remaining(coupon_rows, gift_row, gift_left if gift_row is not None else None)
    assert left == (min(known) if known else None)
    if left is not None:
        assert left >= 0


# --- eligibility and the claim window --------------------------------------------------------
def test_new_member_pack_eligibility() -> None:
    new = pack("new_member")
    assert eligibility_refusal(new, member(), NOW) is None
    assert eligibility_refusal(new, member(joined_ago=timedelta(hours=23, minutes=59)), NOW) is None
    refused = [
        None,
        member(left=True),
        member(rejoined=True),
        member(joined_ago=timedelta(hours=24)),
    ]
    for row in refused:
        refusal = eligibility_refusal(new, row, NOW)
        assert refusal is not None and refusal.code == "NOT_ELIGIBLE", row


def test_member_pack_eligibility() -> None:
    level_two = pack("member", min_level=2)
    assert (
        eligibility_refusal(
            level_two, member(level=2, rejoined=True, joined_ago=timedelta(days=90)), NOW
        )
        is None
    )
    assert eligibility_refusal(level_two, member(level=3), NOW) is None
    for row in (None, member(level=1), member(level=5, left=True)):
        refusal = eligibility_refusal(level_two, row, NOW)
        assert refusal is not None and refusal.code == "NOT_ELIGIBLE", row


def refusal_code(view: PackView) -> str | None:
    refusal = window_refusal(view, NOW)
    return None if refusal is None else refusal.code


def test_claim_window() -> None:
    assert refusal_code(pack()) is None
    assert refusal_code(pack(starts=timedelta(0))) is None  # starts_at is inclusive
    assert refusal_code(pack(starts=HOUR, ends=2 * HOUR)) == "NOT_STARTED"
    assert refusal_code(pack(starts=-2 * HOUR, ends=timedelta(0))) == "CLAIM_ENDED"
    assert refusal_code(pack(status="ended")) == "CLAIM_ENDED"
    # ended by the merchant before it started: ended, not "not started"
    assert refusal_code(pack(status="ended", starts=HOUR, ends=2 * HOUR)) == "CLAIM_ENDED"


# --- pack_state ------------------------------------------------------------------------------
@given(
    kind=st.sampled_from(["new_member", "member"]),
    status=st.sampled_from(["active", "ended"]),
    starts=st.integers(-30, -1),
    ends=st.integers(-10, 10),
    has_member=st.booleans(),
    level=st.integers(0, 3),
    min_level=st.integers(0, 3),
    joined_hours=st.integers(0, 48),
    rejoined=st.booleans(),
    left=st.booleans(),
    claimed=st.booleans(),
    remaining=st.one_of(st.none(), st.integers(0, 3)),
)
def test_state_follows_the_priority_order(
    kind: str,
    status: str,
    starts: int,
    ends: int,
    has_member: bool,
    level: int,
    min_level: int,
    joined_hours: int,
    rejoined: bool,
    left: bool,
    claimed: bool,
    remaining: int | None,
) -> None:
    """claimed > ended > not_eligible > sold_out > claimable."""
    view = pack(
        kind,
        status=status,
        starts=timedelta(days=starts),
        ends=timedelta(hours=ends),
        min_level=min_level if kind == "member" else 0,
    )
    row = (
        member(level=level, joined_ago=timedelta(hours=joined_hours), rejoined=rejoined, left=left)
        if has_member
        else None
    )
    if kind == "new_member":
        eligible = has_member and not left and not rejoined and joined_hours < 24
    else:
        eligible = has_member and not left and level >= min_level
    state = pack_state(view, row, claimed, remaining, NOW)
    assert state in STATES
    if claimed:
        expected = "claimed"
    elif status == "ended" or ends <= 0:
        expected = "ended"
    elif not eligible:
        expected = "not_eligible"
    elif remaining == 0:
        expected = "sold_out"
    else:
        expected = "claimable"
    assert state == expected
