"""The gate interface shared by the Redis gate and its in-process twin.

The gate answers fast what can be answered without the database: rate-limit
windows, distinct-member counts (accounts per device), idempotency markers
and replies, and price-change messages between processes. It is never the
truth: every decision that issues or spends is made again by the database
write, so a gate that lost its keys (restart, FLUSHDB) costs speed, never
correctness.

Keys carry a hash tag (``{...}``) so that each script touches one slot and
stays valid on Redis Cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class IdemState:
    """What the gate knows of a request id: ``new`` (the caller now owns it), ``pending``
    (another copy is running) or ``done`` (``reply`` holds the first answer)."""

    state: str
    body_hash: str | None = None
    reply: bytes | None = None


def window_key(prefix: str, now: datetime, window_seconds: int) -> tuple[str, int]:
    """The key of the fixed window holding ``now``, and the seconds left in it."""
    stamp = int(now.timestamp())
    start = stamp - stamp % window_seconds
    return f"{prefix}:{start}", max(start + window_seconds - stamp, 1)


class Gate(Protocol):
    name: str

    async def ping(self) -> None:
        """Raise if the gate cannot answer."""
        ...

    async def close(self) -> None: ...

    async def hit(self, key: str, limit: int, window_seconds: int) -> bool:
        """Count one event under ``key`` (which names its window); True while within ``limit``.

        Callers put the window's start in the key (see :func:`window_key`), so the
        window follows the app's clock; the key expires after ``window_seconds``.
        """
        ...

    async def count(self, key: str) -> int:
        """The current value of a ``hit`` counter (0 when absent)."""
        ...

    async def admit_member(self, key: str, member: str, limit: int, ttl_seconds: int) -> bool:
        """True if ``member`` is in the expiring set or was added while it had fewer than
        ``limit`` members; False (and nothing added) when the set is full."""
        ...

    async def idem_begin(self, key: str, body_hash: str, pending_seconds: int) -> IdemState:
        """Claim a request id, or learn who holds it and what it answered."""
        ...

    async def idem_finish(
        self, key: str, body_hash: str, reply: bytes, ttl_seconds: int
    ) -> None: ...

    async def idem_abort(self, key: str) -> None:
        """Give the request id back (the request ended without a reply worth replaying)."""
        ...

    async def publish(self, channel: str, message: str) -> None:
        """Tell every process listening on ``channel``."""
        ...

    async def subscribe(
        self, channel: str, handler: Callable[[str], None], on_subscribed: Callable[[], None]
    ) -> None:
        """Call ``on_subscribed`` once listening, then ``handler`` for each message, until
        cancelled (or the connection is lost)."""
        ...
