"""The Redis gate (redis.asyncio + Lua): the same semantics as the in-process twin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from bff.gate.base import IdemState
from config.loader import RedisSettings

# Fixed-window counter: returns 0 within the limit, else the seconds left in the window.
# Fixed-window counter: 1 within the limit, else 0. The window is in the key.
HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if n <= tonumber(ARGV[1]) then return 1 end
return 0
"""

ADMIT_MEMBER = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return 1
"""

IDEM_BEGIN = """
local found = redis.call('HMGET', KEYS[1], 's', 'h', 'r')
if not found[1] then
  redis.call('HSET', KEYS[1], 's', 'pending', 'h', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return {'new'}
end
return {found[1], found[2], found[3] or false}
"""

IDEM_FINISH = """
redis.call('HSET', KEYS[1], 's', 'done', 'h', ARGV[1], 'r', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

IDEM_ABORT = """
if redis.call('HGET', KEYS[1], 's') == 'pending' then redis.call('DEL', KEYS[1]) end
return 1
"""


class RedisGate:
    name = "redis"

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._hit = client.register_script(HIT)
        self._admit_member = client.register_script(ADMIT_MEMBER)
        self._idem_begin = client.register_script(IDEM_BEGIN)
        self._idem_finish = client.register_script(IDEM_FINISH)
        self._idem_abort = client.register_script(IDEM_ABORT)

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> RedisGate:
        # A blocking pool: a burst waits for a free connection (up to the socket
        # timeout) instead of failing at once when all are in use.
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.url,
            max_connections=settings.max_connections,
            timeout=settings.socket_timeout_seconds,
            socket_timeout=settings.socket_timeout_seconds,
            socket_connect_timeout=settings.socket_timeout_seconds,
            health_check_interval=30,
        )
        return cls(aioredis.Redis(connection_pool=pool))

    async def ping(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose(close_connection_pool=True)

    async def flush(self) -> None:
        await self.client.flushdb()

    async def hit(self, key: str, limit: int, window_seconds: int) -> bool:
        return bool(await self._hit(keys=[key], args=[limit, window_seconds]))

    async def count(self, key: str) -> int:
        return int(await self.client.get(key) or 0)

    async def admit_member(self, key: str, member: str, limit: int, ttl_seconds: int) -> bool:
        return bool(await self._admit_member(keys=[key], args=[member, limit, ttl_seconds]))

    async def idem_begin(self, key: str, body_hash: str, pending_seconds: int) -> IdemState:
        found: list[Any] = await self._idem_begin(keys=[key], args=[body_hash, pending_seconds])
        if found[0] == b"new":
            return IdemState("new")
        reply = found[2] if found[2] else None
        return IdemState(found[0].decode(), found[1].decode() if found[1] else None, reply)

    async def idem_finish(self, key: str, body_hash: str, reply: bytes, ttl_seconds: int) -> None:
        await self._idem_finish(keys=[key], args=[body_hash, reply, ttl_seconds])

    async def idem_abort(self, key: str) -> None:
        await self._idem_abort(keys=[key])

    async def publish(self, channel: str, message: str) -> None:
        await self.client.publish(channel, message)

    async def subscribe(
        self, channel: str, handler: Callable[[str], None], on_subscribed: Callable[[], None]
    ) -> None:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel)
            on_subscribed()
            while True:
                # A bounded wait, so the connection's health checks run even when idle
                # (a half-open socket is noticed instead of blocking forever).
                message = await pubsub.get_message(timeout=5.0)
                if message is not None and message.get("type") == "message":
                    data = message["data"]
                    handler(data.decode() if isinstance(data, bytes) else str(data))
        finally:
            await pubsub.aclose()
