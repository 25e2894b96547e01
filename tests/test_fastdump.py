"""bff.fastdump writes what marshmallow's dump writes.

The whole suite runs with ``fastdump.VERIFY`` on (tests/conftest.py), so every reply of
every API test is dumped both ways and compared; these cases pin the corners: values of
another type than the field's, None, keys missing from the object (marshmallow then
looks the name up as an attribute: a dict's ``items``), objects that are not dicts,
nested schemas one or many, lists, dates beside datetimes.
"""

from __future__ import annotations

from collections import namedtuple
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from marshmallow import Schema, fields, post_dump

from bff import fastdump
from bff.coupons.wallet import CouponReplySchema, CouponSchema


class Inner(Schema):
    n = fields.Integer()
    s = fields.String(allow_none=True)


class Outer(Schema):
    n = fields.Integer()
    text = fields.String()
    flag = fields.Boolean()
    at = fields.AwareDateTime()
    day = fields.Date()
    one = fields.Nested(Inner, allow_none=True)
    many = fields.Nested(Inner, many=True)
    listed = fields.List(fields.Nested(Inner))
    numbers = fields.List(fields.Integer())
    renamed = fields.String(data_key="otherName")
    items = fields.Raw()
    raw = fields.Raw()


class WithHook(Schema):
    n = fields.Integer()

    @post_dump
    def stamp(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {**data, "hooked": True}


AT = datetime(2026, 12, 4, 10, 30, 0, 123456, tzinfo=UTC)

CASES = [
    {},
    {"n": 1, "text": "a", "flag": True, "at": AT, "day": date(2026, 12, 4)},
    {"n": True, "text": 5, "flag": 1, "at": AT.astimezone(timezone(timedelta(hours=8)))},
    {"n": 2.7, "flag": "yes", "day": AT},  # a datetime given to a Date field
    {"n": None, "text": None, "flag": None, "at": None, "one": None, "numbers": None},
    {"one": {"n": 3, "s": None}, "many": [{"n": 1}, {"s": "x"}], "listed": [{"n": 2}]},
    {"numbers": [1, True, 2.5, None], "renamed": "r", "raw": {"k": [1, 2]}},
    {"one": namedtuple("Row", "n s")(7, "seven")},
]


@pytest.mark.parametrize("obj", CASES)
def test_the_fast_dumper_writes_what_marshmallow_writes(obj: dict[str, Any]) -> None:
    schema = Outer()
    assert fastdump.dumper(schema) is not None
    fast = fastdump.dump(schema, obj)
    expected = schema.dump(obj)
    assert fast == expected
    assert repr(fast) == repr(expected)  # types too: 1 is not True, "1" is not 1


def test_objects_that_are_not_dicts_and_hooked_schemas_go_to_marshmallow() -> None:
    row = namedtuple("Row", "n text")(1, "t")
    assert fastdump.dump(Outer(), row) == Outer().dump(row)
    assert fastdump.dumper(WithHook()) is None
    assert fastdump.dump(WithHook(), {"n": 1}) == {"n": 1, "hooked": True}


def test_a_claim_reply_is_dumped_fast() -> None:
    coupon = {
        "coupon_id": 1,
        "template_id": 2,
        "name": "满100减10",
        "benefit": {"type": "threshold", "threshold": 10000, "amount_off": 1000},
        "code": None,
        "status": "unused",
        "source": "widget",
        "valid_from": AT,
        "valid_to": AT + timedelta(days=7),
        "expiring_soon": False,
        "redeem_page": "/pages/use",
    }
    reply = {"coupon": coupon, "replayed": False}
    assert fastdump.dumper(CouponReplySchema()) is not None
    assert fastdump.dump(CouponReplySchema(), reply) == CouponReplySchema().dump(reply)
    assert fastdump.dump(CouponSchema(), coupon)["valid_from"] == AT.isoformat()


def test_verify_fails_loudly_when_the_two_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    schema = Inner()
    schema.__dict__["_fast_dumper"] = lambda obj: {"n": "wrong"}
    monkeypatch.setattr(fastdump, "VERIFY", True)
    with pytest.raises(AssertionError, match="fastdump of Inner"):
        fastdump.dump(schema, {"n": 1})
