"""The in-process gate: the embedded default's twin of the Redis gate.

Same semantics as :mod:`bff.gate.redis`, on dicts with monotonic expiry. Each
method runs without an ``await`` inside, so it is atomic on the event loop.
With several worker processes (``BFF_WORKERS`` and no Redis) each has its own:
copies and limits are then per process, and the database decides the rest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from bff.gate.base import ClaimFacts, FactsCheck, IdemState
from bff.gate.holders import BloomBits

MAX_KEYS = 200_000


class _Holders:
    """A shop's holders filter: its state (``B`` or ``V``), its builder's token, its bits."""

    __slots__ = ("bloom", "state", "token")

    def __init__(self, token: str, bloom: BloomBits) -> None:
        self.state = "B"
        self.token = token
        self.bloom = bloom


class MemoryGate:
    name = "memory"

    def __init__(self, *, only_process: bool = True) -> None:
        # With several worker processes each has its own gate. Facts it kept would hold only
        # its own batches' claims, and a retry of another worker's claim would be refused,
        # not replayed: so it keeps none (put_facts), and unknown facts decide nothing.
        # Nor holders filters, for the same reason (holders_start builds none).
        self.only_process = only_process
        self._data: dict[str, tuple[float, Any]] = {}
        self._listeners: dict[str, list[Callable[[str], None]]] = {}

    def _get(self, key: str) -> Any:
        entry = self._data.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= time.monotonic():
            del self._data[key]
            return None
        return value

    def _put(self, key: str, value: Any, ttl: float) -> None:
        if len(self._data) >= MAX_KEYS:
            self._sweep()
        self._data[key] = (time.monotonic() + ttl, value)

    def _sweep(self) -> None:
        now = time.monotonic()
        for key in [k for k, (expires, _) in self._data.items() if expires <= now]:
            del self._data[key]

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._data.clear()

    async def flush(self) -> None:
        """Forget everything, as a restarted Redis would."""
        self._data.clear()

    async def hit(self, key: str, limit: int, window_seconds: int) -> bool:
        count = self._get(key)
        if count is None:
            self._put(key, 1, window_seconds)
            return limit >= 1
        self._data[key] = (self._data[key][0], count + 1)
        return count + 1 <= limit

    async def count(self, key: str) -> int:
        return int(self._get(key) or 0)

    async def admit_member(self, key: str, member: str, limit: int, ttl_seconds: int) -> bool:
        members = self._get(key)
        if members is None:
            members = set()
            self._put(key, members, ttl_seconds)
        if member in members:
            return True
        if len(members) >= limit:
            return False
        members.add(member)
        return True

    async def idem_begin(self, key: str, body_hash: str, pending_seconds: int) -> IdemState:
        entry = self._get(key)
        if entry is None:
            self._put(key, ("pending", body_hash, None), pending_seconds)
            return IdemState("new")
        state, stored_hash, reply = entry
        return IdemState(state, stored_hash, reply)

    async def idem_finish(self, key: str, body_hash: str, reply: bytes, ttl_seconds: int) -> None:
        self._put(key, ("done", body_hash, reply), ttl_seconds)

    async def idem_renew(self, key: str, body_hash: str, pending_seconds: int) -> None:
        entry = self._get(key)
        if entry is not None and entry[0] == "pending" and entry[1] == body_hash:
            self._put(key, entry, pending_seconds)

    async def idem_abort(self, key: str) -> None:
        entry = self._get(key)
        if entry is not None and entry[0] == "pending":
            del self._data[key]

    async def claim_begin(
        self,
        key: str,
        body_hash: str,
        pending_seconds: int,
        rate: tuple[str, int, int] | None,
        check: FactsCheck | None,
    ) -> IdemState:
        entry = self._get(key)
        if entry is not None:
            return IdemState(*entry)
        facts: ClaimFacts | None = None if check is None else self._get(check.facts_key)
        # The facts are known, and no coupon was issued under this request key.
        unclaimed = (
            check is not None and facts is not None and check.request_key not in facts.claim_keys
        )
        # No facts, and the shop's valid holders filter shows the user holds nothing.
        holds_nothing = False
        rebuild = False
        if check is not None and facts is None and check.sold_out and check.holders_key:
            holders = self._get(check.holders_key) if self.only_process else None
            if holders is None:
                rebuild = self.only_process
            elif holders.state == "V" and not holders.bloom.might_hold(check.user_id):
                holds_nothing = check.nothing_before_stock()
        if rate is not None and not await self.hit(*rate):
            return IdemState("limited_new" if unclaimed or holds_nothing else "limited")
        if (
            unclaimed
            and check is not None
            and facts is not None
            and check.sold_out
            and facts.held.get(check.template_id, 0) < check.per_user_limit
            and facts.wallet < check.wallet_cap
        ) or holds_nothing:
            return IdemState("refused")
        self._put(key, ("pending", body_hash, None), pending_seconds)
        return IdemState("new", rebuild=rebuild)

    async def holders_add(self, key: str, users: list[str]) -> None:
        holders = self._get(key)
        if holders is not None:
            holders.bloom.add(users)

    async def holders_start(self, key: str, token: str, bits: int, hashes: int, ttl: int) -> bool:
        if not self.only_process or self._get(key) is not None:
            return False
        self._put(key, _Holders(token, BloomBits(bits, hashes)), ttl)
        return True

    async def holders_mark(self, key: str, token: str, state: str, ttl: int) -> bool:
        holders = self._get(key)
        if holders is None or holders.state != "B" or holders.token != token:
            return False
        if not state:
            del self._data[key]
            return True
        holders.state = state
        self._put(key, holders, ttl)
        return True

    async def holders_state(self, key: str) -> str | None:
        holders = self._get(key)
        return None if holders is None else str(holders.state)

    async def put_facts(self, key: str, facts: ClaimFacts, ttl_seconds: int) -> None:
        if self.only_process:
            self._put(key, facts, ttl_seconds)

    async def read_version(self, key: str, fresh: str, ttl_seconds: int) -> str:
        value = self._get(key)
        if value is None:
            self._put(key, fresh, ttl_seconds)
            return fresh
        return str(value)

    async def bump_versions(self, keys: list[str], value: str, ttl_seconds: int) -> None:
        for key in keys:
            self._put(key, value, ttl_seconds)

    async def mark(self, key: str, value: str, ttl_seconds: int) -> None:
        self._put(key, value, ttl_seconds)

    async def read_marks(self, keys: list[str]) -> list[str | None]:
        return [self._get(key) for key in keys]

    async def drop_marks(self, keys: list[str]) -> None:
        for key in keys:
            self._data.pop(key, None)

    async def publish(self, channel: str, message: str) -> None:
        for handler in list(self._listeners.get(channel, ())):
            handler(message)

    async def subscribe(
        self, channel: str, handler: Callable[[str], None], on_subscribed: Callable[[], None]
    ) -> None:
        self._listeners.setdefault(channel, []).append(handler)
        on_subscribed()
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            self._listeners[channel].remove(handler)
