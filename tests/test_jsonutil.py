"""bff.jsonutil writes with orjson: the same bytes as the standard library's compact,
``ensure_ascii=False`` encoder for everything but floats (which orjson writes in the
shortest form, ``1e16`` for ``1e+16``: the same number)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from bff import jsonutil

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)  # no lone surrogates
INSTANTS = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=8))]),
)
SCALARS = st.one_of(st.none(), st.booleans(), INT64, TEXT, INSTANTS)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(TEXT, INT64), inner, max_size=4),
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(VALUES)
def test_the_same_bytes_as_the_standard_library(value):
    assert jsonutil.dumps(value) == jsonutil.stdlib_encoder.encode(value).encode()
    assert jsonutil.dumps_str(value) == jsonutil.stdlib_encoder.encode(value)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=5))
def test_floats_are_the_same_numbers(values):
    assert json.loads(jsonutil.dumps(values)) == values


def test_what_the_default_writes():
    value = {"at": datetime(2026, 11, 20, 4, 0, tzinfo=UTC), "n": Decimal("3"), "s": {2, 1}}
    assert jsonutil.dumps(value) == b'{"at":"2026-11-20T04:00:00+00:00","n":3,"s":[1,2]}'
    assert jsonutil.loads(jsonutil.dumps({"名": "满299减50"})) == {"名": "满299减50"}


def test_an_integer_beyond_64_bits_is_written_the_slow_way():
    assert jsonutil.dumps({"n": 2**70}) == b'{"n":1180591620717411303424}'
