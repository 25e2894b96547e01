"""Issue 15, section 5: merchant and shopper gaps, through HTTP on both backends.

* PATCH of a template changes its display and landing fields (claim_page, redeem_page,
  cover_image, product_code, description) at any time; the cross-field rules hold on the
  merged template; held coupons, the claim widget and new claims show the new values.
* The identical-pages check uses the configured default claim page.
* A token whose ``sub`` (or ``shop``) is outside the id pattern is 401, and POST /session
  never mints one.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

import jwt
import pytest

from bff.auth import Role, TokenCodec
from bff.clock import ManualClock
from tests.conftest import TEST_SECRET, base_settings, expect, mariadb_settings, template_body
from tests.helpers import (
    claim_ok,
    create_template,
    field_error,
    get_template,
    shop_url,
    template_url,
    two_instances,
    wallet,
)

TEMPLATES = shop_url("/admin/coupon-templates")
COVER = "https://img.example.com/cup.png"


async def patch(client: Any, merchant: dict[str, str], template_id: int, changes: dict) -> Any:
    return await client.patch(template_url(template_id), json=changes, headers=merchant)


async def patch_ok(
    client: Any, merchant: dict[str, str], template_id: int, changes: dict
) -> dict[str, Any]:
    return await expect(await patch(client, merchant, template_id, changes), HTTPStatus.OK)


async def widget_entry(client: Any, headers: dict[str, str], template_id: int) -> dict[str, Any]:
    body = await expect(await client.get(shop_url("/claim-widget"), headers=headers), HTTPStatus.OK)
    (entry,) = [c for c in body["coupons"] if c["template_id"] == template_id]
    return entry


# --- PATCH: display and landing fields ------------------------------------------------------
async def test_patch_changes_every_display_and_landing_field(client, make_template, merchant):
    created = await make_template()
    changes = {
        "claim_page": "pages/promo/index?from=widget",
        "redeem_page": "pages/cart/cart",
        "cover_image": COVER,
        "product_code": "SKU-001",
        "description": "限新品",
    }
    body = await patch_ok(client, merchant, created["id"], changes)
    for field, value in changes.items():
        assert body[field] == value, field
    stored = await get_template(client, merchant, created["id"])
    for field, value in changes.items():
        assert stored[field] == value, field
    # What the PATCH leaves alone stays as it was.
    for field in ("name", "benefit", "scope", "validity", "stock", "claim_methods", "status"):
        assert stored[field] == created[field], field


@pytest.mark.parametrize(
    "changes",
    [
        {"redeem_page": "pages/index/index"},  # the stored claim_page
        {"redeem_page": "/pages/index/index?from=coupon"},  # the same page, another spelling
        {"claim_page": "pages/coupon/use"},  # the stored redeem_page
        {"claim_page": "pages/x/y", "redeem_page": "/pages/x/y?a=1"},
    ],
)
async def test_patch_that_makes_the_pages_identical_is_refused(
    client, make_template, merchant, changes
):
    created = await make_template()  # claim pages/index/index, redeem pages/coupon/use
    body = await expect(
        await patch(client, merchant, created["id"], {**changes, "name": "改名"}),
        HTTPStatus.BAD_REQUEST,
        "LANDING_PAGES_IDENTICAL",
    )
    assert set(body["error"]["details"]) == {"claim_page", "redeem_page"}
    stored = await get_template(client, merchant, created["id"])
    assert (stored["name"], stored["claim_page"], stored["redeem_page"]) == (
        created["name"],
        "pages/index/index",
        "pages/coupon/use",
    )


async def test_patch_may_swap_the_pages(client, make_template, merchant):
    """The check is on the merged result, not on each field against the stored other."""
    created = await make_template()
    swapped = {"claim_page": "pages/coupon/use", "redeem_page": "pages/index/index"}
    body = await patch_ok(client, merchant, created["id"], swapped)
    assert (body["claim_page"], body["redeem_page"]) == ("pages/coupon/use", "pages/index/index")


async def test_patch_claim_page_null_is_the_configured_default(client_with, clock, merchant):
    client = await client_with(shop={"default_claim_page": "pages/home/home"})
    created = await create_template(client, clock, merchant, claim_page="pages/promo/a")
    body = await patch_ok(client, merchant, created["id"], {"claim_page": None})
    assert body["claim_page"] == "pages/home/home"
    # Back to the default is refused too when the default is the redeem page.
    other = await create_template(
        client, clock, merchant, claim_page="pages/promo/a", redeem_page="pages/home/home"
    )
    await expect(
        await patch(client, merchant, other["id"], {"claim_page": None}),
        HTTPStatus.BAD_REQUEST,
        "LANDING_PAGES_IDENTICAL",
    )


async def test_patch_product_code_needs_a_cover_on_the_merged_template(
    client, make_template, merchant
):
    created = await make_template()
    assert created["cover_image"] is None
    await field_error(
        await patch(client, merchant, created["id"], {"product_code": "SKU-1"}), "cover_image"
    )
    assert (await get_template(client, merchant, created["id"]))["product_code"] is None
    # Given together, or with the cover already stored, it is accepted.
    body = await patch_ok(
        client, merchant, created["id"], {"product_code": "SKU-1", "cover_image": COVER}
    )
    assert (body["product_code"], body["cover_image"]) == ("SKU-1", COVER)
    body = await patch_ok(client, merchant, created["id"], {"product_code": "SKU-2"})
    assert (body["product_code"], body["cover_image"]) == ("SKU-2", COVER)
    # The cover cannot be cleared while the product code stays.
    await field_error(
        await patch(client, merchant, created["id"], {"cover_image": None}), "cover_image"
    )
    # null clears: the product code alone, then the cover; or both at once.
    body = await patch_ok(client, merchant, created["id"], {"product_code": None})
    assert (body["product_code"], body["cover_image"]) == (None, COVER)
    body = await patch_ok(client, merchant, created["id"], {"cover_image": None})
    assert (body["product_code"], body["cover_image"]) == (None, None)
    await patch_ok(client, merchant, created["id"], {"product_code": "SKU-3", "cover_image": COVER})
    body = await patch_ok(
        client, merchant, created["id"], {"product_code": None, "cover_image": None}
    )
    assert (body["product_code"], body["cover_image"]) == (None, None)


async def test_patch_may_change_the_cover_alone(client, make_template, merchant):
    created = await make_template(product_code="SKU-1", cover_image=COVER)
    other = "https://img.example.com/cup-2.jpeg"
    body = await patch_ok(client, merchant, created["id"], {"cover_image": other})
    assert (body["product_code"], body["cover_image"]) == ("SKU-1", other)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"cover_image": "https://img.example.com/a.gif"}, "cover_image"),
        ({"cover_image": "ftp://img.example.com/a.png"}, "cover_image"),
        ({"cover_image": ""}, "cover_image"),
        ({"product_code": "bad code"}, "product_code"),
        ({"product_code": ""}, "product_code"),
        ({"claim_page": "http://x.com"}, "claim_page"),
        ({"claim_page": "pages/../x"}, "claim_page"),
        ({"redeem_page": None}, "redeem_page"),
        ({"redeem_page": "pages/a b"}, "redeem_page"),
        ({"redeem_page": 5}, "redeem_page"),
        ({"description": None}, "description"),
    ],
)
async def test_patch_bad_display_fields(client, make_template, merchant, changes, field):
    created = await make_template()
    await field_error(await patch(client, merchant, created["id"], changes), field)
    stored = await get_template(client, merchant, created["id"])
    assert {k: stored[k] for k in changes} == {k: created[k] for k in changes}


async def test_display_fields_change_after_claims_and_reach_every_view(
    client, make_template, merchant, auth
):
    created = await make_template(per_user_limit=2)
    shopper = auth("user", sub="u1")
    held = await claim_ok(client, shopper, created["id"])
    assert held["redeem_page"] == "pages/coupon/use"
    before = await widget_entry(client, shopper, created["id"])  # fills any cache on the way
    assert before["claim_page"] == "pages/index/index"

    changes = {
        "claim_page": "pages/promo/index",
        "redeem_page": "pages/cart/cart?from=coupon",
        "description": "新文案",
        "cover_image": COVER,
        "product_code": "SKU-9",
    }
    body = await patch_ok(client, merchant, created["id"], changes)
    assert body["issued"] == 1

    # The coupon already held jumps to the new page.
    (coupon,) = await wallet(client, shopper)
    assert coupon["coupon_id"] == held["coupon_id"]
    assert coupon["redeem_page"] == "pages/cart/cart?from=coupon"
    # The widget shows the new wording and landing page, signed in or not.
    for headers in (shopper, {}):
        entry = await widget_entry(client, headers, created["id"])
        assert (entry["claim_page"], entry["description"]) == ("pages/promo/index", "新文案")
    # A new claim (its template was cached by the first) shows the new page too.
    second = await claim_ok(client, shopper, created["id"])
    assert second["redeem_page"] == "pages/cart/cart?from=coupon"


async def test_fields_fixed_at_creation_stay_fixed_after_claims(
    client, make_template, merchant, auth
):
    created = await make_template()
    await claim_ok(client, auth("user", sub="u1"), created["id"])
    for changes, field in (
        ({"benefit": {"type": "no_threshold", "amount_off": 100}}, "benefit"),
        ({"scope": {"type": "products", "product_ids": ["p1"]}}, "scope"),
        (
            {"validity": {"type": "relative", "effective_after_days": 0, "valid_days": 1}},
            "validity",
        ),
        ({"per_user_limit": 5}, "per_user_limit"),
    ):
        await field_error(await patch(client, merchant, created["id"], changes), field)


async def test_a_patch_in_one_process_reaches_claims_in_another(aiohttp_client, tmp_path):
    """The claim path keeps templates per process; the admin write's message clears them."""
    settings = await mariadb_settings(base_settings())
    clock = ManualClock()
    reader, writer = await two_instances(aiohttp_client, settings, clock, tmp_path)
    codec = TokenCodec(settings.jwt, clock)
    merchant = {"Authorization": "Bearer " + codec.mint("m1", Role.MERCHANT, "s1")[0]}
    shopper = {"Authorization": "Bearer " + codec.mint("u1")[0]}
    created = await create_template(writer, clock, merchant)
    await asyncio.sleep(0.2)  # let both subscriptions settle
    first = await claim_ok(reader, shopper, created["id"])  # the reader now keeps the template
    assert first["redeem_page"] == "pages/coupon/use"
    await patch_ok(writer, merchant, created["id"], {"redeem_page": "pages/cart/cart"})
    # The clock stands still, so only the invalidation message can clear the reader.
    for n in range(50):
        user = {"Authorization": "Bearer " + codec.mint(f"n{n}")[0]}
        coupon = await claim_ok(reader, user, created["id"])
        if coupon["redeem_page"] == "pages/cart/cart":
            break
        await asyncio.sleep(0.02)
    assert coupon["redeem_page"] == "pages/cart/cart"
    assert {c["redeem_page"] for c in await wallet(reader, shopper)} == {"pages/cart/cart"}


