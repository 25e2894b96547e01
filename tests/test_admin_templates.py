"""Merchant admin: coupon templates (create, read, list, patch) over HTTP."""

from datetime import datetime, timedelta
from http import HTTPStatus

import pytest

from tests.conftest import expect, iso, template_body
from tests.helpers import field_error, template_url

TEMPLATES = "/api/v1/shops/s1/admin/coupon-templates"


@pytest.fixture
def post(client, clock, merchant):
    """POST a valid template body with ``overrides``, leaving out the keys in ``drop``."""

    async def send(*, drop=(), **overrides):
        body = template_body(clock, **overrides)
        for key in drop:
            body.pop(key)
        return await client.post(TEMPLATES, json=body, headers=merchant)

    return send


def days(clock, n):
    return iso(clock.now() + timedelta(days=n))


async def list_ids(client, headers, query=""):
    body = await expect(await client.get(TEMPLATES + query, headers=headers), HTTPStatus.OK)
    return [item["id"] for item in body["items"]]


# --- create: defaults and accepted shapes ---------------------------------------------------
async def test_create_returns_template_with_server_fields(post):
    body = await expect(await post(), HTTPStatus.CREATED)
    assert isinstance(body["id"], int)
    assert body["status"] == "active"
    assert body["issued"] == 0
    assert body["remaining"] == 1000
    assert body["stock"] == {"type": "limited", "total": 1000}
    assert body["name"] == "满299减50"
    assert body["benefit"] == {"type": "threshold", "amount_off": 5000, "threshold": 29900}


async def test_unlimited_stock_has_null_remaining(post):
    body = await expect(await post(stock={"type": "unlimited"}), HTTPStatus.CREATED)
    assert body["stock"] == {"type": "unlimited"}
    assert body["remaining"] is None


@pytest.mark.parametrize("claim_page", ["omitted", None])
async def test_defaults_applied(post, claim_page):
    optional = ("description", "scope", "codes", "per_user_limit", "claim_page")
    overrides = {} if claim_page == "omitted" else {"claim_page": claim_page}
    drop = [key for key in optional if key not in overrides]
    body = await expect(await post(drop=drop, **overrides), HTTPStatus.CREATED)
    assert body["description"] == ""
    assert body["scope"] == {"type": "shop"}
    assert body["codes"] == {"type": "none"}
    assert body["per_user_limit"] == 1
    assert body["daily_limit"] is None
    assert body["audience"] == {"type": "all"}
    assert body["new_member_exclusive"] is False
    assert body["stacking"] == {"with_store_promotions": True, "with_other_coupons": False}
    assert body["return_on_cancel"] is True
    assert body["risk_check"] is False
    assert body["claim_page"] == "pages/index/index"
    assert body["product_code"] is None
    assert body["cover_image"] is None


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"name": "满" * 40}, id="name-40-chinese"),
        pytest.param({"name": "a" * 40}, id="name-40-ascii"),
        pytest.param({"description": "d" * 120}, id="description-120"),
        pytest.param({"description": "券" * 120}, id="description-120-chinese"),
        pytest.param(
            {"product_code": "P-1", "cover_image": "https://cdn.x.com/a.JPEG"}, id="product-cover"
        ),
        pytest.param(
            {"benefit": {"type": "discount", "rate_permille": 850, "max_off": 2000}}, id="discount"
        ),
        pytest.param({"benefit": {"type": "no_threshold", "amount_off": 500}}, id="no-threshold"),
        pytest.param(
            {"benefit": {"type": "exchange", "product_id": "p1", "price": 990}}, id="exchange"
        ),
        pytest.param(
            {"benefit": {"type": "gift", "product_id": "g1"}, "claim_methods": ["gift_pack"]},
            id="gift-in-pack",
        ),
        pytest.param(
            {"scope": {"type": "categories", "categories": ["cups", "杯子"]}}, id="categories"
        ),
        pytest.param({"scope": {"type": "products", "product_ids": ["p1", "p2"]}}, id="products"),
        pytest.param({"claim_methods": ["widget", "auto", "points"]}, id="several-methods"),
        pytest.param({"audience": {"type": "members", "min_level": 3}}, id="members-audience"),
        pytest.param({"daily_limit": 100, "per_user_limit": 3}, id="limits"),
        pytest.param(
            {"claim_page": "/pages/a/b?x=1", "redeem_page": "pages/c/d?from=coupon"}, id="pages"
        ),
        pytest.param(
            {"stacking": {"with_store_promotions": False, "with_other_coupons": True}},
            id="stacking",
        ),
    ],
)
async def test_accepted_variants_echo_back(post, overrides):
    body = await expect(await post(**overrides), HTTPStatus.CREATED)
    for key, value in overrides.items():
        if isinstance(value, dict):
            assert body[key] == {**body[key], **value}, (key, body[key])
        else:
            assert body[key] == value, (key, body[key])


