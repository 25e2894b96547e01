"""The gate interface shared by the Redis gate and its in-process twin.

The gate answers fast what can be answered without the database: rate-limit
windows, distinct-member counts (accounts per device), idempotency markers
and replies, each user's claim facts (see :class:`ClaimFacts`), templates seen
sold out, and price-change messages between processes. It is never the
truth: every decision that issues or spends is made again by the database
write, so a gate that lost its keys (restart, FLUSHDB) costs speed, never
correctness.

Keys carry a hash tag (``{...}``) so that each script touches one slot and
stays valid on Redis Cluster. Which keys share a slot: a user's idempotency
markers, rate counters, facts and pricing version (``{shop:user}``); a
template's sold-out flags (``{tpl:ID}``); a shop's holders filter
(``{shop}``, alone in its slot: the claim reads it in a script call of its
own, sent in the same pipeline as ``CLAIM_BEGIN``).
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
    # The shop's holders filter was not there (lost, or never built): rebuild it.
    rebuild: bool = False


@dataclass(frozen=True, slots=True)
class FactsCheck:
    """What :meth:`Gate.claim_begin` may decide from the user's facts, without the database.

    ``sold_out`` (the process saw the template sold out): refuse the claim, but
    only where DOMAIN.md's order lets stock decide: the user's facts are known,
    say the user is below ``per_user_limit`` for the template and below
    ``wallet_cap``, and hold no coupon under ``request_key`` (a retry of a claim
    that succeeded is replayed, never refused). Otherwise the claim goes on to
    the ledger, which decides with the database.

    Over the rate limit: when the facts are known and hold no coupon under
    ``request_key``, the claim is no retry of one that succeeded (``limited_new``)
    and is refused at once; otherwise (``limited``) it may be, and the caller looks
    for it in the database.

    Facts decide only in a gate every process shares (Redis, or the in-process
    gate of a single process): another process's gate would miss this one's claims.

    ``holders_key`` (the shop's holders filter, :mod:`bff.gate.holders`) and
    ``user_id``: a user with no facts whom a valid filter certainly does not hold
    holds no coupon of the shop, so nothing DOMAIN.md checks before stock applies
    (no limit reached, an empty wallet, no earlier claim to replay): ``refused``
    when ``sold_out``, ``limited_new`` when over the rate limit, exactly as known
    facts would say. A filter found missing asks for a rebuild (``IdemState.rebuild``).
    """

    facts_key: str
    request_key: str
    template_id: int
    per_user_limit: int
    wallet_cap: int
    sold_out: bool = True
    holders_key: str | None = None
    user_id: str = ""

    def nothing_before_stock(self) -> bool:
        """A user who holds nothing passes the per-user limit and the wallet cap."""
        return self.per_user_limit > 0 and self.wallet_cap > 0


@dataclass(frozen=True, slots=True)
class ClaimFacts:
    """What one user holds in one shop, as the ledger last wrote it under the user's lock.

    Upper bounds, never lower ones: ``wallet`` counts unused, locked and used coupons
    unexpired when written (expiry only lowers the truth, and a used coupon an order
    cancel gives back was counted already), ``held`` the
    coupons ever issued per template (what ``per_user_limit`` counts),
    ``claim_keys`` the durable request key and body hash of every claimed coupon.
    A write that rolls back after writing them leaves them too high, which only
    sends that user's next sold-out claim to the database.
    """

    wallet: int
    held: dict[int, int]
    claim_keys: dict[str, str]


def facts_key(shop_id: str, user_id: str) -> str:
    """A user's facts in the gate, under the user's hash tag like their idempotency keys."""
    return f"uf:{{{shop_id}:{user_id}}}"


def version_key(shop_id: str, user_id: str) -> str:
    """A user's pricing-facts version (:mod:`bff.versions`), under the user's hash tag."""
    return f"uv:{{{shop_id}:{user_id}}}"


def holders_key(shop_id: str) -> str:
    """A shop's holders filter: one key per shop, in a slot of its own on a cluster (it
    shares no hash tag with the user's keys, so it is never a key of ``CLAIM_BEGIN``)."""
    return f"hf:{{{shop_id}}}"


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

    async def idem_renew(self, key: str, body_hash: str, pending_seconds: int) -> None:
        """Extend a pending marker of this body (its runner is still working)."""
        ...

    async def claim_begin(
        self,
        key: str,
        body_hash: str,
        pending_seconds: int,
        rate: tuple[str, int, int] | None,
        check: FactsCheck | None,
    ) -> IdemState:
        """``idem_begin`` for a claim, the user's rate limit and the sold-out refusal in one call.

        In this order: a known request id answers as ``idem_begin`` does; then
        ``rate`` (key, limit, window seconds) counts one claim, ``limited`` when over
        (``limited_new`` when ``check``'s facts show the claim is not a retry); then
        ``check`` may answer ``refused`` (see :class:`FactsCheck`). None of
        ``limited``, ``limited_new`` and ``refused`` leaves a pending marker.
        ``rate`` and ``check`` keys share ``key``'s hash tag (the user's), except
        ``check.holders_key`` (the shop's), which the Redis gate reads in a second
        script call of the same pipeline.
        """
        ...

    async def holders_add(self, key: str, users: list[str]) -> None:
        """Add users to a shop's holders filter if it exists (building or valid); else
        nothing (a rebuild will find them). The ledger calls it before its commit."""
        ...

    async def holders_start(self, key: str, token: str, bits: int, hashes: int, ttl: int) -> bool:
        """Create an empty filter in the ``building`` state owned by ``token`` (expiring
        after ``ttl`` seconds unless renewed); False if one exists (or filters are off)."""
        ...

    async def holders_mark(self, key: str, token: str, state: str, ttl: int) -> bool:
        """Set a building filter owned by ``token`` to ``state`` (``B``: still building,
        ``V``: valid; empty: delete it) with a new TTL; False if it is no longer there or
        not ours."""
        ...

    async def holders_state(self, key: str) -> str | None:
        """``B``, ``V`` or None (no filter): for tests and operators."""
        ...

    async def put_facts(self, key: str, facts: ClaimFacts, ttl_seconds: int) -> None:
        """Replace a user's facts. Only the ledger calls it, holding the user's wallet lock."""
        ...

    async def read_version(self, key: str, fresh: str, ttl_seconds: int) -> str:
        """The value under ``key``; if there is none, ``fresh`` is set (for ``ttl_seconds``)
        and returned. One call, pipelined with the others of its loop turn."""
        ...

    async def bump_versions(self, keys: list[str], value: str, ttl_seconds: int) -> None:
        """Set every key (one hash tag each) to ``value``, a value none of them ever held."""
        ...

    async def mark(self, key: str, value: str, ttl_seconds: int) -> None:
        """Set a plain flag (a template seen sold out)."""
        ...

    async def read_marks(self, keys: list[str]) -> list[str | None]:
        """The flags under ``keys`` (one hash tag), None where unset."""
        ...

    async def drop_marks(self, keys: list[str]) -> None:
        """Remove the flags under ``keys`` (one hash tag)."""
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
