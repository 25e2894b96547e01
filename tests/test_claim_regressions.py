"""Regressions found in review: exact id comparison, durable replays, code guessing, bounds."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from http import HTTPStatus

import pytest
from aiohttp import FormData

from bff.keys import GATE
from tests.conftest import expect
from tests.helpers import claim, wallet

BASE = "/api/v1/shops/s1"


async def test_ids_and_request_ids_differing_in_case_are_distinct(client, make_template, auth):
    template = await make_template(per_user_limit=2)
    bob, big_bob = auth("user", sub="bob"), auth("user", sub="Bob")
    await expect(await claim(client, bob, template["id"], "abc"), HTTPStatus.CREATED)
    second = await expect(await claim(client, bob, template["id"], "ABC"), HTTPStatus.CREATED)
    assert "replayed" not in second
    await expect(await claim(client, big_bob, template["id"], "abc"), HTTPStatus.CREATED)
    assert len(await wallet(client, bob, status="all")) == 2
    assert len(await wallet(client, big_bob, status="all")) == 1


async def test_grant_and_import_keep_case_distinct(client, make_template, merchant):
    template = await make_template(per_user_limit=1)
    reply = await expect(
        await client.post(
            f"{BASE}/admin/coupon-templates/{template['id']}/grants",
            json={"user_ids": ["gx", "GX"], "request_id": "g-case"},
            headers=merchant,
        ),
        HTTPStatus.CREATED,
    )
    assert reply["failed"] == [] and len(reply["granted"]) == 2
    imported = await make_template(stock=None, codes={"type": "imported"}, claim_methods=["code"])
    form = FormData()
    form.add_field("file", b"ABC\nabc\n", filename="codes.txt")
    body = await expect(
        await client.post(
            f"{BASE}/admin/coupon-templates/{imported['id']}/codes/import",
            data=form,
            headers=merchant,
        ),
        HTTPStatus.CREATED,
    )
    assert (body["imported"], body["duplicates"]) == (2, 0)


async def test_claim_retried_after_gate_loss_is_replayed_not_refused(
    client, make_template, auth, clock
):
    template = await make_template()
    user = auth("user", sub="u-retry")
    first = await expect(await claim(client, user, template["id"], "r-1"), HTTPStatus.CREATED)
    await client.app[GATE].flush()
    clock.advance(timedelta(days=11))  # the claim window has closed since
    user = auth("user", sub="u-retry")
    again = await expect(await claim(client, user, template["id"], "r-1"), HTTPStatus.CREATED)
    assert again["replayed"] is True
    assert again["coupon"]["coupon_id"] == first["coupon"]["coupon_id"]


async def test_guessing_codes_is_rate_limited(client, auth):
    user = auth("user", sub="guesser")
    for n in range(10):
        response = await client.post(
            f"{BASE}/coupons/claim-by-code",
            json={"code": f"SMS-2026-{n:04d}", "request_id": f"g{n}"},
            headers=user,
        )
        await expect(response, HTTPStatus.NOT_FOUND, "NOT_FOUND")
    response = await client.post(
        f"{BASE}/coupons/claim-by-code",
        json={"code": "SMS-2026-0010", "request_id": "g10"},
        headers=user,
    )
    await expect(response, HTTPStatus.TOO_MANY_REQUESTS, "RATE_LIMITED")
    assert int(response.headers["Retry-After"]) > 0


async def test_huge_ids_are_400_not_500(client, auth, merchant):
    response = await claim(client, auth("user", sub="u1"), 10**30, "big")
    await expect(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")
    response = await client.put(
        f"{BASE}/admin/products/p1",
        json={"title": "t", "list_price": 100, "auto_claim_template_ids": [10**30]},
        headers=merchant,
    )
    await expect(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")


async def test_redis_that_forgot_its_scripts_still_gates(client, make_template, auth, backend):
    """A Redis restart drops loaded scripts: the gate loads them again and retries."""
    if backend != "mariadb":
        pytest.skip("the in-process gate runs no scripts")
    template = await make_template(per_user_limit=3)
    user = auth("user", sub="scripts")
    await expect(await claim(client, user, template["id"], "s-1"), HTTPStatus.CREATED)
    await client.app[GATE].client.script_flush()
    replies = await asyncio.gather(
        *(claim(client, user, template["id"], f"s-{n}") for n in range(1, 6))
    )
    assert sorted(r.status for r in replies) == [201, 201, 201, 409, 409]
    replayed = await expect(replies[0], HTTPStatus.CREATED)
    assert replayed["replayed"] is True
    assert len(await wallet(client, user, status="all")) == 3
