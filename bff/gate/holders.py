"""The holders filter: a Bloom filter per shop of the users who ever held one of its coupons.

What it is for. DOMAIN.md's checks that come before SOLD_OUT (LIMIT_REACHED,
WALLET_FULL, a replay of a claim that succeeded, IDEMPOTENCY_CONFLICT) all need
the user to hold, or have held, a coupon of the shop. A user the filter
certainly does not hold is such a user: their claim on a template known sold
out is answered SOLD_OUT by the gate, without the database (see
:meth:`bff.gate.base.Gate.claim_begin` and :mod:`bff.coupons.holders`).

The structure. ``bits`` bits and ``hashes`` positions per user, by double
hashing of the SHA-1 of the user id: positions ``(a + i * b) mod bits`` for
``i < hashes``, ``a`` and ``b`` the first two 32-bit words of the digest. The Redis
gate computes the same positions in Lua (``redis.sha1hex``), so processes never
pass positions around and a filter's size is read from the filter itself (its
header, below): processes with different settings can never disagree on where a
user's bits are, so a change of settings cannot produce a false negative. A
false positive only sends the user to the database (the path every claim took
before the filter); a false negative is impossible: bits are only ever set.

Sizing (:func:`filter_size`): for ``users`` expected per shop and a false-positive
rate ``error``, ``bits = -users * ln(error) / ln(2)^2`` and
``hashes = round(bits / users * ln 2)``; 1,000,000 users at 1 % is 9,585,059 bits
(1.2 MB) and 7 hashes. Past ``users`` holders the false-positive rate rises (more
claims go to the database); answers stay right.

The Redis value is one string: a 32-byte header, then the bits. Header: the state
(``B`` building, ``V`` valid), a 15-character build token, the number of bits (12
digits) and of hashes (4 digits). One key for header and bits: an eviction or an
expiry removes both at once, so a "valid" header without its bits cannot exist.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

# The Redis value's header: its length in bytes, and so where the bits begin.
HEADER_BYTES = 32
HEADER_BITS = HEADER_BYTES * 8
TOKEN_CHARS = 15


def filter_size(users: int, error: float) -> tuple[int, int]:
    """(bits, hashes) of a filter for ``users`` holders at a false-positive rate ``error``."""
    if users < 1 or not 0 < error < 1:
        raise ValueError("a holders filter needs users >= 1 and 0 < error < 1")
    bits = math.ceil(-users * math.log(error) / math.log(2) ** 2)
    hashes = max(1, round(bits / users * math.log(2)))
    return bits, hashes


def positions(user_id: str, bits: int, hashes: int) -> list[int]:
    """The user's bit positions (0-based, before the header), as the Lua scripts compute them."""
    digest = hashlib.sha1(user_id.encode(), usedforsecurity=False).hexdigest()
    a = int(digest[0:8], 16)
    b = int(digest[8:16], 16)
    return [(a + i * b) % bits for i in range(hashes)]


def header(state: str, token: str, bits: int, hashes: int) -> str:
    """The Redis value's 32-byte header (see the module doc)."""
    if state not in ("B", "V") or len(token) != TOKEN_CHARS or not token.isalnum():
        raise ValueError("bad holders filter header")
    text = f"{state}{token}{bits:012d}{hashes:04d}"
    if len(text) != HEADER_BYTES:
        raise ValueError("holders filter too large for its header")
    return text


class BloomBits:
    """The in-process gate's filter: the same positions on a bytearray."""

    __slots__ = ("_array", "bits", "hashes")

    def __init__(self, bits: int, hashes: int) -> None:
        self.bits = bits
        self.hashes = hashes
        self._array = bytearray((bits + 7) // 8)

    def add(self, users: Iterable[str]) -> None:
        array = self._array
        for user in users:
            for position in positions(user, self.bits, self.hashes):
                array[position >> 3] |= 1 << (position & 7)

    def might_hold(self, user_id: str) -> bool:
        """False only for a user never added."""
        array = self._array
        return all(
            array[position >> 3] & (1 << (position & 7))
            for position in positions(user_id, self.bits, self.hashes)
        )