# --- create: the configured default claim page ---------------------------------------------
async def test_create_checks_pages_against_the_configured_default(client_with, clock, merchant):
    client = await client_with(shop={"default_claim_page": "pages/home/home"})
    body = template_body(clock, redeem_page="pages/home/home?from=coupon")
    body.pop("claim_page")
    await expect(
        await client.post(TEMPLATES, json=body, headers=merchant),
        HTTPStatus.BAD_REQUEST,
        "LANDING_PAGES_IDENTICAL",
    )
    for claim_page in ("omitted", None):
        body = template_body(clock, redeem_page="pages/index/index")  # the old hard-coded default
        if claim_page == "omitted":
            body.pop("claim_page")
        else:
            body["claim_page"] = None
        created = await expect(
            await client.post(TEMPLATES, json=body, headers=merchant), HTTPStatus.CREATED
        )
        assert (created["claim_page"], created["redeem_page"]) == (
            "pages/home/home",
            "pages/index/index",
        )


async def test_identical_pages_refused_before_anything_is_written(client, clock, merchant):
    body = template_body(clock, claim_page=None, redeem_page="pages/index/index")
    await expect(
        await client.post(TEMPLATES, json=body, headers=merchant),
        HTTPStatus.BAD_REQUEST,
        "LANDING_PAGES_IDENTICAL",
    )
    listed = await expect(await client.get(TEMPLATES, headers=merchant), HTTPStatus.OK)
    assert listed["items"] == []


