"""Shopper: the claim widget, claiming, claiming by code, the wallet."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from aiohttp import web

from bff.coupons.claims import ClaimContext
from bff.coupons.risk import Device
from bff.coupons.wallet import CouponReplySchema, WalletQuerySchema
from bff.idempotency import RETRY_CODES
from bff.keys import CLAIM_WIDGET, CLAIMS_SERVICE, WALLET
from bff.routing import USER, USER_OR_ANONYMOUS, Call, Routes, json_response
from widgets.claim.schemas import (
    ClaimByCodeInSchema,
    ClaimInSchema,
    WalletPageSchema,
    WidgetQuerySchema,
    WidgetReplySchema,
)

routes = Routes(tag="shopper: claim")
CLAIM_ERRORS = (
    HTTPStatus.FORBIDDEN,
    HTTPStatus.NOT_FOUND,
    HTTPStatus.CONFLICT,
    HTTPStatus.TOO_MANY_REQUESTS,
)
# What a claim can be refused with, in DOMAIN.md's order (bff.coupons.rules.REFUSALS).
CLAIM_CODES = (
    "CLAIM_PAUSED",
    "CLAIM_METHOD_NOT_ALLOWED",
    "NOT_STARTED",
    "CLAIM_ENDED",
    "NOT_ELIGIBLE",
    "RISK_REJECTED",
    "LIMIT_REACHED",
    "WALLET_FULL",
    "SOLD_OUT",
    "DAILY_SOLD_OUT",
    *RETRY_CODES,
)


def claim_context(call: Call, device: dict[str, Any] | None = None) -> ClaimContext:
    return ClaimContext(
        shop_id=call.shop_id,
        user_id=call.user_id or "",
        device=Device(**device) if device else None,
        ip=call.request.remote,
    )


@routes.get(
    "/claim-widget", auth=USER_OR_ANONYMOUS, query=WidgetQuerySchema, reply=WidgetReplySchema
)
async def claim_widget(call: Call) -> dict[str, Any]:
    """The claim widget: this shop's coupons and their state for the caller."""
    return await call.app[CLAIM_WIDGET].widget(call.shop_id, call.user_id, call.query["product_id"])


@routes.post(
    "/coupons/claim",
    auth=USER,
    body=ClaimInSchema,
    reply=CouponReplySchema,
    status=HTTPStatus.CREATED,
    errors=CLAIM_ERRORS,
    codes=CLAIM_CODES,
    example={"template_id": 1, "request_id": "9f1c2b7a-claim", "device": {"id": "d-123"}},
    description=(
        "Checks in order: NOT_FOUND, CLAIM_PAUSED, CLAIM_METHOD_NOT_ALLOWED, NOT_STARTED, "
        "CLAIM_ENDED, NOT_ELIGIBLE, RISK_REJECTED, RATE_LIMITED, LIMIT_REACHED, WALLET_FULL, "
        "SOLD_OUT, DAILY_SOLD_OUT. The same request_id and body again replays the first reply "
        "with replayed: true; another body is IDEMPOTENCY_CONFLICT."
    ),
)
async def claim(call: Call) -> web.Response:
    """Claim a coupon from the widget."""
    body = call.body
    reply = await call.app[CLAIMS_SERVICE].claim(
        claim_context(call, body["device"]), body["template_id"], body["request_id"]
    )
    return json_response(reply.payload(), reply.status)


@routes.post(
    "/coupons/claim-by-code",
    auth=USER,
    body=ClaimByCodeInSchema,
    reply=CouponReplySchema,
    status=HTTPStatus.CREATED,
    errors=CLAIM_ERRORS,
    codes=(*CLAIM_CODES, "ALREADY_CLAIMED"),
    example={"code": "SMS-2026-0001", "request_id": "r-code-1"},
)
async def claim_by_code(call: Call) -> web.Response:
    """Claim the coupon behind a code from SMS or a partner channel."""
    body = call.body
    reply = await call.app[CLAIMS_SERVICE].claim_by_code(
        claim_context(call), body["code"], body["request_id"]
    )
    return json_response(reply.payload(), reply.status)


@routes.get("/me/coupons", auth=USER, query=WalletQuerySchema, reply=WalletPageSchema)
async def my_coupons(call: Call) -> dict[str, Any]:
    """My coupons (我的券), newest first."""
    query = call.query
    return await call.app[WALLET].list(
        call.shop_id, call.user_id or "", query["status"], query["limit"], query["cursor"]
    )
