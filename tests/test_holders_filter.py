"""The holders filter: sold-out answers to new users without the database, never wrong.

A shop's Bloom filter of the users who ever held one of its coupons
(bff/gate/holders.py, bff/coupons/holders.py) lets the claim's one gate call
refuse a user with no facts SOLD_OUT when the filter certainly does not hold
them. These tests check that it does so (no SQL statement runs), and that it
never does so for a holder, whatever path gave them their coupon (claim,
grant, gift pack, points exchange), after their facts or the whole gate are
lost, during a rebuild, or when a writer skipped adding them because no filter
existed and commits while the rebuild scans.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from http import HTTPStatus
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from bff.coupons.ledger import IssueRequest
from bff.gate.base import Gate, facts_key, holders_key
from bff.gate.holders import HEADER_BYTES, BloomBits, filter_size, positions
from bff.gate.memory import MemoryGate
from bff.gate.redis import _HOLDERS_PROBE, RedisGate
from bff.keys import DB, GATE, HOLDERS, LEDGER
from config.loader import RedisSettings
from tests.conftest import REDIS_URL, base_settings, expect, mariadb_settings, template_body
from tests.helpers import (
    STEADY,
    claim,
    claim_ok,
    code_of,
    create_template,
    enrol,
    grant_ok,
    new_request_id,
    shop_url,
    sold_out_template,
    statements,
)
from tests.test_wallet_and_codes import claim_by_code, import_ok

KEY = holders_key("s1")


async def forget_facts(client: TestClient, *users: str) -> None:
    await client.app[GATE].drop_marks([facts_key("s1", user) for user in users])


async def rebuilt(client: TestClient) -> None:
    """Lose every gate key (a FLUSHDB, a restart), then rebuild the shop's filter."""
    await client.app[GATE].flush()  # type: ignore[attr-defined]
    assert await client.app[HOLDERS].rebuild("s1") is True
    assert await client.app[GATE].holders_state(KEY) == "V"


async def might_hold(gate: Gate, user: str) -> bool:
    """What the gate's filter says of ``user`` (read directly: no claim involved)."""
    if isinstance(gate, MemoryGate):
        holders = gate._get(KEY)
        return holders.bloom.might_hold(user)
    assert isinstance(gate, RedisGate)
    return await gate._batch.call(_HOLDERS_PROBE, [KEY], [user]) != 0


# --- the fast path ---------------------------------------------------------------------------
async def test_new_users_are_refused_sold_out_without_the_database(steady, clock, merchant, auth):
    template = await sold_out_template(steady, clock, merchant, auth)
    assert await steady.app[HOLDERS].rebuild("s1") is True
    newcomers = [auth("user", sub=f"new-{n}") for n in range(40)]
    with statements(steady) as sql:
        codes = await asyncio.gather(*(code_of(steady, u, template["id"]) for u in newcomers))
    assert codes == ["SOLD_OUT"] * len(newcomers)
    assert sql == [], sql
    # The holder is still decided by the database (its facts gone): LIMIT_REACHED, not stock.
    await forget_facts(steady, "first")
    with statements(steady) as sql:
        assert await code_of(steady, auth("user", sub="first"), template["id"]) == "LIMIT_REACHED"
    assert sql


async def test_a_missing_filter_is_rebuilt_once_on_demand(steady, clock, merchant, auth):
    template = await sold_out_template(steady, clock, merchant, auth)
    holders = steady.app[HOLDERS]
    assert await steady.app[GATE].holders_state(KEY) is None  # never built
    with statements(steady) as sql:
        assert await code_of(steady, auth("user", sub="early"), template["id"]) == "SOLD_OUT"
    assert sql, "without a filter a new user is decided by the database"
    await holders.idle()
    assert holders.built == 1
    assert await steady.app[GATE].holders_state(KEY) == "V"
    with statements(steady) as sql:
        assert await code_of(steady, auth("user", sub="later"), template["id"]) == "SOLD_OUT"
    assert sql == [], sql


