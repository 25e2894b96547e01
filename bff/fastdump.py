"""marshmallow's ``Schema.dump`` of a reply, without its per-field machinery.

A reply schema declares the shape (and the OpenAPI document); dumping a product page
through it cost tens of microseconds, mostly marshmallow looking values up and
calling each field's ``serialize``. :func:`dumper` builds from the schema a function
that writes the same dict: for the field classes below it formats a value of the
exact type the field expects as marshmallow would (an ``int`` for Integer, a ``str``
for String, a ``bool`` for Boolean, ``isoformat()`` for an ISO DateTime, a nested
schema through its own dumper); any other value or field goes through the field's
own ``_serialize`` (marshmallow's code). An object that is not a dict, a key missing
from it, or a schema with dump hooks or its own ``get_attribute`` goes through
marshmallow entirely.

``VERIFY`` (set by the test suite) dumps every object both ways and raises if they
differ, so every reply of every test checks the equivalence.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from marshmallow import Schema, fields, missing
from marshmallow.decorators import POST_DUMP, PRE_DUMP

VERIFY = False

Dumper = Callable[[Any], Any]
_Format = Callable[[Any, Any], Any]  # (value, the object holding it) -> what dump writes

_UNBUILT: Any = object()
_ISO = (None, "iso", "iso8601")


def dumper(schema: Schema) -> Dumper | None:
    """The fast dumper of ``schema`` (built once, kept on the instance), or None."""
    built = schema.__dict__.get("_fast_dumper", _UNBUILT)
    if built is _UNBUILT:
        built = schema.__dict__["_fast_dumper"] = _build(schema)
    return built


def dump(schema: Schema, obj: Any) -> Any:
    """``schema.dump(obj)``."""
    fast = dumper(schema)
    result = fast(obj) if fast is not None else schema.dump(obj)
    if VERIFY:
        expected = schema.dump(obj)
        if result != expected or _types(result) != _types(expected):
            raise AssertionError(f"fastdump of {type(schema).__name__}: {result!r} != {expected!r}")
    return result


def _types(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _types(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [_types(inner) for inner in value]
    return type(value)


def _build(schema: Schema) -> Dumper | None:
    if schema.many or schema._hooks.get(PRE_DUMP) or schema._hooks.get(POST_DUMP):
        return None
    if type(schema).get_attribute is not Schema.get_attribute:
        return None
    steps: list[tuple[str, str, str, fields.Field, _Format]] = []
    for name, field in schema.dump_fields.items():
        lookup = field.attribute or name
        if "." in lookup or not field._CHECK_ATTRIBUTE:
            return None
        key = field.data_key if field.data_key is not None else name
        steps.append((key, name, lookup, field, _format(field)))
    accessor = schema.get_attribute

    def run(obj: Any) -> Any:
        if type(obj) is not dict:
            return schema.dump(obj)
        out: dict[str, Any] = {}
        for key, name, lookup, field, write in steps:
            if lookup in obj:
                out[key] = write(obj[lookup], obj)
                continue
            value = field.serialize(name, obj, accessor=accessor)  # marshmallow's lookup
            if value is not missing:
                out[key] = value
        return out

    return run


def _format(field: fields.Field) -> _Format:
    """How ``field`` writes a value it was given (marshmallow's ``_serialize``)."""
    name = field.name
    own = type(field)._serialize

    def generic(value: Any, obj: Any) -> Any:
        return field._serialize(value, name, obj)

    exact: type | None = None
    if own is fields.Integer._serialize and not field.as_string:
        exact = int
    elif own is fields.String._serialize:
        exact = str
    elif own is fields.Boolean._serialize:
        exact = bool
    elif (
        isinstance(field, fields.DateTime)
        and own is fields.DateTime._serialize
        and (field.format in _ISO)
    ):

        def iso(value: Any, obj: Any) -> Any:
            if type(value) is datetime:
                return value.isoformat()
            return generic(value, obj)

        return iso
    elif type(field) is fields.Nested and field.only is None and not field.exclude:
        nested = dumper(field.schema)
        many = field.many
        if nested is None:
            return generic

        def nest(value: Any, obj: Any) -> Any:
            if value is None:
                return None
            if many:
                return (
                    [nested(each) for each in value] if type(value) is list else generic(value, obj)
                )
            return nested(value)

        return nest
    elif type(field) is fields.List:
        item = _format(field.inner)

        def each(value: Any, obj: Any) -> Any:
            if type(value) is not list:
                return generic(value, obj)
            return [item(one, obj) for one in value]

        return each
    if exact is None:
        return generic
    kind = exact

    def plain(value: Any, obj: Any) -> Any:
        if value is None or type(value) is kind:
            return value
        return generic(value, obj)

    return plain