# --- tokens: sub and shop are ids ----------------------------------------------------------
def _token(clock: ManualClock, **claims: Any) -> dict[str, str]:
    now = int(clock.now().timestamp())
    payload = {"role": "user", "iss": "coupon-bff", "iat": now, "exp": now + 600, **claims}
    payload = {k: v for k, v in payload.items() if v is not None}
    return {"Authorization": "Bearer " + jwt.encode(payload, TEST_SECRET, algorithm="HS256")}


BAD_IDS = ["a b", "u1\n", "用户1", "u1/../u2", "u.1", "u@1", "x" * 65, "", 42, ["u1"]]


@pytest.mark.parametrize("sub", BAD_IDS, ids=repr)
async def test_user_token_with_a_sub_outside_the_id_pattern_is_401(
    client, make_template, clock, sub
):
    template = await make_template()
    headers = _token(clock, sub=sub)
    for _ in range(2):  # the second time the token is looked up in the per-process cache
        response = await client.post(
            shop_url("/coupons/claim"),
            json={"template_id": template["id"], "request_id": "r1"},
            headers=headers,
        )
        await expect(response, HTTPStatus.UNAUTHORIZED, "UNAUTHENTICATED")
        await expect(
            await client.get(shop_url("/me/coupons"), headers=headers),
            HTTPStatus.UNAUTHORIZED,
            "UNAUTHENTICATED",
        )
        # Even where anonymous callers are welcome, a bad token is not anonymous.
        await expect(
            await client.get(shop_url("/claim-widget"), headers=headers),
            HTTPStatus.UNAUTHORIZED,
            "UNAUTHENTICATED",
        )
    stored = await get_template(client, _merchant(clock), template["id"])
    assert stored["issued"] == 0


