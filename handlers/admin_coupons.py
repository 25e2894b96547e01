"""Merchant admin: codes, grants and revoking coupons."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from aiohttp import web

from bff.bodies import check_media_type, is_multipart
from bff.coupons.wallet import CouponSchema
from bff.errors import validation_failed
from bff.idempotency import RETRY_CODES
from bff.keys import CODES_SERVICE, GRANTS, WALLET
from bff.routing import MERCHANT, Call, Routes, json_response, load, read_json
from handlers.admin_templates import TEMPLATE_PATH
from handlers.uploads import read_form
from widgets.claim.schemas import (
    GenerateCodesInSchema,
    GenerateCodesReplySchema,
    GrantFormSchema,
    GrantInSchema,
    GrantReplySchema,
    ImportCodesInSchema,
    ImportCodesReplySchema,
)

routes = Routes(tag="merchant: codes, grants, revoke")
_grant_schema = GrantInSchema()


@routes.post(
    TEMPLATE_PATH + "/codes",
    auth=MERCHANT,
    body=GenerateCodesInSchema,
    reply=GenerateCodesReplySchema,
    status=HTTPStatus.CREATED,
    errors=(HTTPStatus.NOT_FOUND,),
    changes_prices=True,
)
async def generate_codes(call: Call) -> dict[str, Any]:
    """Generate more codes for a template with pregenerated codes."""
    return await call.app[CODES_SERVICE].generate(
        call.shop_id, int(call.path("template_id")), call.body["count"]
    )


@routes.post(
    TEMPLATE_PATH + "/codes/import",
    auth=MERCHANT,
    body=ImportCodesInSchema,
    multipart=True,
    reply=ImportCodesReplySchema,
    status=HTTPStatus.CREATED,
    errors=(HTTPStatus.NOT_FOUND, HTTPStatus.REQUEST_ENTITY_TOO_LARGE),
    description="Several uploads add up; duplicates (in the file or already known) and "
    "invalid lines (empty, over 64 characters, outside A-Z a-z 0-9 -) are counted and skipped.",
    changes_prices=True,
)
async def import_codes(call: Call) -> dict[str, Any]:
    """Import codes from a file, one per line."""
    text, _ = await read_form(call.request)
    if text is None:
        return _missing_file()
    return await call.app[CODES_SERVICE].import_codes(
        call.shop_id, int(call.path("template_id")), text
    )


@routes.post(
    TEMPLATE_PATH + "/grants",
    auth=MERCHANT,
    body=GrantInSchema,
    multipart=True,
    form=GrantFormSchema,
    reply=GrantReplySchema,
    status=HTTPStatus.CREATED,
    errors=(HTTPStatus.NOT_FOUND, HTTPStatus.CONFLICT, HTTPStatus.REQUEST_ENTITY_TOO_LARGE),
    codes=RETRY_CODES,
    example={"user_ids": ["u1", "u2"], "request_id": "grant-batch-1"},
    description="JSON {user_ids, request_id}, or multipart with a file (one user id per line) "
    "and a request_id field. A result per user; idempotent by request_id.",
)
async def grant(call: Call) -> web.Response:
    """Issue a template's coupon to a list of users."""
    request = call.request
    check_media_type(request, multipart=True)
    if is_multipart(request):
        text, form = await read_form(request)
        if text is None:
            return _missing_file()
        users = [line.strip() for line in text.splitlines() if line.strip()]
        body = load(_grant_schema, {"user_ids": users, "request_id": form.get("request_id")})
    else:
        body = load(_grant_schema, await read_json(request))
    reply = await call.app[GRANTS].grant(
        call.shop_id, int(call.path("template_id")), body["user_ids"], body["request_id"]
    )
    return json_response(reply.payload(), reply.status)


@routes.post(
    "/admin/coupons/{coupon_id:[0-9]{1,18}}/revoke",
    auth=MERCHANT,
    reply=CouponSchema,
    errors=(HTTPStatus.NOT_FOUND, HTTPStatus.CONFLICT),
    codes=("COUPON_NOT_USABLE",),
)
async def revoke_coupon(call: Call) -> dict[str, Any]:
    """Revoke (使失效) an unused coupon."""
    return await call.app[WALLET].revoke(call.shop_id, int(call.path("coupon_id")))


def _missing_file() -> Any:
    raise validation_failed({"file": ["Missing data for required field."]})
