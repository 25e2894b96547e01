"""Schemas of the order system's calls (redemption) and of the merchant statistics."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from bff.schemas import MAX_ID, Int
from widgets.claim.schemas import ID
from widgets.coupon_price.schemas import CheckoutInSchema, CheckoutLineSchema


class RedemptionInSchema(CheckoutInSchema):
    """The checkout's items, coupons and live room, plus who and which order."""

    order_id = fields.String(
        required=True, validate=ID, metadata={"description": "the idempotency key"}
    )
    user_id = fields.String(required=True, validate=ID)
    coupon_ids = fields.List(
        Int(validate=validate.Range(min=1, max=MAX_ID)),
        required=True,
        validate=validate.Length(max=10),
        metadata={"description": "the coupons to lock (may be empty); no repeats"},
    )


class RedeemedCouponSchema(Schema):
    coupon_id = fields.Integer(required=True)
    template_id = fields.Integer(required=True)
    discount = fields.Integer(required=True, metadata={"description": "apportioned to the lines"})


class RedemptionReplySchema(Schema):
    order_id = fields.String(required=True)
    user_id = fields.String(required=True)
    status = fields.String(required=True, metadata={"example": "locked"})
    lines = fields.List(fields.Nested(CheckoutLineSchema), required=True)
    coupons = fields.List(fields.Nested(RedeemedCouponSchema), required=True)
    total = fields.Integer(required=True)
    discount = fields.Integer(required=True)
    payable = fields.Integer(required=True)
    live_room_id = fields.String(allow_none=True)
    locked_at = fields.AwareDateTime(required=True)
    lock_expires_at = fields.AwareDateTime(
        required=True, metadata={"description": "unconfirmed past this, the coupons come back"}
    )
    replayed = fields.Boolean(metadata={"description": "true when this order id was seen before"})


class ConfirmReplySchema(Schema):
    order_id = fields.String(required=True)
    status = fields.String(required=True, metadata={"example": "used"})
    confirmed_at = fields.AwareDateTime(required=True)


class NotReturnedSchema(Schema):
    coupon_id = fields.Integer(required=True)
    reason = fields.String(
        required=True,
        validate=validate.OneOf(("expired", "not_returnable")),
        metadata={"description": "expired, or the template does not return on cancel"},
    )


class CancelReplySchema(Schema):
    order_id = fields.String(required=True)
    status = fields.String(required=True, metadata={"example": "cancelled"})
    returned = fields.List(fields.Integer(), required=True)
    not_returned = fields.List(fields.Nested(NotReturnedSchema), required=True)
    cancelled_at = fields.AwareDateTime(required=True)


class FiguresSchema(Schema):
    issued = fields.Integer(required=True)
    claimed = fields.Integer(required=True)
    claim_users = fields.Integer(required=True)
    used = fields.Integer(required=True)
    redeem_users = fields.Integer(required=True)
    redemption_rate = fields.Float(
        required=True, metadata={"description": "核券率 = redeem_users / claim_users (0-1)"}
    )
    discount_total = fields.Integer(required=True)
    gmv = fields.Integer(required=True, metadata={"description": "payable of confirmed orders"})
    roi = fields.Float(
        required=True, allow_none=True, metadata={"description": "gmv / discount_total"}
    )


class BySourceSchema(Schema):
    widget = fields.Nested(FiguresSchema, required=True)
    auto = fields.Nested(FiguresSchema, required=True)
    gift_pack = fields.Nested(FiguresSchema, required=True)
    points = fields.Nested(FiguresSchema, required=True)
    code = fields.Nested(FiguresSchema, required=True)
    grant = fields.Nested(FiguresSchema, required=True)


class TemplateStatsSchema(FiguresSchema):
    template_id = fields.Integer(required=True)
    as_of = fields.AwareDateTime(required=True)
    by_source = fields.Nested(BySourceSchema, required=True)
