"""Coupon codes, claim-by-code, the wallet (GET /me/coupons), grants and revocation over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import expect, template_body
from tests.helpers import (
    claim,
    claim_ok,
    get_template,
    new_request_id,
    shop_url,
    template_url,
    wallet,
)


# --- helpers ---------------------------------------------------------------------------------
async def claim_by_code(
    client: TestClient,
    headers: dict[str, str],
    code: str,
    request_id: str | None = None,
    *,
    shop: str = "s1",
) -> Any:
    body = {"code": code, "request_id": request_id or new_request_id()}
    return await client.post(shop_url("/coupons/claim-by-code", shop), json=body, headers=headers)


async def wallet_page(
    client: TestClient, headers: dict[str, str], shop: str = "s1", **params: str
) -> dict[str, Any]:
    response = await client.get(shop_url("/me/coupons", shop), params=params, headers=headers)
    return await expect(response, HTTPStatus.OK)


def ids_of(items: list[dict[str, Any]]) -> list[Any]:
    return [item["coupon_id"] for item in items]


def code_file(text: str | bytes, name: str = "codes.txt") -> aiohttp.FormData:
    form = aiohttp.FormData()
    content = text.encode() if isinstance(text, str) else text
    form.add_field("file", content, filename=name, content_type="text/plain")
    return form


async def import_codes(
    client: TestClient,
    merchant: dict[str, str],
    template_id: int,
    text: str | bytes,
    shop: str = "s1",
) -> Any:
    return await client.post(
        template_url(template_id, "/codes/import", shop), data=code_file(text), headers=merchant
    )


async def import_ok(
    client: TestClient,
    merchant: dict[str, str],
    template_id: int,
    text: str | bytes,
    shop: str = "s1",
) -> dict[str, Any]:
    response = await import_codes(client, merchant, template_id, text, shop)
    return await expect(response, HTTPStatus.CREATED)


async def grant(
    client: TestClient,
    merchant: dict[str, str],
    template_id: int,
    user_ids: list[str],
    request_id: str | None = None,
) -> Any:
    body = {"user_ids": user_ids, "request_id": request_id or new_request_id()}
    return await client.post(template_url(template_id, "/grants"), json=body, headers=merchant)


def failures(body: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((item["user_id"], item["code"]) for item in body["failed"])


async def revoke(
    client: TestClient, merchant: dict[str, str], coupon_id: Any, shop: str = "s1"
) -> Any:
    return await client.post(shop_url(f"/admin/coupons/{coupon_id}/revoke", shop), headers=merchant)


@pytest.fixture
def create(client, clock, auth):
    """``await create(drop=["stock"], codes=...)``: a template; ``drop`` leaves keys out."""

    async def build(*, shop: str = "s1", drop: tuple[str, ...] = (), **overrides: Any) -> Any:
        body = template_body(clock, **overrides)
        for key in drop:
            body.pop(key)
        headers = auth("merchant", shop=shop, sub="m1" if shop == "s1" else "m-" + shop)
        response = await client.post(
            shop_url("/admin/coupon-templates", shop), json=body, headers=headers
        )
        return await expect(response, HTTPStatus.CREATED)

    return build


@pytest.fixture
def code_template(create: Callable[..., Any]) -> Callable[..., Any]:
    """A template with imported codes that users claim by code."""

    async def build(**overrides: Any) -> Any:
        values = {"codes": {"type": "imported"}, "claim_methods": ["code"], **overrides}
        return await create(drop=("stock",), **values)

    return build


@pytest.fixture
def user(auth: Callable[..., dict[str, str]]) -> dict[str, str]:
    return auth("user", sub="u7")


# --- random and pregenerated codes -----------------------------------------------------------
async def test_random_codes_are_distinct_and_long(client, create, auth):
    template = await create(codes={"type": "random"})
    coupons = [await claim_ok(client, auth("user", sub=f"u{i}"), template["id"]) for i in range(8)]
    codes = [coupon["code"] for coupon in coupons]
    assert all(isinstance(code, str) and len(code) >= 12 for code in codes), codes
    assert len(set(codes)) == len(codes)
    (held,) = await wallet(client, auth("user", sub="u0"))
    assert held["code"] == codes[0]


async def test_random_codes_with_unlimited_stock(client, create, user):
    template = await create(codes={"type": "random"}, stock={"type": "unlimited"}, per_user_limit=3)
    codes = [(await claim_ok(client, user, template["id"]))["code"] for _ in range(3)]
    assert len(set(codes)) == 3 and all(len(code) >= 12 for code in codes), codes


async def test_pregenerated_codes_are_handed_out_then_sold_out(client, create, merchant, auth):
    template = await create(drop=("stock",), codes={"type": "pregenerated", "count": 3})
    codes = [
        (await claim_ok(client, auth("user", sub=f"u{i}"), template["id"]))["code"]
        for i in range(3)
    ]
    assert all(isinstance(code, str) and code for code in codes), codes
    assert len(set(codes)) == 3
    await expect(
        await claim(client, auth("user", sub="u3"), template["id"]),
        HTTPStatus.CONFLICT,
        "SOLD_OUT",
    )
    stored = await get_template(client, merchant, template["id"])
    assert (stored["issued"], stored["remaining"]) == (3, 0)


async def test_generate_more_codes(client, create, merchant, auth):
    template = await create(drop=("stock",), codes={"type": "pregenerated", "count": 3})
    await claim_ok(client, auth("user", sub="u1"), template["id"])
    before = (await get_template(client, merchant, template["id"]))["remaining"]
    assert before == 2
    response = await client.post(
        template_url(template["id"], "/codes"), json={"count": 5}, headers=merchant
    )
    body = await expect(response, HTTPStatus.CREATED)
    assert body["generated"] == 5
    assert body["available"] == 7
    assert (await get_template(client, merchant, template["id"]))["remaining"] == before + 5
    codes = {
        (await claim_ok(client, auth("user", sub=f"v{i}"), template["id"]))["code"]
        for i in range(7)
    }
    assert len(codes) == 7
    await expect(
        await claim(client, auth("user", sub="v7"), template["id"]), HTTPStatus.CONFLICT, "SOLD_OUT"
    )


@pytest.mark.parametrize(
    "codes, drop",
    [
        pytest.param({"type": "none"}, (), id="none"),
        pytest.param({"type": "random"}, (), id="random"),
        pytest.param({"type": "imported"}, ("stock",), id="imported"),
    ],
)
async def test_generate_codes_only_for_pregenerated(client, create, merchant, codes, drop):
    template = await create(drop=drop, codes=codes)
    response = await client.post(
        template_url(template["id"], "/codes"), json={"count": 5}, headers=merchant
    )
    await expect(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")
    stored = await get_template(client, merchant, template["id"])
    assert stored["remaining"] == template["remaining"]


@pytest.mark.parametrize("count", [0, -1, "5", None])
async def test_generate_codes_bad_count(client, create, merchant, count):
    template = await create(drop=("stock",), codes={"type": "pregenerated", "count": 3})
    response = await client.post(
        template_url(template["id"], "/codes"), json={"count": count}, headers=merchant
    )
    body = await expect(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")
    assert "count" in body["error"]["details"], body
    assert (await get_template(client, merchant, template["id"]))["remaining"] == 3


async def test_generate_codes_other_shop_and_user(client, create, merchant, user):
    other = await create(shop="s2", drop=("stock",), codes={"type": "pregenerated", "count": 3})
    response = await client.post(
        template_url(other["id"], "/codes"), json={"count": 5}, headers=merchant
    )
    await expect(response, HTTPStatus.NOT_FOUND, "NOT_FOUND")
    own = await create(drop=("stock",), codes={"type": "pregenerated", "count": 3})
    response = await client.post(template_url(own["id"], "/codes"), json={"count": 5}, headers=user)
    await expect(response, HTTPStatus.FORBIDDEN, "FORBIDDEN")


# --- imported codes --------------------------------------------------------------------------
async def test_import_codes(client, code_template, merchant):
    template = await code_template()
    body = await import_ok(client, merchant, template["id"], "CODE-A\nCODE-B\nCODE-C\n")
    assert (body["imported"], body["duplicates"], body["invalid"], body["available"]) == (
        3,
        0,
        0,
        3,
    )
    assert (await get_template(client, merchant, template["id"]))["remaining"] == 3


async def test_import_duplicates_within_and_across_files(client, code_template, merchant):
    template = await code_template()
    first = await import_ok(client, merchant, template["id"], "AAA\nBBB\nAAA\n")
    assert (first["imported"], first["duplicates"], first["invalid"], first["available"]) == (
        2,
        1,
        0,
        2,
    )
    second = await import_ok(client, merchant, template["id"], "BBB\nCCC\nCCC\nAAA")
    assert (second["imported"], second["duplicates"], second["invalid"], second["available"]) == (
        1,
        3,
        0,
        3,
    )
    assert (await get_template(client, merchant, template["id"]))["remaining"] == 3


async def test_import_counts_invalid_lines(client, code_template, merchant, user):
    template = await code_template()
    lines = [
        "GOOD-1",  # valid
        "",  # empty
        "bad code",  # inner space
        "x" * 65,  # too long
        "y" * 64,  # longest valid
        "under_score",  # '_' is outside [A-Za-z0-9-]
        "  SPACED-1  ",  # stripped: valid
        "   ",  # only whitespace: empty
        "中文码",  # not ASCII
        "CRLF-2\r",  # CRLF line ending: valid
        "last",  # valid; the final newline below is not an empty line
    ]
    body = await import_ok(client, merchant, template["id"], "\n".join(lines) + "\n")
    assert (body["imported"], body["duplicates"], body["invalid"], body["available"]) == (
        5,
        0,
        6,
        5,
    )
    coupon = (await expect(await claim_by_code(client, user, "SPACED-1"), HTTPStatus.CREATED))[
        "coupon"
    ]
    assert coupon["code"] == "SPACED-1"


async def test_import_crlf_file(client, code_template, merchant):
    template = await code_template()
    body = await import_ok(client, merchant, template["id"], "A-1\r\nA-2\r\nA-3\r\n")
    assert (body["imported"], body["duplicates"], body["invalid"], body["available"]) == (
        3,
        0,
        0,
        3,
    )


async def test_import_too_large(client, code_template, merchant):
    template = await code_template()
    text = "".join(f"CODE-{i:010d}\n" for i in range(6500))  # about 104 KiB
    assert len(text) > 100 * 1024
    response = await import_codes(client, merchant, template["id"], text)
    await expect(response, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "PAYLOAD_TOO_LARGE")
    assert (await get_template(client, merchant, template["id"]))["remaining"] == 0


async def test_import_into_other_shops_template(client, code_template, create, merchant):
    other = await create(
        shop="s2", drop=("stock",), codes={"type": "imported"}, claim_methods=["code"]
    )
    response = await import_codes(client, merchant, other["id"], "X-1\n")
    await expect(response, HTTPStatus.NOT_FOUND, "NOT_FOUND")


async def test_widget_claims_hand_out_imported_codes(client, create, merchant, auth):
    template = await create(drop=("stock",), codes={"type": "imported"}, claim_methods=["widget"])
    await import_ok(client, merchant, template["id"], "W-1\nW-2\n")
    codes = {
        (await claim_ok(client, auth("user", sub=f"u{i}"), template["id"]))["code"]
        for i in range(2)
    }
    assert codes == {"W-1", "W-2"}
    await expect(
        await claim(client, auth("user", sub="u2"), template["id"]), HTTPStatus.CONFLICT, "SOLD_OUT"
    )


# --- claim by code ---------------------------------------------------------------------------
async def test_claim_by_code(client, code_template, merchant, user):
    template = await code_template()
    await import_ok(client, merchant, template["id"], "CODE-A\nCODE-B\n")
    body = await expect(await claim_by_code(client, user, "CODE-A"), HTTPStatus.CREATED)
    assert not body.get("replayed"), body
    coupon = body["coupon"]
    assert coupon["code"] == "CODE-A"
    assert coupon["source"] == "code"
    assert coupon["status"] == "unused"
    assert coupon["template_id"] == template["id"]
    assert coupon["name"] == template["name"]
    (held,) = await wallet(client, user)
    assert (held["coupon_id"], held["code"]) == (coupon["coupon_id"], "CODE-A")
    stored = await get_template(client, merchant, template["id"])
    assert (stored["issued"], stored["remaining"]) == (1, 1)


async def test_claim_by_pregenerated_code(client, create, merchant, auth):
    template = await create(
        drop=("stock",),
        codes={"type": "pregenerated", "count": 2},
        claim_methods=["widget", "code"],
    )
    handed_out = await claim_ok(client, auth("user", sub="u1"), template["id"])
    await expect(
        await claim_by_code(client, auth("user", sub="u2"), handed_out["code"]),
        HTTPStatus.CONFLICT,
        "ALREADY_CLAIMED",
    )


async def test_claim_by_code_replay(client, code_template, merchant, user):
    template = await code_template()
    await import_ok(client, merchant, template["id"], "CODE-A\n")
    first = await expect(await claim_by_code(client, user, "CODE-A", "req-1"), HTTPStatus.CREATED)
    again = await expect(await claim_by_code(client, user, "CODE-A", "req-1"), HTTPStatus.CREATED)
    assert again["replayed"] is True
    assert {key: value for key, value in again.items() if key != "replayed"} == first
    assert len(await wallet(client, user)) == 1


async def test_claim_by_code_unknown(client, code_template, merchant, user):
    template = await code_template()
    await import_ok(client, merchant, template["id"], "CODE-A\n")
    await expect(await claim_by_code(client, user, "CODE-Z"), HTTPStatus.NOT_FOUND, "NOT_FOUND")
    assert await wallet(client, user) == []


async def test_claim_by_code_of_another_shop(client, create, auth, user):
    other = await create(
        shop="s2", drop=("stock",), codes={"type": "imported"}, claim_methods=["code"]
    )
    s2 = auth("merchant", shop="s2", sub="m2")
    await import_ok(client, s2, other["id"], "S2-CODE\n", shop="s2")
    await expect(await claim_by_code(client, user, "S2-CODE"), HTTPStatus.NOT_FOUND, "NOT_FOUND")
    body = await expect(await claim_by_code(client, user, "S2-CODE", shop="s2"), HTTPStatus.CREATED)
    assert body["coupon"]["code"] == "S2-CODE"


async def test_code_held_by_someone_else(client, code_template, merchant, auth):
    template = await code_template()
    await import_ok(client, merchant, template["id"], "CODE-A\nCODE-B\n")
    await expect(await claim_by_code(client, auth("user", sub="u1"), "CODE-A"), HTTPStatus.CREATED)
    other = auth("user", sub="u2")
    await expect(
        await claim_by_code(client, other, "CODE-A"), HTTPStatus.CONFLICT, "ALREADY_CLAIMED"
    )
    assert await wallet(client, other) == []


async def test_code_held_by_yourself(client, code_template, merchant, user):
    template = await code_template(per_user_limit=5)
    await import_ok(client, merchant, template["id"], "CODE-A\nCODE-B\n")
    await expect(await claim_by_code(client, user, "CODE-A", "req-1"), HTTPStatus.CREATED)
    await expect(
        await claim_by_code(client, user, "CODE-A", "req-2"), HTTPStatus.CONFLICT, "ALREADY_CLAIMED"
    )
    await expect(await claim_by_code(client, user, "CODE-B", "req-3"), HTTPStatus.CREATED)
    assert sorted(item["code"] for item in await wallet(client, user)) == ["CODE-A", "CODE-B"]


async def test_claim_by_code_needs_code_method(client, create, merchant, user):
    template = await create(drop=("stock",), codes={"type": "imported"}, claim_methods=["widget"])
    await import_ok(client, merchant, template["id"], "CODE-A\n")
    await expect(
        await claim_by_code(client, user, "CODE-A"),
        HTTPStatus.FORBIDDEN,
        "CLAIM_METHOD_NOT_ALLOWED",
    )
    assert await wallet(client, user) == []


async def test_claim_by_code_respects_per_user_limit(client, code_template, merchant, user):
    template = await code_template()
    await import_ok(client, merchant, template["id"], "CODE-A\nCODE-B\n")
    await expect(await claim_by_code(client, user, "CODE-A"), HTTPStatus.CREATED)
    await expect(await claim_by_code(client, user, "CODE-B"), HTTPStatus.CONFLICT, "LIMIT_REACHED")


async def test_same_code_claimed_concurrently(client, code_template, merchant, auth):
    template = await code_template()
    await import_ok(client, merchant, template["id"], "RACE-1\n")
    users = [auth("user", sub="u1"), auth("user", sub="u2")]
    responses = await asyncio.gather(
        *(claim_by_code(client, headers, "RACE-1") for headers in users)
    )
    outcomes = []
    for response in responses:
        body = await response.json()
        outcomes.append((response.status, body.get("error", {}).get("code")))
    assert sorted(outcomes) == [
        (HTTPStatus.CREATED, None),
        (HTTPStatus.CONFLICT, "ALREADY_CLAIMED"),
    ]
    held = [len(await wallet(client, headers)) for headers in users]
    assert sorted(held) == [0, 1]


@pytest.mark.parametrize(
    "body", [{"request_id": "r1"}, {"code": "", "request_id": "r1"}, {"code": "A"}]
)
async def test_claim_by_code_bad_body(client, user, body):
    response = await client.post(shop_url("/coupons/claim-by-code"), json=body, headers=user)
    await expect(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")


# --- the wallet ------------------------------------------------------------------------------
async def test_wallet_item_shape(client, create, user, clock):
    template = await create()
    coupon = await claim_ok(client, user, template["id"])
    (item,) = await wallet(client, user)
    for key in (
        "coupon_id",
        "template_id",
        "name",
        "benefit",
        "code",
        "status",
        "source",
        "valid_from",
        "valid_to",
        "expiring_soon",
        "redeem_page",
    ):
        assert key in item, (key, item)
        assert item[key] == coupon[key], key
    assert datetime.fromisoformat(item["valid_to"]) == clock.now() + timedelta(days=7)


async def test_wallet_is_per_user_and_per_shop(client, create, auth):
    template = await create()
    other_shop = await create(shop="s2")
    mine = await claim_ok(client, auth("user", sub="u1"), template["id"])
    theirs = await claim_ok(client, auth("user", sub="u2"), template["id"])
    mine_in_s2 = await claim_ok(client, auth("user", sub="u1"), other_shop["id"], shop="s2")
    for status in (None, "all"):
        assert ids_of(await wallet(client, auth("user", sub="u1"), status)) == [mine["coupon_id"]]
        assert ids_of(await wallet(client, auth("user", sub="u2"), status)) == [theirs["coupon_id"]]
        assert ids_of(await wallet(client, auth("user", sub="u1"), status, shop="s2")) == [
            mine_in_s2["coupon_id"]
        ]
    assert await wallet(client, auth("user", sub="u3")) == []


async def test_wallet_cursor_paging(client, create, user):
    template = await create(stock={"type": "unlimited"}, per_user_limit=5)
    claimed = [(await claim_ok(client, user, template["id"]))["coupon_id"] for _ in range(5)]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": "2"} if cursor is None else {"limit": "2", "cursor": cursor}
        body = await wallet_page(client, user, **params)
        pages += 1
        assert len(body["items"]) <= 2
        seen += ids_of(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert pages < 10, "paging does not end"
    assert sorted(seen, key=str) == sorted(claimed, key=str)
    assert len(seen) == len(set(seen)) == 5
    assert pages == 3


async def test_wallet_default_limit(client, create, user):
    template = await create(stock={"type": "unlimited"}, per_user_limit=25)
    for _ in range(21):
        await claim_ok(client, user, template["id"])
    body = await wallet_page(client, user)
    assert len(body["items"]) == 20
    assert body["next_cursor"] is not None
    rest = await wallet_page(client, user, cursor=body["next_cursor"])
    assert len(rest["items"]) == 1
    assert rest["next_cursor"] is None


@pytest.mark.parametrize(
    "params, field",
    [
        ({"status": "bogus"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"cursor": "garbage!!"}, "cursor"),
    ],
)
async def test_wallet_bad_query(client, user, params, field):
    response = await client.get(shop_url("/me/coupons"), params=params, headers=user)
    body = await expect(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")
    assert field in body["error"]["details"], body


async def test_wallet_limit_bounds_accepted(client, create, user):
    template = await create()
    await claim_ok(client, user, template["id"])
    for limit in ("1", "100"):
        assert len((await wallet_page(client, user, limit=limit))["items"]) == 1


async def test_wallet_without_token(client):
    response = await client.get(shop_url("/me/coupons"))
    await expect(response, HTTPStatus.UNAUTHORIZED, "UNAUTHENTICATED")


async def test_expired_coupon_moves_to_expired(client, create, auth, clock):
    short = await create(
        name="short", validity={"type": "relative", "effective_after_days": 0, "valid_days": 1}
    )
    long = await create(name="long")
    expiring = await claim_ok(client, auth("user", sub="u7"), short["id"])
    lasting = await claim_ok(client, auth("user", sub="u7"), long["id"])
    clock.advance(timedelta(days=1, seconds=1))
    user = auth("user", sub="u7")  # tokens live 2 hours of the clock
    assert ids_of(await wallet(client, user)) == [lasting["coupon_id"]]
    assert ids_of(await wallet(client, user, "usable")) == [lasting["coupon_id"]]
    (expired,) = await wallet(client, user, "expired")
    assert (expired["coupon_id"], expired["status"]) == (expiring["coupon_id"], "expired")
    everything = {item["coupon_id"]: item["status"] for item in await wallet(client, user, "all")}
    assert everything == {expiring["coupon_id"]: "expired", lasting["coupon_id"]: "unused"}
    assert await wallet(client, user, "used") == []


async def test_not_yet_effective_coupon_is_not_expired(client, create, user):
    template = await create(
        validity={"type": "relative", "effective_after_days": 2, "valid_days": 3}
    )
    coupon = await claim_ok(client, user, template["id"])
    assert await wallet(client, user, "expired") == []
    assert coupon["coupon_id"] in ids_of(await wallet(client, user, "all"))


# --- grants ----------------------------------------------------------------------------------
async def test_grant_to_users(client, create, merchant, auth):
    template = await create()
    body = await expect(
        await grant(client, merchant, template["id"], ["u1", "u2", "u3"]), HTTPStatus.CREATED
    )
    assert body["failed"] == []
    assert "granted" in body
    for sub in ("u1", "u2", "u3"):
        (item,) = await wallet(client, auth("user", sub=sub))
        assert item["template_id"] == template["id"]
        assert (item["status"], item["source"]) == ("unused", "grant")
    stored = await get_template(client, merchant, template["id"])
    assert (stored["issued"], stored["remaining"]) == (3, 997)


async def test_granted_coupon_source(client, create, merchant, auth):
    template = await create(per_user_limit=2)
    await expect(await grant(client, merchant, template["id"], ["u1"]), HTTPStatus.CREATED)
    (item,) = await wallet(client, auth("user", sub="u1"), "all")
    assert item["source"] == "grant", item
    revoked = await expect(await revoke(client, merchant, item["coupon_id"]), HTTPStatus.OK)
    assert revoked["source"] == "grant", revoked


async def test_grant_over_per_user_limit(client, create, merchant, auth):
    template = await create()
    claimed = await claim_ok(client, auth("user", sub="u1"), template["id"])
    body = await expect(
        await grant(client, merchant, template["id"], ["u1", "u2"]), HTTPStatus.CREATED
    )
    assert failures(body) == [("u1", "LIMIT_REACHED")]
    assert ids_of(await wallet(client, auth("user", sub="u1"))) == [claimed["coupon_id"]]
    assert len(await wallet(client, auth("user", sub="u2"))) == 1
    assert (await get_template(client, merchant, template["id"]))["issued"] == 2


async def test_grant_replay(client, create, merchant, auth):
    template = await create()
    first = await expect(
        await grant(client, merchant, template["id"], ["u1", "u2"], "grant-1"), HTTPStatus.CREATED
    )
    again = await expect(
        await grant(client, merchant, template["id"], ["u1", "u2"], "grant-1"), HTTPStatus.CREATED
    )
    assert again["replayed"] is True
    assert {key: value for key, value in again.items() if key != "replayed"} == first
    assert again["failed"] == []
    for sub in ("u1", "u2"):
        assert len(await wallet(client, auth("user", sub=sub))) == 1
    assert (await get_template(client, merchant, template["id"]))["issued"] == 2


async def test_grant_same_request_id_other_users_conflicts(client, create, merchant, auth):
    template = await create()
    await expect(
        await grant(client, merchant, template["id"], ["u1"], "grant-1"), HTTPStatus.CREATED
    )
    await expect(
        await grant(client, merchant, template["id"], ["u2"], "grant-1"),
        HTTPStatus.CONFLICT,
        "IDEMPOTENCY_CONFLICT",
    )
    assert await wallet(client, auth("user", sub="u2")) == []


async def test_grant_from_file(client, create, merchant, auth):
    template = await create()
    form = aiohttp.FormData()
    form.add_field("file", b"u4\nu5\n", filename="users.txt", content_type="text/plain")
    form.add_field("request_id", "grant-file-1")
    response = await client.post(
        template_url(template["id"], "/grants"), data=form, headers=merchant
    )
    body = await expect(response, HTTPStatus.CREATED)
    assert body["failed"] == []
    for sub in ("u4", "u5"):
        (item,) = await wallet(client, auth("user", sub=sub))
        assert (item["template_id"], item["source"]) == (template["id"], "grant")
    assert (await get_template(client, merchant, template["id"]))["issued"] == 2


async def test_grant_sold_out_reported(client, create, merchant, auth):
    template = await create(stock={"type": "limited", "total": 1})
    body = await expect(
        await grant(client, merchant, template["id"], ["u1", "u2"]), HTTPStatus.CREATED
    )
    assert len(body["failed"]) == 1 and body["failed"][0]["code"] == "SOLD_OUT", body
    held = [len(await wallet(client, auth("user", sub=sub))) for sub in ("u1", "u2")]
    assert sorted(held) == [0, 1]


async def test_grant_access(client, create, auth, merchant):
    other = await create(shop="s2")
    await expect(
        await grant(client, merchant, other["id"], ["u1"]), HTTPStatus.NOT_FOUND, "NOT_FOUND"
    )
    own = await create()
    await expect(
        await grant(client, auth("user", sub="u1"), own["id"], ["u1"]),
        HTTPStatus.FORBIDDEN,
        "FORBIDDEN",
    )
    assert await wallet(client, auth("user", sub="u1")) == []
    assert await wallet(client, auth("user", sub="u1"), shop="s2") == []


# --- revocation ------------------------------------------------------------------------------
async def test_revoke(client, create, merchant, user):
    template = await create()
    coupon = await claim_ok(client, user, template["id"])
    body = await expect(await revoke(client, merchant, coupon["coupon_id"]), HTTPStatus.OK)
    assert body["coupon_id"] == coupon["coupon_id"]
    assert body["status"] == "revoked"
    assert await wallet(client, user) == []
    everything = await wallet(client, user, "all")
    assert [(item["coupon_id"], item["status"]) for item in everything] == [
        (coupon["coupon_id"], "revoked")
    ]
    assert await wallet(client, user, "expired") == []
    await expect(
        await revoke(client, merchant, coupon["coupon_id"]),
        HTTPStatus.CONFLICT,
        "COUPON_NOT_USABLE",
    )


async def test_revoke_expired_coupon_refused(client, create, auth, clock):
    template = await create(
        validity={"type": "relative", "effective_after_days": 0, "valid_days": 1}
    )
    coupon = await claim_ok(client, auth("user", sub="u7"), template["id"])
    clock.advance(timedelta(days=2))
    merchant = auth("merchant", shop="s1", sub="m1")
    await expect(
        await revoke(client, merchant, coupon["coupon_id"]),
        HTTPStatus.CONFLICT,
        "COUPON_NOT_USABLE",
    )


async def test_revoke_across_shops(client, create, merchant, auth, user):
    template = await create()
    coupon = await claim_ok(client, user, template["id"])
    s2 = auth("merchant", shop="s2", sub="m2")
    await expect(
        await revoke(client, s2, coupon["coupon_id"], shop="s1"), HTTPStatus.FORBIDDEN, "FORBIDDEN"
    )
    await expect(
        await revoke(client, s2, coupon["coupon_id"], shop="s2"), HTTPStatus.NOT_FOUND, "NOT_FOUND"
    )
    (item,) = await wallet(client, user)
    assert item["status"] == "unused"


async def test_revoke_nonexistent_and_by_user(client, create, merchant, user):
    await expect(await revoke(client, merchant, 999999), HTTPStatus.NOT_FOUND, "NOT_FOUND")
    template = await create()
    coupon = await claim_ok(client, user, template["id"])
    await expect(await revoke(client, user, coupon["coupon_id"]), HTTPStatus.FORBIDDEN, "FORBIDDEN")
    assert len(await wallet(client, user)) == 1