async def test_absolute_validity_accepted(post, clock):
    validity = {"type": "absolute", "start": days(clock, 0), "end": days(clock, 30)}
    body = await expect(await post(validity=validity), HTTPStatus.CREATED)
    assert body["validity"]["type"] == "absolute"
    assert datetime.fromisoformat(body["validity"]["start"]) == clock.now()
    assert datetime.fromisoformat(body["validity"]["end"]) == clock.now() + timedelta(days=30)


async def test_pregenerated_codes_are_the_stock(post):
    response = await post(drop=["stock"], codes={"type": "pregenerated", "count": 5})
    body = await expect(response, HTTPStatus.CREATED)
    assert body["remaining"] == 5
    assert body["stock"] is None
    assert body["codes"] == {"type": "pregenerated", "count": 5}


async def test_imported_codes_start_with_nothing_remaining(post):
    body = await expect(await post(drop=["stock"], codes={"type": "imported"}), HTTPStatus.CREATED)
    assert body["remaining"] == 0
    assert body["stock"] is None


async def test_code_method_with_pregenerated_codes_accepted(post):
    response = await post(
        drop=["stock"], codes={"type": "pregenerated", "count": 3}, claim_methods=["code"]
    )
    await expect(response, HTTPStatus.CREATED)


# --- create: field rules --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["", "   ", "a" * 41, "满" * 41, None, 5])
async def test_bad_name(post, name):
    await field_error(await post(name=name), "name")


async def test_missing_name(post):
    await field_error(await post(drop=["name"]), "name")


async def test_description_too_long(post):
    await field_error(await post(description="d" * 121), "description")


@pytest.mark.parametrize(
    "claim_page, redeem_page",
    [
        ("pages/a/b", "pages/a/b"),
        ("pages/a/b", "/pages/a/b"),
        ("pages/a/b", "/pages/a/b?x=1"),
        ("pages/a/b?y=2", "pages/a/b?x=1"),
        (None, "pages/index/index"),
        (None, "/pages/index/index?from=coupon"),
    ],
)
async def test_identical_landing_pages_rejected(post, claim_page, redeem_page):
    response = await post(claim_page=claim_page, redeem_page=redeem_page)
    await expect(response, HTTPStatus.BAD_REQUEST, "LANDING_PAGES_IDENTICAL")


async def test_omitted_claim_page_equal_to_redeem_page_rejected(post):
    response = await post(drop=["claim_page"], redeem_page="pages/index/index")
    await expect(response, HTTPStatus.BAD_REQUEST, "LANDING_PAGES_IDENTICAL")


@pytest.mark.parametrize("field", ["claim_page", "redeem_page"])
@pytest.mark.parametrize("page", ["http://x.com", "pages/../x", "", "pages/a b", "p" * 300])
async def test_malformed_page_path(post, field, page):
    await field_error(await post(**{field: page}), field)


async def test_missing_redeem_page(post):
    await field_error(await post(drop=["redeem_page"]), "redeem_page")


async def test_product_code_needs_cover_image(post):
    await field_error(await post(product_code="P-1"), "cover_image")


@pytest.mark.parametrize(
    "cover_image",
    [
        "https://x.com/a.gif",
        "ftp://x.com/a.png",
        ["https://x.com/a.png", "https://x.com/b.png"],
        "x.com/a.png",
        "https://x.com/png",
    ],
)
async def test_bad_cover_image(post, cover_image):
    await field_error(await post(product_code="P-1", cover_image=cover_image), "cover_image")


