"""Each user's pricing facts per process, valid while the user's version is unchanged.

A signed-in product or list price needs the user's usable coupons (with their
templates' specs), how many they ever held per template, what counts against
their wallet, their membership and whether they took a new-member exclusive.
Read from the database on every request, that read was about 40 % of the
request's CPU. An :class:`Entry` keeps them per (shop, user) with:

* the user's version in the gate when the read began (``bff.versions``): every
  writer of those facts bumps it after its commit, so an entry whose version is no
  longer the gate's is never used;
* ``expires_at``, the first moment time alone changes them (a coupon becoming
  valid or expiring, a lock lapsing: ``user_facts.next_change``), capped by
  ``cache.user_facts_max_age_seconds``;
* ``read_at``: a clock that moved back before it (tests) misses too.

Claim windows and live windows are the shop's and decided per request from the
shop's facts, so they do not expire an entry. Checkout and redemption never use
it: they read the user's coupons in their own transaction.

Bounded by ``cache.user_facts_entries`` and ``cache.user_facts_bytes`` (an
estimate per entry, :func:`estimate`), least recently used out first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from widgets.coupon_price.user_facts import HeldCoupon, UserFacts

# What an entry costs in memory, measured with tracemalloc on CPython 3.12 (docs/PERFORMANCE.md
# has the figures): the entry, its facts and the cache's slot (key tuple, strings, the
# OrderedDict's node); each usable coupon (a HeldCoupon, its id and valid_to, the pair
# with the spec shared with the shop's facts, its engine Candidate); each template counted
# in held_counts. 20 held coupons: measured 8.8 KB, estimated 8.9 KB.
ENTRY_BYTES = 700
HELD_BYTES = 300
COUNT_BYTES = 110


@dataclass(slots=True)
class Entry:
    version: str
    held: list[tuple[HeldCoupon, dict[str, Any]]]
    user: UserFacts
    read_at: datetime
    expires_at: datetime
    size: int = 0
    candidates: list[Any] | None = None  # ``held`` as the engine's candidates, built once


def estimate(held: list[Any], user: UserFacts) -> int:
    return ENTRY_BYTES + HELD_BYTES * len(held) + COUNT_BYTES * len(user.held_counts)


class UserFactsCache:
    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[tuple[str, str], Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, shop_id: str, user_id: str, version: str, now: datetime) -> Entry | None:
        key = (shop_id, user_id)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.version != version or not entry.read_at <= now < entry.expires_at:
            self._pop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, shop_id: str, user_id: str, entry: Entry) -> None:
        key = (shop_id, user_id)
        entry.size = estimate(entry.held, entry.user)
        if entry.size > self.max_bytes:
            return
        self._pop(key)
        self._entries[key] = entry
        self.bytes += entry.size
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self.bytes -= old.size

    def drop(self, touched: set[tuple[str, str]]) -> None:
        """These users' facts changed (a bump in this process)."""
        for key in touched:
            self._pop(key)

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def _pop(self, key: tuple[str, str]) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry.size
