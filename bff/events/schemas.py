"""The feed's query and the event shape (the OpenAPI document is made from these)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from bff.events.outbox import EVENT_TYPES
from bff.schemas import MAX_ID, PageQuery, QueryInt

MAX_TYPES_LENGTH = 500


class TypeList(fields.String):
    """``coupon.claimed,coupon.used``: a comma list of known event types."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        text = super()._deserialize(value, attr, data, **kwargs)
        if len(text) > MAX_TYPES_LENGTH:
            raise ValidationError(f"Longer than {MAX_TYPES_LENGTH} characters.")
        names = [name.strip() for name in text.split(",") if name.strip()]
        if not names:
            raise ValidationError("Name at least one event type (or leave types out).")
        unknown = [name for name in names if name not in EVENT_TYPES]
        if unknown:
            raise ValidationError(
                f"Unknown event type {unknown[0]!r}; one of: {', '.join(EVENT_TYPES)}."
            )
        return names


class EventFeedQuerySchema(PageQuery):
    after = QueryInt(
        load_default=None,
        validate=validate.Range(min=0, max=MAX_ID),
        metadata={"description": "Events with a greater id than this one (the last id seen)."},
    )
    types = TypeList(
        load_default=None,
        metadata={"description": "Only these types (comma list), e.g. coupon.claimed,coupon.used."},
    )


class EventSchema(Schema):
    id = fields.Integer(
        required=True,
        metadata={"description": "Unique and stable across redelivery: dedupe by it."},
    )
    type = fields.String(required=True, validate=validate.OneOf(EVENT_TYPES))
    schema_version = fields.Integer(required=True, metadata={"example": 1})
    shop_id = fields.String(required=True)
    occurred_at = fields.DateTime(required=True)
    data = fields.Dict(
        required=True,
        metadata={"description": "The type's fields (docs/EVENTS.md): ids, user, amounts."},
    )