@pytest.mark.parametrize("end_offset", [0, -1])
async def test_claim_end_not_after_claim_start(post, clock, end_offset):
    response = await post(claim_start=days(clock, 1), claim_end=days(clock, 1 + end_offset))
    await field_error(response, "claim_end")


async def test_naive_claim_start_rejected(post):
    await field_error(await post(claim_start="2026-11-19T04:00:00"), "claim_start")


@pytest.mark.parametrize("start, end", [(2, 2), (5, 2)])
async def test_absolute_validity_end_not_after_start(post, clock, start, end):
    validity = {"type": "absolute", "start": days(clock, start), "end": days(clock, end)}
    await field_error(await post(validity=validity), "validity.end")


async def test_absolute_validity_ending_before_claim_start(post, clock):
    validity = {"type": "absolute", "start": days(clock, -10), "end": days(clock, -2)}
    await field_error(await post(validity=validity), "validity.end")


@pytest.mark.parametrize(
    "validity, field",
    [
        ({"type": "relative", "effective_after_days": 0, "valid_days": 0}, "validity.valid_days"),
        (
            {"type": "relative", "effective_after_days": -1, "valid_days": 7},
            "validity.effective_after_days",
        ),
        ({"type": "relative", "effective_after_days": 0, "valid_days": "7"}, "validity.valid_days"),
        ({"type": "forever"}, "validity.type"),
        ({"effective_after_days": 0, "valid_days": 7}, "validity.type"),
    ],
)
async def test_bad_validity(post, validity, field):
    await field_error(await post(validity=validity), field)


@pytest.mark.parametrize("total", [0, -5, 1.5, "10", True, None])
async def test_bad_stock_total(post, total):
    await field_error(await post(stock={"type": "limited", "total": total}), "stock.total")


async def test_stock_required_without_codes(post):
    await field_error(await post(drop=["stock"]), "stock")


@pytest.mark.parametrize("codes", [{"type": "pregenerated", "count": 5}, {"type": "imported"}])
async def test_stock_with_code_stock_rejected(post, codes):
    await field_error(await post(codes=codes), "stock")


@pytest.mark.parametrize("count", [0, -1, "5"])
async def test_bad_pregenerated_count(post, count):
    response = await post(drop=["stock"], codes={"type": "pregenerated", "count": count})
    await field_error(response, "codes.count")


@pytest.mark.parametrize(
    "benefit, field",
    [
        ({"type": "threshold", "amount_off": 29900, "threshold": 29900}, "benefit.amount_off"),
        ({"type": "threshold", "amount_off": 30000, "threshold": 29900}, "benefit.amount_off"),
        ({"type": "threshold", "amount_off": 0, "threshold": 29900}, "benefit.amount_off"),
        ({"type": "no_threshold", "amount_off": 0}, "benefit.amount_off"),
        ({"type": "no_threshold", "amount_off": 9.5}, "benefit.amount_off"),
        ({"type": "discount", "rate_permille": 0}, "benefit.rate_permille"),
        ({"type": "discount", "rate_permille": 1000}, "benefit.rate_permille"),
        ({"type": "discount", "rate_permille": 850, "max_off": 0}, "benefit.max_off"),
        ({"type": "cashback", "amount_off": 100}, "benefit.type"),
        ({"type": "exchange", "price": 990}, "benefit.product_id"),
        ({"type": "exchange", "product_id": "p1"}, "benefit.price"),
        ({"type": "exchange", "product_id": "p1", "price": 0}, "benefit.price"),
        ({"type": "threshold", "amount_off": 100, "threshold": 200, "extra": 1}, "benefit.extra"),
    ],
)
async def test_bad_benefit(post, benefit, field):
    await field_error(await post(benefit=benefit), field)


@pytest.mark.parametrize("methods", [["widget"], ["gift_pack", "widget"]])
async def test_gift_benefit_only_in_gift_pack(post, methods):
    response = await post(benefit={"type": "gift", "product_id": "g1"}, claim_methods=methods)
    await field_error(response, "claim_methods")


@pytest.mark.parametrize("methods", [[], ["bogus"], ["widget", "widget"], "widget"])
async def test_bad_claim_methods(post, methods):
    body = await expect(
        await post(claim_methods=methods), HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED"
    )
    details = body["error"]["details"]
    assert any(key.startswith("claim_methods") for key in details), body


