"""Coupon events (issue 20): the outbox, the relay to a real RabbitMQ, the pull feed.

Every test runs on both backends. The broker tests consume from a queue of their own
bound to an exchange of their own (a random name, deleted afterwards); they skip, or
fail in CI, when RabbitMQ does not answer (``BFF_TEST_AMQP_URL``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from bff.app import create_app
from bff.clock import ManualClock
from bff.db import tables
from bff.events import outbox
from bff.events.relay import Relay, relay_until
from bff.keys import DB
from bff.metrics import Metrics
from config.loader import Settings
from tests.conftest import IN_CI, expect, template_body
from tests.helpers import (
    cancel_order,
    claim,
    claim_ok,
    confirm_order,
    items,
    json_log_lines,
    new_request_id,
    put_product,
    redeem_ok,
    shop_url,
    statements,
    template_url,
    when,
)
from tests.proxy import TcpProxy

AMQP_URL = os.environ.get("BFF_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
E = tables.coupon_events
# The feed serves an event once it is older than twice the write deadline plus 2 s (the
# tests' deadline is 20 s, tests/conftest.py) or events.feed_settle_seconds if longer.
SETTLE = timedelta(seconds=43)
WAIT_SECONDS = 60.0
POINTS_55 = {"type": "threshold", "amount_off": 5500, "threshold": 29900}

Auth = Callable[..., dict[str, str]]


# --- the broker side -------------------------------------------------------------------------
class Consumer:
    """A queue bound to the test's exchange (every routing key), collecting what arrives."""

    def __init__(self, exchange: str) -> None:
        self.exchange_name = exchange
        self.messages: list[aio_pika.abc.AbstractIncomingMessage] = []
        self.bodies: list[dict[str, Any]] = []
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None

    async def start(self) -> None:
        self._connection = await aio_pika.connect(AMQP_URL, timeout=5)
        channel = await self._connection.channel()
        # The relay declares it the same way (durable topic); whoever comes first creates it.
        self._exchange = await channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(self._exchange, "#")
        await queue.consume(self._receive)

    async def _receive(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            self.messages.append(message)
            self.bodies.append(_json(message.body))

    async def close(self) -> None:
        if self._exchange is not None:
            await self._exchange.delete()
        if self._connection is not None:
            await self._connection.close()

    def types(self) -> Counter[str]:
        return Counter(body["type"] for body in self.bodies)

    async def wait_for(self, done: Callable[[Consumer], bool], what: str) -> None:
        """Until ``done(self)``; a failure naming ``what`` if it never happens."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + WAIT_SECONDS
        while not done(self):
            if loop.time() > give_up:
                pytest.fail(f"never consumed {what}; got {dict(self.types())}")
            await asyncio.sleep(0.02)


def _json(body: bytes) -> dict[str, Any]:
    value = json.loads(body)
    assert isinstance(value, dict)
    return value


async def _broker_problem() -> str | None:
    try:
        connection = await aio_pika.connect(AMQP_URL, timeout=3)
    except Exception as exc:
        return f"RabbitMQ not reachable at {AMQP_URL} ({type(exc).__name__}: {exc})"
    await connection.close()
    return None


@pytest.fixture
async def exchange() -> str:
    problem = await _broker_problem()
    if problem is not None:
        if IN_CI:
            pytest.fail(problem)
        pytest.skip(problem + "; start it with `rabbitmq-server -detached`")
    return f"test-events-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def consumer(exchange: str) -> AsyncIterator[Consumer]:
    bound = Consumer(exchange)
    await bound.start()  # before any relay publishes: an unbound event is dropped
    try:
        yield bound
    finally:
        await bound.close()


def relay_settings(
    settings: Settings, exchange: str, url: str = AMQP_URL, **extra: Any
) -> Settings:
    """``settings`` with the relay on, polling fast, backing off briefly (tests only)."""
    events = dataclasses.replace(
        settings.events,
        amqp_url=url,
        exchange=exchange,
        poll_seconds=0.02,
        metrics_seconds=0.05,
        prune_interval_seconds=0.05,
        backoff_max_seconds=0.2,
        publish_timeout_seconds=5.0,
        lease_seconds=30.0,
        **extra,
    )
    return settings.replace(events=events)


@pytest.fixture
async def relayed(
    aiohttp_client: Callable[..., Any],
    settings: Settings,
    clock: ManualClock,
    tmp_path: Path,
    exchange: str,
    consumer: Consumer,
) -> TestClient:
    """The app with its relay publishing to the test's exchange."""
    app = create_app(relay_settings(settings, exchange), clock=clock, base_dir=tmp_path)
    return await aiohttp_client(app)


# --- small helpers ---------------------------------------------------------------------------
async def new_template(
    client: TestClient,
    clock: ManualClock,
    merchant: dict[str, str],
    drop: tuple[str, ...] = (),
    **overrides: Any,
) -> int:
    body = template_body(clock, **overrides)
    for key in drop:
        body.pop(key)
    response = await client.post(shop_url("/admin/coupon-templates"), json=body, headers=merchant)
    return int((await expect(response, HTTPStatus.CREATED))["id"])


async def feed(
    client: TestClient, merchant: dict[str, str], shop: str = "s1", **params: str
) -> dict[str, Any]:
    response = await client.get(shop_url("/admin/events", shop), params=params, headers=merchant)
    return await expect(response, HTTPStatus.OK)


async def outbox_count(client: TestClient, event_type: str | None = None) -> int:
    query = select(func.count()).select_from(E)
    if event_type is not None:
        query = query.where(E.c.type == event_type)

    async def read(conn: Any) -> int:
        return int(await conn.scalar(query) or 0)

    return await client.app[DB].read(read)


async def unpublished(client: TestClient) -> int:
    async def read(conn: Any) -> int:
        query = select(func.count()).select_from(E).where(E.c.published_at.is_(None))
        return int(await conn.scalar(query) or 0)

    return await client.app[DB].read(read)


async def eventually(check: Callable[[], Any], what: str) -> None:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + WAIT_SECONDS
    while not await check():
        if loop.time() > give_up:
            pytest.fail(f"never: {what}")
        await asyncio.sleep(0.02)


def by_type(bodies: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    return [body for body in bodies if body["type"] == event_type]


# --- every event type ------------------------------------------------------------------------
async def test_every_event_type_is_published_and_in_the_feed(
    relayed: TestClient,
    consumer: Consumer,
    clock: ManualClock,
    merchant: dict[str, str],
    auth: Auth,
) -> None:
    client = relayed
    u1, service = auth("user", sub="u1"), auth("service", shop="s1", sub="orders")
    t_widget = await new_template(client, clock, merchant)
    t_last = await new_template(client, clock, merchant, stock={"type": "limited", "total": 1})
    t_auto = await new_template(client, clock, merchant, claim_methods=["auto"])
    t_code = await new_template(
        client, clock, merchant, drop=("stock",), codes={"type": "imported"}, claim_methods=["code"]
    )
    t_pack = await new_template(client, clock, merchant, claim_methods=["gift_pack"])
    t_points = await new_template(
        client, clock, merchant, benefit=POINTS_55, claim_methods=["points"]
    )
    await put_product(client, merchant, "p1", 50000, auto_claim_template_ids=[t_auto])
    form = aiohttp.FormData()
    form.add_field("file", b"EVT-CODE-1\n", filename="codes.txt", content_type="text/plain")
    response = await client.post(template_url(t_code, "/codes/import"), data=form, headers=merchant)
    await expect(response, HTTPStatus.CREATED)
    now = clock.now()
    pack_body = {
        "kind": "new_member",
        "name": "新会员礼包",
        "starts_at": (now - timedelta(hours=1)).isoformat(),
        "ends_at": (now + timedelta(days=10)).isoformat(),
        "coupon_template_ids": [t_pack],
    }
    pack = await expect(
        await client.post(shop_url("/admin/gift-packs"), json=pack_body, headers=merchant),
        HTTPStatus.CREATED,
    )
    offer = await expect(
        await client.post(
            shop_url("/admin/exchange-offers"),
            json={"template_id": t_points, "points_cost": 300},
            headers=merchant,
        ),
        HTTPStatus.CREATED,
    )

    # Claims by every source; the last unit of t_last sells it out.
    widget_coupon = await claim_ok(client, u1, t_widget)
    await claim_ok(client, u1, t_last)
    body = {"request_id": new_request_id()}
    auto = await expect(
        await client.post(shop_url("/products/p1/auto-claim"), json=body, headers=u1),
        HTTPStatus.OK,
    )
    assert [c["template_id"] for c in auto["claimed"]] == [t_auto], auto
    body = {"code": "EVT-CODE-1", "request_id": new_request_id()}
    await expect(
        await client.post(shop_url("/coupons/claim-by-code"), json=body, headers=u1),
        HTTPStatus.CREATED,
    )
    await expect(
        await client.post(shop_url("/membership"), json={}, headers=u1), HTTPStatus.CREATED
    )
    body = {"request_id": new_request_id()}
    await expect(
        await client.post(shop_url(f"/gift-packs/{pack['id']}/claim"), json=body, headers=u1),
        HTTPStatus.CREATED,
    )
    body = {"delta": 500, "reason": "购物奖励", "request_id": new_request_id()}
    await expect(
        await client.post(shop_url("/admin/members/u1/points"), json=body, headers=merchant),
        HTTPStatus.OK,
    )
    body = {"request_id": new_request_id()}
    await expect(
        await client.post(
            shop_url(f"/points-exchange/{offer['id']}/redeem"), json=body, headers=u1
        ),
        HTTPStatus.CREATED,
    )
    # A grant: u2 gets one, u1 holds its limit already.
    grant_id = new_request_id()
    granted = await expect(
        await client.post(
            template_url(t_widget, "/grants"),
            json={"user_ids": ["u2", "u1"], "request_id": grant_id},
            headers=merchant,
        ),
        HTTPStatus.CREATED,
    )
    u2_coupon = granted["granted"][0]["coupon_id"]
    await expect(
        await client.post(shop_url(f"/admin/coupons/{u2_coupon}/revoke"), headers=merchant),
        HTTPStatus.OK,
    )
    # An order: locked, used, then cancelled after payment (the coupon comes back).
    widget_id = widget_coupon["coupon_id"]
    locked = await redeem_ok(client, service, "o1", "u1", items(("p1", 1)), [widget_id])
    await expect(await confirm_order(client, service, "o1"), HTTPStatus.OK)
    await expect(await cancel_order(client, service, "o1"), HTTPStatus.OK)
    # Another order whose lock lapses: found by the next write that touches it.
    auto_id = auto["claimed"][0]["coupon_id"]
    await redeem_ok(client, service, "o2", "u1", items(("p1", 1)), [auto_id])
    clock.advance(timedelta(minutes=31))
    service = auth("service", shop="s1", sub="orders")
    await expect(await confirm_order(client, service, "o2"), HTTPStatus.CONFLICT, "LOCK_EXPIRED")

    expected = {
        outbox.COUPON_CLAIMED: 7,
        outbox.TEMPLATE_SOLD_OUT: 2,  # t_last, and t_code with its one code
        outbox.GIFT_PACK_CLAIMED: 1,
        outbox.POINTS_CHANGED: 2,
        outbox.GRANT_FINISHED: 1,
        outbox.COUPON_REVOKED: 1,
        outbox.COUPON_LOCKED: 2,
        outbox.COUPON_USED: 1,
        outbox.COUPON_RETURNED: 1,
        outbox.COUPON_LOCK_LAPSED: 1,
    }
    total = sum(expected.values())
    await consumer.wait_for(lambda c: len(c.bodies) >= total, f"{total} events")
    assert consumer.types() == Counter(expected)
    # Only the reminders' two types (issue 20, part 2) are not produced yet.
    assert set(outbox.EVENT_TYPES) - set(expected) == {
        outbox.COUPON_EXPIRING,
        outbox.COUPON_EXPIRED,
    }
    bodies = consumer.bodies
    for message, body in zip(consumer.messages, bodies, strict=True):
        assert message.message_id == str(body["id"])
        assert message.routing_key == message.type == body["type"]
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.content_type == "application/json"
        assert body["shop_id"] == "s1" and body["schema_version"] == 1
    assert len({body["id"] for body in bodies}) == total

    sources = Counter(b["data"]["source"] for b in by_type(bodies, outbox.COUPON_CLAIMED))
    assert sources == Counter(
        {"widget": 2, "auto": 1, "code": 1, "gift_pack": 1, "points": 1, "grant": 1}
    )
    claimed = {b["data"]["coupon_id"]: b["data"] for b in by_type(bodies, outbox.COUPON_CLAIMED)}
    assert claimed[widget_id]["template_id"] == t_widget
    assert claimed[widget_id]["user_id"] == "u1"
    assert when(claimed[widget_id]["valid_to"]) == when(widget_coupon["valid_to"])
    code_claim = [d for d in claimed.values() if d["source"] == "code"]
    assert code_claim[0]["code"] == "EVT-CODE-1"
    sold_out = sorted(b["data"]["template_id"] for b in by_type(bodies, outbox.TEMPLATE_SOLD_OUT))
    assert sold_out == sorted([t_last, t_code])
    assert all(b["data"]["stock_total"] == 1 for b in by_type(bodies, outbox.TEMPLATE_SOLD_OUT))
    (finished,) = by_type(bodies, outbox.GRANT_FINISHED)
    assert finished["data"] == {
        "template_id": t_widget,
        "request_id": grant_id,
        "granted": 1,
        "failed": 1,
        "failed_by_code": {"LIMIT_REACHED": 1},
    }
    (revoked,) = by_type(bodies, outbox.COUPON_REVOKED)
    assert revoked["data"] == {"coupon_id": u2_coupon, "template_id": t_widget, "user_id": "u2"}
    points = sorted(by_type(bodies, outbox.POINTS_CHANGED), key=lambda b: b["id"])
    assert [(p["data"]["delta"], p["data"]["balance_after"]) for p in points] == [
        (500, 500),
        (-300, 200),
    ]
    (pack_event,) = by_type(bodies, outbox.GIFT_PACK_CLAIMED)
    assert pack_event["data"]["pack_id"] == pack["id"]
    assert [c["template_id"] for c in pack_event["data"]["coupons"]] == [t_pack]
    assert pack_event["data"]["gift"] is None
    discount = locked["coupons"][0]["discount"]
    order_events = {
        (b["type"], b["data"]["order_id"]): b["data"]
        for b in bodies
        if b["type"].startswith("coupon.") and "order_id" in b["data"]
    }
    base = {"template_id": t_widget, "user_id": "u1", "order_id": "o1", "coupon_id": widget_id}
    assert order_events[(outbox.COUPON_LOCKED, "o1")] == {**base, "discount": discount}
    assert order_events[(outbox.COUPON_USED, "o1")] == {**base, "discount": discount}
    assert order_events[(outbox.COUPON_RETURNED, "o1")] == {
        **base,
        "discount": discount,
        "outcome": "returned",
        "after_payment": True,
    }
    lapsed = order_events[(outbox.COUPON_LOCK_LAPSED, "o2")]
    assert (lapsed["coupon_id"], lapsed["outcome"]) == (auto_id, "returned")

    # The pull feed serves the same events, oldest first, once they are settled.
    clock.advance(SETTLE)
    merchant = auth("merchant", shop="s1", sub="m1")
    page = await feed(client, merchant, limit="100")
    assert page["next_cursor"] is None
    assert page["items"] == sorted(bodies, key=lambda b: b["id"])


async def test_a_rolled_back_change_publishes_nothing(
    relayed: TestClient,
    consumer: Consumer,
    clock: ManualClock,
    merchant: dict[str, str],
    auth: Auth,
) -> None:
    """An exchange short of points rolls back after the ledger wrote its coupon and event."""
    client, u1 = relayed, auth("user", sub="u1")
    t_points = await new_template(
        client, clock, merchant, benefit=POINTS_55, claim_methods=["points"]
    )
    offer = await expect(
        await client.post(
            shop_url("/admin/exchange-offers"),
            json={"template_id": t_points, "points_cost": 300},
            headers=merchant,
        ),
        HTTPStatus.CREATED,
    )
    await expect(
        await client.put(shop_url("/admin/members/u1"), json={"level": 0}, headers=merchant),
        HTTPStatus.OK,
    )
    body = {"request_id": new_request_id()}
    await expect(
        await client.post(
            shop_url(f"/points-exchange/{offer['id']}/redeem"), json=body, headers=u1
        ),
        HTTPStatus.CONFLICT,
        "INSUFFICIENT_POINTS",
    )
    # A later change that commits: once it is through, so would the rolled-back one be.
    body = {"delta": 5, "reason": "marker", "request_id": new_request_id()}
    await expect(
        await client.post(shop_url("/admin/members/u1/points"), json=body, headers=merchant),
        HTTPStatus.OK,
    )
    await consumer.wait_for(lambda c: c.types()[outbox.POINTS_CHANGED] == 1, "the marker")
    await eventually(lambda: _none_unpublished(client), "every event published")
    assert consumer.types() == Counter({outbox.POINTS_CHANGED: 1})
    assert await outbox_count(client) == 1
    clock.advance(SETTLE)
    assert [item["type"] for item in (await feed(client, merchant))["items"]] == [
        outbox.POINTS_CHANGED
    ]


async def _none_unpublished(client: TestClient) -> bool:
    return await unpublished(client) == 0


# --- the batch writes its events in one statement ------------------------------------------
async def test_a_claim_batch_writes_its_events_in_one_insert(
    client: TestClient, clock: ManualClock, merchant: dict[str, str], auth: Auth
) -> None:
    template = await new_template(client, clock, merchant)
    users = [auth("user", sub=f"u{i}") for i in range(40)]
    with statements(client) as seen:
        results = await asyncio.gather(*(claim(client, user, template) for user in users))
    assert all(r.status == HTTPStatus.CREATED for r in results)
    coupon_inserts = [s for s in seen if s.startswith("INSERT INTO coupons")]
    event_inserts = [s for s in seen if s.startswith("INSERT INTO coupon_events")]
    # One event insert per batch (as many as the coupon inserts), however many claims.
    assert 1 <= len(event_inserts) == len(coupon_inserts) < len(users)
    assert await outbox_count(client, outbox.COUPON_CLAIMED) == len(users)


# --- the feed --------------------------------------------------------------------------------
async def test_feed_pages_filters_and_waits_for_events_to_settle(
    client: TestClient, clock: ManualClock, merchant: dict[str, str], auth: Auth
) -> None:
    template = await new_template(client, clock, merchant, per_user_limit=5)
    for index in range(5):
        await claim_ok(client, auth("user", sub=f"u{index}"), template)
    body = {"delta": 10, "reason": "r", "request_id": new_request_id()}
    await client.put(shop_url("/admin/members/u9"), json={"level": 0}, headers=merchant)
    await expect(
        await client.post(shop_url("/admin/members/u9/points"), json=body, headers=merchant),
        HTTPStatus.OK,
    )
    # Not settled yet: nothing is served.
    assert await feed(client, merchant) == {"items": [], "next_cursor": None}
    clock.advance(SETTLE)
    merchant = auth("merchant", shop="s1", sub="m1")
    everything = (await feed(client, merchant))["items"]
    assert [e["type"] for e in everything] == [outbox.COUPON_CLAIMED] * 5 + [outbox.POINTS_CHANGED]
    ids = [e["id"] for e in everything]
    assert ids == sorted(ids)
    # Pages by cursor, then by after=<last id>.
    first = await feed(client, merchant, limit="2")
    assert [e["id"] for e in first["items"]] == ids[:2] and first["next_cursor"]
    second = await feed(client, merchant, limit="2", cursor=first["next_cursor"])
    assert [e["id"] for e in second["items"]] == ids[2:4]
    rest = await feed(client, merchant, after=str(ids[3]))
    assert [e["id"] for e in rest["items"]] == ids[4:] and rest["next_cursor"] is None
    only = await feed(client, merchant, types="points.changed, template.sold_out")
    assert [e["type"] for e in only["items"]] == [outbox.POINTS_CHANGED]
    assert (await feed(client, merchant, after=str(ids[-1])))["items"] == []
    # A new event waits until it settles, and the page stops before it.
    await claim_ok(client, auth("user", sub="u20"), template)
    assert (await feed(client, merchant, after=str(ids[-1])))["items"] == []
    # Another shop's merchant sees none of these.
    other = auth("merchant", shop="s2", sub="m2")
    assert (await feed(client, other, "s2"))["items"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"types": "coupon.claimed,coupon.exploded"}, "types"),
        ({"types": " , "}, "types"),
        ({"types": "coupon.claimed," * 40}, "types"),
        ({"after": "-1"}, "after"),
        ({"after": "1x"}, "after"),
        ({"limit": "101"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "eyJhZnRlciI6MX0", "after": "3"}, "cursor"),
    ],
)
async def test_feed_refuses_bad_queries(
    client: TestClient, merchant: dict[str, str], params: dict[str, str], field: str
) -> None:
    response = await client.get(shop_url("/admin/events"), params=params, headers=merchant)
    body = await expect(response, HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED")
    assert field in body["error"]["details"], body


async def test_feed_is_for_the_shops_merchant_only(client: TestClient, auth: Auth) -> None:
    for headers in (auth("user"), auth("service", shop="s1"), auth("merchant", shop="s2")):
        response = await client.get(shop_url("/admin/events"), headers=headers)
        await expect(response, HTTPStatus.FORBIDDEN, "FORBIDDEN")


async def test_outbox_is_pruned_after_the_retention_without_a_relay(
    client_with: Callable[..., Any], clock: ManualClock, merchant: dict[str, str], auth: Auth
) -> None:
    client = await client_with(events={"metrics_seconds": 0.02, "prune_interval_seconds": 0.02})
    template = await new_template(client, clock, merchant)
    await claim_ok(client, auth("user", sub="u1"), template)
    assert await outbox_count(client) == 1
    clock.advance(timedelta(days=7, seconds=1))

    async def gone() -> bool:
        return await outbox_count(client) == 0

    await eventually(gone, "the old event pruned")

    async def shown() -> bool:
        metrics = await (await client.get("/metrics")).text()
        return "bff_events_outbox_rows 0.0" in metrics

    await eventually(shown, "the outbox's size in /metrics")
    metrics = await (await client.get("/metrics")).text()
    assert "bff_events_outbox_pruned_total 1.0" in metrics


# --- the relay under trouble -----------------------------------------------------------------
async def test_a_broker_cut_loses_nothing(
    caplog: pytest.LogCaptureFixture,
    aiohttp_client: Callable[..., Any],
    settings: Settings,
    clock: ManualClock,
    tmp_path: Path,
    exchange: str,
    consumer: Consumer,
    merchant: dict[str, str],
    auth: Auth,
) -> None:
    proxy = TcpProxy("127.0.0.1", 5672)
    await proxy.start()
    url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
    caplog.set_level(logging.INFO)  # production's level, every logger (aiormq's too)
    with json_log_lines("bff.events.relay") as logged:
        await _cut_and_heal(
            aiohttp_client,
            settings,
            clock,
            tmp_path,
            exchange,
            consumer,
            merchant,
            auth,
            proxy,
            url,
        )
    assert any(line["msg"].startswith("event relay round failed") for line in logged)
    assert any("guest:***@" in json.dumps(line) for line in logged)
    # No password reaches a log, ours or the libraries'.
    assert not any("guest:guest" in json.dumps(line) for line in logged)
    assert "guest:guest" not in caplog.text


async def _cut_and_heal(
    aiohttp_client: Callable[..., Any],
    settings: Settings,
    clock: ManualClock,
    tmp_path: Path,
    exchange: str,
    consumer: Consumer,
    merchant: dict[str, str],
    auth: Auth,
    proxy: TcpProxy,
    url: str,
) -> None:
    try:
        client = await aiohttp_client(
            create_app(relay_settings(settings, exchange, url), clock=clock, base_dir=tmp_path)
        )
        template = await new_template(client, clock, merchant, per_user_limit=100)
        user = auth("user", sub="u1")
        await claim_ok(client, user, template)
        await consumer.wait_for(lambda c: len(c.bodies) == 1, "the first event")
        await proxy.stop()  # the broker is gone; claims go on
        for _ in range(30):
            await claim_ok(client, user, template)
        await expect(await client.get("/readyz"), HTTPStatus.OK)  # serving needs no broker

        clock.advance(timedelta(seconds=5))  # the oldest unpublished event is 5 s old

        async def lag_shown() -> bool:
            text = await (await client.get("/metrics")).text()
            return (
                "bff_events_outbox_unpublished 30.0" in text
                and "bff_events_outbox_lag_seconds 5.0" in text
            )

        await eventually(lag_shown, "the unpublished events in /metrics")
        assert len(consumer.bodies) == 1
        await proxy.start()  # the same port: the relay reconnects by itself
        await consumer.wait_for(lambda c: len(c.bodies) == 31, "every event after the cut")
        assert len({body["id"] for body in consumer.bodies}) == 31
        await eventually(lambda: _none_unpublished(client), "every row marked published")
        metrics = await (await client.get("/metrics")).text()
        assert "bff_events_relay_failures_total" in metrics
    finally:
        await proxy.stop()


async def test_two_relays_publish_each_event_once(
    aiohttp_client: Callable[..., Any],
    settings: Settings,
    clock: ManualClock,
    tmp_path: Path,
    exchange: str,
    consumer: Consumer,
    merchant: dict[str, str],
    auth: Auth,
) -> None:
    relaying = relay_settings(settings, exchange, batch_size=20)
    first = await aiohttp_client(create_app(relaying, clock=clock, base_dir=tmp_path))
    second = await aiohttp_client(create_app(relaying, clock=clock, base_dir=tmp_path))
    template = await new_template(first, clock, merchant, stock={"type": "unlimited"})
    users = [auth("user", sub=f"u{i}") for i in range(300)]
    results = await asyncio.gather(
        *(claim((first, second)[i % 2], user, template) for i, user in enumerate(users))
    )
    assert all(r.status == HTTPStatus.CREATED for r in results)
    await consumer.wait_for(lambda c: len(c.bodies) >= 300, "300 events")
    await eventually(lambda: _none_unpublished(first), "every row marked published")
    ids = Counter(body["id"] for body in consumer.bodies)
    assert len(ids) == 300 and set(ids.values()) == {1}
    confirmed = [await _confirmed(instance) for instance in (first, second)]
    assert sum(confirmed) == 300


async def _confirmed(client: TestClient) -> float:
    """The events this instance's relay published, from its /metrics."""
    text = await (await client.get("/metrics")).text()
    prefix = 'bff_events_deliveries_total{channel="amqp",result="confirmed"} '
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(lines[0].removeprefix(prefix)) if lines else 0.0


async def test_a_relay_crash_between_publish_and_mark_publishes_again(
    aiohttp_client: Callable[..., Any],
    settings: Settings,
    clock: ManualClock,
    tmp_path: Path,
    exchange: str,
    consumer: Consumer,
    merchant: dict[str, str],
    auth: Auth,
) -> None:
    """The only duplicates: what a crashed relay had published and not yet marked."""
    quiet = await aiohttp_client(create_app(settings, clock=clock, base_dir=tmp_path))  # no relay
    template = await new_template(quiet, clock, merchant, per_user_limit=20)
    for _ in range(10):
        await claim_ok(quiet, auth("user", sub="u1"), template)
    # A relay that claims 4 rows, publishes them, and dies before marking them.
    crashed = Relay(
        quiet.app[DB], clock, relay_settings(settings, exchange, batch_size=4).events, Metrics()
    )
    channel = await crashed._open()
    rows = await quiet.app[DB].transaction(lambda conn: crashed._claim(conn, "crashed:1"))
    await asyncio.gather(*(crashed._publish(channel, row) for row in rows))
    await crashed._close()
    await consumer.wait_for(lambda c: len(c.bodies) == 4, "the crashed relay's 4")
    # A live relay publishes the other 6 at once; the 4 once their lease ran out.
    live = await aiohttp_client(
        create_app(relay_settings(settings, exchange), clock=clock, base_dir=tmp_path)
    )
    await consumer.wait_for(lambda c: len(c.bodies) == 10, "the 6 unleased")
    assert await unpublished(live) == 4
    clock.advance(timedelta(seconds=31))
    await consumer.wait_for(lambda c: len(c.bodies) == 14, "the 4 again")
    ids = Counter(body["id"] for body in consumer.bodies)
    assert len(ids) == 10
    assert {i for i, n in ids.items() if n == 2} == {row.id for row in rows}
    await eventually(lambda: _none_unpublished(live), "every row marked published")


async def test_a_flash_claim_of_2000_coupons_gives_2000_claimed_events(
    relayed: TestClient,
    consumer: Consumer,
    clock: ManualClock,
    merchant: dict[str, str],
    auth: Auth,
) -> None:
    client = relayed
    template = await new_template(client, clock, merchant, stock={"type": "limited", "total": 2000})
    users = [auth("user", sub=f"f{i}") for i in range(2100)]
    results = await asyncio.gather(*(claim(client, user, template) for user in users))
    statuses = Counter(r.status for r in results)
    assert statuses == Counter({HTTPStatus.CREATED: 2000, HTTPStatus.CONFLICT: 100})
    await consumer.wait_for(
        lambda c: c.types()[outbox.COUPON_CLAIMED] >= 2000 and c.types()[outbox.TEMPLATE_SOLD_OUT],
        "2000 claims and the sell-out",
    )
    await eventually(lambda: _none_unpublished(client), "every row marked published")
    claimed = by_type(consumer.bodies, outbox.COUPON_CLAIMED)
    assert len(claimed) == 2000
    assert len({body["data"]["coupon_id"] for body in claimed}) == 2000
    assert consumer.types()[outbox.TEMPLATE_SOLD_OUT] == 1
    assert await outbox_count(client, outbox.COUPON_CLAIMED) == 2000


async def test_the_relay_can_run_in_a_process_of_its_own(
    aiohttp_client: Callable[..., Any],
    settings: Settings,
    clock: ManualClock,
    tmp_path: Path,
    exchange: str,
    consumer: Consumer,
    merchant: dict[str, str],
    auth: Auth,
) -> None:
    """relay_in_server off: the server only writes the outbox; ``coupon-bff relay`` publishes."""
    separate = relay_settings(settings, exchange, relay_in_server=False)
    client = await aiohttp_client(create_app(separate, clock=clock, base_dir=tmp_path))
    template = await new_template(client, clock, merchant, per_user_limit=5)
    for _ in range(5):
        await claim_ok(client, auth("user", sub="u1"), template)
    assert await unpublished(client) == 5 and consumer.bodies == []
    stop = asyncio.Event()
    task = asyncio.ensure_future(relay_until(stop, separate, clock))
    try:
        await consumer.wait_for(lambda c: len(c.bodies) == 5, "the 5 events")
        await eventually(lambda: _none_unpublished(client), "every row marked published")
    finally:
        stop.set()
        await task


def test_the_relay_command_needs_a_broker_url(capsys: pytest.CaptureFixture[str]) -> None:
    from bff.cli import EXIT_CONFIG, relay_events
    from tests.conftest import base_settings

    assert relay_events(base_settings()) == EXIT_CONFIG
    assert "BFF_EVENTS_AMQP_URL" in capsys.readouterr().err


async def test_concurrent_exchanges_write_one_event_pair_per_success(
    client: TestClient, clock: ManualClock, merchant: dict[str, str], auth: Auth
) -> None:
    """Many exchanges at once, some short of points: events for exactly the successes."""
    t_points = await new_template(
        client, clock, merchant, benefit=POINTS_55, claim_methods=["points"], per_user_limit=20
    )
    offer = await expect(
        await client.post(
            shop_url("/admin/exchange-offers"),
            json={"template_id": t_points, "points_cost": 300},
            headers=merchant,
        ),
        HTTPStatus.CREATED,
    )
    await client.put(shop_url("/admin/members/u1"), json={"level": 0}, headers=merchant)
    body = {"delta": 1000, "reason": "r", "request_id": new_request_id()}
    await expect(
        await client.post(shop_url("/admin/members/u1/points"), json=body, headers=merchant),
        HTTPStatus.OK,
    )
    user = auth("user", sub="u1")
    url = shop_url(f"/points-exchange/{offer['id']}/redeem")
    responses = await asyncio.gather(
        *(client.post(url, json={"request_id": new_request_id()}, headers=user) for _ in range(12))
    )
    statuses = Counter(r.status for r in responses)
    assert statuses == Counter({HTTPStatus.CREATED: 3, HTTPStatus.CONFLICT: 9}), statuses
    assert await outbox_count(client, outbox.COUPON_CLAIMED) == 3
    assert await outbox_count(client, outbox.POINTS_CHANGED) == 1 + 3  # the grant, 3 charges
    clock.advance(SETTLE)
    merchant = auth("merchant", shop="s1", sub="m1")
    events = (await feed(client, merchant, types="points.changed", limit="100"))["items"]
    assert sorted(e["data"]["balance_after"] for e in events) == [100, 400, 700, 1000]
