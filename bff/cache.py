"""Serialized replies of the hot anonymous reads (live-room prices, product prices).

Each process keeps the reply bytes for ``cache.ttl_seconds``: the same bytes
for everyone, not rebuilt per request. An admin write that changes prices
clears the shop's entries in its own process before it replies and publishes
the shop id through the gate (Redis pub/sub, or in-process), so every other
process clears them as soon as the message lands. If a message is lost (a
Redis reconnect), the TTL still bounds how long a stale price can be served:
that TTL is the documented promise.

Signed-in prices keep the shop-wide facts they share (templates, daily counts,
products) in a :class:`ShopCache` under the same promise: it listens to the
invalidator (``ShopCache.forget``) and is cleared with the replies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from bff.clock import Clock

log = logging.getLogger("bff.cache")
MAX_ENTRIES = 50_000
V = TypeVar("V")


class ShopCache(Generic[V]):
    """Values per shop and key for ``ttl`` seconds of the app's clock, cleared per shop.

    Expiry follows the app's clock (tests move it). Misses are single-flight:
    concurrent requests for one key share one build. A build that started before
    its shop was cleared is answered to those already waiting but not kept, and a
    request that comes after the clear starts a build of its own: an admin write's
    clear can never be undone by, or answered from, a read that began before it.
    """

    def __init__(self, ttl_seconds: float, clock: Clock) -> None:
        self.ttl = ttl_seconds
        self.clock = clock
        self._entries: dict[tuple[str, str], tuple[float, V]] = {}
        self._building: dict[tuple[str, str], asyncio.Future[V]] = {}
        self._generation: dict[str, int] = {}

    def _now(self) -> float:
        return self.clock.now().timestamp()

    def get(self, shop_id: str, key: str) -> V | None:
        entry = self._entries.get((shop_id, key))
        if entry is None:
            return None
        if not 0 <= entry[0] - self._now() <= self.ttl:
            self._entries.pop((shop_id, key), None)
            return None
        return entry[1]

    def put(self, shop_id: str, key: str, value: V) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()  # bounded memory; everything is rebuilt within one read
        self._entries[(shop_id, key)] = (self._now() + self.ttl, value)

    def clear(self) -> None:
        self._entries.clear()
        self._building.clear()
        for shop_id in list(self._generation):
            self._generation[shop_id] += 1

    def clear_shop(self, shop_id: str) -> None:
        self._generation[shop_id] = self._generation.get(shop_id, 0) + 1
        for entry_key in [k for k in self._entries if k[0] == shop_id]:
            del self._entries[entry_key]
        for entry_key in [k for k in self._building if k[0] == shop_id]:
            del self._building[entry_key]

    def forget(self, shop_id: str | None) -> None:
        """An Invalidator listener: a shop changed, or every shop may have (None)."""
        if shop_id is None:
            self.clear()
        else:
            self.clear_shop(shop_id)

    async def cached(self, shop_id: str, key: str, build: Callable[[], Awaitable[V]]) -> V:
        """The value under ``key``, built once if missing."""
        value = self.get(shop_id, key)
        if value is not None:
            return value
        value, _ = await self._build_once(shop_id, key, build)
        return value

    async def _build_once(
        self, shop_id: str, key: str, build: Callable[[], Awaitable[V]]
    ) -> tuple[V, bool]:
        """Build (or join the build in flight); True when this call kept the value."""
        entry_key = (shop_id, key)
        pending = self._building.get(entry_key)
        if pending is not None:
            return await asyncio.shield(pending), False
        generation = self._generation.get(shop_id, 0)
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._building[entry_key] = future
        try:
            value = await build()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here: waiters re-raise it, nobody else must
            raise
        finally:
            if self._building.get(entry_key) is future:
                del self._building[entry_key]
        future.set_result(value)
        if self._generation.get(shop_id, 0) != generation:
            return value, False
        self.put(shop_id, key, value)
        return value, True


class ReplyCache(ShopCache[bytes]):
    """Serialized replies; a reply holds a live window's status, which must change when
    the app's clock passes the window's edge."""

    def _alias(self, shop_id: str, key: str, alias: str) -> None:
        """``alias`` names the same entry as ``key``, with the same expiry."""
        entry = self._entries.get((shop_id, key))
        if entry is None:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[(shop_id, alias)] = entry

    async def cached(
        self,
        shop_id: str,
        key: str,
        build: Callable[[], Awaitable[bytes]],
        *,
        alias: str | None = None,
    ) -> bytes:
        """The bytes under ``key``, built once if missing; ``alias`` (the request's raw
        form, see routing) is made to name the same entry whenever ``key`` is kept."""
        body = self.get(shop_id, key)
        if body is not None:
            if alias is not None:
                self._alias(shop_id, key, alias)
            return body
        body, kept = await self._build_once(shop_id, key, build)
        if kept and alias is not None:
            self._alias(shop_id, key, alias)
        return body


class Invalidator:
    """Clears a shop's cached replies here and, through the gate, in every process."""

    def __init__(
        self,
        cache: ReplyCache,
        publish: Callable[[str, str], Awaitable[None]],
        channel: str = "bff:prices-changed",
    ) -> None:
        self.cache = cache
        self.publish = publish
        # Also told of a shop's change (None: any shop's), here and from other processes.
        self.listeners: list[Callable[[str | None], None]] = []
        # Pub/sub ignores the Redis db number: the channel names the deployment's db.
        self.channel = channel

    async def shop_changed(self, shop_id: str) -> None:
        self._clear(shop_id)
        try:
            await self.publish(self.channel, shop_id)
        except Exception:  # other processes fall back on the TTL
            log.warning("could not publish a price change", exc_info=True)

    def on_message(self, shop_id: str) -> None:
        self._clear(shop_id)

    def subscribed(self) -> None:
        """(Re)subscribed: messages sent while away are lost, so forget everything."""
        self.cache.clear()
        for listener in self.listeners:
            listener(None)

    def _clear(self, shop_id: str) -> None:
        self.cache.clear_shop(shop_id)
        for listener in self.listeners:
            listener(shop_id)


async def listen(
    subscribe: Callable[[str, Callable[[str], None], Callable[[], None]], Awaitable[None]],
    invalidator: Invalidator,
) -> None:
    """Run the subscription until cancelled, reconnecting with backoff after a loss."""
    delay = 0.5
    while True:
        try:
            await subscribe(invalidator.channel, invalidator.on_message, invalidator.subscribed)
            delay = 0.5
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("price-change subscription lost (%s); retrying", type(exc).__name__)
            delay = min(delay * 2, 30.0)
        await asyncio.sleep(delay)
