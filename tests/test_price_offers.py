"""Which templates a price offers to claim (widgets.coupon_price.core.Offer), against the
rules as DOMAIN.md states them, written out here per request (the form the service used
before the decisions that do not depend on the moment were made once per shop read)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bff.coupons.rules import MemberView
from widgets.coupon_price.core import Offer

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
HOURS = st.integers(-72, 72).map(lambda h: NOW + timedelta(hours=h))


def expected(
    row: Any,
    daily: int,
    now: datetime,
    signed_in: bool,
    held: int,
    member: MemberView | None,
    wallet_full: bool,
) -> datetime | None:
    """The expiry of the to-claim candidate the viewer should see, or None for none."""
    spec = row.spec
    if row.status != "active" or not (row.claim_start <= now < row.claim_end):
        return None  # claimable only while active and inside its claim window
    if not {"widget", "auto"} & set(spec["claim_methods"]):
        return None  # only what the widget or an auto-claim hands out counts on a price
    if row.stock_total is not None and row.issued >= row.stock_total:
        return None
    if row.daily_limit is not None and daily >= row.daily_limit:
        return None
    members_only = spec["audience"]["type"] == "members" or spec.get("new_member_exclusive")
    if signed_in:
        if held >= row.per_user_limit or wallet_full:
            return None
        if members_only:
            if member is None or not member.active:
                return None
            level = (
                spec["audience"].get("min_level", 0) if spec["audience"]["type"] == "members" else 0
            )
            if member.level < level:
                return None
    elif members_only:
        return None  # an anonymous viewer is no member
    validity = spec["validity"]
    if validity["type"] == "relative":  # usable at once only without a delay
        return (
            None
            if validity["effective_after_days"]
            else now + timedelta(days=validity["valid_days"])
        )
    start, end = (datetime.fromisoformat(validity[k]) for k in ("start", "end"))
    return end if start <= now < end else None


@st.composite
def rows(draw: st.DrawFn) -> Any:
    start = draw(HOURS)
    if draw(st.booleans()):
        validity = {
            "type": "relative",
            "valid_days": draw(st.integers(1, 30)),
            "effective_after_days": draw(st.sampled_from([0, 0, 1, 3])),
        }
    else:
        v_start = draw(HOURS)
        validity = {
            "type": "absolute",
            "start": v_start.isoformat(),
            "end": (v_start + timedelta(hours=draw(st.integers(1, 96)))).isoformat(),
        }
    audience = draw(
        st.sampled_from([{"type": "all"}, {"type": "members"}, {"type": "members", "min_level": 2}])
    )
    spec = {
        "claim_methods": draw(
            st.lists(
                st.sampled_from(["widget", "auto", "code", "grant"]),
                min_size=1,
                max_size=3,
                unique=True,
            )
        ),
        "audience": audience,
        "validity": validity,
        "benefit": {"type": "no_threshold", "amount_off": 100},
        "scope": {"type": "shop"},
        "stacking": {"with_store_promotions": True, "with_other_coupons": False},
    }
    if draw(st.booleans()):
        spec["new_member_exclusive"] = draw(st.booleans())
    stock = draw(st.one_of(st.none(), st.integers(0, 5)))
    return SimpleNamespace(
        id=draw(st.integers(1, 50)),
        spec=spec,
        status=draw(st.sampled_from(["active", "active", "paused", "ended"])),
        claim_start=start,
        claim_end=start + timedelta(hours=draw(st.integers(1, 96))),
        stock_total=stock,
        issued=draw(st.integers(0, 6)),
        daily_limit=draw(st.one_of(st.none(), st.integers(1, 3))),
        per_user_limit=draw(st.integers(1, 3)),
    )


members = st.one_of(st.none(), st.builds(MemberView, st.integers(0, 3), st.booleans()))


@settings(max_examples=500, deadline=None, derandomize=True)
@given(
    rows(),
    st.integers(0, 4),
    st.lists(
        st.tuples(HOURS, st.booleans(), st.integers(0, 3), members, st.booleans()),
        min_size=1,
        max_size=4,
    ),
)
def test_an_offer_decides_as_the_rules_do_at_every_moment(row, daily, viewers):
    """One Offer per shop read, asked by several viewers at several moments."""
    offer = Offer(row, daily)
    for now, signed_in, held, member, wallet_full in viewers:
        if not signed_in:
            held, member, wallet_full = 0, None, False
        got = offer.candidate(
            now, signed_in=signed_in, held=held, member=member, wallet_full=wallet_full
        )
        want = expected(row, daily, now, signed_in, held, member, wallet_full)
        assert (got.expires_at if got is not None else None) == want
        if got is not None:
            assert got.needs_claim and got.coupon_id is None and got.template_id == row.id
            assert got.key == f"t:{row.id}"
