"""bff.fastload only accepts what marshmallow accepts, and loads it to the same value.

For every body and query schema of every route: bodies drawn near each field's rules
(values its validators accept, values at and past their bounds, wrong types, None,
missing and unknown keys). Whenever the fast loader decides, ``schema.load`` must
accept the same body and return an equal value, types included; whenever it defers,
marshmallow decides as before. The hot routes' schemas must have a fast loader that
decides their examples, or the property would hold of a loader that always defers.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError, fields, validate

from bff import fastload
from bff.openapi_examples import resolve
from handlers import all_endpoints
from widgets.claim.schemas import ClaimInSchema
from widgets.coupon_price.schemas import CheckoutInSchema

ENDPOINTS = all_endpoints()
NOW = datetime.now(UTC)  # the examples' times are relative to the moment they are read
SCHEMAS = sorted(
    {
        schema
        for endpoint in ENDPOINTS
        if not endpoint.multipart
        for schema in (endpoint.body, endpoint.query)
        if schema is not None
    },
    key=lambda schema: f"{schema.__module__}.{schema.__qualname__}",
)

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def typed(value: Any) -> Any:
    if isinstance(value, dict):
        return ("dict", sorted((k, typed(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    return (type(value).__name__, repr(value))


def near(field: fields.Field, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values close to what ``field`` accepts, and some it refuses."""
    good: list[st.SearchStrategy[Any]] = []
    for validator in field.validators:
        if isinstance(validator, validate.Range):
            low = validator.min if validator.min is not None else -(2**64)
            high = validator.max if validator.max is not None else 2**64
            good.append(st.integers(min_value=low - 2, max_value=min(high + 2, 2**64)))
            good.append(st.sampled_from([low, high, low - 1, high + 1]))
        elif isinstance(validator, validate.OneOf):
            good.append(st.sampled_from([*validator.choices, "nope"]))
        elif isinstance(validator, validate.Regexp):
            good.append(st.from_regex(validator.regex.pattern, fullmatch=False))
        elif isinstance(validator, validate.Length) and isinstance(field, fields.String):
            low = validator.min or validator.equal or 0
            high = validator.max or validator.equal or low + 8
            good.append(
                st.text(string.ascii_letters + " ", min_size=max(0, low - 1), max_size=high + 1)
            )
    if isinstance(field, fields.Nested) and depth < 3:
        good.append(bodies(type(field.schema), depth + 1))
    elif isinstance(field, fields.List) and depth < 3:
        good.append(st.lists(near(field.inner, depth + 1), max_size=4))
    elif isinstance(field, fields.Boolean):
        good.append(st.booleans())
    elif isinstance(field, fields.Integer):
        good.append(st.integers(min_value=-(2**64), max_value=2**64))
        good.append(st.integers(min_value=0, max_value=10**6).map(str))
    elif isinstance(field, fields.String):
        good.append(st.text(max_size=12))
    if not good:
        good.append(junk)
    return st.one_of(*good) if len(good) > 1 else good[0] | junk


