"""JSON encoding shared by replies, idempotency records and caches.

Compact separators and ``ensure_ascii=False`` (Chinese names stay readable and
short); datetimes are written ISO-8601 with their offset.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any


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


_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_default)


def dumps(value: Any) -> bytes:
    return _encoder.encode(value).encode()


def dumps_str(value: Any) -> str:
    return _encoder.encode(value)


def loads(data: bytes | str) -> Any:
    return json.loads(data)