@pytest.mark.parametrize("role", ["merchant", "service"])
@pytest.mark.parametrize("field, value", [("sub", "m 1"), ("shop", "s 1"), ("shop", "s1\n")])
async def test_merchant_and_service_tokens_need_id_sub_and_shop(client, clock, role, field, value):
    headers = _token(clock, **{"role": role, "sub": "m1", "shop": "s1", field: value})
    path = TEMPLATES if role == "merchant" else shop_url("/redemptions/o1/confirm")
    method = client.get if role == "merchant" else client.post
    await expect(await method(path, headers=headers), HTTPStatus.UNAUTHORIZED, "UNAUTHENTICATED")


async def test_an_id_sub_at_the_pattern_edges_is_accepted(client, make_template, clock):
    template = await make_template(per_user_limit=1)
    for sub in ("A-z_0-9", "u" * 64):
        coupon = await claim_ok(client, _token(clock, sub=sub), template["id"])
        assert coupon["template_id"] == template["id"]
        # ... and the merchant can address that user by path.
        response = await client.put(
            shop_url(f"/admin/members/{sub}"), json={"level": 1}, headers=_merchant(clock)
        )
        assert (await expect(response, HTTPStatus.OK))["user_id"] == sub


def _merchant(clock: ManualClock) -> dict[str, str]:
    return _token(clock, role="merchant", sub="m1", shop="s1")


class OddProvider:
    """A plugged-in identity provider that answers ids the API cannot use."""

    enabled = True

    def __init__(self, settings: Any) -> None:
        pass

    async def resolve(self, auth_code: str) -> str | None:
        return auth_code  # whatever the platform said


@pytest.mark.parametrize("user_id", ["user 1", "u1\n", "用户", "x" * 65])
async def test_session_never_mints_a_sub_outside_the_id_pattern(
    aiohttp_client, make_app, settings, user_id
):
    from config.loader import IdentitySettings

    provider = f"{__name__}:OddProvider"
    app = make_app(settings=settings.replace(identity=IdentitySettings(provider=provider)))
    client = await aiohttp_client(app)
    response = await client.post("/api/v1/session", json={"auth_code": user_id})
    body = await expect(response, HTTPStatus.UNAUTHORIZED, "UNAUTHENTICATED")
    assert "token" not in body
    # An id within the pattern goes through the same provider.
    ok = await expect(
        await client.post("/api/v1/session", json={"auth_code": "u-1"}), HTTPStatus.OK
    )
    assert ok["user_id"] == "u-1"


@pytest.mark.parametrize("code", ["dev:u1\n", "dev:u 1", "dev:用户"])
async def test_dev_session_refuses_codes_outside_the_id_pattern(client, code):
    response = await client.post("/api/v1/session", json={"auth_code": code})
    await expect(response, HTTPStatus.UNAUTHORIZED, "UNAUTHENTICATED")


def test_mint_refuses_ids_outside_the_pattern():
    codec = TokenCodec(base_settings().jwt, ManualClock())
    for sub, shop in (("u 1", None), ("u1\n", None), ("m1", "s 1"), ("", None)):
        with pytest.raises(ValueError):
            codec.mint(sub, Role.MERCHANT if shop else Role.USER, shop)