def bodies(schema_class: type[Schema], depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    schema = schema_class()
    keys = {
        (field.data_key or name): near(field, depth) for name, field in schema.load_fields.items()
    }
    plain = st.fixed_dictionaries({}, optional=keys)
    if depth:
        return plain
    return plain.flatmap(
        lambda body: (
            st.dictionaries(st.sampled_from(["zz", "extra"]), junk, max_size=1).map(
                lambda extra: {**body, **extra}
            )
            | st.just(body)
        )
    )


# Valid bodies to mutate: each route's documented example, and these.
SEEDS: dict[type[Schema], list[dict[str, Any]]] = {
    CheckoutInSchema: [
        {
            "items": [{"product_id": "p1", "quantity": 2}, {"product_id": "p2"}],
            "coupon_ids": [3, 4],
        },
        {"items": [{"product_id": "p1"}], "coupon_ids": None, "live_room_id": "room-1"},
    ]
}
for _endpoint in ENDPOINTS:
    if _endpoint.body is not None and _endpoint.example is not None and not _endpoint.multipart:
        SEEDS.setdefault(_endpoint.body, []).append(resolve(_endpoint.example, NOW))


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, inner in value.items():
            found += paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += paths(inner, (*prefix, index))
    return found


def mutate(body: Any, path: tuple[Any, ...], action: str, new: Any) -> Any:
    if not path:
        return body
    if isinstance(body, dict):
        copy: Any = dict(body)
    else:
        copy = list(body)
    head, rest = path[0], path[1:]
    if rest:
        copy[head] = mutate(copy[head], rest, action, new)
    elif action == "delete":
        del copy[head]
    elif action == "replace":
        copy[head] = new
    return copy


def mutated(seed: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.tuples(
        st.sampled_from([(), *paths(seed)]),
        st.sampled_from(["keep", "delete", "replace"]),
        junk,
    ).map(lambda args: mutate(seed, *args))


def outcome(schema: Schema, body: Any) -> Any:
    try:
        return ("ok", typed(schema.load(body)))
    except ValidationError:
        return ("refused",)


@pytest.mark.parametrize("schema_class", SCHEMAS, ids=lambda s: s.__qualname__)
def test_the_fast_loader_decides_as_marshmallow(schema_class: type[Schema]) -> None:
    schema = schema_class()
    fast = fastload.loader(schema)
    if fast is None:
        pytest.skip(f"{schema_class.__qualname__} has no fast loader (hooks or INCLUDE)")

    seeds = SEEDS.get(schema_class, [])
    drawn = bodies(schema_class)
    if seeds:
        drawn = st.one_of(drawn, *(mutated(seed) for seed in seeds))

    @settings(
        max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    @given(drawn)
    def check(body: dict[str, Any]) -> None:
        result = fast(body)
        if result is not fastload.DEFER:
            decided.append(body)
            assert outcome(schema, body) == ("ok", typed(result))

    decided: list[dict[str, Any]] = []
    check()
    # The bodies reach the fast path, or the property says nothing.
    if seeds:
        assert decided, f"no body drawn for {schema_class.__qualname__} was decided fast"


def test_hot_routes_take_the_fast_path() -> None:
    schema = ClaimInSchema()
    fast = fastload.loader(schema)
    assert fast is not None
    body = {"template_id": 7, "request_id": "r-1", "device": {"id": "d-1"}}
    assert fast(body) == schema.load(body)
    assert fast({"template_id": 7, "request_id": "r-1"}) == {
        "template_id": 7,
        "request_id": "r-1",
        "device": None,
    }
    # Every hot body route decides its documented example on the fast path.
    hot = {"ClaimInSchema", "PricesInSchema", "PackClaimInSchema"}
    decided = set()
    for endpoint in ENDPOINTS:
        if endpoint.body is None or endpoint.example is None or endpoint.multipart:
            continue
        instance = endpoint.body()
        loader = fastload.loader(instance)
        example = resolve(endpoint.example, NOW)
        if loader is not None and loader(example) is not fastload.DEFER:
            assert loader(example) == instance.load(example)
            decided.add(endpoint.body.__name__)
    assert hot <= decided, hot - decided
    checkout = CheckoutInSchema()
    three_lines = {"items": [{"product_id": f"p{n}", "quantity": n} for n in (1, 2, 3)]}
    assert fastload.loader(checkout)(three_lines) == checkout.load(three_lines)
    twice = {**three_lines, "coupon_ids": [4, 4]}  # refused by the schema's validator
    assert fastload.loader(checkout)(twice) is fastload.DEFER


@pytest.mark.parametrize(
    "body",
    [
        {"template_id": True, "request_id": "r-1"},
        {"template_id": 7.0, "request_id": "r-1"},
        {"template_id": "7", "request_id": "r-1"},
        {"template_id": 0, "request_id": "r-1"},
        {"template_id": 2**63, "request_id": "r-1"},
        {"template_id": 7, "request_id": "r 1"},
        {"template_id": 7, "request_id": "r-1\n"},
        {"template_id": 7},
        {"template_id": 7, "request_id": "r-1", "other": 1},
        {"template_id": 7, "request_id": "r-1", "device": {"id": ""}},
        {"template_id": 7, "request_id": "r-1", "device": {"id": "d", "emulator": 1}},
        {"template_id": 7, "request_id": None},
    ],
)
def test_what_marshmallow_refuses_is_deferred(body: dict[str, Any]) -> None:
    schema = ClaimInSchema()
    with pytest.raises(ValidationError):
        schema.load(body)
    assert fastload.loader(schema)(body) is fastload.DEFER