async def test_two_rebuilds_at_once_build_one_filter(steady, clock, merchant, auth):
    await sold_out_template(steady, clock, merchant, auth)
    holders = steady.app[HOLDERS]
    outcomes = await asyncio.gather(*(holders.rebuild("s1") for _ in range(4)))
    assert sorted(outcomes) == [False, False, False, True]
    assert await might_hold(steady.app[GATE], "first")


async def test_a_failed_rebuild_leaves_no_building_mark(steady, clock, merchant, auth, monkeypatch):
    await sold_out_template(steady, clock, merchant, auth)
    holders = steady.app[HOLDERS]

    async def broken(*_args: Any) -> Any:
        raise RuntimeError("the scan failed")

    with monkeypatch.context() as patch:
        patch.setattr(holders, "_chunk", broken)
        assert await holders.rebuild("s1") is False
    assert await steady.app[GATE].holders_state(KEY) is None  # a claim may start another
    assert await holders.rebuild("s1") is True


async def test_over_the_rate_limit_a_new_user_is_refused_without_the_database(
    client_with, clock, merchant, auth
):
    client = await client_with(claim=STEADY, risk={"user_claims_per_minute": 1})
    template = await sold_out_template(client, clock, merchant, auth)
    assert await client.app[HOLDERS].rebuild("s1") is True
    user = auth("user", sub="eager")
    assert await code_of(client, user, template["id"]) == "SOLD_OUT"
    with statements(client) as sql:
        assert await code_of(client, user, template["id"]) == "RATE_LIMITED"
    assert sql == [], "a user who holds nothing has no earlier claim to look for"


# --- holders are never refused for stock first ------------------------------------------------
POINTS_BENEFIT = {"type": "threshold", "amount_off": 5500, "threshold": 29900}
METHODS = {"claim": ["widget"], "grant": ["widget"], "gift_pack": ["widget", "gift_pack"]}


# Not "points": a points template cannot also be claimed free (the points policy wants it
# stronger than every free coupon, itself included); its holders are in the WALLET_FULL test.
@pytest.mark.parametrize("how", ["claim", "grant", "gift_pack"])
async def test_a_holder_at_the_limit_hears_limit_reached(steady, clock, merchant, auth, how):
    template = await create_template(
        steady,
        clock,
        merchant,
        stock={"type": "limited", "total": 2},
        benefit=POINTS_BENEFIT,
        claim_methods=METHODS[how],
    )
    assert await steady.app[HOLDERS].rebuild("s1") is True  # valid before the coupon
    holder = auth("user", sub="holder")
    await got_coupon(steady, clock, merchant, auth, how, template)
    await claim_ok(steady, auth("user", sub="other"), template["id"])  # sells it out
    await forget_facts(steady, "holder")  # the writer's add keeps the filter right
    assert await code_of(steady, holder, template["id"]) == "LIMIT_REACHED"
    await rebuilt(steady)  # the rebuild's scan finds the holder
    assert await code_of(steady, holder, template["id"]) == "LIMIT_REACHED"
    await forget_facts(steady, "holder")
    assert await code_of(steady, holder, template["id"]) == "LIMIT_REACHED"
    assert await code_of(steady, auth("user", sub="new"), template["id"]) == "SOLD_OUT"