async def test_code_method_needs_codes(post):
    await field_error(await post(claim_methods=["code"]), "claim_methods")


@pytest.mark.parametrize(
    "scope, field",
    [
        ({"type": "products", "product_ids": []}, "scope.product_ids"),
        ({"type": "products"}, "scope.product_ids"),
        ({"type": "categories", "categories": []}, "scope.categories"),
        ({"type": "brand"}, "scope.type"),
    ],
)
async def test_bad_scope(post, scope, field):
    await field_error(await post(scope=scope), field)


@pytest.mark.parametrize(
    "overrides, field",
    [
        pytest.param({"per_user_limit": 0}, "per_user_limit", id="per-user-0"),
        pytest.param({"per_user_limit": "1"}, "per_user_limit", id="per-user-string"),
        pytest.param({"daily_limit": 0}, "daily_limit", id="daily-0"),
        pytest.param(
            {"audience": {"type": "members", "min_level": -1}},
            "audience.min_level",
            id="min-level-neg",
        ),
        pytest.param({"audience": {"type": "vip"}}, "audience.type", id="audience-type"),
        pytest.param({"risk_check": "yes"}, "risk_check", id="risk-check-string"),
        pytest.param(
            {"stacking": {"with_other_coupons": 1}},
            "stacking.with_other_coupons",
            id="stacking-int",
        ),
        pytest.param({"status": "ended"}, "status", id="created-ended"),
    ],
)
async def test_bad_limits_audience_and_flags(post, overrides, field):
    await field_error(await post(**overrides), field)


async def test_unknown_field_named(post):
    await field_error(await post(colour="red"), "colour")


async def test_body_not_json(client, merchant):
    headers = {**merchant, "Content-Type": "application/json"}
    response = await client.post(TEMPLATES, data="{bad", headers=headers)
    await expect(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")


async def test_body_json_array(client, clock, merchant):
    response = await client.post(TEMPLATES, json=[template_body(clock)], headers=merchant)
    await expect(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")


async def test_rejected_create_writes_nothing(client, post, merchant):
    await field_error(await post(name=""), "name")
    await expect(
        await post(claim_page="pages/a/b", redeem_page="pages/a/b"), HTTPStatus.BAD_REQUEST
    )
    assert await list_ids(client, merchant) == []


# --- read and access ------------------------------------------------------------------------
async def test_get_by_id(client, make_template, merchant):
    created = await make_template(name="满100减10")
    body = await expect(
        await client.get(template_url(created["id"]), headers=merchant), HTTPStatus.OK
    )
    assert body == created


async def test_get_nonexistent(client, merchant):
    await expect(
        await client.get(template_url(999999), headers=merchant), HTTPStatus.NOT_FOUND, "NOT_FOUND"
    )


async def test_other_shops_template_not_revealed(client, make_template, merchant):
    other = await make_template(shop="s2")
    response = await client.get(template_url(other["id"]), headers=merchant)
    await expect(response, HTTPStatus.NOT_FOUND, "NOT_FOUND")


async def test_merchant_cannot_call_another_shops_path(client, make_template, merchant, clock):
    other = await make_template(shop="s2")
    await expect(
        await client.get(template_url(other["id"], shop="s2"), headers=merchant),
        HTTPStatus.FORBIDDEN,
        "FORBIDDEN",
    )
    await expect(
        await client.get("/api/v1/shops/s2/admin/coupon-templates", headers=merchant),
        HTTPStatus.FORBIDDEN,
        "FORBIDDEN",
    )
    await expect(
        await client.post(
            "/api/v1/shops/s2/admin/coupon-templates", json=template_body(clock), headers=merchant
        ),
        HTTPStatus.FORBIDDEN,
        "FORBIDDEN",
    )


@pytest.mark.parametrize("role", ["user", "service"])
async def test_user_and_service_tokens_forbidden(client, auth, clock, make_template, role):
    created = await make_template()
    headers = auth(role, shop="s1" if role == "service" else None)
    calls = [
        client.post(TEMPLATES, json=template_body(clock), headers=headers),
        client.get(TEMPLATES, headers=headers),
        client.get(template_url(created["id"]), headers=headers),
        client.patch(template_url(created["id"]), json={"name": "x"}, headers=headers),
    ]
    for call in calls:
        await expect(await call, HTTPStatus.FORBIDDEN, "FORBIDDEN")


async def test_no_token_unauthenticated(client, clock):
    await expect(await client.get(TEMPLATES), HTTPStatus.UNAUTHORIZED, "UNAUTHENTICATED")
    response = await client.post(TEMPLATES, json=template_body(clock))
    await expect(response, HTTPStatus.UNAUTHORIZED, "UNAUTHENTICATED")


# --- list -----------------------------------------------------------------------------------
async def test_list_newest_first(client, make_template, merchant):
    ids = [(await make_template(name=f"t{i}"))["id"] for i in range(3)]
    body = await expect(await client.get(TEMPLATES, headers=merchant), HTTPStatus.OK)
    assert [item["id"] for item in body["items"]] == ids[::-1]
    assert body["next_cursor"] is None


async def test_list_cursor_paging_visits_each_once(client, make_template, merchant):
    ids = [(await make_template(name=f"t{i}"))["id"] for i in range(5)]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": "2"} if cursor is None else {"limit": "2", "cursor": cursor}
        body = await expect(
            await client.get(TEMPLATES, params=params, headers=merchant), HTTPStatus.OK
        )
        pages += 1
        assert len(body["items"]) <= 2
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert pages < 10, "paging does not end"
    assert seen == ids[::-1]
    assert pages == 3


@pytest.mark.parametrize(
    "params, field",
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"status": "bogus"}, "status"),
        ({"cursor": "garbage!!"}, "cursor"),
        ({"cursor": "W10"}, "cursor"),  # base64 of "[]"
        ({"cursor": "eyJiZWZvcmUiOiJ4In0"}, "cursor"),  # base64 of {"before":"x"}
        ({"cursor": "c" * 201}, "cursor"),
    ],
)
async def test_list_bad_query(client, merchant, make_template, params, field):
    await make_template()
    await field_error(await client.get(TEMPLATES, params=params, headers=merchant), field)


