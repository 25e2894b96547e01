"""Live-room exclusive prices (直播专享价) over HTTP.

The merchant PUTs a room's price list; shoppers read it by room (status by the
clock), and a product detail or checkout from a live room pays the exclusive
price with no coupon on that line. Tokens live two hours on the app clock, so
tests mint a shopper's token after moving the clock.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from http import HTTPStatus
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import expect, iso
from tests.helpers import claim_ok, put_product, shop_url, when
from tests.test_prices import (
    applied,
    assert_claimable,
    assert_held,
    line_view,
    lines,
    no_threshold,
    preview_ok,
    price_of,
)


# --- helpers ---------------------------------------------------------------------------------
def room_item(
    clock: Any, product_id: str, exclusive_price: int, start_hours: float, end_hours: float
) -> dict[str, Any]:
    """A room price whose window runs from now + start_hours to now + end_hours."""
    now = clock.now()
    return {
        "product_id": product_id,
        "exclusive_price": exclusive_price,
        "starts_at": iso(now + timedelta(hours=start_hours)),
        "ends_at": iso(now + timedelta(hours=end_hours)),
    }


async def put_room(
    client: TestClient,
    headers: dict[str, str],
    room_id: str,
    items: list[dict[str, Any]],
    shop: str = "s1",
) -> Any:
    return await client.put(
        shop_url(f"/admin/live-rooms/{room_id}/prices", shop),
        json={"items": items},
        headers=headers,
    )


async def put_room_ok(
    client: TestClient, headers: dict[str, str], room_id: str, items: list[dict[str, Any]]
) -> dict[str, Any]:
    return await expect(await put_room(client, headers, room_id, items), HTTPStatus.OK)


async def get_room(
    client: TestClient,
    room_id: str,
    product_ids: list[str],
    headers: dict[str, str] | None = None,
    shop: str = "s1",
) -> Any:
    return await client.get(
        shop_url(f"/live-rooms/{room_id}/prices", shop),
        params={"product_ids": ",".join(product_ids)},
        headers=headers or {},
    )


async def room_prices(
    client: TestClient, room_id: str, product_ids: list[str], shop: str = "s1"
) -> dict[str, dict[str, Any]]:
    """GET a room's prices and assert 200; product_id -> item."""
    body = await expect(await get_room(client, room_id, product_ids, shop=shop), HTTPStatus.OK)
    assert body["room_id"] == room_id, body
    found = {item["product_id"]: item for item in body["items"]}
    assert len(found) == len(body["items"]), body
    return found


@pytest.fixture
async def cup(client: TestClient, merchant: dict[str, str]) -> None:
    """p1: list 30000; p2: list 10000."""
    await put_product(client, merchant, "p1", 30000)
    await put_product(client, merchant, "p2", 10000)


# --- merchant PUT ----------------------------------------------------------------------------
async def test_put_returns_the_rooms_prices(client, merchant, clock, cup):
    items = [room_item(clock, "p1", 19900, 1, 3), room_item(clock, "p2", 8800, -1, 2)]
    body = await put_room_ok(client, merchant, "r1", items)
    assert body["room_id"] == "r1", body
    returned = {item["product_id"]: item for item in body["items"]}
    assert set(returned) == {"p1", "p2"}, body
    for sent in items:
        got = returned[sent["product_id"]]
        assert got["exclusive_price"] == sent["exclusive_price"], got
        assert when(got["starts_at"]) == when(sent["starts_at"]), got
        assert when(got["ends_at"]) == when(sent["ends_at"]), got


async def test_put_replaces_the_rooms_list(client, merchant, clock, cup):
    await put_room_ok(
        client,
        merchant,
        "r1",
        [room_item(clock, "p1", 19900, -1, 3), room_item(clock, "p2", 8800, -1, 3)],
    )
    body = await put_room_ok(client, merchant, "r1", [room_item(clock, "p2", 7700, -1, 3)])
    assert [item["product_id"] for item in body["items"]] == ["p2"], body
    found = await room_prices(client, "r1", ["p1", "p2"])
    assert set(found) == {"p2"}, found
    assert found["p2"]["exclusive_price"] == 7700, found