async def got_coupon(
    client: TestClient,
    clock: Any,
    merchant: dict[str, str],
    auth: Any,
    how: str,
    template: dict[str, Any] | None = None,
) -> None:
    """Give ``holder`` one coupon the way ``how`` says: of ``template``, or of a new one."""
    holder = auth("user", sub="holder")

    async def made(**overrides: Any) -> dict[str, Any]:
        if template is not None:
            return template
        return await create_template(client, clock, merchant, **overrides)

    if how == "claim":
        await claim_ok(client, holder, (await made())["id"])
    elif how == "grant":
        await grant_ok(client, merchant, (await made())["id"], ["holder"])
    elif how == "code":
        body = template_body(clock, codes={"type": "imported"}, claim_methods=["code"])
        del body["stock"]
        other = await expect(
            await client.post(shop_url("/admin/coupon-templates"), json=body, headers=merchant),
            HTTPStatus.CREATED,
        )
        await import_ok(client, merchant, other["id"], "CODE-H\n")
        await expect(await claim_by_code(client, holder, "CODE-H"), HTTPStatus.CREATED)
    elif how == "gift_pack":
        other = await made(claim_methods=["gift_pack"])
        pack = {
            "kind": "new_member",
            "name": "新会员礼包",
            "starts_at": (clock.now() - timedelta(hours=1)).isoformat(),
            "ends_at": (clock.now() + timedelta(days=10)).isoformat(),
            "coupon_template_ids": [other["id"]],
        }
        created = await expect(
            await client.post(shop_url("/admin/gift-packs"), json=pack, headers=merchant),
            HTTPStatus.CREATED,
        )
        await expect(await client.post(shop_url("/membership"), json={}, headers=holder), 201)
        response = await client.post(
            shop_url(f"/gift-packs/{created['id']}/claim"),
            json={"request_id": new_request_id()},
            headers=holder,
        )
        await expect(response, HTTPStatus.CREATED)
    else:
        other = await made(benefit=POINTS_BENEFIT, claim_methods=["points"])
        offer = await expect(
            await client.post(
                shop_url("/admin/exchange-offers"),
                json={"template_id": other["id"], "points_cost": 300},
                headers=merchant,
            ),
            HTTPStatus.CREATED,
        )
        await enrol(client, merchant, "holder", 0)
        body = {"delta": 1000, "reason": "购物奖励", "request_id": new_request_id()}
        response = await client.post(
            shop_url("/admin/members/holder/points"), json=body, headers=merchant
        )
        await expect(response, HTTPStatus.OK)
        response = await client.post(
            shop_url(f"/points-exchange/{offer['id']}/redeem"),
            json={"request_id": new_request_id()},
            headers=holder,
        )
        await expect(response, HTTPStatus.CREATED)


@pytest.mark.parametrize("how", ["claim", "code", "grant", "gift_pack", "points"])
async def test_a_holder_with_a_full_wallet_hears_wallet_full(
    client_with, clock, merchant, auth, how
):
    client = await client_with(claim=STEADY, wallet={"max_unused_per_shop": 1})
    template = await sold_out_template(client, clock, merchant, auth)
    assert await client.app[HOLDERS].rebuild("s1") is True  # valid before the coupon
    await got_coupon(client, clock, merchant, auth, how)
    holder = auth("user", sub="holder")
    await forget_facts(client, "holder")
    assert await code_of(client, holder, template["id"]) == "WALLET_FULL"
    await rebuilt(client)
    assert await code_of(client, holder, template["id"]) == "WALLET_FULL"


async def test_a_retry_of_a_claim_that_succeeded_is_replayed(steady, clock, merchant, auth):
    template = await create_template(steady, clock, merchant, stock={"type": "limited", "total": 1})
    assert await steady.app[HOLDERS].rebuild("s1") is True
    user = auth("user", sub="lucky")
    first = await expect(
        await claim(steady, user, template["id"], request_id="r-1"), HTTPStatus.CREATED
    )
    assert await code_of(steady, auth("user", sub="late"), template["id"]) == "SOLD_OUT"
    # The gate lost the reply and the facts; the filter still holds the user.
    await steady.app[GATE].drop_marks(["idem:{s1:lucky}:c:r-1", facts_key("s1", "lucky")])
    again = await expect(
        await claim(steady, user, template["id"], request_id="r-1"), HTTPStatus.CREATED
    )
    assert again["replayed"] is True and again["coupon"] == first["coupon"]
    await rebuilt(steady)
    again = await expect(
        await claim(steady, user, template["id"], request_id="r-1"), HTTPStatus.CREATED
    )
    assert again["replayed"] is True and again["coupon"] == first["coupon"]