async def test_list_limit_bounds_accepted(client, merchant, make_template):
    await make_template()
    for limit in ("1", "100"):
        body = await expect(
            await client.get(TEMPLATES, params={"limit": limit}, headers=merchant), HTTPStatus.OK
        )
        assert len(body["items"]) == 1


async def test_list_status_filter(client, make_template, merchant):
    active = await make_template(name="active")
    paused = await make_template(name="paused")
    ended = await make_template(name="ended")
    for template, status in ((paused, "paused"), (ended, "ended")):
        response = await client.patch(
            template_url(template["id"]), json={"status": status}, headers=merchant
        )
        await expect(response, HTTPStatus.OK)
    assert await list_ids(client, merchant, "?status=active") == [active["id"]]
    assert await list_ids(client, merchant, "?status=paused") == [paused["id"]]
    assert await list_ids(client, merchant, "?status=ended") == [ended["id"]]


async def test_list_excludes_other_shops(client, make_template, merchant, auth):
    own = await make_template()
    other = await make_template(shop="s2")
    assert await list_ids(client, merchant) == [own["id"]]
    s2 = auth("merchant", shop="s2", sub="m2")
    body = await expect(
        await client.get("/api/v1/shops/s2/admin/coupon-templates", headers=s2), HTTPStatus.OK
    )
    assert [item["id"] for item in body["items"]] == [other["id"]]


# --- patch ----------------------------------------------------------------------------------
async def patch(client, headers, template_id, changes):
    return await client.patch(template_url(template_id), json=changes, headers=headers)


async def test_patch_name_and_description(client, make_template, merchant):
    created = await make_template()
    body = await expect(
        await patch(client, merchant, created["id"], {"name": "新名字", "description": "仅限新品"}),
        HTTPStatus.OK,
    )
    assert body["name"] == "新名字"
    assert body["description"] == "仅限新品"
    stored = await expect(
        await client.get(template_url(created["id"]), headers=merchant), HTTPStatus.OK
    )
    assert (stored["name"], stored["description"]) == ("新名字", "仅限新品")
    assert stored["benefit"] == created["benefit"]


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"name": ""}, "name"),
        ({"name": "n" * 41}, "name"),
        ({"description": "d" * 121}, "description"),
    ],
)
async def test_patch_bad_wording(client, make_template, merchant, changes, field):
    created = await make_template()
    await field_error(await patch(client, merchant, created["id"], changes), field)


