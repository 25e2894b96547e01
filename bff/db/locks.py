"""Named per-shop locks held until the transaction ends.

For checks a unique key cannot express (no two active packs of a kind with
overlapping windows): writers upsert one ``shop_locks`` row first, which takes
its exclusive row lock on MariaDB. SQLite's ``BEGIN IMMEDIATE`` already
serializes every writer.
"""

from __future__ import annotations

from sqlalchemy.dialects import mysql
from sqlalchemy.ext.asyncio import AsyncConnection

from bff.db import tables

L = tables.shop_locks


async def lock_shop(conn: AsyncConnection, shop_id: str, name: str) -> None:
    if conn.dialect.name == "sqlite":
        return
    statement = mysql.insert(L).values(shop_id=shop_id, name=name)
    await conn.execute(statement.on_duplicate_key_update(name=statement.inserted.name))