async def test_a_flash_claim_with_a_valid_filter_issues_exactly_the_stock(
    client_with, clock, merchant, auth
):
    client = await client_with(claim=STEADY, risk={"user_claims_per_minute": 0})
    template = await create_template(
        client, clock, merchant, stock={"type": "limited", "total": 10}
    )
    assert await client.app[HOLDERS].rebuild("s1") is True
    users = [f"f{n}" for n in range(60)]
    # Each user twice at once, then everyone again: the second wave meets a template known
    # sold out, holders (facts dropped) and new users mixed.
    first = await asyncio.gather(
        *(code_of(client, auth("user", sub=u), template["id"]) for u in users + users)
    )
    assert first.count("201") == 10
    assert set(first) <= {"201", "SOLD_OUT", "LIMIT_REACHED"}
    winners = {u for u, c in zip(users + users, first, strict=True) if c == "201"}
    assert len(winners) == 10
    await forget_facts(client, *users)
    second = await asyncio.gather(
        *(code_of(client, auth("user", sub=u), template["id"]) for u in users)
    )
    assert second == ["LIMIT_REACHED" if u in winners else "SOLD_OUT" for u in users]
    stored = await expect(
        await client.get(shop_url(f"/admin/coupon-templates/{template['id']}"), headers=merchant),
        HTTPStatus.OK,
    )
    assert (stored["issued"], stored["remaining"]) == (10, 0)


# --- a lost filter -----------------------------------------------------------------------------
async def test_claims_during_a_rebuild_are_right_and_it_is_built_once(
    client_with, clock, merchant, auth
):
    client = await client_with(claim=STEADY, risk={"user_claims_per_minute": 0})
    template = await create_template(client, clock, merchant, stock={"type": "limited", "total": 6})
    holders = [f"h{n}" for n in range(6)]
    for user in holders:
        await claim_ok(client, auth("user", sub=user), template["id"])
    assert await code_of(client, auth("user", sub="n0"), template["id"]) == "SOLD_OUT"
    await client.app[HOLDERS].idle()  # the filter that claim asked for
    await client.app[GATE].flush()  # type: ignore[attr-defined]
    service = client.app[HOLDERS]
    built = service.built
    for _ in range(3):  # claims while the filter is missing, then building, then valid
        users = [*holders, *(f"n{n}" for n in range(20))]
        codes = await asyncio.gather(
            *(code_of(client, auth("user", sub=u), template["id"]) for u in users)
        )
        assert codes == ["LIMIT_REACHED"] * 6 + ["SOLD_OUT"] * 20
        await forget_facts(client, *holders)
    await service.idle()
    assert service.built == built + 1
    assert all([await might_hold(client.app[GATE], user) for user in holders])


async def test_a_writer_that_found_no_filter_is_found_by_the_rebuild(steady, clock, merchant, auth):
    """The race: a writer skips adding (no filter yet) and commits while the rebuild scans."""
    template = await create_template(steady, clock, merchant, stock={"type": "limited", "total": 1})
    app = steady.app
    ledger, db, gate = app[LEDGER], app[DB], app[GATE]
    issued, release = asyncio.Event(), asyncio.Event()

    async def writer(conn: Any) -> Any:
        request = IssueRequest(
            shop_id="s1",
            user_id="late",
            template_id=template["id"],
            source="grant",
            request_key="g:late:1",
            body_hash="h",
            check_window=False,
        )
        result = await ledger.issue_in(conn, request)
        assert result.coupon is not None
        issued.set()
        await release.wait()  # the transaction stays open, its wallet row lock held
        return result

    writing = asyncio.create_task(db.transaction(writer))
    await issued.wait()
    assert await gate.holders_state(KEY) is None  # so the writer added nothing
    building = asyncio.create_task(app[HOLDERS].rebuild("s1"))
    for _ in range(10):
        await asyncio.sleep(0.02)
    assert await gate.holders_state(KEY) != "V", "marked valid while a writer was open"
    release.set()
    await writing
    assert await building is True
    assert await might_hold(gate, "late")
    # And through the API: the writer's user is at the limit of a template now sold out.
    assert await code_of(steady, auth("user", sub="x"), template["id"]) == "SOLD_OUT"
    await forget_facts(steady, "late")
    assert await code_of(steady, auth("user", sub="late"), template["id"]) == "LIMIT_REACHED"


