"""Coupon template schemas: every rule of DOMAIN.md's template table, one message per field."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from bff.schemas import (
    ID,
    Bool,
    Cents,
    Discriminated,
    ImageUrl,
    Instant,
    Int,
    PagePath,
    PageQuery,
    Text,
)

BENEFIT_TYPES = ("threshold", "no_threshold", "discount", "exchange", "gift")
CLAIM_METHODS = ("widget", "auto", "points", "gift_pack", "code")
STATUSES = ("active", "paused", "ended")
MAX_STOCK = 1_000_000_000
MAX_PREGENERATED = 100_000
MAX_PER_USER = 1000


COVER_REQUIRED = "Required when product_code is set: one png/jpg/jpeg URL."

positive = validate.Range(min=1, error="Must be a positive integer.")


# --- benefit -------------------------------------------------------------------------------
class ThresholdBenefitSchema(Schema):
    amount_off = Cents(required=True, validate=positive)
    threshold = Cents(required=True, validate=positive)

    @validates_schema
    def amount_below_threshold(self, data: dict[str, Any], **_: Any) -> None:
        if data["amount_off"] >= data["threshold"]:
            raise ValidationError("Must be below the threshold.", "amount_off")


class NoThresholdBenefitSchema(Schema):
    amount_off = Cents(required=True, validate=positive)


class DiscountBenefitSchema(Schema):
    rate_permille = Int(
        required=True,
        validate=validate.Range(min=1, max=999, error="Must be 1-999 (850 = pay 85%)."),
        metadata={"description": "what the shopper pays, in thousandths: 850 = pay 85%"},
    )
    threshold = Cents(load_default=None, allow_none=True, validate=positive)
    max_off = Cents(load_default=None, allow_none=True, validate=positive)


class ExchangeBenefitSchema(Schema):
    product_id = fields.String(required=True, validate=ID)
    price = Cents(
        required=True, validate=positive, metadata={"description": "cents paid for one unit"}
    )


class GiftBenefitSchema(Schema):
    product_id = fields.String(required=True, validate=ID)


BENEFIT_SCHEMAS = {
    "threshold": ThresholdBenefitSchema,
    "no_threshold": NoThresholdBenefitSchema,
    "discount": DiscountBenefitSchema,
    "exchange": ExchangeBenefitSchema,
    "gift": GiftBenefitSchema,
}


# --- scope ---------------------------------------------------------------------------------
def _unique(values: list[Any]) -> None:
    if len(set(values)) != len(values):
        raise ValidationError("Must not repeat an entry.")


class ShopScopeSchema(Schema):
    pass


class ProductsScopeSchema(Schema):
    product_ids = fields.List(
        fields.String(validate=ID),
        required=True,
        validate=[validate.Length(min=1, max=500, error="Must list 1-500 products."), _unique],
    )


class CategoriesScopeSchema(Schema):
    categories = fields.List(
        fields.String(validate=validate.Length(min=1, max=64)),
        required=True,
        validate=[validate.Length(min=1, max=100, error="Must list 1-100 categories."), _unique],
    )


SCOPE_SCHEMAS = {
    "shop": ShopScopeSchema,
    "products": ProductsScopeSchema,
    "categories": CategoriesScopeSchema,
}


# --- validity ------------------------------------------------------------------------------
class AbsoluteValiditySchema(Schema):
    start = Instant(required=True)
    end = Instant(required=True)

    @validates_schema
    def ordered(self, data: dict[str, Any], **_: Any) -> None:
        if data["end"] <= data["start"]:
            raise ValidationError("Must be after start.", "end")


class RelativeValiditySchema(Schema):
    effective_after_days = Int(
        required=True,
        validate=validate.Range(min=0, max=365, error="Must be 0-365 days (0 = at once)."),
    )
    valid_days = Int(
        required=True, validate=validate.Range(min=1, max=3650, error="Must be 1-3650 days.")
    )


VALIDITY_SCHEMAS = {"absolute": AbsoluteValiditySchema, "relative": RelativeValiditySchema}


# --- stock and codes -----------------------------------------------------------------------
class UnlimitedStockSchema(Schema):
    pass


class LimitedStockSchema(Schema):
    total = Int(
        required=True,
        validate=validate.Range(min=1, max=MAX_STOCK, error="Must be a positive integer."),
    )


STOCK_SCHEMAS = {"unlimited": UnlimitedStockSchema, "limited": LimitedStockSchema}


class NoCodesSchema(Schema):
    pass


class RandomCodesSchema(Schema):
    pass


class PregeneratedCodesSchema(Schema):
    count = Int(
        required=True,
        validate=validate.Range(
            min=1,
            max=MAX_PREGENERATED,
            error=f"Must be a positive integer up to {MAX_PREGENERATED} (add more later).",
        ),
    )


class ImportedCodesSchema(Schema):
    pass


CODES_SCHEMAS = {
    "none": NoCodesSchema,
    "random": RandomCodesSchema,
    "pregenerated": PregeneratedCodesSchema,
    "imported": ImportedCodesSchema,
}
CODE_STOCK_TYPES = ("pregenerated", "imported")


# --- audience and stacking -----------------------------------------------------------------
class AllAudienceSchema(Schema):
    pass


class MembersAudienceSchema(Schema):
    min_level = Int(load_default=0, validate=validate.Range(min=0, max=100))


AUDIENCE_SCHEMAS = {"all": AllAudienceSchema, "members": MembersAudienceSchema}


class StackingSchema(Schema):
    with_store_promotions = Bool(
        load_default=True,
        metadata={"description": "false = 优惠券不可与店铺优惠同时使用"},
    )
    with_other_coupons = Bool(
        load_default=False, metadata={"description": "true = 优惠券可叠加使用"}
    )


def _unique_methods(values: list[str]) -> None:
    if len(set(values)) != len(values):
        raise ValidationError("Must not repeat a method.")


class TemplateInSchema(Schema):
    """A coupon template as a merchant writes it."""

    name = Text(required=True, not_blank=True, validate=validate.Length(min=1, max=40))
    description = fields.String(
        load_default="",
        validate=validate.Length(max=120, error="Must be at most 120 characters."),
    )
    benefit = Discriminated(BENEFIT_SCHEMAS, required=True)
    scope = Discriminated(SCOPE_SCHEMAS, load_default=lambda: {"type": "shop"})
    product_code = fields.String(load_default=None, allow_none=True, validate=ID)
    cover_image = ImageUrl(load_default=None, allow_none=True)
    claim_start = Instant(required=True)
    claim_end = Instant(required=True)
    validity = Discriminated(VALIDITY_SCHEMAS, required=True)
    stock = Discriminated(STOCK_SCHEMAS, load_default=None, allow_none=True)
    codes = Discriminated(CODES_SCHEMAS, load_default=lambda: {"type": "none"})
    claim_methods = fields.List(
        fields.String(validate=validate.OneOf(CLAIM_METHODS)),
        required=True,
        validate=[validate.Length(min=1, error="Must name at least one method."), _unique_methods],
    )
    per_user_limit = Int(
        load_default=1,
        validate=validate.Range(min=1, max=MAX_PER_USER, error="Must be a positive integer."),
    )
    daily_limit = Int(
        load_default=None,
        allow_none=True,
        # The column and the day's count are 32-bit INT: at most the largest stock.
        validate=validate.Range(
            min=1, max=MAX_STOCK, error=f"Must be a positive integer up to {MAX_STOCK}."
        ),
    )
    audience = Discriminated(AUDIENCE_SCHEMAS, load_default=lambda: {"type": "all"})
    new_member_exclusive = Bool(load_default=False)
    stacking = fields.Nested(StackingSchema, load_default=lambda: StackingSchema().load({}))
    claim_page = PagePath(
        load_default=None,
        allow_none=True,
        metadata={"description": "领券承接页; default the shop's home page"},
    )
    redeem_page = PagePath(required=True, metadata={"description": "券核销跳转页"})
    risk_check = Bool(load_default=False)
    return_on_cancel = Bool(load_default=True)
    status = fields.String(load_default="active", validate=validate.OneOf(("active", "paused")))

    @validates_schema
    def cross_field_rules(self, data: dict[str, Any], **_: Any) -> None:
        errors: dict[str, list[str]] = {}

        def fail(name: str, message: str) -> None:
            errors.setdefault(name, []).append(message)

        if data["claim_end"] <= data["claim_start"]:
            fail("claim_end", "Must be after claim_start.")
        validity = data["validity"]
        if validity["type"] == "absolute" and validity["end"] <= data["claim_start"]:
            fail("validity.end", "Must be after claim_start, or no claimed coupon could be used.")
        if data["product_code"] is not None and data["cover_image"] is None:
            fail("cover_image", COVER_REQUIRED)
        codes_type = data["codes"]["type"]
        if codes_type in CODE_STOCK_TYPES:
            if data["stock"] is not None:
                fail("stock", f"Must be left out: with {codes_type} codes the codes are the stock.")
        elif data["stock"] is None:
            fail("stock", "Missing data for required field.")
        methods = data["claim_methods"]
        if data["benefit"]["type"] == "gift" and methods != ["gift_pack"]:
            fail(
                "claim_methods", "A gift benefit is claimed only inside a gift pack: ['gift_pack']."
            )
        if "code" in methods and codes_type not in CODE_STOCK_TYPES:
            fail("claim_methods", "The code method needs pregenerated or imported codes.")
        if errors:
            raise ValidationError(errors)

    # claim_page and redeem_page must differ (LANDING_PAGES_IDENTICAL): checked by the
    # template service, which knows the configured default claim page (shop settings).


class TemplateOutSchema(Schema):
    """A coupon template with what the server adds."""

    id = fields.Integer(required=True)
    shop_id = fields.String(required=True)
    name = fields.String(required=True)
    description = fields.String(required=True)
    benefit = Discriminated(BENEFIT_SCHEMAS, required=True)
    scope = Discriminated(SCOPE_SCHEMAS, required=True)
    product_code = fields.String(allow_none=True)
    cover_image = fields.String(allow_none=True)
    claim_start = Instant(required=True)
    claim_end = Instant(required=True)
    validity = Discriminated(VALIDITY_SCHEMAS, required=True)
    stock = Discriminated(STOCK_SCHEMAS, allow_none=True)
    codes = Discriminated(CODES_SCHEMAS, required=True)
    claim_methods = fields.List(fields.String(), required=True)
    per_user_limit = fields.Integer(required=True)
    daily_limit = fields.Integer(allow_none=True)
    audience = Discriminated(AUDIENCE_SCHEMAS, required=True)
    new_member_exclusive = fields.Boolean(required=True)
    stacking = fields.Nested(StackingSchema, required=True)
    claim_page = fields.String(required=True)
    redeem_page = fields.String(required=True)
    risk_check = fields.Boolean(required=True)
    return_on_cancel = fields.Boolean(required=True)
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    issued = fields.Integer(required=True)
    remaining = fields.Integer(allow_none=True, metadata={"description": "null = unlimited"})
    created_at = Instant(required=True)
    updated_at = Instant(required=True)


class TemplatePatchSchema(Schema):
    """What can change after creation: wording, display and landing fields (at any time,
    claims or not), status, a later claim end, more stock. The rest is fixed at creation.

    ``null`` clears ``product_code`` and ``cover_image`` and puts ``claim_page`` back to
    the shop's default claim page; the cross-field rules hold on the patched template.
    """

    name = Text(not_blank=True, validate=validate.Length(min=1, max=40))
    description = fields.String(
        validate=validate.Length(max=120, error="Must be at most 120 characters.")
    )
    cover_image = ImageUrl(allow_none=True, metadata={"description": "null clears it"})
    product_code = fields.String(
        allow_none=True,
        validate=ID,
        metadata={"description": "null clears it; when set, cover_image is required"},
    )
    claim_page = PagePath(
        allow_none=True,
        metadata={"description": "领券承接页; null = the shop's default claim page"},
    )
    redeem_page = PagePath(metadata={"description": "券核销跳转页; shown on held coupons too"})
    status = fields.String(validate=validate.OneOf(STATUSES))
    claim_end = Instant()
    stock = Discriminated({"limited": LimitedStockSchema})

    @validates_schema
    def not_empty(self, data: dict[str, Any], **_: Any) -> None:
        if not data:
            raise ValidationError(
                "Give at least one of: name, description, cover_image, product_code, "
                "claim_page, redeem_page, status, claim_end, stock."
            )


class TemplateListQuerySchema(PageQuery):
    status = fields.String(load_default=None, validate=validate.OneOf(STATUSES))
