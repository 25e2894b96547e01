"""Shopper: product detail with 券后价, list prices, checkout preview, auto-claim, live rooms."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from aiohttp import web

from bff.idempotency import RETRY_CODES
from bff.keys import AUTO_CLAIM, LIVE_PRICES, PRICES
from bff.routing import (
    MERCHANT,
    USER,
    USER_OR_ANONYMOUS,
    Call,
    Routes,
    anonymous_raw_body_key,
    anonymous_raw_path_key,
    cached_reply,
    json_response,
    raw_path_key,
)
from bff.schemas import ID_PATTERN
from handlers.claim import claim_context
from widgets.coupon_price.schemas import (
    AutoClaimInSchema,
    AutoClaimReplySchema,
    CheckoutInSchema,
    CheckoutReplySchema,
    LivePricesQuerySchema,
    LiveRoomInSchema,
    LiveRoomSchema,
    PricesInSchema,
    PricesReplySchema,
    ProductDetailSchema,
    ProductQuerySchema,
)

routes = Routes(tag="shopper: prices")
PRODUCT = "/products/{product_id:" + ID_PATTERN + "}"
ROOM = "/live-rooms/{room_id:" + ID_PATTERN + "}/prices"
PRODUCT_DETAIL = ProductDetailSchema()
LIVE_ROOM = LiveRoomSchema()
PRICES_REPLY = PricesReplySchema()


@routes.get(
    PRODUCT,
    auth=USER_OR_ANONYMOUS,
    query=ProductQuerySchema,
    reply=ProductDetailSchema,
    errors=(HTTPStatus.NOT_FOUND,),
    raw_cache_key=anonymous_raw_path_key,
)
async def product_detail(call: Call) -> Any:
    """Product detail with its post-coupon price (券后价)."""
    query = call.query
    product_id = call.path("product_id")

    async def build() -> dict[str, Any]:
        return await call.app[PRICES].product(
            call.shop_id, call.user_id, product_id, query["quantity"], query["live_room_id"]
        )

    if call.user_id is not None:
        return await build()
    key = f"product|{product_id}|{query['quantity']}|{query['live_room_id'] or ''}"
    return await cached_reply(call, key, PRODUCT_DETAIL, build)


@routes.post(
    "/prices",
    auth=USER_OR_ANONYMOUS,
    body=PricesInSchema,
    reply=PricesReplySchema,
    example={"items": [{"product_id": "cup-1", "quantity": 1}]},
    raw_cache_key=anonymous_raw_body_key,
)
async def list_prices(call: Call) -> Any:
    """Post-coupon prices of up to 50 products (list pages); unknown products are left out."""
    items = call.body["items"]

    async def build() -> dict[str, Any]:
        return await call.app[PRICES].prices(call.shop_id, call.user_id, items)

    if call.user_id is not None:
        return await build()
    key = "prices|" + ",".join(f"{item['product_id']}x{item['quantity']}" for item in items)
    return await cached_reply(call, key, PRICES_REPLY, build)


@routes.post(
    "/checkout/preview",
    auth=USER,
    body=CheckoutInSchema,
    reply=CheckoutReplySchema,
    errors=(HTTPStatus.NOT_FOUND, HTTPStatus.CONFLICT),
    codes=("COUPON_NOT_USABLE",),
    description="Without coupon_ids the best combination of the user's coupons is chosen; "
    "a refused coupon is 409 COUPON_NOT_USABLE with details {coupon_id, reason}.",
)
async def checkout_preview(call: Call) -> dict[str, Any]:
    """The checkout price (到手价) with line-level apportionment."""
    body = call.body
    return await call.app[PRICES].checkout(
        call.shop_id, call.user_id or "", body["items"], body["coupon_ids"], body["live_room_id"]
    )


@routes.post(
    PRODUCT + "/auto-claim",
    auth=USER,
    body=AutoClaimInSchema,
    reply=AutoClaimReplySchema,
    errors=(HTTPStatus.NOT_FOUND, HTTPStatus.CONFLICT),
    codes=RETRY_CODES,
)
async def auto_claim(call: Call) -> web.Response:
    """Claim the product's auto-claim coupons the user may still take (自动领券)."""
    reply = await call.app[AUTO_CLAIM].auto_claim(
        claim_context(call), call.path("product_id"), call.body["request_id"]
    )
    return json_response(reply.payload(), reply.status)


@routes.get(
    ROOM,
    auth=USER_OR_ANONYMOUS,
    query=LivePricesQuerySchema,
    reply=LiveRoomSchema,
    raw_cache_key=raw_path_key,
)
async def live_room_prices(call: Call) -> web.Response:
    """A live room's exclusive prices (直播专享价) with status upcoming / live / ended."""
    ids = [part for part in call.query["product_ids"].split(",") if part]
    room_id = call.path("room_id")

    async def build() -> dict[str, Any]:
        return await call.app[LIVE_PRICES].get(call.shop_id, room_id, ids)

    # The same for every caller, signed in or not.
    return await cached_reply(call, f"live|{room_id}|{','.join(ids)}", LIVE_ROOM, build)


@routes.put(
    "/admin" + ROOM,
    auth=MERCHANT,
    body=LiveRoomInSchema,
    reply=LiveRoomSchema,
    tags=("merchant: live rooms",),
    changes_prices=True,
)
async def put_live_room_prices(call: Call) -> dict[str, Any]:
    """Set a live room's exclusive prices (replaces its list)."""
    return await call.app[LIVE_PRICES].put(call.shop_id, call.path("room_id"), call.body["items"])
