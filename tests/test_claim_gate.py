"""The claim gate's fast answers: sold-out claims refused without the database, in order.

A process that saw a template sell out refuses later claims in the one gate call
a claim makes anyway, using the user's facts that the ledger wrote under the
user's wallet lock. These tests check that it does so (no SQL statement runs),
and that it never does so where DOMAIN.md's order or a replay says otherwise:
a user at the limit or with a full wallet, a retry of a claim that succeeded,
a request id used for another claim, a returned coupon, facts lost in a flush.
The twins (Redis and in-process) are also checked against each other directly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from datetime import timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from bff import idempotency
from bff.auth import Role, TokenCodec
from bff.clock import ManualClock
from bff.gate.base import ClaimFacts, FactsCheck, Gate
from bff.gate.memory import MemoryGate
from bff.gate.redis import RedisGate
from bff.idempotency import Reply, run_once
from bff.keys import GATE, HOLDERS
from config.loader import RedisSettings
from tests.conftest import REDIS_URL, base_settings, expect, mariadb_settings, template_body
from tests.helpers import (
    STEADY,
    cancel_order,
    claim,
    claim_ok,
    code_of,
    confirm_order,
    create_template,
    items,
    new_request_id,
    put_product,
    redeem_ok,
    shop_url,
    sold_out_template,
    statements,
    two_instances,
)


# --- the fast path ---------------------------------------------------------------------------
async def test_a_known_user_is_refused_sold_out_without_the_database(steady, clock, merchant, auth):
    template = await sold_out_template(steady, clock, merchant, auth)
    newcomer = auth("user", sub="newcomer")
    with statements(steady) as first_try:
        assert await code_of(steady, newcomer, template["id"]) == "SOLD_OUT"
    assert first_try, "a user the gate knows nothing of is decided by the database"
    await steady.app[HOLDERS].idle()  # the holders filter that first try asked for
    with statements(steady) as later:
        for _ in range(5):
            assert await code_of(steady, newcomer, template["id"]) == "SOLD_OUT"
    assert later == [], later


async def test_over_the_rate_limit_a_known_user_is_refused_without_the_database(
    client_with, clock, merchant, auth
):
    client = await client_with(claim=STEADY, risk={"user_claims_per_minute": 2})
    template = await create_template(
        client, clock, merchant, stock={"type": "unlimited"}, per_user_limit=10
    )
    user = auth("user", sub="eager")
    first = await expect(
        await claim(client, user, template["id"], request_id="r-1"), HTTPStatus.CREATED
    )
    assert await code_of(client, user, template["id"]) == "201"  # the limit (2) reached
    with statements(client) as seen:
        for _ in range(5):
            assert await code_of(client, user, template["id"]) == "RATE_LIMITED"
    assert seen == [], seen
    # A retry of the first claim whose reply the gate no longer holds is still replayed:
    # the user's facts hold its coupon, so the database is asked.
    await client.app[GATE].drop_marks(["idem:{s1:eager}:c:r-1"])
    with statements(client) as seen:
        again = await expect(
            await claim(client, user, template["id"], request_id="r-1"), HTTPStatus.CREATED
        )
    assert seen, "a possible retry is looked for in the database"
    assert again["replayed"] is True and again["coupon"] == first["coupon"]


async def test_workers_with_gates_of_their_own_replay_each_others_claims(
    aiohttp_client, make_app, settings, clock, merchant, auth
):
    """BFF_WORKERS=2 without Redis: a worker's facts miss the other worker's claims."""
    workers = settings.replace(
        redis=dataclasses.replace(settings.redis, url=""),
        server=dataclasses.replace(settings.server, workers=2),
        risk=dataclasses.replace(settings.risk, user_claims_per_minute=1),
    )
    first = await aiohttp_client(make_app(settings=workers))
    second = await aiohttp_client(make_app(settings=workers))
    template = await create_template(
        first, clock, merchant, stock={"type": "unlimited"}, per_user_limit=10
    )
    user = auth("user", sub="roamer")
    await claim_ok(second, user, template["id"])  # the second worker's facts: this coupon
    done = await expect(
        await claim(first, user, template["id"], request_id="r-1"), HTTPStatus.CREATED
    )
    # A retry of r-1 reaches the second worker, over its limit: replayed, not refused.
    again = await expect(
        await claim(second, user, template["id"], request_id="r-1"), HTTPStatus.CREATED
    )
    assert again["replayed"] is True and again["coupon"] == done["coupon"]
    assert await code_of(second, user, template["id"]) == "RATE_LIMITED"


async def test_daily_sold_out_is_answered_fast_and_ends_with_the_shop_day(
    steady, clock, merchant, auth
):
    template = await create_template(steady, clock, merchant, daily_limit=1)
    await claim_ok(steady, auth("user", sub="first"), template["id"])
    late = auth("user", sub="late")
    assert await code_of(steady, late, template["id"]) == "DAILY_SOLD_OUT"
    await steady.app[HOLDERS].idle()  # the holders filter that claim asked for
    with statements(steady) as seen:
        assert await code_of(steady, late, template["id"]) == "DAILY_SOLD_OUT"
    assert seen == []
    clock.advance(timedelta(hours=12))  # midnight in Shanghai: a new shop day
    assert await code_of(steady, auth("user", sub="late"), template["id"]) == "201"


async def test_the_limit_and_the_wallet_cap_still_come_before_stock(
    client_with, clock, merchant, auth
):
    client = await client_with(claim=STEADY, wallet={"max_unused_per_shop": 2})
    others = [await create_template(client, clock, merchant) for _ in range(2)]
    template = await sold_out_template(client, clock, merchant, auth)
    full = auth("user", sub="full")
    for other in others:
        await claim_ok(client, full, other["id"])
    holder = auth("user", sub="first")
    for _ in range(3):  # the first try writes their facts; later ones read them
        assert await code_of(client, full, template["id"]) == "WALLET_FULL"
        assert await code_of(client, holder, template["id"]) == "LIMIT_REACHED"


async def test_a_retry_of_a_claim_that_succeeded_is_replayed_after_the_gate_lost_it(
    client_with, clock, merchant, auth
):
    client = await client_with(claim=STEADY)
    template = await create_template(
        client, clock, merchant, stock={"type": "limited", "total": 2}, per_user_limit=2
    )
    user = auth("user", sub="retrier")
    request_id = new_request_id()
    coupon = await claim_ok(client, user, template["id"], request_id=request_id)
    await claim_ok(client, auth("user", sub="other"), template["id"])
    await client.app[GATE].flush()  # the reply kept for request_id is gone
    # Another claim rebuilds this user's facts (from the database, under their lock).
    assert await code_of(client, user, template["id"]) == "SOLD_OUT"
    await client.app[HOLDERS].idle()  # the holders filter that claim asked for
    with statements(client) as seen:
        assert await code_of(client, user, template["id"]) == "SOLD_OUT"
    assert seen == []
    # The retry is not refused from the facts: they hold its request key.
    response = await claim(client, user, template["id"], request_id)
    body = await expect(response, HTTPStatus.CREATED)
    assert body["replayed"] is True and body["coupon"]["coupon_id"] == coupon["coupon_id"]
    # Rebuilt from the ledger's row, the reply is the first one to the byte (the first was
    # made from the values the batch wrote, not read back: bff.coupons.ledger._as_read).
    assert body["coupon"] == coupon


async def test_a_request_id_used_for_another_claim_conflicts_on_a_sold_out_template(
    client_with, clock, merchant, auth
):
    client = await client_with(claim=STEADY)
    plenty = await create_template(client, clock, merchant)
    template = await sold_out_template(client, clock, merchant, auth)
    user = auth("user", sub="reuser")
    request_id = new_request_id()
    await claim_ok(client, user, plenty["id"], request_id=request_id)
    await client.app[GATE].flush()
    assert await code_of(client, user, template["id"]) == "SOLD_OUT"  # facts rebuilt
    code = await code_of(client, user, template["id"], request_id=request_id)
    assert code == "IDEMPOTENCY_CONFLICT"


async def test_a_used_coupon_that_may_come_back_keeps_the_wallet_cap_first(
    client_with, clock, merchant, auth
):
    """A cancel can return a used coupon without the user's lock: the facts count it."""
    client = await client_with(claim=STEADY, wallet={"max_unused_per_shop": 2})
    service = auth("service", shop="s1", sub="order-system")
    await put_product(client, merchant, "p1", 30000)
    first, second = [await create_template(client, clock, merchant) for _ in range(2)]
    user = auth("user", sub="shopper")
    used = await claim_ok(client, user, first["id"])
    await claim_ok(client, user, second["id"])
    await redeem_ok(client, service, "o1", "shopper", items(("p1", 1)), [used["coupon_id"]])
    await expect(await confirm_order(client, service, "o1"), HTTPStatus.OK)
    template = await sold_out_template(client, clock, merchant, auth)
    # One unused coupon of two: stock decides, but the database decides it, every time,
    # since the used one may come back.
    for _ in range(2):
        with statements(client) as seen:
            assert await code_of(client, user, template["id"]) == "SOLD_OUT"
        assert seen
    back = await expect(await cancel_order(client, service, "o1"), HTTPStatus.OK)
    assert back["returned"] == [used["coupon_id"]], back
    # The return filled the wallet again: its cap comes before stock.
    assert await code_of(client, user, template["id"]) == "WALLET_FULL"


