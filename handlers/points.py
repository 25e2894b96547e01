"""Points: the shopper's ledger and exchange, the merchant's points changes and offers."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from aiohttp import web

from bff.idempotency import RETRY_CODES
from bff.keys import EXCHANGE_OFFERS, POINTS, POINTS_EXCHANGE
from bff.points.schemas import (
    ExchangePageSchema,
    OfferInSchema,
    OfferListQuerySchema,
    OfferPageSchema,
    OfferSchema,
    PointsChangeInSchema,
    PointsChangeReplySchema,
    PointsHistoryQuerySchema,
    PointsHistorySchema,
    RedeemInSchema,
    RedeemReplySchema,
)
from bff.routing import MERCHANT, USER, Call, Routes, json_response
from bff.schemas import ID_PATTERN
from handlers.claim import CLAIM_CODES, CLAIM_ERRORS, claim_context

routes = Routes(tag="points")
OFFER_ID = "{offer_id:[0-9]{1,18}}"
MEMBER_POINTS = "/admin/members/{user_id:" + ID_PATTERN + "}/points"


# --- shopper ---------------------------------------------------------------------------------
@routes.get("/points-exchange", auth=USER, reply=ExchangePageSchema)
async def exchange_page(call: Call) -> dict[str, Any]:
    """The exchange page: my balance and each offer's state for me."""
    return await call.app[EXCHANGE_OFFERS].shopper_page(call.shop_id, call.user_id or "")


@routes.post(
    f"/points-exchange/{OFFER_ID}/redeem",
    auth=USER,
    body=RedeemInSchema,
    reply=RedeemReplySchema,
    status=HTTPStatus.CREATED,
    errors=CLAIM_ERRORS,
    codes=(*CLAIM_CODES, "INSUFFICIENT_POINTS"),
    example={"request_id": "x-7f3a"},
    description=(
        "Points deducted and the coupon issued in one transaction, or neither. Checks in order: "
        "NOT_FOUND, CLAIM_PAUSED, NOT_STARTED, CLAIM_ENDED (the offer's window within the "
        "template's), NOT_ELIGIBLE (audience; an active membership), RISK_REJECTED, "
        "RATE_LIMITED, LIMIT_REACHED, WALLET_FULL, SOLD_OUT, DAILY_SOLD_OUT, then "
        "INSUFFICIENT_POINTS. The same request_id and body replays the first reply with "
        "replayed: true and charges nothing; another body is IDEMPOTENCY_CONFLICT."
    ),
)
async def redeem(call: Call) -> web.Response:
    """Exchange points for an offer's coupon."""
    body = call.body
    reply = await call.app[POINTS_EXCHANGE].redeem(
        claim_context(call, body["device"]), int(call.path("offer_id")), body["request_id"]
    )
    return json_response(reply.payload(), reply.status)


@routes.get("/me/points", auth=USER, query=PointsHistoryQuerySchema, reply=PointsHistorySchema)
async def my_points(call: Call) -> dict[str, Any]:
    """My points: the balance and the ledger, newest first (cursor paging)."""
    query = call.query
    return await call.app[POINTS].history(
        call.shop_id, call.user_id or "", query["limit"], query["cursor"]
    )


# --- merchant --------------------------------------------------------------------------------
@routes.post(
    MEMBER_POINTS,
    auth=MERCHANT,
    body=PointsChangeInSchema,
    reply=PointsChangeReplySchema,
    errors=(HTTPStatus.NOT_FOUND, HTTPStatus.CONFLICT),
    codes=("INSUFFICIENT_POINTS", *RETRY_CODES),
    example={"delta": 500, "reason": "购物奖励", "ref": "order:20261120-001", "request_id": "p-1"},
    description=(
        "Grant (positive delta) or deduct (negative) a member's points; the user must have "
        "joined the shop (404 otherwise). A deduction below zero is 409 INSUFFICIENT_POINTS "
        "and changes nothing. Idempotent by request_id."
    ),
)
async def change_points(call: Call) -> web.Response:
    """Grant or deduct a member's points."""
    body = call.body
    reply = await call.app[POINTS].adjust(
        call.shop_id,
        call.path("user_id"),
        body["delta"],
        body["reason"],
        body["ref"],
        body["request_id"],
    )
    return json_response(reply.payload(), reply.status)


@routes.get(MEMBER_POINTS, auth=MERCHANT, query=PointsHistoryQuerySchema, reply=PointsHistorySchema)
async def member_points(call: Call) -> dict[str, Any]:
    """A member's points: the balance and the ledger, newest first."""
    query = call.query
    return await call.app[POINTS].history(
        call.shop_id, call.path("user_id"), query["limit"], query["cursor"]
    )


@routes.post(
    "/admin/exchange-offers",
    auth=MERCHANT,
    body=OfferInSchema,
    reply=OfferSchema,
    status=HTTPStatus.CREATED,
    errors=(HTTPStatus.NOT_FOUND,),
    codes=("POLICY_VIOLATION",),
    example={"template_id": 2, "points_cost": 300},
    description=(
        "The template must allow the points method and not have ended. The points policy is "
        "checked here: 400 POLICY_VIOLATION with details.rule (points_denomination, "
        "stronger_than_store_coupons) and, for the strength rule, details.store_coupon."
    ),
)
async def create_offer(call: Call) -> dict[str, Any]:
    """Create an exchange offer: a coupon template sold for points."""
    return await call.app[EXCHANGE_OFFERS].create(call.shop_id, call.body)


@routes.get(
    "/admin/exchange-offers", auth=MERCHANT, query=OfferListQuerySchema, reply=OfferPageSchema
)
async def list_offers(call: Call) -> dict[str, Any]:
    """List this shop's exchange offers, newest first."""
    query = call.query
    return await call.app[EXCHANGE_OFFERS].list(call.shop_id, query["limit"], query["cursor"])


@routes.get(
    f"/admin/exchange-offers/{OFFER_ID}",
    auth=MERCHANT,
    reply=OfferSchema,
    errors=(HTTPStatus.NOT_FOUND,),
)
async def get_offer(call: Call) -> dict[str, Any]:
    """Read one exchange offer."""
    return await call.app[EXCHANGE_OFFERS].get(call.shop_id, int(call.path("offer_id")))
