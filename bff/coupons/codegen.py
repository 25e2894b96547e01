"""Making coupon codes: unguessable (from ``secrets``) and easy to read aloud."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from bff.db import tables

CODES = tables.coupon_codes
RANDOM_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
RANDOM_CODE_LENGTH = 16  # 16 symbols of 32 = 80 bits
INSERT_CHUNK = 1000


def random_code() -> str:
    return "".join(secrets.choice(RANDOM_CODE_ALPHABET) for _ in range(RANDOM_CODE_LENGTH))


async def insert_generated(
    conn: AsyncConnection, shop_id: str, template_id: int, count: int, now: datetime
) -> int:
    """Insert ``count`` fresh random codes (80 bits each: a collision is not expected)."""
    made = 0
    while made < count:
        chunk = min(INSERT_CHUNK, count - made)
        rows = [
            {
                "shop_id": shop_id,
                "template_id": template_id,
                "code": random_code(),
                "coupon_id": None,
                "created_at": now,
            }
            for _ in range(chunk)
        ]
        await conn.execute(CODES.insert(), rows)
        made += chunk
    return made
