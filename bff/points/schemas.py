"""Request and response schemas of points, exchange offers and the exchange."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from bff.coupons.schemas import BENEFIT_SCHEMAS, STATUSES, VALIDITY_SCHEMAS
from bff.coupons.wallet import CouponSchema
from bff.points.ledger import MAX_DELTA
from bff.points.policy import OFFER_STATES
from bff.schemas import (
    MAX_ID,
    REQUEST_ID,
    Discriminated,
    Instant,
    Int,
    PageQuery,
    Pattern,
    Text,
    page_reply,
)
from widgets.claim.schemas import DeviceSchema

REF = Pattern(r"^[A-Za-z0-9_:/.#-]{1,128}$", error="Must be 1-128 of A-Z a-z 0-9 _ : / . # -.")


def _not_zero(value: int) -> None:
    if value == 0:
        raise ValidationError("Must not be 0: positive grants, negative deducts.")


# --- the ledger ------------------------------------------------------------------------------
class PointsChangeInSchema(Schema):
    delta = Int(
        required=True,
        validate=[
            validate.Range(min=-MAX_DELTA, max=MAX_DELTA, error=f"Must be within ±{MAX_DELTA}."),
            _not_zero,
        ],
        metadata={"description": "points to add (positive) or take away (negative)"},
    )
    reason = Text(
        required=True,
        not_blank=True,
        validate=validate.Length(min=1, max=64),
        metadata={"description": "shown to the member, e.g. 购物奖励 or 积分过期"},
    )
    ref = fields.String(
        load_default=None,
        allow_none=True,
        validate=REF,
        metadata={"description": "what the change refers to, e.g. order:20261120-001"},
    )
    request_id = fields.String(required=True, validate=REQUEST_ID)


class LedgerEntrySchema(Schema):
    id = fields.Integer(required=True)
    delta = fields.Integer(required=True)
    reason = fields.String(required=True)
    ref = fields.String(allow_none=True, required=True)
    balance_after = fields.Integer(required=True)
    at = Instant(required=True)


class PointsChangeReplySchema(Schema):
    user_id = fields.String(required=True)
    balance = fields.Integer(required=True)
    entry = fields.Nested(LedgerEntrySchema, required=True)
    replayed = fields.Boolean(metadata={"description": "true when this is a repeated request"})


class PointsHistorySchema(Schema):
    user_id = fields.String(required=True)
    balance = fields.Integer(required=True)
    ledger = fields.List(
        fields.Nested(LedgerEntrySchema), required=True, metadata={"description": "newest first"}
    )
    next_cursor = fields.String(allow_none=True, required=True)


class PointsHistoryQuerySchema(PageQuery):
    pass


# --- offers ----------------------------------------------------------------------------------
class OfferInSchema(Schema):
    template_id = Int(required=True, validate=validate.Range(min=1, max=MAX_ID))
    points_cost = Int(
        required=True,
        validate=validate.Range(min=1, max=MAX_DELTA, error=f"Must be 1-{MAX_DELTA} points."),
    )
    starts_at = Instant(
        load_default=None,
        allow_none=True,
        metadata={"description": "default: the template's claim_start"},
    )
    ends_at = Instant(
        load_default=None,
        allow_none=True,
        metadata={"description": "default: the template's claim_end"},
    )

    @validates_schema
    def ordered(self, data: dict[str, Any], **_: Any) -> None:
        if (
            data["starts_at"] is not None
            and data["ends_at"] is not None
            and data["ends_at"] <= data["starts_at"]
        ):
            raise ValidationError("Must be after starts_at.", "ends_at")


class TemplateSummarySchema(Schema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    description = fields.String(required=True)
    benefit = Discriminated(BENEFIT_SCHEMAS, required=True)
    validity = Discriminated(VALIDITY_SCHEMAS, required=True)
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    claim_start = Instant(required=True)
    claim_end = Instant(required=True)
    per_user_limit = fields.Integer(required=True)
    remaining = fields.Integer(allow_none=True, metadata={"description": "null = unlimited"})
    redeem_page = fields.String(required=True)


class OfferSchema(Schema):
    id = fields.Integer(required=True)
    template_id = fields.Integer(required=True)
    points_cost = fields.Integer(required=True)
    starts_at = Instant(
        allow_none=True, required=True, metadata={"description": "null = the template's"}
    )
    ends_at = Instant(
        allow_none=True, required=True, metadata={"description": "null = the template's"}
    )
    template = fields.Nested(TemplateSummarySchema, required=True)
    created_at = Instant(required=True)


OfferPageSchema = page_reply(OfferSchema, "ExchangeOfferPage")


class OfferListQuerySchema(PageQuery):
    pass


# --- the shopper's page and the exchange -----------------------------------------------------
class ShopperOfferSchema(Schema):
    offer_id = fields.Integer(required=True)
    template = fields.Nested(TemplateSummarySchema, required=True)
    points_cost = fields.Integer(required=True)
    starts_at = Instant(
        required=True, metadata={"description": "the offer's and template's windows together"}
    )
    ends_at = Instant(required=True)
    state = fields.String(required=True, validate=validate.OneOf(OFFER_STATES))
    held = fields.Integer(
        required=True, metadata={"description": "coupons of this template the caller got"}
    )


class ExchangePageSchema(Schema):
    balance = fields.Integer(required=True)
    member = fields.Boolean(
        required=True, metadata={"description": "false: join the shop to exchange points"}
    )
    wallet_full = fields.Boolean(
        required=True, metadata={"description": "true: an exchange would be WALLET_FULL"}
    )
    offers = fields.List(fields.Nested(ShopperOfferSchema), required=True)


class RedeemInSchema(Schema):
    request_id = fields.String(required=True, validate=REQUEST_ID)
    device = fields.Nested(
        DeviceSchema,
        load_default=None,
        allow_none=True,
        metadata={"description": "needed when the coupon asks for the risk check"},
    )


class RedeemReplySchema(Schema):
    coupon = fields.Nested(CouponSchema, required=True)
    balance = fields.Integer(required=True, metadata={"description": "points left"})
    replayed = fields.Boolean(metadata={"description": "true when this is a repeated request"})
