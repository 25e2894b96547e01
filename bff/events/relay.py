"""The relay: outbox rows to RabbitMQ, at least once, and the outbox's upkeep.

One relay task per process, only when ``events.amqp_url`` is set. A round:

1. make sure a channel with publisher confirms is open and the topic exchange
   (``events.exchange``, durable) declared; the broker down = no round, backoff;
2. claim up to ``events.batch_size`` unpublished rows in one short transaction: the
   rows nobody holds, oldest first, ``FOR UPDATE SKIP LOCKED`` on MariaDB (so two
   relays pick different rows without waiting for each other; SQLite's
   ``BEGIN IMMEDIATE`` serializes the claim) and a lease on each (``lease_until``,
   ``lease_owner``) that outlives the transaction, so no row is held by a lock while
   the broker is called;
3. publish them (persistent, routing key = type, message id = event id) and wait for
   the broker's confirms, within ``events.publish_timeout_seconds``;
4. mark the confirmed rows published; hand the others back (lease cleared) for the
   next round.

A relay that dies between 3 and 4 leaves its rows leased: once the lease runs out
another relay (or this one, restarted) publishes them again. That is the one way
an event is delivered twice; consumers dedupe by its id (docs/EVENTS.md). Nothing
is lost: a row leaves the unpublished set only after a confirm.

A broker that is down or stalls costs a backoff (doubling up to
``events.backoff_max_seconds``), never an HTTP request: serving does not need the
broker and /readyz does not ask it. /metrics shows the lag.

The upkeep (:class:`OutboxUpkeep`, every process, relay or not) refreshes the
outbox gauges and prunes rows past ``events.retention_days`` (published ones only
while a relay is configured; all of them otherwise, since nothing would ever
publish them).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import aiormq
from aiohttp import web
from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bff.clock import Clock, SystemClock
from bff.db import tables
from bff.db.engine import Database
from bff.db.migrations import migrate
from bff.events import outbox
from bff.metrics import Metrics
from config.loader import EventsSettings, Settings, redact_url

log = logging.getLogger("bff.events.relay")

E = tables.coupon_events
PERSISTENT = int(aio_pika.DeliveryMode.PERSISTENT)


class Relay:
    """Publishes the outbox to the broker; :meth:`start` it, :meth:`stop` it."""

    def __init__(
        self, db: Database, clock: Clock, settings: EventsSettings, metrics: Metrics
    ) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.metrics = metrics
        # Each round leases its rows under its own token (this relay's id and the round's
        # number), so settling a round touches its own rows and no other's.
        self.owner = uuid.uuid4().hex[:24]
        self._rounds = itertools.count(1)
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Let the round in flight finish (its confirms marked), then close."""
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(
                    asyncio.shield(self._task), self.settings.publish_timeout_seconds
                )
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        await self._close()

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                published = await self.round()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self.metrics.event_failures.inc()
                log.warning(
                    "event relay round failed; backing off",
                    extra={
                        "fields": {
                            "error": self._without_secret(f"{type(exc).__name__}: {exc}"),
                            "broker": redact_url(self.settings.amqp_url),
                            "failures": failures,
                        }
                    },
                )
                await self._close()
                await self._pause(self._backoff(failures))
                continue
            if published < self.settings.batch_size:
                await self._pause(self.settings.poll_seconds)

    def _without_secret(self, text: str) -> str:
        """An error's text with the broker's URL and password taken out, for the log."""
        url = self.settings.amqp_url
        text = text.replace(url, redact_url(url))
        password = urlsplit(url).password
        return text.replace(password, "***") if password else text

    def _backoff(self, failures: int) -> float:
        ceiling = min(self.settings.backoff_max_seconds, 0.1 * 2 ** min(failures, 20))
        return ceiling / 2 + random.random() * ceiling / 2  # jitter: relays do not march

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # --- one round ----------------------------------------------------------------------------
    async def round(self) -> int:
        """Publish one batch; the number of events the broker confirmed."""
        channel = await self._open()
        token = f"{self.owner}:{next(self._rounds)}"
        rows = await self.db.transaction(lambda conn: self._claim(conn, token))
        if not rows:
            return 0
        try:
            async with asyncio.timeout(self.settings.publish_timeout_seconds):
                outcomes = await asyncio.gather(
                    *(self._publish(channel, row) for row in rows), return_exceptions=True
                )
        except TimeoutError as exc:
            outcomes = [exc] * len(rows)
        confirmed = [row.id for row, o in zip(rows, outcomes, strict=True) if o is None]
        refused = [row.id for row, o in zip(rows, outcomes, strict=True) if o is not None]
        await self.db.transaction(lambda conn: self._settle(conn, token, confirmed, refused))
        self.metrics.event_deliveries.labels("amqp", "confirmed").inc(len(confirmed))
        self.metrics.event_deliveries.labels("amqp", "failed").inc(len(refused))
        if refused:
            first = next(o for o in outcomes if o is not None)
            raise RuntimeError(f"{len(refused)} events not confirmed: {first!r}")
        return len(confirmed)

    async def _open(self) -> aiormq.abc.AbstractChannel:
        """A channel with publisher confirms, the exchange declared: the one kept, or anew."""
        if self._channel is not None and self._connection is not None:
            if not self._connection.is_closed and not self._channel.is_closed:
                return self._channel
            await self._close()
        timeout = self.settings.publish_timeout_seconds
        connection = await aio_pika.connect(self.settings.amqp_url, timeout=timeout)
        try:
            channel = await connection.channel(publisher_confirms=True)
            await channel.declare_exchange(
                self.settings.exchange, aio_pika.ExchangeType.TOPIC, durable=True, timeout=timeout
            )
            underlay = await channel.get_underlay_channel()
        except BaseException:
            await connection.close()
            raise
        self._connection, self._channel = connection, underlay
        log.info(
            "event relay connected",
            extra={
                "fields": {
                    "broker": redact_url(self.settings.amqp_url),
                    "exchange": self.settings.exchange,
                }
            },
        )
        return underlay

    async def _close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    async def _claim(self, conn: AsyncConnection, token: str) -> list[Any]:
        """Lease up to ``batch_size`` rows nobody holds, oldest first (one locked read,
        one update)."""
        now = self.clock.now()
        query = (
            select(E.c.id, E.c.type, E.c.schema_version, E.c.shop_id, E.c.occurred_at, E.c.data)
            .where(
                E.c.published_at.is_(None), or_(E.c.lease_until.is_(None), E.c.lease_until < now)
            )
            .order_by(E.c.id)
            .limit(self.settings.batch_size)
        )
        if not self.db.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        rows = list(await conn.execute(query))
        if rows:
            until = now + timedelta(seconds=self.settings.lease_seconds)
            await conn.execute(
                update(E)
                .where(E.c.id.in_([row.id for row in rows]))
                .values(lease_until=until, lease_owner=token)
            )
        return rows

    async def _publish(self, channel: aiormq.abc.AbstractChannel, row: Any) -> None:
        """Publish one row and wait for the broker's confirm (a nack raises).

        On aio-pika's underlying aiormq channel, with ``wait=False``: the confirm is
        still awaited, but not a socket drain per message (with aio-pika's Message and
        publish the relay cost about 10 % more CPU per event: docs/PERFORMANCE.md).
        """
        properties = aiormq.spec.Basic.Properties(
            content_type="application/json",
            delivery_mode=PERSISTENT,
            message_id=str(row.id),
            message_type=row.type,
        )
        # Not mandatory: an event no queue is bound for is dropped by the broker, as a topic
        # exchange does; binding queues is the consumers' side.
        await channel.basic_publish(
            outbox.encode(row),
            exchange=self.settings.exchange,
            routing_key=row.type,
            properties=properties,
            mandatory=False,
            wait=False,
        )

    async def _settle(
        self, conn: AsyncConnection, token: str, confirmed: list[int], refused: list[int]
    ) -> None:
        now = self.clock.now()
        if confirmed and not refused:
            # The whole round: its rows are the ones in its id range still leased under its
            # token (a range and a token, not a list of hundreds of ids to bind and match).
            await conn.execute(
                update(E)
                .where(
                    E.c.id.between(min(confirmed), max(confirmed)),
                    E.c.lease_owner == token,
                    E.c.published_at.is_(None),
                )
                .values(published_at=now, lease_until=None, lease_owner=None)
            )
            return
        if confirmed:
            await conn.execute(
                update(E)
                .where(E.c.id.in_(confirmed), E.c.published_at.is_(None))
                .values(published_at=now, lease_until=None, lease_owner=None)
            )
        if refused:  # back for the next round, ours or another relay's
            await conn.execute(
                update(E)
                .where(E.c.id.in_(refused), E.c.lease_owner == token)
                .values(lease_until=None, lease_owner=None)
            )


