"""Schemas of the price widgets: product detail, list prices, checkout, auto-claim, live rooms."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from bff.coupons.wallet import CouponSchema
from bff.schemas import MAX_ID, Cents, Instant, Int, QueryInt
from widgets.claim.schemas import ID, REQUEST_ID

MAX_QUANTITY = 999
quantity_range = validate.Range(min=1, max=MAX_QUANTITY, error="Must be 1-999.")


def _unique_products(items: list[dict[str, Any]]) -> None:
    ids = [item["product_id"] for item in items]
    if len(set(ids)) != len(ids):
        raise ValidationError("Must not list a product twice.")


class ProductQuerySchema(Schema):
    quantity = QueryInt(load_default=1, validate=quantity_range)
    live_room_id = fields.String(load_default=None, validate=ID)


class AppliedCouponSchema(Schema):
    coupon_id = fields.Integer(metadata={"description": "a coupon the user holds"})
    template_id = fields.Integer(metadata={"description": "a coupon to claim first"})
    needs_claim = fields.Boolean(required=True)
    discount = fields.Integer(required=True)


class PriceSchema(Schema):
    list_price = fields.Integer(required=True)
    promo_price = fields.Integer(allow_none=True, metadata={"description": "店铺优惠"})
    exclusive_price = fields.Integer(allow_none=True, metadata={"description": "直播专享价"})
    final_price = fields.Integer(required=True, metadata={"description": "券后价 for quantity"})
    saving = fields.Integer(required=True, metadata={"description": "list x quantity - final"})
    coupons = fields.List(fields.Nested(AppliedCouponSchema), required=True)


class ProductSchema(Schema):
    product_id = fields.String(required=True)
    title = fields.String(required=True)
    list_price = fields.Integer(required=True)
    promo_price = fields.Integer(allow_none=True)
    category = fields.String(allow_none=True)
    cover_image = fields.String(allow_none=True)


class ProductDetailSchema(Schema):
    product = fields.Nested(ProductSchema, required=True)
    price = fields.Nested(PriceSchema, required=True)


class ItemSchema(Schema):
    product_id = fields.String(required=True, validate=ID)
    quantity = Int(load_default=1, validate=quantity_range)


class PricesInSchema(Schema):
    items = fields.List(
        fields.Nested(ItemSchema),
        required=True,
        validate=validate.Length(min=1, max=50, error="Must list 1-50 products."),
    )


class ProductPriceSchema(Schema):
    product_id = fields.String(required=True)
    price = fields.Nested(PriceSchema, required=True)


class PricesReplySchema(Schema):
    items = fields.List(fields.Nested(ProductPriceSchema), required=True)


class CheckoutInSchema(Schema):
    items = fields.List(
        fields.Nested(ItemSchema),
        required=True,
        validate=[
            validate.Length(min=1, max=50, error="Must list 1-50 products."),
            _unique_products,
        ],
    )
    coupon_ids = fields.List(
        Int(validate=validate.Range(min=1, max=MAX_ID)),
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=10),
    )
    live_room_id = fields.String(load_default=None, validate=ID)

    @validates_schema
    def unique_coupons(self, data: dict[str, Any], **_: Any) -> None:
        ids = data.get("coupon_ids") or []
        if len(set(ids)) != len(ids):
            raise ValidationError("Must not repeat a coupon.", "coupon_ids")


class CheckoutLineSchema(Schema):
    product_id = fields.String(required=True)
    quantity = fields.Integer(required=True)
    unit_price = fields.Integer(required=True)
    amount = fields.Integer(required=True)
    discount = fields.Integer(required=True)
    payable = fields.Integer(required=True)


class CheckoutCouponSchema(Schema):
    coupon_id = fields.Integer(required=True)
    discount = fields.Integer(required=True)


class CheckoutReplySchema(Schema):
    lines = fields.List(fields.Nested(CheckoutLineSchema), required=True)
    coupons = fields.List(fields.Nested(CheckoutCouponSchema), required=True)
    total = fields.Integer(required=True)
    discount = fields.Integer(required=True)
    payable = fields.Integer(required=True)


class AutoClaimInSchema(Schema):
    request_id = fields.String(required=True, validate=REQUEST_ID)


class SkippedSchema(Schema):
    template_id = fields.Integer(required=True)
    reason = fields.String(required=True, metadata={"example": "SOLD_OUT"})


class AutoClaimReplySchema(Schema):
    claimed = fields.List(fields.Nested(CouponSchema), required=True)
    skipped = fields.List(fields.Nested(SkippedSchema), required=True)
    price = fields.Nested(PriceSchema, required=True)
    replayed = fields.Boolean()


class LivePricesQuerySchema(Schema):
    product_ids = fields.String(
        required=True,
        metadata={"description": "comma list, at most 100", "example": "cup-1,tea-1"},
    )

    @validates_schema
    def ids(self, data: dict[str, Any], **_: Any) -> None:
        ids = [part for part in data["product_ids"].split(",") if part]
        if not 1 <= len(ids) <= 100:
            raise ValidationError("Must list 1-100 product ids.", "product_ids")
        if any(not ID.regex.fullmatch(part) for part in ids):
            raise ValidationError("Each id must be 1-64 of A-Z a-z 0-9 _ -.", "product_ids")


class LivePriceInSchema(Schema):
    product_id = fields.String(required=True, validate=ID)
    exclusive_price = Cents(
        required=True, validate=validate.Range(min=1, error="Must be positive.")
    )
    starts_at = Instant(required=True)
    ends_at = Instant(required=True)

    @validates_schema
    def ordered(self, data: dict[str, Any], **_: Any) -> None:
        if data["ends_at"] <= data["starts_at"]:
            raise ValidationError("Must be after starts_at.", "ends_at")


class LiveRoomInSchema(Schema):
    items = fields.List(
        fields.Nested(LivePriceInSchema),
        required=True,
        validate=[validate.Length(max=500), _unique_products],
    )


class LivePriceSchema(Schema):
    product_id = fields.String(required=True)
    list_price = fields.Integer(required=True)
    exclusive_price = fields.Integer(required=True)
    starts_at = Instant(required=True)
    ends_at = Instant(required=True)
    status = fields.String(required=True, validate=validate.OneOf(("upcoming", "live", "ended")))


class LiveRoomSchema(Schema):
    room_id = fields.String(required=True)
    items = fields.List(fields.Nested(LivePriceSchema), required=True)