def _bad_item(case: str, clock: Any) -> dict[str, Any]:
    item = room_item(clock, "p1", 19900, 1, 3)
    if case == "ends_equal_starts":
        item["ends_at"] = item["starts_at"]
    elif case == "ends_before_starts":
        item["ends_at"] = iso(clock.now())
    elif case == "price_zero":
        item["exclusive_price"] = 0
    elif case == "price_negative":
        item["exclusive_price"] = -100
    elif case == "price_equals_list":
        item["exclusive_price"] = 30000
    elif case == "price_above_list":
        item["exclusive_price"] = 30001
    elif case == "unknown_product":
        item["product_id"] = "nope"
    return item


@pytest.mark.parametrize(
    "case",
    [
        "ends_equal_starts",
        "ends_before_starts",
        "price_zero",
        "price_negative",
        "price_equals_list",
        "price_above_list",
        "unknown_product",
    ],
)
async def test_put_validation(client, merchant, clock, cup, case):
    good = room_item(clock, "p2", 8800, 1, 3)
    response = await put_room(client, merchant, "r1", [good, _bad_item(case, clock)])
    body = await expect(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")
    details = body["error"]["details"]
    assert any(key.startswith("items") for key in details), body
    # Nothing of a refused list is stored.
    assert await room_prices(client, "r1", ["p1", "p2"]) == {}


async def test_put_product_of_another_shop_is_refused(client, merchant, auth, clock):
    await put_product(client, auth("merchant", shop="s2", sub="m2"), "p9", 30000, shop="s2")
    response = await put_room(client, merchant, "r1", [room_item(clock, "p9", 100, 1, 3)])
    body = await expect(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")
    assert any(key.startswith("items") for key in body["error"]["details"]), body


@pytest.mark.parametrize("role", ["user", "service"])
async def test_put_is_for_merchants(client, auth, clock, cup, role):
    headers = auth(role, shop="s1", sub="x1") if role == "service" else auth("user", sub="u7")
    response = await put_room(client, headers, "r1", [room_item(clock, "p1", 19900, 1, 3)])
    await expect(response, HTTPStatus.FORBIDDEN, "FORBIDDEN")
    assert await room_prices(client, "r1", ["p1"]) == {}


async def test_put_needs_a_token(client, clock, cup):
    response = await put_room(client, {}, "r1", [room_item(clock, "p1", 19900, 1, 3)])
    await expect(response, HTTPStatus.UNAUTHORIZED, "UNAUTHENTICATED")


async def test_put_for_another_shop_is_forbidden(client, auth, clock, cup):
    other = auth("merchant", shop="s2", sub="m2")
    response = await put_room(client, other, "r1", [room_item(clock, "p1", 19900, 1, 3)])
    await expect(response, HTTPStatus.FORBIDDEN, "FORBIDDEN")
    assert await room_prices(client, "r1", ["p1"]) == {}


# --- shopper GET -----------------------------------------------------------------------------
async def test_status_follows_the_clock(client, merchant, clock, cup):
    item = room_item(clock, "p1", 19900, 1, 3)
    await put_room_ok(client, merchant, "r1", [item])
    found = await room_prices(client, "r1", ["p1"])
    entry = found["p1"]
    assert entry["list_price"] == 30000, entry
    assert entry["exclusive_price"] == 19900, entry
    assert when(entry["starts_at"]) == when(item["starts_at"]), entry
    assert when(entry["ends_at"]) == when(item["ends_at"]), entry
    assert entry["status"] == "upcoming", entry
    clock.advance(timedelta(hours=2))
    assert (await room_prices(client, "r1", ["p1"]))["p1"]["status"] == "live"
    clock.advance(timedelta(hours=2))
    assert (await room_prices(client, "r1", ["p1"]))["p1"]["status"] == "ended"


async def test_get_works_with_a_user_token(client, merchant, clock, cup, auth):
    await put_room_ok(client, merchant, "r1", [room_item(clock, "p1", 19900, -1, 3)])
    response = await get_room(client, "r1", ["p1"], headers=auth("user", sub="u7"))
    body = await expect(response, HTTPStatus.OK)
    assert [(item["product_id"], item["status"]) for item in body["items"]] == [("p1", "live")]


async def test_products_without_a_room_price_are_left_out(client, merchant, clock, cup):
    await put_room_ok(client, merchant, "r1", [room_item(clock, "p1", 19900, -1, 3)])
    found = await room_prices(client, "r1", ["p2", "p1", "nope"])
    assert set(found) == {"p1"}, found
    assert found["p1"]["status"] == "live", found


async def test_rooms_are_separate(client, merchant, auth, clock, cup):
    await put_room_ok(client, merchant, "r1", [room_item(clock, "p1", 19900, -1, 3)])
    assert await room_prices(client, "r2", ["p1"]) == {}
    s2 = auth("merchant", shop="s2", sub="m2")
    await put_product(client, s2, "p1", 30000, shop="s2")
    assert await room_prices(client, "r1", ["p1"], shop="s2") == {}


@pytest.mark.parametrize("count, status", [(1, 200), (100, 200), (101, 400)])
async def test_product_id_count(client, merchant, clock, cup, count, status):
    await put_room_ok(client, merchant, "r1", [room_item(clock, "p1", 19900, -1, 3)])
    ids = ["p1"] + [f"x{n}" for n in range(count - 1)]
    response = await get_room(client, "r1", ids)
    if status == 400:
        await expect(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")
    else:
        body = await expect(response, HTTPStatus.OK)
        assert [item["product_id"] for item in body["items"]] == ["p1"], body


async def test_new_price_is_visible_at_once(client, merchant, clock, cup):
    await put_room_ok(client, merchant, "r1", [room_item(clock, "p1", 19900, -1, 3)])
    assert (await room_prices(client, "r1", ["p1", "p2"]))["p1"]["exclusive_price"] == 19900
    assert (await price_of(client, "p1", live_room_id="r1"))["final_price"] == 19900
    await put_room_ok(
        client,
        merchant,
        "r1",
        [room_item(clock, "p1", 18800, -1, 3), room_item(clock, "p2", 9900, -1, 3)],
    )
    found = await room_prices(client, "r1", ["p1", "p2"])
    assert {key: item["exclusive_price"] for key, item in found.items()} == {
        "p1": 18800,
        "p2": 9900,
    }, found
    assert (await price_of(client, "p1", live_room_id="r1"))["final_price"] == 18800
    await put_room_ok(client, merchant, "r1", [room_item(clock, "p2", 9900, -1, 3)])
    assert set(await room_prices(client, "r1", ["p1", "p2"])) == {"p2"}
    price = await price_of(client, "p1", live_room_id="r1")
    assert price["exclusive_price"] is None, price


async def test_product_price_change_is_visible_in_the_room(client, merchant, clock, cup):
    await put_room_ok(client, merchant, "r1", [room_item(clock, "p1", 19900, -1, 3)])
    assert (await room_prices(client, "r1", ["p1"]))["p1"]["list_price"] == 30000
    await put_product(client, merchant, "p1", 32000)
    assert (await room_prices(client, "r1", ["p1"]))["p1"]["list_price"] == 32000


# --- product detail in a live room -----------------------------------------------------------
async def test_live_price_replaces_coupons(client, merchant, make_template, clock, cup):
    await make_template()  # 满299减50 would take 5000 off p1
    await put_room_ok(client, merchant, "r1", [room_item(clock, "p1", 19900, -1, 3)])
    price = await price_of(client, "p1", live_room_id="r1", quantity=2)
    assert price["list_price"] == 30000, price
    assert price["exclusive_price"] == 19900, price
    assert price["final_price"] == 39800, price
    assert price["saving"] == 60000 - 39800, price
    assert price["coupons"] == [], price


async def test_live_price_replaces_held_coupons(client, merchant, make_template, clock, cup, auth):
    template = await make_template(benefit=no_threshold(1000))
    await claim_ok(client, auth("user", sub="u7"), template["id"])
    await put_room_ok(client, merchant, "r1", [room_item(clock, "p1", 19900, -1, 3)])
    price = await price_of(client, "p1", auth("user", sub="u7"), live_room_id="r1")
    assert (price["exclusive_price"], price["final_price"]) == (19900, 19900), price
    assert price["saving"] == 10100, price
    assert price["coupons"] == [], price


@pytest.mark.parametrize("moment", ["upcoming", "ended"])
async def test_outside_the_window_prices_are_normal(
    client, merchant, make_template, clock, cup, moment
):
    template = await make_template()  # 满299减50
    await put_room_ok(client, merchant, "r1", [room_item(clock, "p1", 19900, 1, 3)])
    if moment == "ended":
        clock.advance(timedelta(hours=4))
    assert (await room_prices(client, "r1", ["p1"]))["p1"]["status"] == moment
    price = await price_of(client, "p1", live_room_id="r1")
    assert price["exclusive_price"] is None, price
    assert (price["final_price"], price["saving"]) == (25000, 5000), price
    (entry,) = price["coupons"]
    assert_claimable(entry, template["id"], 5000)


async def test_another_room_or_no_room_prices_are_normal(
    client, merchant, make_template, clock, cup
):
    template = await make_template()
    await put_room_ok(client, merchant, "r1", [room_item(clock, "p1", 19900, -1, 3)])
    for params in ({"live_room_id": "r2"}, {}):
        price = await price_of(client, "p1", **params)
        assert price["exclusive_price"] is None, (params, price)
        assert price["final_price"] == 25000, (params, price)
        (entry,) = price["coupons"]
        assert_claimable(entry, template["id"], 5000)


async def test_live_price_in_list_prices_needs_the_room(client, merchant, clock, cup):
    # POST /prices has no live_room_id: the list page shows the normal price.
    await put_room_ok(client, merchant, "r1", [room_item(clock, "p1", 19900, -1, 3)])
    response = await client.post(shop_url("/prices"), json={"items": lines(("p1", 1))})
    (item,) = (await expect(response, HTTPStatus.OK))["items"]
    assert (item["price"]["exclusive_price"], item["price"]["final_price"]) == (None, 30000)


# --- checkout preview from a live room -------------------------------------------------------
async def test_preview_live_line_pays_the_exclusive_price(
    client, merchant, make_template, clock, cup, auth
):
    template = await make_template(benefit=no_threshold(1000))
    user = auth("user", sub="u7")
    coupon = await claim_ok(client, user, template["id"])
    await put_room_ok(client, merchant, "r1", [room_item(clock, "p1", 19900, -1, 3)])
    body = await preview_ok(client, user, lines(("p1", 2), ("p2", 1)), live_room_id="r1")
    assert [line_view(line) for line in body["lines"]] == [
        ("p1", 2, 19900, 39800, 0, 39800),
        ("p2", 1, 10000, 10000, 1000, 9000),
    ], body
    assert applied(body) == {coupon["coupon_id"]: 1000}, body
    assert (body["total"], body["discount"], body["payable"]) == (49800, 1000, 48800), body


async def test_preview_live_line_is_outside_thresholds(
    client, merchant, make_template, clock, cup, auth
):
    template = await make_template()  # 满299减50
    user = auth("user", sub="u7")
    coupon = await claim_ok(client, user, template["id"])
    await put_room_ok(client, merchant, "r1", [room_item(clock, "p1", 19900, -1, 3)])
    # Live: only p2 (10000) is eligible, below the threshold.
    body = await preview_ok(client, user, lines(("p1", 1), ("p2", 1)), live_room_id="r1")
    assert body["coupons"] == [], body
    assert (body["total"], body["payable"]) == (29900, 29900), body
    # Without the room: 40000 eligible, the coupon applies.
    body = await preview_ok(client, user, lines(("p1", 1), ("p2", 1)))
    assert applied(body) == {coupon["coupon_id"]: 5000}, body
    assert body["payable"] == 35000, body


async def test_preview_live_only_line_takes_no_coupon(
    client, merchant, make_template, clock, cup, auth
):
    template = await make_template(benefit=no_threshold(1000))
    user = auth("user", sub="u7")
    await claim_ok(client, user, template["id"])
    await put_room_ok(client, merchant, "r1", [room_item(clock, "p1", 19900, -1, 3)])
    body = await preview_ok(client, user, lines(("p1", 1)), live_room_id="r1")
    assert [line_view(line) for line in body["lines"]] == [("p1", 1, 19900, 19900, 0, 19900)]
    assert body["coupons"] == [], body


@pytest.mark.parametrize("moment", ["upcoming", "ended"])
async def test_preview_outside_the_window_is_normal(
    client, merchant, make_template, clock, cup, auth, moment
):
    template = await make_template(benefit=no_threshold(1000))
    coupon = await claim_ok(client, auth("user", sub="u7"), template["id"])
    await put_room_ok(client, merchant, "r1", [room_item(clock, "p1", 19900, 1, 3)])
    if moment == "ended":
        clock.advance(timedelta(hours=4))
    user = auth("user", sub="u7")  # minted after the clock moved
    body = await preview_ok(client, user, lines(("p1", 1)), live_room_id="r1")
    assert [line_view(line) for line in body["lines"]] == [("p1", 1, 30000, 30000, 1000, 29000)]
    assert applied(body) == {coupon["coupon_id"]: 1000}, body
    price = await price_of(client, "p1", user, live_room_id="r1")
    assert price["exclusive_price"] is None, price
    (entry,) = price["coupons"]
    assert_held(entry, coupon["coupon_id"], 1000)


async def test_exclusive_price_must_beat_the_promotion_price(client, merchant, clock):
    await put_product(client, merchant, "p1", 10000, promo_price=8000)
    start = clock.now()
    body = {
        "items": [
            {
                "product_id": "p1",
                "exclusive_price": 9000,
                "starts_at": start.isoformat(),
                "ends_at": (start + timedelta(hours=1)).isoformat(),
            }
        ]
    }
    response = await client.put(
        shop_url("/admin/live-rooms/r1/prices"), json=body, headers=merchant
    )
    details = (await expect(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED"))["error"][
        "details"
    ]
    assert "items.0.exclusive_price" in details


async def test_live_price_never_above_a_lowered_normal_price(client, merchant, clock):
    await put_product(client, merchant, "p1", 10000)
    start = clock.now()
    body = {
        "items": [
            {
                "product_id": "p1",
                "exclusive_price": 9000,
                "starts_at": start.isoformat(),
                "ends_at": (start + timedelta(hours=1)).isoformat(),
            }
        ]
    }
    await expect(
        await client.put(shop_url("/admin/live-rooms/r1/prices"), json=body, headers=merchant),
        HTTPStatus.OK,
    )
    await put_product(client, merchant, "p1", 5000)
    response = await client.get(shop_url("/products/p1"), params={"live_room_id": "r1"})
    price = (await expect(response, HTTPStatus.OK))["price"]
    assert price["final_price"] == 5000 and price["saving"] == 0


async def test_concurrent_puts_to_one_room_never_fail(client, merchant, clock):
    await put_product(client, merchant, "p1", 10000)
    start = clock.now()

    def body(price):
        return {
            "items": [
                {
                    "product_id": "p1",
                    "exclusive_price": price,
                    "starts_at": start.isoformat(),
                    "ends_at": (start + timedelta(hours=1)).isoformat(),
                }
            ]
        }

    responses = await asyncio.gather(
        *(
            client.put(
                shop_url("/admin/live-rooms/r1/prices"), json=body(5000 + n), headers=merchant
            )
            for n in range(8)
        )
    )
    assert sorted(r.status for r in responses) == [HTTPStatus.OK] * 8
