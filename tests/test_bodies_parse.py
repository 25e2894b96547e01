"""parse_json's orjson fast path answers exactly what the standard library answers.

bff/bodies.py reads most bodies with orjson and sends the rest (long numbers,
surrogate escapes, deep nesting, anything orjson refuses) to the standard library.
The property: for any bytes, a value from parse_json equals the standard path's
value, with the same types all the way down (1 is not 1.0, a big int stays an int),
and parse_json refuses exactly what the standard path refuses.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from bff.bodies import parse_json, parse_json_standard
from bff.errors import ApiError

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)


def typed(value):
    if isinstance(value, dict):
        return ("dict", [(k, typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    return (type(value).__name__, repr(value))


def outcome(parse, raw):
    try:
        return ("ok", typed(parse(raw)))
    except ApiError as exc:
        return ("refused", exc.status, exc.code)


raws = st.one_of(
    values.map(lambda v: json.dumps(v).encode()),
    values.map(lambda v: json.dumps(v, ensure_ascii=False).encode()),
    st.binary(max_size=20),
    st.sampled_from(
        [
            b"\xef\xbb\xbf{}",
            b"NaN",
            b"1e400",
            b'{"a":18446744073709551616}',
            b'"\\udc00"',
            b"[1,]",
            b" {} ",
            b'{"a":1,"a":2}',
            b"-0",
            b"1.0",
            b"[" * 70 + b"]" * 70,
            b"\x00",
        ]
    ),
)


@settings(max_examples=3000, deadline=None)
@given(raws)
def test_fast_path_answers_as_the_standard_library(raw):
    assert outcome(parse_json, raw) == outcome(parse_json_standard, raw)
