"""Per-user versions of the facts a signed-in price is made of, kept in the gate.

A signed-in price caches each user's pricing facts per process
(``widgets.coupon_price.user_cache``): usable coupons, held counts, the wallet's
count, membership and the new-member exclusive. Each entry remembers the user's
version when it was read; a read asks the gate for the version (one call,
pipelined with the other calls of its loop turn) and uses the entry only while it
is the same.

Every writer of those facts marks the users it changed inside its transaction
(:func:`touch`); :meth:`bff.db.engine.Database.transaction` bumps them, after the
commit and before it returns, through :meth:`UserVersions.bump`. So a reply to a
write is sent after the bump, and any read that begins after it sees the new
version. A reader asks for the version *before* it reads the database: a write
that commits while it reads bumps after, so the entry it keeps is superseded at
once.

Versions are values none of a key's earlier values ever equalled (a random
process prefix and a counter), and a missing key is set to a fresh one by the
read itself: a version lost to a TTL or a FLUSHDB reads as new, never as
unchanged. The writers who mark users: the ledger's batches (claims, grants,
codes, auto-claims, gift packs, points exchanges: everything that issues a
coupon), redemption lock, confirm and cancel, revoke, and membership join, leave
and level. A lock that lapses by time changes nothing stored: the cache entry
expires at that moment instead (as at a coupon's valid_from and valid_to).
Points balances are not pricing facts and bump nothing.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import secrets
from collections.abc import Callable, Iterable

from bff.gate.base import Gate, version_key

log = logging.getLogger("bff.versions")

# The users a transaction changed, (shop_id, user_id): set per attempt by Database.transaction.
_TOUCHED: contextvars.ContextVar[set[tuple[str, str]] | None] = contextvars.ContextVar(
    "bff_touched_users", default=None
)

# Retries of a bump the gate refused (Redis down right after a commit): seconds to wait.
RETRY_DELAYS = (0.2, 1.0, 5.0, 15.0)


def touch(shop_id: str, user_ids: Iterable[str]) -> None:
    """Inside a write transaction: these users' pricing facts change when it commits."""
    touched = _TOUCHED.get()
    if touched is None:  # not inside Database.transaction: nobody would bump them
        raise RuntimeError("touch() outside a database transaction")
    touched.update((shop_id, user_id) for user_id in user_ids)


def begin_touching() -> tuple[set[tuple[str, str]], contextvars.Token[set[tuple[str, str]] | None]]:
    touched: set[tuple[str, str]] = set()
    return touched, _TOUCHED.set(touched)


def end_touching(token: contextvars.Token[set[tuple[str, str]] | None]) -> None:
    _TOUCHED.reset(token)


class UserVersions:
    """Reads and bumps users' versions in the gate; tells local caches of each bump."""

    def __init__(self, gate: Gate, *, enabled: bool, ttl_seconds: int = 86_400) -> None:
        # Off when the gate is not shared by every process that writes (several workers
        # each with an in-process gate): a bump in one would not reach the others.
        self.enabled = enabled
        self.gate = gate
        self.ttl = ttl_seconds
        self._prefix = secrets.token_hex(6)
        self._counter = itertools.count()
        # Called at once with each bump's users, before the gate is told: this process's
        # entries go even when the gate cannot take the bump.
        self.listeners: list[Callable[[set[tuple[str, str]]], None]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def _fresh(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"

    async def current(self, shop_id: str, user_id: str) -> str:
        """The user's version (raises when the gate cannot answer)."""
        return await self.gate.read_version(version_key(shop_id, user_id), self._fresh(), self.ttl)

    async def bump(self, touched: set[tuple[str, str]]) -> None:
        """After a commit: new versions for these users. Never raises: the write is done.

        A gate that refuses is retried in the background (``RETRY_DELAYS``); meanwhile
        another process may serve the old facts for at most its cache's max age.
        """
        if not self.enabled or not touched:
            return
        for listener in self.listeners:
            listener(touched)
        keys = sorted(version_key(shop_id, user_id) for shop_id, user_id in touched)
        try:
            await self.gate.bump_versions(keys, self._fresh(), self.ttl)
        except Exception:
            log.warning("could not bump %d users' versions; retrying", len(keys), exc_info=True)
            task = asyncio.get_running_loop().create_task(self._retry(keys))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _retry(self, keys: list[str]) -> None:
        for delay in RETRY_DELAYS:
            await asyncio.sleep(delay)
            try:
                await self.gate.bump_versions(keys, self._fresh(), self.ttl)
                return
            except Exception:
                continue
        log.error("gave up bumping %d users' versions", len(keys))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
