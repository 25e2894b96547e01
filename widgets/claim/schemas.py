"""Request and response schemas of the claim widget, claiming, the wallet and merchant codes."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from bff.coupons.schemas import BENEFIT_SCHEMAS, VALIDITY_SCHEMAS
from bff.coupons.wallet import CouponSchema
from bff.schemas import (
    ID,
    MAX_ID,
    REQUEST_ID,
    Bool,
    Discriminated,
    Int,
    page_reply,
)
from widgets.claim.core import STATES


class DeviceSchema(Schema):
    id = fields.String(required=True, validate=validate.Length(min=1, max=128))
    emulator = Bool(load_default=False)
    multi_open = Bool(load_default=False)


class ClaimInSchema(Schema):
    template_id = Int(required=True, validate=validate.Range(min=1, max=MAX_ID))
    request_id = fields.String(required=True, validate=REQUEST_ID)
    device = fields.Nested(DeviceSchema, load_default=None, allow_none=True)


class ClaimByCodeInSchema(Schema):
    code = fields.String(required=True, validate=validate.Length(min=1, max=64))
    request_id = fields.String(required=True, validate=REQUEST_ID)


class WidgetQuerySchema(Schema):
    product_id = fields.String(load_default=None, validate=ID)


class WidgetCouponSchema(Schema):
    template_id = fields.Integer(required=True)
    name = fields.String(required=True)
    description = fields.String(required=True)
    benefit = Discriminated(BENEFIT_SCHEMAS, required=True)
    validity = Discriminated(VALIDITY_SCHEMAS, required=True)
    claim_page = fields.String(required=True)
    state = fields.String(required=True, validate=validate.OneOf(STATES))
    held = fields.Integer(required=True)
    remaining = fields.Integer(allow_none=True, metadata={"description": "null = unlimited"})


class WidgetReplySchema(Schema):
    claim_page = fields.String(required=True, metadata={"description": "the shop's landing page"})
    coupons = fields.List(fields.Nested(WidgetCouponSchema), required=True)


WalletPageSchema = page_reply(CouponSchema, "CouponPage")


class GenerateCodesInSchema(Schema):
    count = Int(
        required=True,
        validate=validate.Range(
            min=1, max=100_000, error="Must be a positive integer up to 100000."
        ),
    )


class GenerateCodesReplySchema(Schema):
    generated = fields.Integer(required=True)
    available = fields.Integer(required=True)


class ImportCodesInSchema(Schema):
    file = fields.Raw(
        required=True,
        metadata={"type": "string", "format": "binary", "description": "one code per line"},
    )


class ImportCodesReplySchema(Schema):
    imported = fields.Integer(required=True)
    duplicates = fields.Integer(required=True)
    invalid = fields.Integer(required=True)
    available = fields.Integer(required=True)


class GrantInSchema(Schema):
    user_ids = fields.List(
        fields.String(validate=ID),
        required=True,
        validate=validate.Length(min=1, max=10_000, error="Must list 1-10000 users."),
    )
    request_id = fields.String(required=True, validate=REQUEST_ID)


class GrantFormSchema(Schema):
    """The multipart form of a grant: the same request, the users as a file."""

    file = fields.Raw(
        required=True,
        metadata={"type": "string", "format": "binary", "description": "one user id per line"},
    )
    request_id = fields.String(required=True, validate=REQUEST_ID)


class GrantedSchema(Schema):
    user_id = fields.String(required=True)
    coupon_id = fields.Integer(required=True)


class GrantFailureSchema(Schema):
    user_id = fields.String(required=True)
    code = fields.String(required=True, metadata={"example": "LIMIT_REACHED"})


class GrantReplySchema(Schema):
    granted = fields.List(fields.Nested(GrantedSchema), required=True)
    failed = fields.List(fields.Nested(GrantFailureSchema), required=True)
    replayed = fields.Boolean()
