"""The Redis gate (redis.asyncio + Lua): the same semantics as the in-process twin.

Script calls are coalesced: every call made in the same turn of the event loop
goes out in one pipeline (``EVALSHA`` each, not a transaction), so a burst of
claims costs one Redis round trip per turn instead of one per call. Each call
keeps its own keys (one hash tag each), so a turn's calls can be split per node
on Redis Cluster. The pipeline is written and read on a pooled connection
(``_Coalescer._execute``). ``EVALSHA`` is used directly: a
pipeline of ``Script`` objects would first ask ``SCRIPT EXISTS`` on every
execute, a second round trip; a script missing after a Redis restart is loaded
once and its calls retried.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import hiredis
import redis.asyncio as aioredis
import redis.exceptions

from bff.gate.base import ClaimFacts, FactsCheck, IdemState
from bff.gate.holders import header
from config.loader import RedisSettings

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

IDEM_RENEW = """
local found = redis.call('HMGET', KEYS[1], 's', 'h')
if found[1] == 'pending' and found[2] == ARGV[1] then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 1
"""

IDEM_ABORT = """
if redis.call('HGET', KEYS[1], 's') == 'pending' then redis.call('DEL', KEYS[1]) end
return 1
"""

# idem_begin, then the user's rate limit, then the sold-out refusal (see Gate.claim_begin).
# KEYS: idempotency hash, rate counter, the user's facts (unused ones repeat KEYS[1]).
# ARGV: hash, pending s, rate limit (0: none), window s, sold-out check (1/0), request
# key ('' without a check), template id, per-user limit, wallet cap, and '1' when the
# shop's holders filter is read beside it (HOLDERS_PROBE): a sold-out check finding no
# facts then answers 'unknown' and leaves no pending marker, for the caller to decide
# from the filter (refused, or an idem_begin of its own).
CLAIM_BEGIN = """
local found = redis.call('HMGET', KEYS[1], 's', 'h', 'r')
if found[1] then return {found[1], found[2], found[3] or false} end
local limit = tonumber(ARGV[3])
if limit > 0 then
  local n = redis.call('INCR', KEYS[2])
  if n == 1 then redis.call('EXPIRE', KEYS[2], ARGV[4]) end
  if n > limit then
    if ARGV[6] ~= '' then
      local g = redis.call('HMGET', KEYS[3], 'w', 'r:' .. ARGV[6])
      if g[1] and not g[2] then return {'limited_new'} end
    end
    return {'limited'}
  end
end
if ARGV[5] == '1' then
  local f = redis.call('HMGET', KEYS[3], 'w', 'h:' .. ARGV[7], 'r:' .. ARGV[6])
  if f[1] and not f[3] and tonumber(f[2] or '0') < tonumber(ARGV[8])
      and tonumber(f[1]) < tonumber(ARGV[9]) then
    return {'refused'}
  end
  if not f[1] and ARGV[10] == '1' then return {'unknown'} end