async def test_patch_pause_and_resume(client, make_template, merchant):
    created = await make_template()
    for status in ("paused", "active"):
        body = await expect(
            await patch(client, merchant, created["id"], {"status": status}), HTTPStatus.OK
        )
        assert body["status"] == status


async def test_patch_ended_cannot_reopen(client, make_template, merchant):
    created = await make_template()
    await expect(await patch(client, merchant, created["id"], {"status": "ended"}), HTTPStatus.OK)
    await field_error(await patch(client, merchant, created["id"], {"status": "active"}), "status")
    stored = await expect(
        await client.get(template_url(created["id"]), headers=merchant), HTTPStatus.OK
    )
    assert stored["status"] == "ended"


async def test_patch_claim_end_before_claim_start(client, make_template, merchant, clock):
    created = await make_template()
    response = await patch(client, merchant, created["id"], {"claim_end": days(clock, -2)})
    await field_error(response, "claim_end")


async def test_patch_claim_end_later(client, make_template, merchant, clock):
    created = await make_template()
    body = await expect(
        await patch(client, merchant, created["id"], {"claim_end": days(clock, 30)}), HTTPStatus.OK
    )
    assert datetime.fromisoformat(body["claim_end"]) == clock.now() + timedelta(days=30)


async def test_patch_stock_increase(client, make_template, merchant):
    created = await make_template()
    changes = {"stock": {"type": "limited", "total": 1500}}
    body = await expect(await patch(client, merchant, created["id"], changes), HTTPStatus.OK)
    assert body["stock"] == {"type": "limited", "total": 1500}
    assert body["remaining"] == 1500
    stored = await expect(
        await client.get(template_url(created["id"]), headers=merchant), HTTPStatus.OK
    )
    assert stored["remaining"] == 1500


async def test_patch_stock_decrease_rejected(client, make_template, merchant):
    created = await make_template()
    changes = {"stock": {"type": "limited", "total": 999}}
    await field_error(await patch(client, merchant, created["id"], changes), "stock.total")
    stored = await expect(
        await client.get(template_url(created["id"]), headers=merchant), HTTPStatus.OK
    )
    assert stored["remaining"] == 1000


async def test_patch_stock_on_unlimited_rejected(client, make_template, merchant):
    created = await make_template(stock={"type": "unlimited"})
    changes = {"stock": {"type": "limited", "total": 1500}}
    await field_error(await patch(client, merchant, created["id"], changes), "stock")


async def test_patch_empty_body(client, make_template, merchant):
    created = await make_template()
    await expect(
        await patch(client, merchant, created["id"], {}),
        HTTPStatus.BAD_REQUEST,
        "VALIDATION_FAILED",
    )


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"benefit": {"type": "no_threshold", "amount_off": 100}}, "benefit"),
        ({"claim_start": "2026-11-01T00:00:00+08:00"}, "claim_start"),
        ({"codes": {"type": "random"}}, "codes"),
        ({"claim_methods": ["auto"]}, "claim_methods"),
        ({"stacking": {"with_other_coupons": True}}, "stacking"),
        ({"audience": {"type": "members"}}, "audience"),
        ({"risk_check": True}, "risk_check"),
        ({"daily_limit": 5}, "daily_limit"),
    ],
)
async def test_patch_unchangeable_field(client, make_template, merchant, changes, field):
    created = await make_template()
    await field_error(await patch(client, merchant, created["id"], changes), field)


async def test_patch_other_shops_template(client, make_template, merchant, auth):
    other = await make_template(shop="s2")
    await expect(
        await patch(client, merchant, other["id"], {"name": "hijacked"}),
        HTTPStatus.NOT_FOUND,
        "NOT_FOUND",
    )
    s2 = auth("merchant", shop="s2", sub="m2")
    stored = await expect(
        await client.get(template_url(other["id"], shop="s2"), headers=s2), HTTPStatus.OK
    )
    assert stored["name"] == other["name"]


async def test_patch_nonexistent(client, merchant):
    await expect(
        await patch(client, merchant, 999999, {"name": "x"}), HTTPStatus.NOT_FOUND, "NOT_FOUND"
    )