EVENT_RELAY = web.AppKey("event_relay", Relay)


class OutboxUpkeep:
    """Every process: the outbox gauges, and pruning past the retention."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: EventsSettings,
        metrics: Metrics,
        *,
        relayed: bool,
    ) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.metrics = metrics
        self.relayed = relayed
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        while True:
            try:
                if loop.time() >= next_prune:
                    await self.prune()
                    next_prune = loop.time() + self.settings.prune_interval_seconds
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("outbox upkeep failed; trying again later", exc_info=True)
            await asyncio.sleep(self.settings.metrics_seconds)

    async def refresh(self) -> None:
        """Set the gauges: rows (about), unpublished rows and the oldest unpublished one's age."""

        async def read(conn: AsyncConnection) -> tuple[int, int, datetime | None]:
            # The size from the ends of the primary key (two index lookups), not COUNT(*):
            # a week of flash sales is millions of rows, read every few seconds by every
            # process. Ids a rollback used are counted too, so it is a little high.
            low, high = (await conn.execute(select(func.min(E.c.id), func.max(E.c.id)))).one()
            rows = 0 if low is None else int(high) - int(low) + 1
            if not self.relayed:
                return rows, 0, None
            # Unpublished rows: as many as the relays are behind (the lag's own size).
            pending = await conn.scalar(
                select(func.count()).select_from(E).where(E.c.published_at.is_(None))
            )
            oldest = await conn.scalar(
                select(E.c.occurred_at).where(E.c.published_at.is_(None)).order_by(E.c.id).limit(1)
            )
            return rows, int(pending or 0), oldest

        rows, pending, oldest = await self.db.read(read)
        self.metrics.outbox_rows.set(rows)
        if self.relayed:
            self.metrics.outbox_unpublished.set(pending)
            lag = (self.clock.now() - oldest).total_seconds() if oldest is not None else 0.0
            self.metrics.outbox_lag.set(max(0.0, lag))

    async def prune(self) -> int:
        """Delete rows past the retention, a chunk per transaction; how many went."""
        before = self.clock.now() - timedelta(days=self.settings.retention_days)
        pruned = 0
        while True:

            async def chunk(conn: AsyncConnection) -> int:
                ids = await outbox.prunable_ids(conn, before, published_only=self.relayed)
                return await outbox.delete_ids(conn, ids)

            deleted = await self.db.transaction(chunk)
            pruned += deleted
            self.metrics.outbox_pruned.inc(deleted)
            if deleted < outbox.PRUNE_CHUNK:
                return pruned


async def relay_until(stop: asyncio.Event, settings: Settings, clock: Clock | None = None) -> None:
    """``coupon-bff relay``: publish the outbox (and keep it pruned) until ``stop`` is set.

    A process of its own beside the serving ones (``events.relay_in_server = false``),
    so that publishing never takes CPU from a serving event loop. Several may run: they
    claim different rows.
    """
    clock = clock or SystemClock()
    db = Database.from_settings(settings.database)
    metrics = Metrics()
    relay = Relay(db, clock, settings.events, metrics)
    upkeep = OutboxUpkeep(db, clock, settings.events, metrics, relayed=True)
    try:
        await migrate(db, clock)
        relay.start()
        upkeep.start()
        log.info("relaying events", extra={"fields": {"exchange": settings.events.exchange}})
        await stop.wait()
    finally:
        await upkeep.stop()
        await relay.stop()
        await db.dispose()
