"""Pure cores of the claim path: widget states, code files, rules (no I/O, hypothesis)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from bff.coupons.claims import TemplateCache
from bff.coupons.codes import parse_code_file
from bff.coupons.rules import MemberView, precheck, shop_day
from bff.gate.base import window_key
from bff.idempotency import body_hash
from widgets.claim.core import STATES, Viewer, in_scope, widget_state

NOW = datetime(2026, 11, 20, 4, 0, tzinfo=UTC)


def state(**overrides):
    args = dict(
        status="active",
        claim_start=NOW - timedelta(days=1),
        claim_end=NOW + timedelta(days=1),
        now=NOW,
        held=0,
        per_user_limit=1,
        sold_out=False,
        viewer=Viewer(signed_in=True),
    )
    args.update(overrides)
    return widget_state(**args)


def test_widget_states():
    assert state() == "claimable"
    assert state(held=1) == "claimed"
    assert state(held=1, per_user_limit=3) == "claimable"
    assert state(held=1, per_user_limit=3, sold_out=True) == "claimed"
    assert state(sold_out=True) == "sold_out"
    assert state(claim_start=NOW + timedelta(hours=1)) == "not_started"
    assert state(claim_end=NOW) == "ended"
    assert state(status="ended") == "ended"
    assert state(viewer=Viewer(signed_in=True, eligible=False)) == "not_eligible"
    assert state(viewer=Viewer(signed_in=True, wallet_full=True)) == "wallet_full"
    # Anonymous callers never see user-specific states.
    assert state(viewer=Viewer(signed_in=False, eligible=False, wallet_full=True)) == "claimable"


@given(
    held=st.integers(0, 5),
    limit=st.integers(1, 5),
    sold_out=st.booleans(),
    signed_in=st.booleans(),
    eligible=st.booleans(),
    wallet_full=st.booleans(),
    offset=st.integers(-3, 3),
)
def test_widget_state_is_always_a_known_state(
    held, limit, sold_out, signed_in, eligible, wallet_full, offset
):
    now = NOW + timedelta(days=offset)
    result = state(
        now=now,
        held=held,
        per_user_limit=limit,
        sold_out=sold_out,
        viewer=Viewer(signed_in, eligible, wallet_full),
    )
    assert result in STATES
    if held >= limit and NOW - timedelta(days=1) <= now < NOW + timedelta(days=1):
        assert result == "claimed"


def test_scope_filter():
    assert in_scope({"type": "shop"}, "p1", None)
    assert in_scope({"type": "products", "product_ids": ["p1"]}, "p1", None)
    assert not in_scope({"type": "products", "product_ids": ["p2"]}, "p1", None)
    assert in_scope({"type": "categories", "categories": ["cups"]}, "p1", "cups")
    assert not in_scope({"type": "categories", "categories": ["cups"]}, "p1", None)
    assert in_scope({"type": "products", "product_ids": ["p2"]}, None, None)


def test_code_file_parsing():
    parsed = parse_code_file("A-1\r\n  B-2  \nA-1\n\nbad code\n" + "X" * 65 + "\nC_3\n")
    assert parsed.codes == ["A-1", "B-2"]
    assert parsed.duplicates == 1
    assert parsed.invalid == 4  # empty line, space inside, too long, underscore
    assert parse_code_file("ONLY\n").invalid == 0


@given(st.lists(st.from_regex(r"[A-Za-z0-9-]{1,64}", fullmatch=True), max_size=40))
def test_code_file_counts_add_up(codes):
    parsed = parse_code_file("".join(code + "\n" for code in codes))
    assert len(parsed.codes) + parsed.duplicates + parsed.invalid == len(codes)
    assert len(set(parsed.codes)) == len(parsed.codes) == len(set(codes))


def template(**overrides):
    spec = {"claim_methods": ["widget"], "audience": {"type": "all"}, "new_member_exclusive": False}
    spec.update(overrides.pop("spec", {}))
    fields = dict(
        status="active",
        claim_start=NOW - timedelta(days=1),
        claim_end=NOW + timedelta(days=1),
        spec=spec,
    )
    fields.update(overrides)
    return SimpleNamespace(**fields)


def code(refusal):
    return None if refusal is None else refusal.code


def test_precheck_order():
    assert code(precheck(template(), "widget", NOW, None)) is None
    assert code(precheck(template(status="paused"), "widget", NOW, None)) == "CLAIM_PAUSED"
    assert code(precheck(template(status="ended"), "widget", NOW, None)) == "CLAIM_ENDED"
    assert code(precheck(template(), "auto", NOW, None)) == "CLAIM_METHOD_NOT_ALLOWED"
    later = template(claim_start=NOW + timedelta(hours=1))
    assert code(precheck(later, "widget", NOW, None)) == "NOT_STARTED"
    members = template(spec={"audience": {"type": "members", "min_level": 2}})
    assert code(precheck(members, "widget", NOW, None)) == "NOT_ELIGIBLE"
    assert code(precheck(members, "widget", NOW, MemberView(1, True))) == "NOT_ELIGIBLE"
    assert code(precheck(members, "widget", NOW, MemberView(2, False))) == "NOT_ELIGIBLE"
    assert code(precheck(members, "widget", NOW, MemberView(2, True))) is None
    # Status is checked before the window: a paused template that has not started is paused.
    paused_later = template(status="paused", claim_start=NOW + timedelta(hours=1))
    assert code(precheck(paused_later, "widget", NOW, None)) == "CLAIM_PAUSED"


def test_shop_day_uses_the_shop_time_zone():
    # 2026-11-20 17:00 UTC is already the 21st in Shanghai.
    assert shop_day(datetime(2026, 11, 20, 17, 0, tzinfo=UTC), "Asia/Shanghai") == "2026-11-21"
    assert shop_day(datetime(2026, 11, 20, 15, 59, tzinfo=UTC), "Asia/Shanghai") == "2026-11-20"


def test_window_key_follows_the_clock():
    key, left = window_key("rl:x", NOW + timedelta(seconds=15), 60)
    assert key == f"rl:x:{int(NOW.timestamp())}" and left == 45
    assert window_key("rl:x", NOW + timedelta(seconds=61), 60)[0] != key


@given(st.dictionaries(st.text(max_size=5), st.integers(), max_size=6))
def test_body_hash_ignores_key_order(body):
    assert body_hash(body) == body_hash(dict(reversed(list(body.items()))))


class _SlowRows:
    """A database stand-in whose reads wait for a signal, counting them."""

    def __init__(self, fail: bool = False) -> None:
        self.reads = 0
        self.release = asyncio.Event()
        self.fail = fail

    async def read(self, work):  # type: ignore[no-untyped-def]
        self.reads += 1
        await self.release.wait()
        if self.fail:
            raise ConnectionError("database away")
        return SimpleNamespace(id=7, shop_id="s1")


async def test_template_cache_reads_once_for_the_claims_that_missed_together():
    db = _SlowRows()
    cache = TemplateCache(db, ttl_seconds=60)  # type: ignore[arg-type]
    waiting = [asyncio.ensure_future(cache.get("s1", 7)) for _ in range(20)]
    await asyncio.sleep(0)
    db.release.set()
    rows = await asyncio.gather(*waiting)
    assert db.reads == 1
    assert {row.id for row in rows} == {7}
    assert (await cache.get("s1", 7)).id == 7 and db.reads == 1  # kept for its TTL
    assert await cache.get("s2", 7) is None  # another shop's template stays invisible


async def test_template_cache_hands_a_failed_read_to_every_waiter_and_keeps_nothing():
    db = _SlowRows(fail=True)
    cache = TemplateCache(db, ttl_seconds=60)  # type: ignore[arg-type]
    waiting = [asyncio.ensure_future(cache.get("s1", 7)) for _ in range(5)]
    await asyncio.sleep(0)
    db.release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert db.reads == 1 and all(isinstance(r, ConnectionError) for r in results)
    db.fail = False
    assert (await cache.get("s1", 7)).id == 7 and db.reads == 2  # the next claim reads again
