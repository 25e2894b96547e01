"""Merchant admin: coupon templates."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from bff.coupons.schemas import (
    TemplateInSchema,
    TemplateListQuerySchema,
    TemplateOutSchema,
    TemplatePatchSchema,
)
from bff.keys import TEMPLATES
from bff.openapi_examples import CHINA, days
from bff.routing import MERCHANT, Call, Routes
from bff.schemas import page_reply

routes = Routes(tag="merchant: coupon templates")
TEMPLATE_PATH = "/admin/coupon-templates/{template_id:[0-9]{1,18}}"
NOT_FOUND = (HTTPStatus.NOT_FOUND,)

EXAMPLE_TEMPLATE = {
    "name": "满299减50",
    "description": "全店通用",
    "benefit": {"type": "threshold", "amount_off": 5000, "threshold": 29900},
    "scope": {"type": "shop"},
    "claim_start": days(-1, CHINA),
    "claim_end": days(30, CHINA),
    "validity": {"type": "relative", "effective_after_days": 0, "valid_days": 7},
    "stock": {"type": "limited", "total": 1000},
    "claim_methods": ["widget"],
    "claim_page": "pages/index/index",
    "redeem_page": "pages/coupon/use",
}


@routes.post(
    "/admin/coupon-templates",
    auth=MERCHANT,
    body=TemplateInSchema,
    reply=TemplateOutSchema,
    status=HTTPStatus.CREATED,
    codes=("LANDING_PAGES_IDENTICAL", "POLICY_VIOLATION"),
    example=EXAMPLE_TEMPLATE,
    description="400 LANDING_PAGES_IDENTICAL when claim_page and redeem_page are the same page.",
    changes_prices=True,
)
async def create_template(call: Call) -> dict[str, Any]:
    """Create a coupon template."""
    return await call.app[TEMPLATES].create(call.shop_id, call.body)


@routes.get(
    "/admin/coupon-templates",
    auth=MERCHANT,
    query=TemplateListQuerySchema,
    reply=page_reply(TemplateOutSchema, "TemplatePage"),
)
async def list_templates(call: Call) -> dict[str, Any]:
    """List this shop's coupon templates, newest first."""
    query = call.query
    return await call.app[TEMPLATES].list(
        call.shop_id, query["limit"], query["cursor"], query["status"]
    )


@routes.get(TEMPLATE_PATH, auth=MERCHANT, reply=TemplateOutSchema, errors=NOT_FOUND)
async def get_template(call: Call) -> dict[str, Any]:
    """Read one coupon template."""
    return await call.app[TEMPLATES].get(call.shop_id, int(call.path("template_id")))


@routes.patch(
    TEMPLATE_PATH,
    auth=MERCHANT,
    body=TemplatePatchSchema,
    reply=TemplateOutSchema,
    errors=NOT_FOUND,
    codes=("LANDING_PAGES_IDENTICAL",),
    description=(
        "Changes name, description, cover_image, product_code, claim_page, redeem_page (at any "
        "time; null clears cover_image and product_code and resets claim_page to the shop's "
        "default), status, a later claim_end, or increases a limited stock. 400 "
        "LANDING_PAGES_IDENTICAL when the patched template's two pages are the same page."
    ),
    changes_prices=True,
)
async def patch_template(call: Call) -> dict[str, Any]:
    """Change a coupon template."""
    return await call.app[TEMPLATES].patch(call.shop_id, int(call.path("template_id")), call.body)