async def test_stock_added_makes_a_known_sold_out_template_claimable_at_once(
    steady, clock, merchant, auth
):
    template = await sold_out_template(steady, clock, merchant, auth)
    user = auth("user", sub="patient")
    assert await code_of(steady, user, template["id"]) == "SOLD_OUT"
    assert await code_of(steady, user, template["id"]) == "SOLD_OUT"
    response = await steady.patch(
        shop_url(f"/admin/coupon-templates/{template['id']}"),
        json={"stock": {"type": "limited", "total": 2}},
        headers=merchant,
    )
    await expect(response, HTTPStatus.OK)
    assert await code_of(steady, user, template["id"]) == "201"
    assert await code_of(steady, auth("user", sub="late"), template["id"]) == "SOLD_OUT"


async def test_imported_codes_make_a_known_sold_out_template_claimable_at_once(
    steady, clock, merchant, auth
):
    body = {k: v for k, v in template_body(clock, codes={"type": "imported"}).items()}
    del body["stock"]  # with codes, the stock is the codes
    response = await steady.post(shop_url("/admin/coupon-templates"), json=body, headers=merchant)
    template = await expect(response, HTTPStatus.CREATED)
    response = await steady.post(
        shop_url(f"/admin/coupon-templates/{template['id']}/codes/import"),
        data=code_form("CODE-1\n"),
        headers=merchant,
    )
    await expect(response, HTTPStatus.CREATED)
    await claim_ok(steady, auth("user", sub="first"), template["id"])
    user = auth("user", sub="patient")
    assert await code_of(steady, user, template["id"]) == "SOLD_OUT"
    assert await code_of(steady, user, template["id"]) == "SOLD_OUT"  # from the gate now
    response = await steady.post(
        shop_url(f"/admin/coupon-templates/{template['id']}/codes/import"),
        data=code_form("CODE-2\n"),
        headers=merchant,
    )
    await expect(response, HTTPStatus.CREATED)
    assert await code_of(steady, user, template["id"]) == "201"