async def test_workers_without_a_shared_gate_keep_no_filter(
    aiohttp_client, make_app, settings, clock, merchant, auth
):
    workers = settings.replace(
        redis=dataclasses.replace(settings.redis, url=""),
        server=dataclasses.replace(settings.server, workers=2),
        claim=dataclasses.replace(settings.claim, **STEADY),
    )
    client = await aiohttp_client(make_app(settings=workers))
    template = await sold_out_template(client, clock, merchant, auth)
    assert client.app[HOLDERS].key("s1") is None
    assert await client.app[HOLDERS].rebuild("s1") is False
    with statements(client) as sql:
        assert await code_of(client, auth("user", sub="new"), template["id"]) == "SOLD_OUT"
    assert sql, "each worker's filter would miss the other workers' holders"


# --- the structure -----------------------------------------------------------------------------
def test_the_default_size_is_about_a_megabyte_per_million_users():
    bits, hashes = filter_size(1_000_000, 0.01)
    assert (bits, hashes) == (9_585_059, 7)
    assert bits / 8 < 1.2 * 1024 * 1024


@settings(max_examples=200, deadline=None)
@given(
    users=st.sets(st.text(min_size=1, max_size=64), max_size=200),
    others=st.lists(st.text(min_size=1, max_size=64), max_size=50),
    bits=st.integers(min_value=1, max_value=5000),
    hashes=st.integers(min_value=1, max_value=12),
)
def test_the_bloom_filter_has_no_false_negatives(users, others, bits, hashes):
    bloom = BloomBits(bits, hashes)
    for user in users:
        assert all(0 <= p < bits for p in positions(user, bits, hashes))
    bloom.add(users)
    assert all(bloom.might_hold(user) for user in users)
    # Adding more only ever turns answers to "maybe".
    before = {user: bloom.might_hold(user) for user in others}
    bloom.add(others[: len(others) // 2])
    assert all(bloom.might_hold(user) for user in others if before[user])
    assert all(bloom.might_hold(user) for user in others[: len(others) // 2])


async def test_lua_sets_the_bits_python_computes():
    """The Redis scripts and bff.gate.holders agree on every position."""
    await mariadb_settings(base_settings())  # skips or fails like the MariaDB half
    gate = RedisGate.from_settings(RedisSettings(url=REDIS_URL, socket_timeout_seconds=10))
    try:
        bits, hashes = 997, 4
        assert await gate.holders_start(KEY, "t" * 15, bits, hashes, 60)
        users = [f"user-{n}" for n in range(50)] + ["用户", "a b", ""]
        await gate.holders_add(KEY, users)
        raw = (await gate.client.get(KEY))[HEADER_BYTES:]
        redis_bits = {
            i for i in range(len(raw) * 8) if raw[i // 8] & (0x80 >> (i % 8))
        }  # SETBIT counts from each byte's most significant bit
        assert redis_bits == {p for u in users for p in positions(u, bits, hashes)}
        assert await gate.holders_state(KEY) == "B"
        assert not await gate.holders_mark(KEY, "u" * 15, "V", 60)  # not the builder
        assert await gate.holders_mark(KEY, "t" * 15, "V", 60)
        assert await gate.holders_state(KEY) == "V"
        assert not await gate.holders_start(KEY, "t" * 15, bits, hashes, 60)
    finally:
        await gate.flush()
        await gate.close()
