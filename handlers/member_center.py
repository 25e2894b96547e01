"""Shopper: membership, the member center with its popup, and claiming gift packs."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from aiohttp import web

from bff import fastdump
from bff.idempotency import RETRY_CODES
from bff.keys import MEMBERS, PACKS
from bff.packs.schemas import (
    MemberCenterSchema,
    MembershipReplySchema,
    PackClaimInSchema,
    PackClaimReplySchema,
)
from bff.routing import USER, Call, Routes, json_response

routes = Routes(tag="shopper: member center")
_membership_reply = MembershipReplySchema()
_claim_reply = PackClaimReplySchema()


@routes.post(
    "/membership",
    auth=USER,
    reply=MembershipReplySchema,
    status=HTTPStatus.CREATED,
    also=(HTTPStatus.OK,),
    example={},
    description=(
        "Join the shop's membership: 201 when the user joins or rejoins, 200 when already a "
        "member. A new member (first join within 24 hours, never rejoined) gets the "
        "new-member gift pack as popup while its popup window is open, once."
    ),
)
async def join(call: Call) -> web.Response:
    """Join (入会) or rejoin."""
    reply = await call.app[PACKS].join(call.shop_id, call.user_id or "")
    status = HTTPStatus.CREATED if reply.created else HTTPStatus.OK
    return json_response(fastdump.dump(_membership_reply, reply.body), status)


@routes.delete("/membership", auth=USER, status=HTTPStatus.NO_CONTENT)
async def leave(call: Call) -> None:
    """Leave (退会); joining again later is a rejoin, never a new member."""
    await call.app[MEMBERS].leave(call.shop_id, call.user_id or "")


@routes.get(
    "/member-center",
    auth=USER,
    reply=MemberCenterSchema,
    description=(
        "The member pack pops up on a member's first entry inside its popup window, once; "
        "every started pack stays listed in gift_packs with its state for this user."
    ),
)
async def member_center(call: Call) -> dict[str, Any]:
    """The member center (会员中心)."""
    return await call.app[PACKS].member_center(call.shop_id, call.user_id or "")


@routes.post(
    "/gift-packs/{pack_id:[0-9]{1,18}}/claim",
    auth=USER,
    body=PackClaimInSchema,
    reply=PackClaimReplySchema,
    status=HTTPStatus.CREATED,
    errors=(HTTPStatus.FORBIDDEN, HTTPStatus.NOT_FOUND, HTTPStatus.CONFLICT),
    codes=(
        "NOT_ELIGIBLE",
        "NOT_STARTED",
        "CLAIM_ENDED",
        "ALREADY_CLAIMED",
        "WALLET_FULL",
        "SOLD_OUT",
        *RETRY_CODES,
    ),
    example={"request_id": "pack-claim-1"},
    description=(
        "All or nothing: one coupon of each template plus the gift. Refusals: NOT_FOUND, "
        "NOT_STARTED, CLAIM_ENDED, NOT_ELIGIBLE, ALREADY_CLAIMED, WALLET_FULL, SOLD_OUT. "
        "Show it as a lottery reveal (presentation: lottery); every benefit is granted."
    ),
)
async def claim_pack(call: Call) -> web.Response:
    """Claim a gift pack (领取礼包)."""
    reply = await call.app[PACKS].claim(
        call.shop_id, call.user_id or "", int(call.path("pack_id")), call.body["request_id"]
    )
    return json_response(reply.payload(), reply.status)
