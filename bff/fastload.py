"""marshmallow's ``Schema.load`` for the valid input of a hot route, in microseconds.

The schema stays the one declaration of a route's shape (validation, OpenAPI). From
it, :func:`loader` builds a function that loads what marshmallow would accept and
gives up on everything else: any value it cannot prove valid (a wrong type, a
validator refusing, an unknown key, a missing required field) returns :data:`DEFER`,
and the caller then runs ``schema.load``, which decides and names the errors. So the
fast path only accepts what marshmallow accepts, with the same result
(tests/test_fastload.py checks that property on every route's schemas).

What it reads of a schema: its load fields, their ``data_key``, ``required``,
``load_default``, ``allow_none`` and validators, and the schema's ``unknown``. The
field classes below are checked by type here (``Int``: an int, not a bool, within
64 bits); any other field runs its own ``deserialize`` (marshmallow's code, only
without the schema's bookkeeping). Schema validators (``validates_schema``) run as
marshmallow runs them; a schema with other hooks (``pre_load``, ``validates``,
``post_load``), ``INCLUDE`` or fields loaded under another attribute gets no fast
path at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, missing
from marshmallow.decorators import VALIDATES_SCHEMA

from bff.schemas import MAX_CENTS, Bool, Cents, Int, is_int64

# What a loader returns when marshmallow must decide.
DEFER: Any = object()

Loader = Callable[[Any], Any]
_Value = Callable[[Any, Any], Any]  # (value, data) -> loaded value, or DEFER

_UNBUILT: Any = object()


def loader(schema: Schema) -> Loader | None:
    """The fast loader of ``schema`` (built once, kept on the instance), or None."""
    built = schema.__dict__.get("_fast_loader", _UNBUILT)
    if built is _UNBUILT:
        built = schema.__dict__["_fast_loader"] = _build(schema)
    return built


# Set by the test suite: every body the fast loader decides is loaded by marshmallow too,
# which must accept it with an equal value (or the request fails loudly).
VERIFY = False


def load(schema: Schema, data: Any) -> Any:
    """``schema.load(data)``, through the fast loader when it can decide."""
    fast = loader(schema)
    if fast is not None:
        result = fast(data)
        if result is not DEFER:
            if VERIFY:
                _verify(schema, data, result)
            return result
    return schema.load(data)


def _verify(schema: Schema, data: Any, result: Any) -> None:
    try:
        expected = schema.load(data)
    except ValidationError as exc:
        raise AssertionError(f"fastload accepted what {type(schema).__name__} refuses") from exc
    if expected != result:
        raise AssertionError(f"fastload of {type(schema).__name__}: {result!r} != {expected!r}")


def _build(schema: Schema) -> Loader | None:
    if schema.many or schema.partial:
        return None
    hooks = schema._hooks
    if any(entries for tag, entries in hooks.items() if tag != VALIDATES_SCHEMA):
        return None
    if any(many for _, many, _ in hooks.get(VALIDATES_SCHEMA, ())):
        return None
    # Schema validators, called as marshmallow calls them once the fields are loaded.
    checks = [
        (getattr(schema, name), bool(options.get("pass_original")))
        for name, _, options in hooks.get(VALIDATES_SCHEMA, ())
    ]
    if schema.unknown not in (RAISE, EXCLUDE):
        return None
    steps: list[tuple[str, str, _Value, bool, Any]] = []
    for name, field in schema.load_fields.items():
        if field.attribute is not None and field.attribute != name:
            return None
        value = _field(field)
        if value is None:
            return None
        key = field.data_key if field.data_key is not None else name
        steps.append((key, name, value, bool(field.required), field.load_default))
    known_keys = frozenset(step[0] for step in steps)
    strict = schema.unknown == RAISE

    def run(data: Any) -> Any:
        if type(data) is not dict:
            return DEFER
        if strict and not known_keys.issuperset(data):
            return DEFER
        out: dict[str, Any] = {}
        for key, name, value, required, default in steps:
            raw = data.get(key, missing)
            if raw is missing:
                if required:
                    return DEFER
                if default is not missing:
                    out[name] = default() if callable(default) else default
                continue
            loaded = value(raw, data)
            if loaded is DEFER:
                return DEFER
            out[name] = loaded
        try:
            for check, pass_original in checks:
                if pass_original:
                    check(out, data, partial=None, many=False, unknown=schema.unknown)
                else:
                    check(out, partial=None, many=False, unknown=schema.unknown)
        except ValidationError:
            return DEFER
        return out

    return run


def _field(field: fields.Field) -> _Value | None:
    """How one field loads a present value, or None if this module cannot say."""
    if field.pre_load or field.post_load:
        return _generic(field)
    allow_none = field.allow_none
    validators = tuple(field.validators)
    kind = type(field)
    check: Callable[[Any], bool] | None = None
    if kind is Int:
        check = _is_int64
    elif kind is Cents:
        check = _is_cents
    elif kind is Bool:
        check = _is_bool
    elif kind is fields.String:
        check = _is_str
    elif kind is fields.Nested and _plain_nested(field):
        nested = loader(field.schema)
        if nested is None:
            return None
        return _validated(lambda value, data: nested(value), allow_none, validators)
    elif kind is fields.List:
        item = _field(field.inner)
        if item is None:
            return None

        def load_list(value: Any, data: Any) -> Any:
            if type(value) is not list:
                return DEFER
            out = []
            for each in value:
                loaded = item(each, data)
                if loaded is DEFER:
                    return DEFER
                out.append(loaded)
            return out

        return _validated(load_list, allow_none, validators)
    if check is None:
        return _generic(field)
    test = check
    return _validated(lambda value, data: value if test(value) else DEFER, allow_none, validators)


def _validated(load_value: _Value, allow_none: bool, validators: tuple[Any, ...]) -> _Value:
    def run(value: Any, data: Any) -> Any:
        if value is None:
            return None if allow_none else DEFER
        loaded = load_value(value, data)
        if loaded is DEFER:
            return DEFER
        try:
            for validator in validators:
                if validator(loaded) is False:
                    return DEFER
        except ValidationError:
            return DEFER
        return loaded

    return run


def _generic(field: fields.Field) -> _Value:
    """The field's own ``deserialize``: marshmallow's code for any field class."""

    def run(value: Any, data: Any) -> Any:
        try:
            return field.deserialize(value, field.name, data)
        except ValidationError:
            return DEFER

    return run


def _plain_nested(field: fields.Nested) -> bool:
    return (
        not field.many
        and field.only is None
        and not field.exclude
        and field.unknown is None
        and not getattr(field, "partial", None)
    )


def _is_int64(value: Any) -> bool:
    return type(value) is int and is_int64(value)


def _is_cents(value: Any) -> bool:
    return _is_int64(value) and value <= MAX_CENTS


def _is_bool(value: Any) -> bool:
    return type(value) is bool


def _is_str(value: Any) -> bool:
    return type(value) is str
