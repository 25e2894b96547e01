"""Keeping each shop's holders filter (:mod:`bff.gate.holders`) a superset of its holders.

The invariant: while a shop's filter is valid, every user who holds or held a
coupon of the shop is in it. Then a claim whose user has no facts in the gate
and is not in the filter holds nothing, and on a template known sold out is
answered SOLD_OUT in the gate (:meth:`bff.gate.base.Gate.claim_begin`).

Writers. Every coupon row is written by :meth:`bff.coupons.ledger.Ledger.issue_batch`
(claims, claims by code, auto-claims, grants; gift packs and points exchanges
through ``issue_in``), which holds the users' ``wallets`` row locks (MariaDB;
``BEGIN IMMEDIATE`` on SQLite) and, before its commit, adds the users it issues
to to the filter (:meth:`Holders.add`) next to their facts. The gate adds them
only to a filter that exists, building or valid; a failure fails the
transaction, as for the facts.

Rebuilding (:meth:`Holders.rebuild`, one process at a time per shop). A filter
is lost with the gate's keys (FLUSHDB, a restart, an eviction, its TTL) or was
never built; a claim that finds none asks for one (:meth:`Holders.rebuild_soon`).
The builder creates an empty filter marked building (``SET NX`` with a TTL,
renewed per chunk: one builder; a dead one's filter lapses), then scans the shop
in key order in chunks, each its own short transaction: on MariaDB the
``wallets`` rows with a locking read (``FOR SHARE``), then which of those users
hold coupons; on SQLite the distinct users of ``coupons`` (the ``wallets``
table is MariaDB's lock only). Then it marks the filter valid, if it is still
its own. Until then claims take the database path.

Why no holder can be missed (the race of a writer that skipped adding). A
writer's add comes after it took its wallet row lock (inserting the row for a
user's first coupon) and before it commits. Take a writer whose add found no
filter. Its wallet row lock was taken before that moment, so before the
builder's mark, so before any of the builder's chunks. A chunk's ``FOR SHARE``
read of that user's row therefore waits while the writer's transaction is open
(a locking read waits for the exclusive lock of an existing or uncommitted
inserted row; READ COMMITTED takes no gap locks, and needs none: the row is
already there), and its coupons read, a statement after it, sees the
writer's committed coupons. On SQLite each chunk is a ``BEGIN IMMEDIATE``
transaction like every writer's, so it runs entirely before the writer (which
is impossible: the writer already held the lock before the mark) or after the
writer committed. A writer whose add came after the mark finds the filter
(building) and adds itself, unless the filter was lost in between: then this
build cannot be marked valid (:meth:`Gate.holders_mark` checks the token), and
the next build's mark comes after that writer's check, the first case again.
Wallet rows without coupons (a refused claim's batch upserts them too) are
filtered out by the coupons read, so the filter holds holders only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import string
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bff.db import tables
from bff.db.engine import Database
from bff.gate.base import Gate, holders_key
from bff.gate.holders import TOKEN_CHARS, filter_size

log = logging.getLogger("bff.coupons.holders")

C = tables.coupons
W = tables.wallets

# Users read per chunk of a rebuild (one short transaction each).
CHUNK = 500
# A building filter lapses this long after its builder's last chunk (a dead builder).
BUILDING_SECONDS = 60
# After a rebuild that failed or found another builder, this process waits this long
# before it tries again for the shop.
RETRY_SECONDS = 5.0
_ALPHABET = string.ascii_letters + string.digits


class Holders:
    """Adds issued users to the shops' filters and rebuilds a lost filter (see the module)."""

    def __init__(
        self,
        db: Database,
        gate: Gate,
        *,
        enabled: bool,
        users: int,
        error: float,
        ttl_seconds: int,
    ) -> None:
        self.db = db
        self.gate = gate
        self.enabled = enabled and users > 0
        self.bits, self.hashes = filter_size(max(users, 1), error)
        self.ttl = ttl_seconds
        self._tasks: dict[str, asyncio.Task[bool]] = {}
        self._next_try: dict[str, float] = {}
        # Rebuilds this process completed (a filter marked valid).
        self.built = 0

    def key(self, shop_id: str) -> str | None:
        """The shop's filter key for a claim's gate call; None while filters are off."""
        return holders_key(shop_id) if self.enabled else None

    async def add(self, shop_id: str, users: list[str]) -> None:
        """Before a commit that issues coupons to ``users``, holding their wallet locks.

        Even while this process's filters are off (``claim.holders_users = 0``): another
        process sharing the gate may have them on, and its filter must hold this
        process's holders too. (Without a shared gate no filter exists to add to.)
        """
        if users:
            await self.gate.holders_add(holders_key(shop_id), users)

    def rebuild_soon(self, shop_id: str) -> None:
        """A claim found no filter: rebuild it in the background (once per process)."""
        if not self.enabled or shop_id in self._tasks:
            return
        if self._next_try.get(shop_id, 0.0) > time.monotonic():
            return
        task = asyncio.get_running_loop().create_task(self.rebuild(shop_id))
        self._tasks[shop_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(shop_id, None))

    async def idle(self) -> None:
        """Wait for the rebuilds in flight (tests; shutting down)."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def rebuild(self, shop_id: str) -> bool:
        """Build the shop's filter from the database; True if this call marked it valid."""
        done = False
        try:
            done = await self._build(shop_id)
        except Exception:
            log.warning("could not rebuild a shop's holders filter", exc_info=True)
        finally:
            if not done:
                self._next_try[shop_id] = time.monotonic() + RETRY_SECONDS
        if not done:
            return False
        self._next_try.pop(shop_id, None)
        self.built += 1
        log.info("holders filter rebuilt", extra={"fields": {"shop_id": shop_id}})
        return True

    async def _build(self, shop_id: str) -> bool:
        key = holders_key(shop_id)
        token = "".join(secrets.choice(_ALPHABET) for _ in range(TOKEN_CHARS))
        if not await self.gate.holders_start(key, token, self.bits, self.hashes, BUILDING_SECONDS):
            return False  # another process builds it, or it is there
        try:
            return await self._scan(shop_id, key, token)
        except BaseException:
            # Failed (the database, a deadline) or cancelled: drop the building mark, so a
            # later claim can start again instead of waiting for it to lapse.
            with contextlib.suppress(Exception):
                await asyncio.shield(self.gate.holders_mark(key, token, "", BUILDING_SECONDS))
            raise

    async def _scan(self, shop_id: str, key: str, token: str) -> bool:
        after = ""
        while True:
            users, last = await self.db.transaction(
                lambda conn, after=after: self._chunk(conn, shop_id, after)
            )
            if users:
                await self.gate.holders_add(key, users)
            if last is None:
                break
            after = last
            if not await self.gate.holders_mark(key, token, "B", BUILDING_SECONDS):
                return False  # lost (flush, eviction): a later claim asks again
        return await self.gate.holders_mark(key, token, "V", self.ttl)

    async def _chunk(
        self, conn: AsyncConnection, shop_id: str, after: str
    ) -> tuple[list[str], str | None]:
        """The holders among the next users after ``after`` in key order, and the last key
        read (None: the scan is done). See the module doc for why the reads are locking."""
        if self.db.is_sqlite:
            query = (
                select(C.c.user_id)
                .where(C.c.shop_id == shop_id, C.c.user_id > after)
                .group_by(C.c.user_id)
                .order_by(C.c.user_id)
                .limit(CHUNK)
            )
            users = [row.user_id for row in await conn.execute(query)]
            return users, (users[-1] if len(users) == CHUNK else None)
        locked = (
            select(W.c.user_id)
            .where(W.c.shop_id == shop_id, W.c.user_id > after)
            .order_by(W.c.user_id)
            .limit(CHUNK)
            .with_for_update(read=True)
        )
        wallets = [row.user_id for row in await conn.execute(locked)]
        if not wallets:
            return [], None
        holding: Any = await conn.execute(
            select(C.c.user_id)
            .where(C.c.shop_id == shop_id, C.c.user_id.in_(wallets))
            .group_by(C.c.user_id)
        )
        users = sorted({row.user_id for row in holding} & set(wallets))
        return users, (wallets[-1] if len(wallets) == CHUNK else None)
