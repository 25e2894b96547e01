"""Gift-pack, membership and member-center schemas (API.md "Member center")."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from bff.coupons.schemas import BENEFIT_SCHEMAS
from bff.coupons.wallet import CouponSchema
from bff.members import MemberSchema
from bff.packs.rules import KINDS, MAX_COUPONS, PACK_STATUSES, STATES
from bff.schemas import MAX_ID, Discriminated, Int, PageQuery, Text
from widgets.claim.schemas import REQUEST_ID

template_id = validate.Range(min=1, max=MAX_ID, error="Must be a template id.")
pack_size = validate.Length(
    min=1, max=MAX_COUPONS, error=f"A pack holds 1 to {MAX_COUPONS} coupon templates."
)


class GiftInSchema(Schema):
    template_id = Int(required=True, validate=template_id)
    quantity = Int(
        required=True,
        validate=validate.Range(min=1, max=1_000_000_000, error="Must be a positive integer."),
        metadata={"description": "gifts set aside for this pack (礼品数), <= its stock"},
    )


class PackPatchSchema(Schema):
    """Every field optional: what a PATCH may change (contents only before any claim)."""

    name = Text(validate=validate.Length(min=1, max=40))
    starts_at = fields.AwareDateTime()
    ends_at = fields.AwareDateTime()
    popup_starts_at = fields.AwareDateTime(allow_none=True)
    popup_ends_at = fields.AwareDateTime(allow_none=True)
    min_level = Int(validate=validate.Range(min=0, max=100, error="Must be 0-100."))
    coupon_template_ids = fields.List(Int(validate=template_id), validate=pack_size)
    gift = fields.Nested(GiftInSchema, allow_none=True)
    status = fields.String(validate=validate.OneOf(PACK_STATUSES))


class PackInSchema(PackPatchSchema):
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    name = Text(required=True, validate=validate.Length(min=1, max=40))
    starts_at = fields.AwareDateTime(required=True)
    ends_at = fields.AwareDateTime(required=True)
    popup_starts_at = fields.AwareDateTime(
        load_default=None,
        allow_none=True,
        metadata={"description": "default: the pack window"},
    )
    popup_ends_at = fields.AwareDateTime(load_default=None, allow_none=True)
    min_level = Int(
        load_default=0,
        validate=validate.Range(min=0, max=100, error="Must be 0-100."),
        metadata={"description": "member packs only"},
    )
    coupon_template_ids = fields.List(Int(validate=template_id), required=True, validate=pack_size)
    gift = fields.Nested(GiftInSchema, load_default=None, allow_none=True)
    status = fields.String(load_default="active", validate=validate.OneOf(PACK_STATUSES))


class BenefitViewSchema(Schema):
    type = fields.String(required=True, validate=validate.OneOf(("coupon", "gift")))
    template_id = fields.Integer(required=True)
    name = fields.String(required=True)
    description = fields.String(required=True)
    benefit = Discriminated(BENEFIT_SCHEMAS, required=True)
    quantity = fields.Integer(
        required=True, metadata={"description": "1 per pack; for the gift, the gifts set aside"}
    )


class GiftOutSchema(Schema):
    template_id = fields.Integer(required=True)
    quantity = fields.Integer(required=True)
    given = fields.Integer(required=True)


class PackOutSchema(Schema):
    id = fields.Integer(required=True)
    kind = fields.String(required=True)
    name = fields.String(required=True)
    status = fields.String(required=True)
    starts_at = fields.AwareDateTime(required=True)
    ends_at = fields.AwareDateTime(required=True)
    popup_starts_at = fields.AwareDateTime(required=True)
    popup_ends_at = fields.AwareDateTime(required=True)
    min_level = fields.Integer(required=True)
    coupon_template_ids = fields.List(fields.Integer(), required=True)
    gift = fields.Nested(GiftOutSchema, allow_none=True, required=True)
    benefits = fields.List(fields.Nested(BenefitViewSchema), required=True)
    remaining = fields.Integer(
        allow_none=True, required=True, metadata={"description": "packs left; null = unlimited"}
    )
    claimed = fields.Integer(required=True, metadata={"description": "packs claimed so far"})


class PackListQuerySchema(PageQuery):
    kind = fields.String(load_default=None, validate=validate.OneOf(KINDS))


class PackClaimInSchema(Schema):
    request_id = fields.String(required=True, validate=REQUEST_ID)


class PackClaimReplySchema(Schema):
    pack_id = fields.Integer(required=True)
    presentation = fields.String(
        required=True,
        metadata={"description": "show it as a lottery reveal; every benefit is granted"},
    )
    coupons = fields.List(fields.Nested(CouponSchema), required=True)
    gift = fields.Nested(CouponSchema, allow_none=True, required=True)
    replayed = fields.Boolean()


class MembershipReplySchema(Schema):
    member = fields.Nested(MemberSchema, required=True)
    new_member = fields.Boolean(required=True)
    popup = fields.Nested(PackOutSchema, allow_none=True, required=True)


class PackWithStateSchema(Schema):
    pack = fields.Nested(PackOutSchema, required=True)
    state = fields.String(required=True, validate=validate.OneOf(STATES))


class MemberCenterSchema(Schema):
    member = fields.Nested(MemberSchema, allow_none=True, required=True)
    new_member = fields.Boolean(required=True)
    points = fields.Integer(required=True)
    popup = fields.Nested(PackOutSchema, allow_none=True, required=True)
    gift_packs = fields.List(fields.Nested(PackWithStateSchema), required=True)
