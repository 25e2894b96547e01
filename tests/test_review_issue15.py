"""Issue 15 review (i15-review): findings still open on main after the issue's merges.

Each test fails on main as merged after issue 15 and names what is wrong; HTTP findings
run through the real app on both backends, pure-engine findings call the engine directly.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import pytest

from bff.pricing.engine import Candidate, Line, best_quote
from tests import pricing_oracle
from tests.conftest import expect
from tests.helpers import grant_ok, put_product, redeem, shop_url, wallet
from tests.test_bad_input import error_of, raw_request

ALONE_REFUSING = {"with_store_promotions": False, "with_other_coupons": False}


def no_threshold(amount_off: int) -> dict[str, Any]:
    return {"type": "no_threshold", "amount_off": amount_off}


def stacking(key: str, template_id: int, benefit: dict[str, Any]) -> Candidate:
    return Candidate(key, template_id, benefit, {"type": "shop"}, with_other_coupons=True)


@pytest.fixture
def user(auth: Callable[..., dict[str, str]]) -> dict[str, str]:
    return auth("user", sub="u-review")


@pytest.fixture
def service(auth: Callable[..., dict[str, str]]) -> dict[str, str]:
    return auth("service", shop="s1", sub="order-system")


# --- 1. prices ---------------------------------------------------------------------------------
def test_more_than_ten_stacking_templates_still_find_the_lowest_payable():
    """DOMAIN: "The best choice is the lowest payable total." Beyond MAX_STACKING_EXACT (10)
    stacking templates the engine keeps the 10 that price the cart lowest *alone*, so a
    coupon that is weak alone but needed together is never tried: ten 1.00-off coupons take a
    10.00 product to 0, yet the engine keeps the 50 % discount (best alone) and answers 0.50."""
    lines = [Line("P1", 1, 1000)]
    candidates = [stacking(f"c{i}", i, no_threshold(100)) for i in range(1, 11)]
    candidates.append(stacking("d", 20, {"type": "discount", "rate_permille": 500}))
    oracle = pricing_oracle.best(lines, candidates)
    assert oracle.quote.payable == 0
    quote = best_quote(lines, candidates)
    assert quote.payable == oracle.quote.payable, [c.candidate.key for c in quote.coupons]


async def test_a_named_coupon_that_raises_the_payable_is_refused_at_checkout_and_redemption(
    client, merchant, make_template, user, service
):
    """DOMAIN: "A combination never holds a coupon that could be dropped without raising
    the payable total" and a checkout or redemption naming a forbidden combination "is
    refused with a 4xx naming the coupon, never priced". A coupon that refuses store
    promotions puts a 10.00 product on promotion at 8.00 back at list price; 1.50 off makes
    it 8.50, more than the 8.00 paid with no coupon at all. ``engine.unneeded`` only checks
    combinations of two or more, so the lone coupon is priced and spent, and the shopper
    pays 0.50 more than with nothing."""
    await put_product(client, merchant, "p1", 1000, promo_price=800)
    template = await make_template(
        name="立减1.5不与店铺优惠同享", benefit=no_threshold(150), stacking=ALONE_REFUSING
    )
    await grant_ok(client, merchant, template["id"], ["u-review"])
    (coupon,) = await wallet(client, user)
    items = [{"product_id": "p1", "quantity": 1}]

    best = await expect(
        await client.post(shop_url("/checkout/preview"), json={"items": items}, headers=user),
        HTTPStatus.OK,
    )
    assert (best["payable"], best["coupons"]) == (800, []), best  # the engine's best: none

    named = await client.post(
        shop_url("/checkout/preview"),
        json={"items": items, "coupon_ids": [coupon["coupon_id"]]},
        headers=user,
    )
    body = await named.json()
    assert named.status == HTTPStatus.CONFLICT, body  # main: 200, payable 850
    assert body["error"]["details"] == {"coupon_id": coupon["coupon_id"], "reason": "not_needed"}

    locked = await redeem(client, service, "o-review-1", "u-review", items, [coupon["coupon_id"]])
    body = await locked.json()
    assert locked.status == HTTPStatus.CONFLICT, body  # main: 201, the coupon locked for 850


# --- 3. bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_does_not_decode_as_its_content_encoding_is_a_400(client, encoding):
    """Anonymous ``POST /prices`` with ``Content-Encoding: gzip`` (or deflate) and a body
    that is not compressed: aiohttp raises ``RequestPayloadError`` from ``request.read()``,
    which is neither an ``HttpProcessingError`` nor an ``HTTPException``, so
    ``bff.errors.error_middleware`` answers 500 INTERNAL: anyone can produce 500s at will."""
    raw = json.dumps({"items": [{"product_id": "p1", "quantity": 1}]}).encode()
    response = await client.post(
        shop_url("/prices"),
        data=raw,
        headers={"Content-Type": "application/json", "Content-Encoding": encoding},
    )
    body = await response.json()
    error_of(body)
    assert response.status == HTTPStatus.BAD_REQUEST, body  # main: 500 INTERNAL


async def test_a_well_compressed_body_is_still_read(client):
    """The fix must not refuse a body that does decode (aiohttp decompresses it)."""
    raw = json.dumps({"items": [{"product_id": "p1", "quantity": 1}]}).encode()
    for encoding, packed in (("gzip", gzip.compress(raw)), ("deflate", zlib.compress(raw))):
        response = await client.post(
            shop_url("/prices"),
            data=packed,
            headers={"Content-Type": "application/json", "Content-Encoding": encoding},
        )
        assert (await expect(response, HTTPStatus.OK)) == {"items": []}


async def test_a_broken_compressed_form_is_a_400(client, merchant, make_template):
    """The same on a multipart route (grants read their form with ``request.multipart()``)."""
    template = await make_template()
    boundary = "b0undary"
    response = await client.post(
        shop_url(f"/admin/coupon-templates/{template['id']}/grants"),
        data=f"--{boundary}\r\n".encode() + b"not gzip at all",
        headers={
            **merchant,
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Encoding": "gzip",
        },
    )
    body = await response.json()
    error_of(body)
    assert response.status == HTTPStatus.BAD_REQUEST, body


async def test_an_unknown_expect_header_is_answered_in_the_error_shape(client):
    """``Expect: foo`` on any route: aiohttp's default expect handler raises
    ``HTTPExpectationFailed(text="Unknown Expect: foo")`` before the view, and the reply is
    ``417 text/plain`` echoing the header (the error middleware maps only the statuses in
    ``_HTTP_CODES``; 417 falls through as text because the handler builds a plain body)."""
    head = (
        b"POST /api/v1/shops/s1/prices HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\nExpect: foo-SECRET\r\n\r\n{}"
    )
    status, headers, body = await raw_request(client, head)
    assert status == HTTPStatus.EXPECTATION_FAILED, (status, body)
    assert headers.get("content-type", "").startswith("application/json"), (status, body)
    assert b"SECRET" not in body, body
    assert error_of(json.loads(body))["code"] == "EXPECTATION_FAILED"


# --- 2. nothing half-written: a grant's stored reply ---------------------------------------
async def test_a_grant_of_thousands_of_users_is_answered_and_replayed(
    client, merchant, make_template
):
    """``POST /grants`` takes up to 10,000 users (MAX_GRANT_USERS), but its reply is kept in
    ``idempotency_records.reply``, a ``Text`` column: 64 KB on MariaDB. At about 1,800 users
    the reply is longer: every coupon is issued, then the insert of the record fails with
    ``DataError 1406 Data too long for column 'reply'`` and the merchant gets 500 INTERNAL,
    on every retry too (the coupons' request keys replay, the record never stores). On the
    embedded SQLite the same grant is a 201."""
    template = await make_template(stock={"type": "unlimited"})
    users = [f"user-{n:05d}" for n in range(3000)]
    body = {"user_ids": users, "request_id": "grant-big-1"}
    url = shop_url(f"/admin/coupon-templates/{template['id']}/grants")
    first = await client.post(url, json=body, headers=merchant)
    reply = await first.json()
    assert first.status == HTTPStatus.CREATED, reply  # main on MariaDB: 500 INTERNAL
    assert len(reply["granted"]) == 3000 and reply["failed"] == [], reply["failed"][:3]
    again = await expect(await client.post(url, json=body, headers=merchant), HTTPStatus.CREATED)
    assert again["replayed"] is True and again["granted"] == reply["granted"]


# --- 4. OpenAPI: statuses the server answers ---------------------------------------------------
async def test_every_status_a_bodyless_route_answers_to_a_stray_body_is_documented(
    client, merchant
):
    """``make_view`` checks the media type of any body on every non-multipart route, GETs
    included (``GET /healthz`` with a ``text/plain`` body is a 415), but the document lists
    415 only on operations that take a body: a generated client meets an undocumented
    status (schemathesis' ``status_code_conformance`` would flag it if it sent bodies on
    GETs). Either ignore a body on routes that take none, or document the 415."""
    doc = await (await client.get("/api/v1/openapi.json")).json()
    undocumented = []
    for path, headers in (
        ("/healthz", {}),
        ("/api/v1/shops/s1/claim-widget", {}),
        ("/api/v1/shops/s1/admin/coupon-templates/1", merchant),
    ):
        response = await client.get(
            path, data=b"x", headers={**headers, "Content-Type": "text/plain"}
        )
        template = path.replace("/s1/", "/{shop_id}/").replace(
            "templates/1", "templates/{template_id}"
        )
        documented = doc["paths"][template]["get"]["responses"]
        if str(response.status) not in documented:
            undocumented.append((path, response.status, sorted(documented)))
    assert undocumented == []


# --- 1. prices: a pair that only lifts itself to the price paid with no coupon -----------------
REFUSES_BUT_STACKS = {"with_store_promotions": False, "with_other_coupons": True}
STACKS = {"with_store_promotions": True, "with_other_coupons": True}


def test_a_combination_that_pays_what_no_coupon_pays_is_never_chosen():
    """P1 at list 10.00, on promotion at 8.00. R (1.00 off, refuses store promotions, stacks)
    puts P1 back at 10.00, which lifts X's threshold (1.00 off from 9.00) so X applies:
    R + X pay 10.00 - 2.00 = 8.00, exactly what the cart pays with no coupon. DOMAIN: "A
    combination never holds a coupon that could be dropped without raising the payable
    total: removing that one coupon and pricing the rest again gives the same or a lower
    total (no coupon is spent for nothing)". Removing R and pricing the rest again: X no
    longer applies, the cart pays 8.00, the same, so R could be dropped. The engine and the
    oracle both call {X} "not usable" and so count R as needed, and since {R, X} ties with
    no coupon on the payable and wins the expiry tie-break, both spend two coupons for
    nothing (the product page shows them, checkout proposes them, the
    statistics credit 2.00 of discount that nobody saved)."""
    from datetime import UTC, datetime

    expiry = datetime(2026, 12, 1, tzinfo=UTC)
    lines = [Line("P1", 1, 1000, 800)]
    refuser = Candidate(
        "r",
        1,
        no_threshold(100),
        {"type": "shop"},
        with_store_promotions=False,
        with_other_coupons=True,
        coupon_id=1,
        expires_at=expiry,
    )
    lifted = Candidate(
        "x",
        2,
        {"type": "threshold", "amount_off": 100, "threshold": 900},
        {"type": "shop"},
        with_other_coupons=True,
        coupon_id=2,
        expires_at=expiry,
    )
    quote = best_quote(lines, [refuser, lifted])
    assert quote.payable == 800
    assert [applied.candidate.key for applied in quote.coupons] == []  # main: ['r', 'x']
    oracle = pricing_oracle.best(lines, [refuser, lifted])
    assert oracle.combo == ()  # the oracle encodes the same reading: main: (r, x)


async def test_the_price_pages_spend_no_coupon_for_the_no_coupon_price(
    client, merchant, make_template, user
):
    """The case above through the product page and checkout's best (what a front end then
    sends to the order system): each answers 8.00 with R and X applied."""
    await put_product(client, merchant, "p1", 1000, promo_price=800)
    refuser = await make_template(
        name="立减1不与店铺优惠同享", benefit=no_threshold(100), stacking=REFUSES_BUT_STACKS
    )
    lifted = await make_template(
        name="满9减1",
        benefit={"type": "threshold", "amount_off": 100, "threshold": 900},
        stacking=STACKS,
    )
    for template in (refuser, lifted):
        await grant_ok(client, merchant, template["id"], ["u-review"])
    items = [{"product_id": "p1", "quantity": 1}]

    page = await expect(await client.get(shop_url("/products/p1"), headers=user), HTTPStatus.OK)
    assert (page["price"]["final_price"], page["price"]["coupons"]) == (800, []), page["price"]
    best = await expect(
        await client.post(shop_url("/checkout/preview"), json={"items": items}, headers=user),
        HTTPStatus.OK,
    )
    assert (best["payable"], best["coupons"]) == (800, []), best


# --- 3. query strings: only the integers the document describes --------------------------------
@pytest.mark.parametrize("spelling", ["1_0", "%D9%A1", "+1", "%201%20"])
async def test_a_query_integer_is_spelled_with_ascii_digits_only(client, merchant, spelling):
    """``QueryInt`` is marshmallow's non-strict Integer, i.e. Python's ``int(str)``: it takes
    ``1_0`` (10), Arabic-Indic ``١`` (1), ``+1`` and `` 1 `` for ``quantity`` and ``limit``,
    which the document types as plain integers. Cosmetic, but two spellings of one request
    also miss each other in the raw-path reply cache. (Cosmetic / contract.)"""
    await put_product(client, merchant, "p1", 1000)
    response = await client.get(shop_url(f"/products/p1?quantity={spelling}"))
    body = await response.json()
    assert response.status == HTTPStatus.BAD_REQUEST, body  # main: 200
    assert "quantity" in error_of(body)["details"], body