end
redis.call('HSET', KEYS[1], 's', 'pending', 'h', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {'new'}
"""

# The shop's holders filter (bff.gate.holders): the header, then the bits. The header's
# state, then for each user (ARGV) the SHA-1 double-hashed positions (a + j * b) % bits,
# bits and hashes read from the header (so every process agrees on them).
_HOLDERS_HEAD = """
local h = redis.call('GETRANGE', KEYS[1], 0, 31)
local s = string.sub(h, 1, 1)
"""
_HOLDERS_SIZE = """
local m = tonumber(string.sub(h, 17, 28))
local k = tonumber(string.sub(h, 29, 32))
"""
# 0: certainly not a holder; 1: maybe one; 2: the filter is building; 3: no filter.
HOLDERS_PROBE = (
    _HOLDERS_HEAD
    + """
if s == 'B' then return 2 end
if s ~= 'V' then return 3 end
"""
    + _HOLDERS_SIZE
    + """
local d = redis.sha1hex(ARGV[1])
local a = tonumber(string.sub(d, 1, 8), 16)
local b = tonumber(string.sub(d, 9, 16), 16)
for j = 0, k - 1 do
  if redis.call('GETBIT', KEYS[1], 256 + (a + j * b) % m) == 0 then return 0 end
end
return 1
"""
)
# Add users to a filter that exists (building or valid); none: nothing (1 added, 0 not).
HOLDERS_ADD = (
    _HOLDERS_HEAD
    + """
if s ~= 'V' and s ~= 'B' then return 0 end
"""
    + _HOLDERS_SIZE
    + """
for i = 1, #ARGV do
  local d = redis.sha1hex(ARGV[i])
  local a = tonumber(string.sub(d, 1, 8), 16)
  local b = tonumber(string.sub(d, 9, 16), 16)
  for j = 0, k - 1 do
    redis.call('SETBIT', KEYS[1], 256 + (a + j * b) % m, 1)
  end
end
return 1
"""
)
# A new building filter (ARGV: header, TTL), only where there is none.
HOLDERS_START = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 1 end
return 0
"""
# A building filter of this token (ARGV[1]) gets state ARGV[2] and TTL ARGV[3]; an empty
# state deletes it (its build failed: the next claim may start another at once).
HOLDERS_MARK = (
    _HOLDERS_HEAD
    + """
if s ~= 'B' or string.sub(h, 2, 16) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('SETRANGE', KEYS[1], 0, ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
)

# Replace a user's facts: ARGV[1] the TTL, then field, value pairs (HSET 200 pairs a call:
# Lua's unpack has a stack limit).
PUT_FACTS = """
redis.call('DEL', KEYS[1])
for i = 2, #ARGV, 400 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 399, #ARGV)))
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

# A user's pricing-facts version (bff.versions): the value, or ARGV[1] set and returned when
# there is none. Not a plain GET: a key lost (TTL, FLUSHDB) and read as "none" twice would
# look unchanged to a process that cached under "none" in between, however many bumps the
# lost key had seen; a fresh value never matches anything cached.
READ_VERSION = """
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ARGV[1]
"""

BUMP_VERSION = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


# Most calls one pipeline carries; a bigger turn is split into several pipelines.
MAX_PIPELINE = 512


@dataclass(frozen=True, slots=True)
class _Script:
    text: str
    sha: str


def _script(text: str) -> _Script:
    # SHA-1 is how Redis names a script (EVALSHA), not a security measure.
    return _Script(text, hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest())


@dataclass(slots=True)
class _Call:
    script: _Script
    keys: list[str]
    args: list[Any]
    future: asyncio.Future[Any]


class _Coalescer:
    """Sends the script calls of one event-loop turn as one pipeline."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._pending: list[_Call] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        # A context manager around each pipeline sent (a tracing span, bff.tracing), given
        # the number of calls; None: nothing.
        self.span: Callable[[int], AbstractContextManager[Any]] | None = None

    async def call(self, script: _Script, keys: list[str], args: list[Any]) -> Any:
        return await self.submit(script, keys, args)

    def submit(self, script: _Script, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        """Queue a call for this turn's pipeline; its reply comes in the future. Calls
        submitted together go out together, in order (no task per call)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append(_Call(script, keys, args, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), MAX_PIPELINE):
            task = asyncio.get_running_loop().create_task(
                self._send(pending[start : start + MAX_PIPELINE])
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, calls: list[_Call]) -> None:
        try:
            results = await self._execute(calls)
            missing = [c for c, r in zip(calls, results, strict=True) if _no_script(r)]
            if missing:
                for script in {c.script for c in missing}:
                    await self.client.script_load(script.text)
                retried = await self._execute(missing)
                results = [
                    retried[missing.index(c)] if _no_script(r) else r
                    for c, r in zip(calls, results, strict=True)
                ]
        except BaseException as exc:  # the connection failed: every call fails with it
            for call in calls:
                if not call.future.done():
                    call.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for call, result in zip(calls, results, strict=True):
            if call.future.done():
                continue
            if isinstance(result, BaseException):
                call.future.set_exception(result)
            else:
                call.future.set_result(result)

    async def _execute(self, calls: list[_Call]) -> list[Any]:
        """The calls' replies in order, a script's error as its exception (a pipeline).

        Written on a pooled connection rather than with redis-py's pipeline, which
        arms a timer for every reply it reads (~8 us of a claim's ~15 us per call
        here): one deadline covers the whole exchange instead. One attempt: a call
        that may have run is never sent twice (the pool's checkout probe replaces a
        connection the server closed while idle). A connection left mid-exchange is
        closed, never reused.
        """
        if self.span is not None:
            with self.span(len(calls)):
                return await self._exchange(calls)
        return await self._exchange(calls)

    async def _exchange(self, calls: list[_Call]) -> list[Any]:
        pool = self.client.connection_pool
        conn = await pool.get_connection()
        try:
            packed = conn.pack_commands(
                [("EVALSHA", c.script.sha, len(c.keys), *c.keys, *c.args) for c in calls]
            )
            results: list[Any] = []
            async with asyncio.timeout(conn.socket_timeout):
                await conn.send_packed_command(packed, check_health=False)
                for _ in calls:
                    try:
                        results.append(await conn.read_response(timeout=math.inf))
                    except redis.exceptions.ResponseError as exc:
                        results.append(exc)
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        finally:
            await pool.release(conn)
        return results

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _no_script(result: Any) -> bool:
    return isinstance(result, redis.exceptions.NoScriptError)


_HIT = _script(HIT)
_ADMIT_MEMBER = _script(ADMIT_MEMBER)
_IDEM_BEGIN = _script(IDEM_BEGIN)
_IDEM_FINISH = _script(IDEM_FINISH)
_IDEM_ABORT = _script(IDEM_ABORT)
_IDEM_RENEW = _script(IDEM_RENEW)
_CLAIM_BEGIN = _script(CLAIM_BEGIN)
_PUT_FACTS = _script(PUT_FACTS)
_HOLDERS_PROBE = _script(HOLDERS_PROBE)
_HOLDERS_ADD = _script(HOLDERS_ADD)
_HOLDERS_START = _script(HOLDERS_START)
_HOLDERS_MARK = _script(HOLDERS_MARK)
_READ_VERSION = _script(READ_VERSION)
_BUMP_VERSION = _script(BUMP_VERSION)


class _HiredisPacking(aioredis.Connection):
    """Commands packed by hiredis (C), as redis-py's sync client does; the same bytes.

    redis-py's asyncio connection packs in Python: about 60 us for one EVALSHA of a
    claim here, a sixth of a sold-out answer. hiredis comes with the ``redis[hiredis]``
    extra already. Anything it will not pack goes to redis-py's own packer (which
    raises the usual DataError for, say, a bool).
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        name = args[0]
        if isinstance(name, str):
            args = (*name.encode().split(), *args[1:])
        elif b" " in name:
            args = (*name.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            return super().pack_command(*args)


def _no_maint_notifications() -> dict[str, Any]:
    """Pool options that keep redis-py's check of a pooled connection on checkout.

    redis-py 8.1 under RESP3 (its default) turns on "maintenance notifications" (a
    Redis Enterprise/Cloud feature) and with them skips the checkout probe that
    replaces a connection the server closed while it sat idle (redis/redis-py#4252,
    fixed by #4260): after Redis restarts or the network cuts, every pooled connection
    then fails one pipeline (and all the claims in it) after ``/readyz`` already said
    ready. This gate does not use the notifications; off, the probe runs again.
    """
    try:
        from redis.maint_notifications import MaintNotificationsConfig
    except ImportError:  # pragma: no cover - an older redis-py has neither
        return {}
    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}


_NO_MAINT_NOTIFICATIONS = _no_maint_notifications()


class RedisGate:
    name = "redis"

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._batch = _Coalescer(client)

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> RedisGate:
        # A blocking pool: a burst waits for a free connection (up to the socket
        # timeout) instead of failing at once when all are in use.
        plain = {"connection_class": _HiredisPacking} if settings.url.startswith("redis:") else {}
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.url,
            **plain,
            **_NO_MAINT_NOTIFICATIONS,
            max_connections=settings.max_connections,
            timeout=settings.socket_timeout_seconds,
            socket_timeout=settings.socket_timeout_seconds,
            socket_connect_timeout=settings.socket_timeout_seconds,
            health_check_interval=30,
        )
        return cls(aioredis.Redis(connection_pool=pool))

    def trace_pipelines(self, span: Callable[[int], AbstractContextManager[Any]]) -> None:
        """Run each script pipeline inside ``span(number of calls)`` (bff.tracing)."""
        self._batch.span = span

    async def ping(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        await self._batch.close()
        await self.client.aclose(close_connection_pool=True)

    async def flush(self) -> None:
        await self.client.flushdb()

    async def hit(self, key: str, limit: int, window_seconds: int) -> bool:
        return bool(await self._batch.call(_HIT, [key], [limit, window_seconds]))

    async def count(self, key: str) -> int:
        return int(await self.client.get(key) or 0)

    async def admit_member(self, key: str, member: str, limit: int, ttl_seconds: int) -> bool:
        return bool(await self._batch.call(_ADMIT_MEMBER, [key], [member, limit, ttl_seconds]))

    async def idem_begin(self, key: str, body_hash: str, pending_seconds: int) -> IdemState:
        found: list[Any] = await self._batch.call(_IDEM_BEGIN, [key], [body_hash, pending_seconds])
        if found[0] == b"new":
            return IdemState("new")
        reply = found[2] if found[2] else None
        return IdemState(found[0].decode(), found[1].decode() if found[1] else None, reply)

    async def idem_finish(self, key: str, body_hash: str, reply: bytes, ttl_seconds: int) -> None:
        await self._batch.call(_IDEM_FINISH, [key], [body_hash, reply, ttl_seconds])

    async def idem_renew(self, key: str, body_hash: str, pending_seconds: int) -> None:
        await self._batch.call(_IDEM_RENEW, [key], [body_hash, pending_seconds])

    async def idem_abort(self, key: str) -> None:
        await self._batch.call(_IDEM_ABORT, [key], [])

    async def claim_begin(
        self,
        key: str,
        body_hash: str,
        pending_seconds: int,
        rate: tuple[str, int, int] | None,
        check: FactsCheck | None,
    ) -> IdemState:
        rate_key, limit, window = rate if rate is not None else (key, 0, 0)
        facts_key = check.facts_key if check is not None else key
        args: list[Any] = [body_hash, pending_seconds, limit, window]
        probe: asyncio.Future[Any] | None = None
        if check is None:
            args += [0, "", 0, 0, 0, 0]
        else:
            args += [1 if check.sold_out else 0, check.request_key, check.template_id]
            with_holders = check.sold_out and check.holders_key is not None
            args += [check.per_user_limit, check.wallet_cap, 1 if with_holders else 0]
        keys = [key, rate_key, facts_key]
        if check is not None and args[-1]:
            # The shop's filter is in a slot of its own: a second call, the same pipeline.
            begun = self._batch.submit(_CLAIM_BEGIN, keys, args)
            probe = self._batch.submit(_HOLDERS_PROBE, [check.holders_key], [check.user_id])
            try:
                found: list[Any] = await begun
            finally:
                held = await probe
        else:
            found = await self._batch.call(_CLAIM_BEGIN, keys, args)
        if probe is not None and check is not None:
            holds_nothing = held == 0 and check.nothing_before_stock()
            if found[0] == b"unknown":
                # No facts, no marker set: the filter decides, or the usual path runs.
                if holds_nothing:
                    return IdemState("refused")
                state = await self.idem_begin(key, body_hash, pending_seconds)
                return dataclasses.replace(state, rebuild=held == 3)
            if found[0] == b"limited" and holds_nothing:
                return IdemState("limited_new")
        if found[0] in (b"new", b"limited", b"limited_new", b"refused"):
            return IdemState(found[0].decode())
        reply = found[2] if found[2] else None
        return IdemState(found[0].decode(), found[1].decode() if found[1] else None, reply)

    async def holders_add(self, key: str, users: list[str]) -> None:
        await self._batch.call(_HOLDERS_ADD, [key], users)

    async def holders_start(self, key: str, token: str, bits: int, hashes: int, ttl: int) -> bool:
        start = [header("B", token, bits, hashes), ttl]
        return bool(await self._batch.call(_HOLDERS_START, [key], start))

    async def holders_mark(self, key: str, token: str, state: str, ttl: int) -> bool:
        return bool(await self._batch.call(_HOLDERS_MARK, [key], [token, state, ttl]))

    async def holders_state(self, key: str) -> str | None:
        head = await self.client.getrange(key, 0, 0)
        return head.decode() if head in (b"B", b"V") else None

    async def put_facts(self, key: str, facts: ClaimFacts, ttl_seconds: int) -> None:
        args: list[Any] = [ttl_seconds, "w", facts.wallet]
        for template_id, count in facts.held.items():
            args += [f"h:{template_id}", count]
        for request_key, digest in facts.claim_keys.items():
            args += [f"r:{request_key}", digest]
        await self._batch.call(_PUT_FACTS, [key], args)

    async def read_version(self, key: str, fresh: str, ttl_seconds: int) -> str:
        found = await self._batch.call(_READ_VERSION, [key], [fresh, ttl_seconds])
        return found.decode() if isinstance(found, bytes) else str(found)

    async def bump_versions(self, keys: list[str], value: str, ttl_seconds: int) -> None:
        # One script call per key (each its own slot on a cluster), all in one pipeline.
        outcomes = await asyncio.gather(
            *(self._batch.call(_BUMP_VERSION, [key], [value, ttl_seconds]) for key in keys),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def mark(self, key: str, value: str, ttl_seconds: int) -> None:
        await self.client.set(key, value, ex=ttl_seconds)

    async def read_marks(self, keys: list[str]) -> list[str | None]:
        values = await self.client.mget(keys)
        return [None if value is None else value.decode() for value in values]

    async def drop_marks(self, keys: list[str]) -> None:
        await self.client.delete(*keys)

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
