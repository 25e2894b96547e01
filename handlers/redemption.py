"""Order system (role ``service``): lock an order's coupons, confirm, cancel (核销 / 退券)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from aiohttp import web

from bff.idempotency import RETRY_CODES
from bff.keys import REDEMPTIONS
from bff.redemption.schemas import (
    CancelReplySchema,
    ConfirmReplySchema,
    RedemptionInSchema,
    RedemptionReplySchema,
)
from bff.routing import SERVICE, Call, Routes, json_response
from bff.schemas import ID_PATTERN

routes = Routes(tag="order system: redemption")
ORDER = "/redemptions/{order_id:" + ID_PATTERN + "}"


@routes.post(
    "/redemptions",
    auth=SERVICE,
    body=RedemptionInSchema,
    reply=RedemptionReplySchema,
    status=HTTPStatus.CREATED,
    errors=(HTTPStatus.FORBIDDEN, HTTPStatus.NOT_FOUND, HTTPStatus.CONFLICT),
    codes=("COUPON_NOT_USABLE", *RETRY_CODES),
    example={
        "order_id": "o-20261120-0001",
        "user_id": "u7",
        "items": [{"product_id": "cup-1", "quantity": 2}],
        "coupon_ids": [1],
    },
    description=(
        "Prices the order like the checkout preview and locks its coupons atomically. "
        "A coupon that cannot be used is 409 COUPON_NOT_USABLE with details {coupon_id, "
        "reason} (another user's or shop's coupon is reason not_found) and nothing is locked. "
        "An unknown product is 404. The same order_id and body again replays the first reply "
        "with replayed: true; another body is IDEMPOTENCY_CONFLICT. Unconfirmed after "
        "redemption.lock_timeout_minutes, the lock lapses and the coupons come back."
    ),
)
async def lock(call: Call) -> web.Response:
    """Lock the coupons of an order (validated, priced, apportioned)."""
    reply = await call.app[REDEMPTIONS].lock(call.shop_id, call.body)
    return json_response(reply.payload(), reply.status)


@routes.post(
    ORDER + "/confirm",
    auth=SERVICE,
    reply=ConfirmReplySchema,
    errors=(HTTPStatus.FORBIDDEN, HTTPStatus.NOT_FOUND, HTTPStatus.CONFLICT),
    codes=("LOCK_EXPIRED", "ORDER_CANCELLED"),
    description="Locked -> used (the order is paid). Idempotent. 409 LOCK_EXPIRED when the "
    "lock lapsed first (its coupons were released), 409 ORDER_CANCELLED after a cancel.",
)
async def confirm(call: Call) -> dict[str, Any]:
    """Confirm an order: its coupons are used (核销)."""
    return await call.app[REDEMPTIONS].confirm(call.shop_id, call.path("order_id"))


@routes.post(
    ORDER + "/cancel",
    auth=SERVICE,
    reply=CancelReplySchema,
    errors=(HTTPStatus.FORBIDDEN, HTTPStatus.NOT_FOUND),
    description="Returns the order's coupons (退券): all of a locked order; of a used one, "
    "those whose template allows return. A coupon past its validity comes back expired and "
    "is listed in not_returned with reason expired; a template with return_on_cancel false "
    "keeps it used (reason not_returnable). Idempotent: the same reply again.",
)
async def cancel(call: Call) -> dict[str, Any]:
    """Cancel an order and return its coupons."""
    return await call.app[REDEMPTIONS].cancel(call.shop_id, call.path("order_id"))
