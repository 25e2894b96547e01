"""The Redis gate (redis.asyncio)."""

from __future__ import annotations

import redis.asyncio as aioredis

from config.loader import RedisSettings


class RedisGate:
    name = "redis"

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> RedisGate:
        client = aioredis.Redis.from_url(
            settings.url,
            socket_timeout=settings.socket_timeout_seconds,
            socket_connect_timeout=settings.socket_timeout_seconds,
            max_connections=settings.max_connections,
            health_check_interval=30,
        )
        return cls(client)

    async def ping(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()
