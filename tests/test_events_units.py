"""The outbox's pure parts: event constructors and the published bytes (no I/O)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from bff import jsonutil
from bff.events import outbox

CODES = st.sampled_from(["LIMIT_REACHED", "WALLET_FULL", "SOLD_OUT", "UNAVAILABLE"])
NOW = datetime(2026, 11, 20, 4, 0, 0, 123456, tzinfo=UTC)


@given(st.integers(min_value=0, max_value=10_000), st.lists(CODES, max_size=200))
def test_grant_finished_counts_every_refusal_by_its_code(granted: int, codes: list[str]) -> None:
    event = outbox.grant_finished(
        "s1",
        7,
        "grant-1",
        granted,
        [{"user_id": f"u{i}", "code": c} for i, c in enumerate(codes)],
        NOW,
    )
    data = event.data
    assert (data["granted"], data["failed"]) == (granted, len(codes))
    assert data["failed_by_code"] == dict(sorted(Counter(codes).items()))
    assert sum(data["failed_by_code"].values()) == data["failed"]


@given(
    st.integers(min_value=1, max_value=2**63 - 1),
    st.sampled_from(outbox.EVENT_TYPES),
    st.dictionaries(
        st.text(max_size=10),
        st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.text(), st.none()),
        max_size=5,
    ),
)
def test_the_published_bytes_are_the_envelope(event_id: int, kind: str, data: dict) -> None:
    row = SimpleNamespace(
        id=event_id,
        type=kind,
        schema_version=outbox.SCHEMA_VERSION,
        shop_id="s1",
        occurred_at=NOW,
        data=jsonutil.dumps_str(data),
    )
    sent = json.loads(outbox.encode(row))
    assert sent == {
        "id": event_id,
        "type": kind,
        "schema_version": 1,
        "shop_id": "s1",
        "occurred_at": "2026-11-20T04:00:00.123456+00:00",
        "data": data,
    }


def test_a_batch_sells_out_once_and_only_with_coupons() -> None:
    template = SimpleNamespace(id=3, shop_id="s1", stock_total=2)
    coupons = [
        SimpleNamespace(
            id=i,
            shop_id="s1",
            template_id=3,
            user_id=f"u{i}",
            source="widget",
            code=None,
            valid_from=NOW,
            valid_to=NOW,
        )
        for i in (1, 2)
    ]
    events = outbox.issued(template, coupons, NOW, sold_out=True)
    assert [e.type for e in events] == [outbox.COUPON_CLAIMED] * 2 + [outbox.TEMPLATE_SOLD_OUT]
    assert outbox.issued(template, [], NOW, sold_out=True) == []
    assert [e.type for e in outbox.issued(template, coupons, NOW, sold_out=False)] == [
        outbox.COUPON_CLAIMED
    ] * 2
