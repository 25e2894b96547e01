"""JSON encoding shared by replies, idempotency records and caches.

Compact, UTF-8 (Chinese names stay readable and short); datetimes are written
ISO-8601 with their offset. orjson writes the same bytes as the standard library's
compact ``ensure_ascii=False`` encoder (tests/test_jsonutil.py) about eight times
faster. It reads our own records (idempotency replies, stored orders) too; request
bodies are parsed by ``bff.bodies``, with orjson where its answer provably equals the
standard library's (tests/test_bodies_parse.py) and the standard library otherwise.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


# The standard library's encoder: what orjson must match (tests/test_jsonutil.py), and the
# fallback for what orjson refuses.
stdlib_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_default)
_OPTIONS = orjson.OPT_NON_STR_KEYS  # int keys become strings, as with the json module


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=_default, option=_OPTIONS)
    except TypeError:  # an integer beyond 64 bits (a request body being hashed): the slow way
        return stdlib_encoder.encode(value).encode()


def dumps_str(value: Any) -> str:
    return dumps(value).decode()


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)
