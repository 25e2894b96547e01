"""Merchant admin: statistics per coupon template (数据统计)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from bff.keys import STATS
from bff.redemption.schemas import TemplateStatsSchema
from bff.routing import MERCHANT, Call, Routes

routes = Routes(tag="merchant: statistics")


@routes.get(
    "/admin/stats/coupon-templates/{template_id:[0-9]{1,18}}",
    auth=MERCHANT,
    reply=TemplateStatsSchema,
    errors=(HTTPStatus.NOT_FOUND,),
    description="Counted from the coupon and order rows now. redemption_rate = redeem_users / "
    "claim_users; discount_total and gmv count confirmed, not cancelled, orders; roi = gmv / "
    "discount_total (null when nothing was discounted). by_source splits every figure by how "
    "the coupons were issued.",
)
async def template_stats(call: Call) -> dict[str, Any]:
    """A template's issued, claimed, used, 核券率, discount, GMV and ROI."""
    return await call.app[STATS].template(call.shop_id, int(call.path("template_id")))