def code_form(text: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", text.encode(), filename="codes.txt", content_type="text/plain")
    return form


async def test_a_sold_out_storm_of_known_users_stays_exact(steady, clock, merchant, auth):
    template = await create_template(steady, clock, merchant, stock={"type": "limited", "total": 5})
    users = [auth("user", sub=f"s{n}") for n in range(40)]
    first = await asyncio.gather(*(code_of(steady, user, template["id"]) for user in users))
    assert sorted(first).count("201") == 5 and first.count("SOLD_OUT") == 35, first
    again = await asyncio.gather(*(code_of(steady, user, template["id"]) for user in users))
    assert again.count("LIMIT_REACHED") == 5 and again.count("SOLD_OUT") == 35, again
    stored = await expect(
        await steady.get(shop_url(f"/admin/coupon-templates/{template['id']}"), headers=merchant),
        HTTPStatus.OK,
    )
    assert (stored["issued"], stored["remaining"]) == (5, 0)


# --- two processes on one MariaDB + Redis ----------------------------------------------------
@pytest.fixture
async def two(
    aiohttp_client: Callable[..., Any], clock: ManualClock, tmp_path: Path
) -> tuple[TestClient, TestClient, Callable[..., dict[str, str]]]:
    """Two app instances (process-equivalents) on the shared MariaDB + Redis."""
    settings = await mariadb_settings(base_settings())
    settings = settings.replace(claim=dataclasses.replace(settings.claim, **STEADY))
    codec = TokenCodec(settings.jwt, clock)

    def bearer(sub: str, role: str = "user", shop: str | None = None) -> dict[str, str]:
        token, _ = codec.mint(sub, Role(role), shop)
        return {"Authorization": f"Bearer {token}"}

    first, second = await two_instances(aiohttp_client, settings, clock, tmp_path)
    return first, second, bearer


async def test_another_process_learns_sold_out_from_the_gate(two, clock):
    first, second, bearer = two
    merchant = bearer("m1", "merchant", "s1")
    plenty = await create_template(first, clock, merchant)
    template = await sold_out_template(first, clock, merchant, lambda _r, sub: bearer(sub))
    user = bearer("known")
    await claim_ok(second, user, plenty["id"])  # the user's facts are in the gate now
    await code_of(second, user, template["id"])  # the second process reads the template
    await second.app[HOLDERS].idle()  # a holders filter a claim asked for
    with statements(second) as seen:
        assert await code_of(second, user, template["id"]) == "SOLD_OUT"
    assert seen == [], "the second process knew it from the gate's flag"
    response = await first.patch(
        shop_url(f"/admin/coupon-templates/{template['id']}"),
        json={"stock": {"type": "limited", "total": 2}},
        headers=merchant,
    )
    await expect(response, HTTPStatus.OK)
    # The gate's flag is gone with the change, so no process can learn it again ...
    marks = await first.app[GATE].read_marks([f"so:{{tpl:{template['id']}}}"])
    assert marks == [None]
    # ... and the first process tells the second (pub/sub): its flag and cached row go.
    for _ in range(100):
        code = await code_of(second, user, template["id"])
        if code != "SOLD_OUT":
            break
        await asyncio.sleep(0.02)
    assert code == "201"


# --- the twins -------------------------------------------------------------------------------
@pytest.fixture(params=["memory", "redis"])
async def gate(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        twin: Gate = MemoryGate()
    else:
        await mariadb_settings(base_settings())  # skips or fails like the MariaDB half
        twin = RedisGate.from_settings(RedisSettings(url=REDIS_URL, socket_timeout_seconds=10))
    try:
        yield twin
    finally:
        await twin.close()


CHECK = FactsCheck("uf:{s1:u1}", "c:u1:r1", 7, per_user_limit=2, wallet_cap=3)


async def begin(
    gate: Gate, request: str = "r1", check: FactsCheck | None = CHECK, limit: int = 100
) -> str:
    rate = ("rl:{s1:u1}:claims:0", limit, 60)
    state = await gate.claim_begin(f"idem:{{s1:u1}}:c:{request}", "h1", 30, rate, check)
    return state.state


async def test_twins_refuse_only_with_facts_that_allow_it(gate):
    assert await begin(gate, "a") == "new"  # no facts: not refused
    await gate.idem_abort("idem:{s1:u1}:c:a")
    for facts, expected in [
        (ClaimFacts(wallet=2, held={7: 1}, claim_keys={}), "refused"),
        (ClaimFacts(wallet=3, held={}, claim_keys={}), "new"),  # wallet full
        (ClaimFacts(wallet=0, held={7: 2}, claim_keys={}), "new"),  # at the limit
        (ClaimFacts(wallet=0, held={}, claim_keys={"c:u1:r1": "h1"}), "new"),  # a retry
    ]:
        await gate.put_facts("uf:{s1:u1}", facts, 60)
        await gate.idem_abort("idem:{s1:u1}:c:b")
        assert await begin(gate, "b") == expected, facts
        await gate.idem_abort("idem:{s1:u1}:c:b")


async def test_twins_count_the_rate_limit_after_idempotency(gate):
    await gate.put_facts("uf:{s1:u1}", ClaimFacts(0, {}, {}), 60)
    assert await begin(gate, "x", check=None, limit=3) == "new"
    assert await begin(gate, "x", check=None, limit=3) == "pending"  # a copy: not counted
    await gate.idem_finish("idem:{s1:u1}:c:x", "h1", b"{}", 60)
    assert await begin(gate, "x", check=None, limit=3) == "done"
    assert await begin(gate, "y", limit=3) == "refused"
    assert await begin(gate, "z", limit=3) == "refused"
    # the fourth counted claim of three, and the facts hold no coupon under its key
    assert await begin(gate, "w", limit=3) == "limited_new"
    assert await gate.read_marks(["so:{tpl:7}", "ds:{tpl:7}:d"]) == [None, None]
    await gate.mark("so:{tpl:7}", "10", 60)
    assert await gate.read_marks(["so:{tpl:7}", "ds:{tpl:7}:d"]) == ["10", None]
    assert await begin(gate, "v", check=None, limit=3) == "limited"


async def test_twins_tell_a_new_claim_over_the_limit_from_a_possible_retry(gate):
    fresh = dataclasses.replace(CHECK, sold_out=False)
    assert await begin(gate, "a", check=fresh, limit=1) == "new"
    assert await begin(gate, "b", check=fresh, limit=1) == "limited"  # no facts: maybe a retry
    await gate.put_facts("uf:{s1:u1}", ClaimFacts(1, {7: 1}, {"c:u1:r1": "h1"}), 60)
    other = dataclasses.replace(fresh, request_key="c:u1:c")
    assert await begin(gate, "c", check=other, limit=1) == "limited_new"
    assert await begin(gate, "r1", check=fresh, limit=1) == "limited"  # its coupon is there
    assert await begin(gate, "d", check=None, limit=1) == "limited"  # no facts asked for


async def test_twins_refuse_sold_out_only_when_asked(gate):
    await gate.put_facts("uf:{s1:u1}", ClaimFacts(0, {}, {}), 60)
    assert await begin(gate, "a", check=dataclasses.replace(CHECK, sold_out=False)) == "new"
    assert await begin(gate, "b") == "refused"


# --- pending markers: renewed while their work runs, lapsing soon after a runner died -----
@pytest.fixture
def short_markers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Markers of 1 s renewed every 0.2 s, so the test needs no 6 s waits."""
    monkeypatch.setattr(idempotency, "PENDING_SECONDS", 1)
    monkeypatch.setattr(idempotency, "RENEW_SECONDS", 0.2)


async def test_a_slow_runner_keeps_its_request_id_past_the_marker_expiry(gate, short_markers):
    runs = []

    async def work() -> Reply:
        runs.append(1)
        await asyncio.sleep(1.6)  # longer than a marker lives without renewal
        return Reply(HTTPStatus.CREATED, {"ok": True})

    first = asyncio.ensure_future(run_once(gate, "idem:{s1:u1}:slow", "h", work, ttl_seconds=60))
    await asyncio.sleep(1.3)
    copy = await run_once(gate, "idem:{s1:u1}:slow", "h", work, ttl_seconds=60)
    assert (await first).replayed is False and copy.replayed is True
    assert runs == [1]
    await idempotency.stop_renewing(gate)


async def test_a_dead_runners_marker_lapses_and_a_retry_runs(gate, short_markers):
    # A worker took the request id and died: nobody renews its marker.
    assert (await gate.idem_begin("idem:{s1:u1}:dead", "h", 1)).state == "new"

    async def work() -> Reply:
        return Reply(HTTPStatus.CREATED, {"ok": True})

    started = time.monotonic()
    reply = await run_once(gate, "idem:{s1:u1}:dead", "h", work, ttl_seconds=60)
    assert reply.replayed is False and time.monotonic() - started < 3
    await idempotency.stop_renewing(gate)
