"""Worked examples for ``/docs``: the main flows in order, and a real reply for each step.

The replies were taken from the demo shop (``python run.py --demo``), so they show
the numbers a newcomer sees there. They are keyed by operationId (the handler's
name) and added to the success response of that operation; a test checks every
one names a registered endpoint and passes its reply schema, so they cannot drift.

Their times are :class:`At` offsets, made into instants when the document is rendered
(``bff.openapi.OpenApiDocument``, again each day), so a claim window in an example is
open on the day a reader tries it rather than on the day it was written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any


@dataclass(frozen=True)
class At:
    """A time in an example: this far from the moment the document is rendered."""

    offset: timedelta
    # The UTC offset it is written with (+08:00 for a shop in China, as merchants type it).
    utc_offset: timedelta = timedelta(0)

    def render(self, now: datetime) -> str:
        zone = timezone(self.utc_offset)
        return (now + self.offset).astimezone(zone).replace(microsecond=0).isoformat()


def resolve(value: Any, now: datetime) -> Any:
    """``value`` with every :class:`At` in it made an ISO-8601 string relative to ``now``."""
    if isinstance(value, At):
        return value.render(now)
    if isinstance(value, dict):
        return {key: resolve(item, now) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [resolve(item, now) for item in value]
    return value


def days(n: float, utc_offset: timedelta = timedelta(0)) -> At:
    return At(timedelta(days=n), utc_offset)


def hours(n: float, utc_offset: timedelta = timedelta(0)) -> At:
    return At(timedelta(hours=n), utc_offset)


CHINA = timedelta(hours=8)

FLOWS = "\n".join(
    (
        "# Main flows",
        "Shopper paths are under `/api/v1/shops/{shop_id}`. `python run.py --demo` seeds the "
        "shop `demo`, prints a ready token, and serves `/demo`: a storefront page that runs "
        "every flow below in a browser. The examples in each operation come from that shop.",
        "## 1. Sign in",
        '- `POST /api/v1/session` `{"auth_code": "dev:u1"}` gives `{token, expires_at, user_id}`.',
        "- Send `Authorization: Bearer <token>` from then on; anonymous reads work without it.",
        "## 2. The claim widget and claiming",
        "- `GET /claim-widget?product_id=cup-1`: each coupon with the `state` of its button: "
        "`claimable`, `claimed`, `sold_out`, `not_started`, `ended`, `not_eligible`, "
        "`wallet_full`.",
        '- `POST /coupons/claim` `{"template_id": 1, "request_id": "claim-7f3a"}` gives 201 '
        "`{coupon}`. The same `request_id` again replays that reply with `replayed: true`: a "
        "retry never issues a second coupon.",
        "- A refusal is a 4xx whose `error.code` says what to show: `SOLD_OUT` (sold out), "
        "`LIMIT_REACHED` (you already have this coupon), `WALLET_FULL`, `NOT_STARTED`, "
        "`CLAIM_ENDED`, `NOT_ELIGIBLE`, `RATE_LIMITED` (wait `Retry-After` seconds).",
        "## 3. Product detail with 券后价",
        "- `GET /products/cup-1`: `list_price`, `promo_price` (店铺优惠), `final_price` (券后价) "
        "and the coupons of the best combination; `needs_claim: true` means claim it first.",
        "- When a signed-in shopper opens the page: `POST /products/cup-1/auto-claim` "
        '`{"request_id": "open-cup-1-7f3a"}` claims its auto-claim coupons, once.',
        '- List pages: `POST /prices` `{"items": [{"product_id": "cup-1", "quantity": 1}]}`.',
        "- Live rooms: `GET /live-rooms/room-1/prices?product_ids=cup-1`, and "
        "`GET /products/cup-1?live_room_id=room-1` for an order from the room.",
        "## 4. My coupons and checkout",
        "- `GET /me/coupons?status=usable`: a page of coupons; `redeem_page` is where "
        '"use now" goes, `expiring_soon` flags the last 3 days.',
        '- `POST /checkout/preview` `{"items": [{"product_id": "cup-1", "quantity": 1}]}`: the '
        "到手价 with the discount apportioned over the lines.",
        "## 5. Member center and gift packs",
        "- `POST /membership` `{}`: a new member gets the new-member gift pack as `popup`.",
        "- `GET /member-center`: member, points, a `popup` (the member pack, on the first "
        "entry) and each gift pack with its `state`.",
        '- `POST /gift-packs/{pack_id}/claim` `{"request_id": "pack-1"}` gives 201 '
        '`{presentation: "lottery", coupons, gift}`: reveal them one by one; all are granted.',
        "## 6. Points exchange",
        "- `GET /points-exchange`: the balance and each offer's state; "
        '`POST /points-exchange/{offer_id}/redeem` `{"request_id": "x-1"}` gives 201 '
        "`{coupon, balance}`, or `INSUFFICIENT_POINTS`.",
        "## 7. Merchant tools",
        "- Templates `POST /admin/coupon-templates`, products `PUT /admin/products/{id}`, "
        "gift packs `POST /admin/gift-packs`, live prices `PUT /admin/live-rooms/{id}/prices`: "
        "each operation below has an example body.",
    )
)

_VALID = {"valid_from": hours(0), "valid_to": days(7)}
_WELCOME = {"type": "threshold", "amount_off": 5000, "threshold": 29900}
_COUPON: dict[str, Any] = {
    "coupon_id": 3,
    "template_id": 1,
    "name": "全店满299减50",
    "benefit": _WELCOME,
    "code": None,
    "status": "unused",
    "source": "widget",
    **_VALID,
    "expiring_soon": False,
    "redeem_page": "pages/coupon/use",
}
_AUTO_COUPON: dict[str, Any] = {
    **_COUPON,
    "coupon_id": 4,
    "template_id": 5,
    "name": "保温杯进店立减20",
    "benefit": {"type": "no_threshold", "amount_off": 2000},
    "source": "auto",
}
_PRICE: dict[str, Any] = {
    "list_price": 39900,
    "promo_price": 36900,
    "exclusive_price": None,
    "final_price": 31900,
    "saving": 8000,
    "coupons": [{"coupon_id": 3, "needs_claim": False, "discount": 5000}],
}
_MEMBER = {
    "user_id": "u1",
    "level": 0,
    "first_joined_at": hours(0),
    "joined_at": hours(0),
    "rejoined": False,
    "active": True,
}
_PACK: dict[str, Any] = {
    "id": 1,
    "kind": "new_member",
    "name": "新会员礼包",
    "status": "active",
    "starts_at": days(-1),
    "ends_at": days(30),
    "popup_starts_at": days(-1),
    "popup_ends_at": days(30),
    "min_level": 0,
    "coupon_template_ids": [12, 13],
    "gift": {"template_id": 11, "quantity": 200, "given": 0},
    "benefits": [
        {
            "type": "coupon",
            "template_id": 12,
            "name": "礼包券 满199减30",
            "description": "新会员礼包专享",
            "benefit": {"type": "threshold", "amount_off": 3000, "threshold": 19900},
            "quantity": 1,
        },
        {
            "type": "coupon",
            "template_id": 13,
            "name": "礼包券 无门槛5元",
            "description": "新会员礼包专享",
            "benefit": {"type": "no_threshold", "amount_off": 500},
            "quantity": 1,
        },
        {
            "type": "gift",
            "template_id": 11,
            "name": "赠品：帆布袋",
            "description": "新会员礼包赠品，1分钱带走帆布袋",
            "benefit": {"type": "gift", "product_id": "bag-1"},
            "quantity": 200,
        },
    ],
    "remaining": 200,
    "claimed": 0,
}

# operationId -> the reply of its success status.
REPLY_EXAMPLES: dict[str, Any] = {
    "create_session": {
        "token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1MSJ9.signature",
        "expires_at": hours(2),
        "user_id": "u1",
    },
    "claim_widget": {
        "claim_page": "pages/index/index",
        "coupons": [
            {
                "template_id": 1,
                "name": "全店满299减50",
                "description": "全店通用，每人限领1张",
                "benefit": _WELCOME,
                "validity": {"type": "relative", "effective_after_days": 0, "valid_days": 7},
                "claim_page": "pages/index/index",
                "state": "claimable",
                "held": 0,
                "remaining": 1000,
            },
            {
                "template_id": 6,
                "name": "限量1张 满199减20",
                "description": "手慢无：只有1张",
                "benefit": {"type": "threshold", "amount_off": 2000, "threshold": 19900},
                "validity": {"type": "relative", "effective_after_days": 0, "valid_days": 7},
                "claim_page": "pages/index/index",
                "state": "sold_out",
                "held": 0,
                "remaining": 0,
            },
        ],
    },
    "claim": {"coupon": _COUPON},
    "my_coupons": {"items": [_AUTO_COUPON, _COUPON], "next_cursor": None},
    "product_detail": {
        "product": {
            "product_id": "cup-1",
            "title": "保温杯 500ml",
            "list_price": 39900,
            "promo_price": 36900,
            "category": "cups",
            "cover_image": None,
        },
        "price": _PRICE,
    },
    "list_prices": {"items": [{"product_id": "cup-1", "price": _PRICE}]},
    "auto_claim": {"claimed": [_AUTO_COUPON], "skipped": [], "price": _PRICE},
    "checkout_preview": {
        "lines": [
            {
                "product_id": "cup-1",
                "quantity": 1,
                "unit_price": 36900,
                "amount": 36900,
                "discount": 5000,
                "payable": 31900,
            }
        ],
        "coupons": [{"coupon_id": 3, "discount": 5000}],
        "total": 36900,
        "discount": 5000,
        "payable": 31900,
    },
    "live_room_prices": {
        "room_id": "room-1",
        "items": [
            {
                "product_id": "cup-1",
                "list_price": 39900,
                "exclusive_price": 29900,
                "starts_at": hours(-1),
                "ends_at": hours(6),
                "status": "live",
            }
        ],
    },
    "join": {"member": _MEMBER, "new_member": True, "popup": _PACK},
    "member_center": {
        "member": _MEMBER,
        "new_member": True,
        "points": 0,
        "popup": None,
        "gift_packs": [{"pack": _PACK, "state": "claimable"}],
    },
    "claim_pack": {
        "pack_id": 1,
        "presentation": "lottery",
        "coupons": [
            {
                **_COUPON,
                "coupon_id": 7,
                "template_id": 12,
                "name": "礼包券 满199减30",
                "benefit": {"type": "threshold", "amount_off": 3000, "threshold": 19900},
                "source": "gift_pack",
            },
            {
                **_COUPON,
                "coupon_id": 8,
                "template_id": 13,
                "name": "礼包券 无门槛5元",
                "benefit": {"type": "no_threshold", "amount_off": 500},
                "source": "gift_pack",
            },
        ],
        "gift": {
            **_COUPON,
            "coupon_id": 9,
            "template_id": 11,
            "name": "赠品：帆布袋",
            "benefit": {"type": "gift", "product_id": "bag-1"},
            "source": "gift_pack",
        },
    },
}

# operationId -> a request body, for the main-flow operations that had none.
REQUEST_EXAMPLES: dict[str, Any] = {
    "auto_claim": {"request_id": "open-cup-1-7f3a"},
    "checkout_preview": {"items": [{"product_id": "cup-1", "quantity": 1}], "coupon_ids": [3]},
}
