"""marshmallow building blocks shared by every widget's schemas.

Strict scalars (no ``"5"`` for 5, no ``true`` for 1), objects discriminated by
``type`` (API.md: "Every discriminated object uses the key type"), page paths,
image URLs, cursors, and the error and paging shapes.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from marshmallow import Schema, ValidationError, fields, validate

from bff import fastdump

REQUEST_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class Pattern(validate.Regexp):
    """``validate.Regexp`` matched against the whole string: ``re.match`` lets ``$``
    match before a trailing newline (``"P-1\\n"``). Still a Regexp, so the document
    shows the same ``pattern``."""

    def __call__(self, value: str | bytes) -> str | bytes:
        if self.regex.fullmatch(value) is None:  # type: ignore[arg-type]
            raise ValidationError(self._format_error(value))
        return value


ID_PATTERN = r"[A-Za-z0-9_-]{1,64}"
# The validators of ids and request ids in bodies (path ids are matched by the routes).
ID = Pattern(rf"^{ID_PATTERN}$", error="Must be 1-64 of A-Z a-z 0-9 _ -.")
REQUEST_ID = Pattern(REQUEST_ID_PATTERN, error="Must be 1-64 of A-Z a-z 0-9 _ -.")
PAGE_PATH = re.compile(r"^/?[A-Za-z0-9_-]+(?:/[A-Za-z0-9_.-]+)*(?:\?[A-Za-z0-9_.~%&=+,:-]*)?$")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
MAX_LIMIT = 100
# Ids are BIGINT: a larger number is a 400, never an overflow deeper down.
MAX_ID = 2**63 - 1
MAX_CENTS = 10_000_000_000
DEFAULT_LIMIT = 20


class Int(fields.Integer):
    """An integer that refuses booleans, floats and numeric strings.

    Every field also declares the range its column and the business allow; beyond
    that, nothing outside a signed 64-bit integer (BIGINT) gets past here, so a
    number can never overflow a driver or a column.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        number = super()._deserialize(value, attr, data, **kwargs)
        if not is_int64(number):
            raise ValidationError("Must be a 64-bit integer.")
        return number


def is_int64(number: int) -> bool:
    """Within a signed 64-bit integer (BIGINT): :class:`Int`'s bound, and bff.fastload's."""
    return -MAX_ID - 1 <= number <= MAX_ID


class Cents(Int):
    """Money: a whole number of cents (分), at most 100 million yuan.

    The cap keeps totals (price x quantity x 50 lines) within 2^53, what a
    JavaScript front end represents exactly, and within BIGINT.
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        cents = super()._deserialize(value, attr, data, **kwargs)
        if cents > MAX_CENTS:
            raise ValidationError(f"Must be at most {MAX_CENTS} cents.")
        return cents


EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


class Instant(fields.AwareDateTime):
    """An ISO-8601 instant with an offset, between 2000 and 2100.

    Out of that range a date is a typo, and near year 1 or 9999 converting it to
    UTC overflows deeper down: refuse it here as a 400.
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        instant = super()._deserialize(value, attr, data, **kwargs)
        try:
            in_range = EARLIEST <= instant.astimezone(UTC) < LATEST
        except OverflowError:
            in_range = False
        if not in_range:
            raise ValidationError("Must be a time between 2000 and 2100.")
        return instant


class Bool(fields.Boolean):
    """Only JSON true and false (1 == True in Python, so check the type)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class Text(fields.String):
    """A string; with ``strip_check`` it must hold more than white space."""

    def __init__(self, *, not_blank: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.not_blank = not_blank

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if self.not_blank and not text.strip():
            raise ValidationError("Must not be blank.")
        return text


def page_path_ok(value: str) -> bool:
    if len(value) > 256 or PAGE_PATH.fullmatch(value) is None:
        return False
    # "." and ".." segments would let two spellings name one page, or climb out of it.
    return all(segment not in (".", "..") for segment in page_of(value).split("/"))


class PagePath(fields.String):
    """A mini-program page path, optionally with a query: ``pages/coupon/use?from=coupon``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if not page_path_ok(text):
            raise ValidationError(
                "Must be a mini-program page path such as pages/index/index, "
                "optionally with a query string."
            )
        return text


