"""Locks held until the transaction ends: named per-shop locks and users' wallet rows.

For checks a unique key cannot express (no two active packs of a kind with
overlapping windows): writers upsert one ``shop_locks`` row first, which takes
its exclusive row lock on MariaDB. Every writer of a user's coupons upserts
the user's ``wallets`` row the same way (the wallet cap across templates, and
the user's facts in the gate). SQLite's ``BEGIN IMMEDIATE`` already
serializes every writer.
"""

from __future__ import annotations

from sqlalchemy.dialects import mysql
from sqlalchemy.ext.asyncio import AsyncConnection

from bff.db import tables

L = tables.shop_locks
W = tables.wallets


async def lock_shop(conn: AsyncConnection, shop_id: str, name: str) -> None:
    if conn.dialect.name == "sqlite":
        return
    statement = mysql.insert(L).values(shop_id=shop_id, name=name)
    await conn.execute(statement.on_duplicate_key_update(name=statement.inserted.name))


async def lock_wallets(conn: AsyncConnection, shop_id: str, users: list[str]) -> None:
    """Take these users' wallet rows exclusively, in user order."""
    if conn.dialect.name == "sqlite":
        return
    # An upsert takes each row's exclusive lock at once, in user order. (INSERT IGNORE
    # then SELECT FOR UPDATE would take a shared lock first, and two batches sharing
    # a user would deadlock upgrading it.)
    rows = [{"shop_id": shop_id, "user_id": user} for user in sorted(users)]
    # An executemany of one cached statement: the driver sends it as one multi-row INSERT,
    # rows in the order given. (A ``.values(rows)`` statement was compiled on every call.)
    await conn.execute(_LOCK_WALLET, rows)


_insert = mysql.insert(W)
_LOCK_WALLET = _insert.on_duplicate_key_update(user_id=_insert.inserted.user_id)
