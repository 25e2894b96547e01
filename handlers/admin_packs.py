"""Merchant admin: gift packs (新会员礼包 / 会员礼包)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from bff.keys import PACKS
from bff.openapi_examples import CHINA, days
from bff.packs.schemas import PackInSchema, PackListQuerySchema, PackOutSchema, PackPatchSchema
from bff.routing import MERCHANT, Call, Routes
from bff.schemas import page_reply

routes = Routes(tag="merchant: gift packs")
PACK_PATH = "/admin/gift-packs/{pack_id:[0-9]{1,18}}"
RULES = (
    "400 VALIDATION_FAILED names the field: 1-3 distinct shop-scope templates allowing "
    "gift_pack, at most one gift (a gift template, quantity no more than its stock), "
    "starts_at < ends_at, the popup window inside the pack window, min_level for member "
    "packs only. 409 PACK_WINDOW_OVERLAP when another active pack of the kind overlaps."
)


@routes.post(
    "/admin/gift-packs",
    auth=MERCHANT,
    body=PackInSchema,
    reply=PackOutSchema,
    status=HTTPStatus.CREATED,
    errors=(HTTPStatus.CONFLICT,),
    codes=("PACK_WINDOW_OVERLAP",),
    example={
        "kind": "new_member",
        "name": "新会员礼包",
        "starts_at": days(-1, CHINA),
        "ends_at": days(30, CHINA),
        "coupon_template_ids": [1, 2],
        "gift": {"template_id": 3, "quantity": 500},
    },
    description=RULES,
)
async def create_pack(call: Call) -> dict[str, Any]:
    """Create a gift pack."""
    return await call.app[PACKS].create(call.shop_id, call.body)


@routes.get(
    "/admin/gift-packs",
    auth=MERCHANT,
    query=PackListQuerySchema,
    reply=page_reply(PackOutSchema, "PackPage"),
)
async def list_packs(call: Call) -> dict[str, Any]:
    """This shop's gift packs, newest first."""
    query = call.query
    return await call.app[PACKS].list(call.shop_id, query["kind"], query["limit"], query["cursor"])


@routes.get(PACK_PATH, auth=MERCHANT, reply=PackOutSchema, errors=(HTTPStatus.NOT_FOUND,))
async def get_pack(call: Call) -> dict[str, Any]:
    """One gift pack, with remaining from live counts."""
    return await call.app[PACKS].get(call.shop_id, int(call.path("pack_id")))


@routes.patch(
    PACK_PATH,
    auth=MERCHANT,
    body=PackPatchSchema,
    reply=PackOutSchema,
    errors=(HTTPStatus.NOT_FOUND, HTTPStatus.CONFLICT),
    codes=("PACK_WINDOW_OVERLAP",),
    example={"name": "双11会员礼包", "status": "ended"},
    description=RULES + " Contents are fixed once a member has claimed the pack.",
)
async def patch_pack(call: Call) -> dict[str, Any]:
    """Change a gift pack (or end it: status ended)."""
    return await call.app[PACKS].patch(call.shop_id, int(call.path("pack_id")), call.body)