def page_of(path: str) -> str:
    """The page a path points at, without leading slash or query: what 'same page' means."""
    return path.split("?", 1)[0].lstrip("/")


class ImageUrl(fields.String):
    """Exactly one http(s) URL of a png, jpg or jpeg image."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, list):
            raise ValidationError("Must be exactly one image URL, not a list.")
        text = super()._deserialize(value, attr, data, **kwargs)
        parts = urlsplit(text)
        if len(text) > 512 or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValidationError("Must be an http(s) URL.")
        if not parts.path.lower().endswith(IMAGE_EXTENSIONS):
            raise ValidationError("Must be a png, jpg or jpeg image URL.")
        return text


class Discriminated(fields.Field):
    """An object whose ``type`` key picks the schema that loads and dumps it."""

    def __init__(self, schemas: Mapping[str, type[Schema]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.schemas = dict(schemas)
        self._instances = {name: schema() for name, schema in self.schemas.items()}

    def _pick(self, value: Any) -> tuple[str, Schema]:
        if not isinstance(value, Mapping):
            raise ValidationError("Must be an object with a type.")
        kind = value.get("type")
        # Only a string can name a schema: {} or [] as the type is refused, not hashed.
        if not isinstance(kind, str) or kind not in self._instances:
            raise ValidationError({"type": [f"Must be one of: {', '.join(self.schemas)}."]})
        return kind, self._instances[kind]

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        kind, schema = self._pick(value)
        body = {k: v for k, v in value.items() if k != "type"}
        loaded = schema.load(body)
        return {"type": kind, **loaded}

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        if value is None:
            return None
        kind, schema = self._pick(value)
        body = {k: v for k, v in value.items() if k != "type"}
        return {"type": kind, **fastdump.dump(schema, body)}


class ErrorBody(Schema):
    code = fields.String(required=True, metadata={"example": "SOLD_OUT"})
    message = fields.String(required=True)
    details = fields.Dict(required=True)


class ErrorReply(Schema):
    error = fields.Nested(ErrorBody, required=True)


_QUERY_DIGITS = re.compile(r"-?[0-9]{1,19}")


class QueryInt(fields.Integer):
    """An integer from a query string ("20"), in ASCII digits only: Python's ``int()``
    would also take "1_0", "+1", " 1 " and other scripts' digits."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=False, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str) and _QUERY_DIGITS.fullmatch(value) is None:
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class PageQuery(Schema):
    limit = QueryInt(load_default=DEFAULT_LIMIT, validate=validate.Range(min=1, max=MAX_LIMIT))
    cursor = fields.String(load_default=None, validate=validate.Length(max=200))


def encode_cursor(position: Mapping[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    """The position a cursor stands for; a tampered cursor is a 400 on the ``cursor`` field."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise ValidationError({"cursor": ["Invalid cursor."]}) from exc
    if not isinstance(position, dict):
        raise ValidationError({"cursor": ["Invalid cursor."]})
    return position


def page_reply(item_schema: type[Schema], name: str | None = None) -> type[Schema]:
    """The ``{"items": [...], "next_cursor": ...}`` schema for one kind of item."""
    return Schema.from_dict(
        {
            "items": fields.List(fields.Nested(item_schema), required=True),
            "next_cursor": fields.String(allow_none=True, required=True),
        },
        name=name or f"{item_schema.__name__.removesuffix('Schema')}Page",
    )


def flatten_errors(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """marshmallow's nested messages -> ``{"benefit.amount_off": ["..."]}``."""
    out: dict[str, list[str]] = {}
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            if key == "_schema":
                name = prefix or "_schema"
            else:
                name = f"{prefix}.{key}" if prefix else str(key)
            for field_name, texts in flatten_errors(value, name).items():
                out.setdefault(field_name, []).extend(texts)
    elif isinstance(messages, list):
        texts = [m for m in messages if isinstance(m, str)]
        if texts:
            out.setdefault(prefix or "_schema", []).extend(texts)
        for item in messages:
            if not isinstance(item, str):
                for field_name, nested in flatten_errors(item, prefix).items():
                    out.setdefault(field_name, []).extend(nested)
    else:
        out.setdefault(prefix or "_schema", []).append(str(messages))
    return out
