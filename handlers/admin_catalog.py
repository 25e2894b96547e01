"""Merchant admin: products and members."""

from __future__ import annotations

from typing import Any

from bff.catalog import ProductInSchema, ProductOutSchema
from bff.keys import MEMBERS, PRODUCTS
from bff.members import MemberLevelSchema, MemberSchema
from bff.routing import MERCHANT, Call, Routes
from bff.schemas import ID_PATTERN

routes = Routes(tag="merchant: products and members")


@routes.put(
    "/admin/products/{product_id:" + ID_PATTERN + "}",
    auth=MERCHANT,
    body=ProductInSchema,
    reply=ProductOutSchema,
    example={"title": "保温杯", "list_price": 19900, "promo_price": 16900, "category": "cups"},
    changes_prices=True,
)
async def put_product(call: Call) -> dict[str, Any]:
    """Create or replace a product."""
    return await call.app[PRODUCTS].put(call.shop_id, call.path("product_id"), call.body)


@routes.put(
    "/admin/members/{user_id:" + ID_PATTERN + "}",
    auth=MERCHANT,
    body=MemberLevelSchema,
    reply=MemberSchema,
)
async def put_member(call: Call) -> dict[str, Any]:
    """Set a member's level (enrols a user who never joined)."""
    return await call.app[MEMBERS].set_level(call.shop_id, call.path("user_id"), call.body["level"])
