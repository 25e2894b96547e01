"""Versioned schema migrations, applied on start.

Why not Alembic: the app applies its own schema at start-up on two engines
(MariaDB and the embedded SQLite) from inside the async app, and the
migrations are few and additive. A numbered list of functions and a
``schema_migrations`` table give the same guarantees (ordered, each applied
once, recorded) without a second configuration tree or a sync engine.

Rules for adding one: append a :class:`Migration` with the next number; never
edit one that has shipped. A migration that changes an existing table issues
its own DDL (``ALTER TABLE``); one that adds tables may ``create_all`` just
those tables.

Several processes starting together are serialized: MariaDB by a named lock
(``GET_LOCK``), SQLite by its write lock (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from bff.clock import Clock
from bff.db import tables
from bff.db.engine import Database

log = logging.getLogger("bff.db.migrations")

LOCK_NAME = "coupon_bff_migrate"
LOCK_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Connection], None]


def _create(*names: str) -> Callable[[Connection], None]:
    def apply(conn: Connection) -> None:
        tables.metadata.create_all(
            conn, tables=[tables.metadata.tables[name] for name in names], checkfirst=True
        )

    return apply


def _create_index(table: str, name: str) -> Callable[[Connection], None]:
    def apply(conn: Connection) -> None:
        index = next(i for i in tables.metadata.tables[table].indexes if i.name == name)
        index.create(conn, checkfirst=True)

    return apply


def _binary_collation(conn: Connection) -> None:
    """Tables made by 1 and 2 took the server's case-insensitive collation; fix them."""
    if conn.dialect.name != "mysql":
        return  # SQLite compares text exactly already
    for name in (
        "coupon_templates",
        "products",
        "members",
        "coupons",
        "coupon_codes",
        "template_daily",
        "wallets",
        "idempotency_records",
    ):
        conn.exec_driver_sql(
            f"ALTER TABLE `{name}` CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        )


def _long_idempotency_replies(conn: Connection) -> None:
    """A grant to thousands of users replies with more than TEXT's 64 KB on MariaDB."""
    if conn.dialect.name != "mysql":
        return  # SQLite's TEXT has no such limit
    conn.exec_driver_sql("ALTER TABLE `idempotency_records` MODIFY `reply` MEDIUMTEXT NOT NULL")


MIGRATIONS: list[Migration] = [
    Migration(
        1, "templates, products, members", _create("coupon_templates", "products", "members")
    ),
    Migration(
        2,
        "coupon ledger",
        _create("coupons", "coupon_codes", "template_daily", "wallets", "idempotency_records"),
    ),
    Migration(3, "binary collation for ids, keys and codes", _binary_collation),
    Migration(4, "live-room prices", _create("live_room_prices")),
    Migration(
        5,
        "gift packs, popups, new-member exclusives",
        _create("gift_packs", "gift_pack_claims", "pack_popups", "exclusive_takes", "shop_locks"),
    ),
    Migration(
        6,
        "points ledger and exchange offers",
        _create("points_balances", "points_ledger", "exchange_offers"),
    ),
    Migration(7, "redemptions", _create("redemptions", "redemption_coupons")),
    Migration(8, "coupons by order", _create_index("coupons", "ix_coupons_shop_id_order_id")),
    Migration(9, "idempotency replies up to 16 MB", _long_idempotency_replies),
    Migration(10, "coupon events outbox", _create("coupon_events")),
]


async def migrate(db: Database, clock: Clock) -> list[int]:
    """Apply every pending migration; returns the versions applied now."""
    async with db.engine.connect() as conn:
        locked = False
        if not db.is_sqlite:
            got = await conn.scalar(
                text("SELECT GET_LOCK(:name, :timeout)"),
                {"name": LOCK_NAME, "timeout": LOCK_TIMEOUT_SECONDS},
            )
            if got != 1:
                raise RuntimeError("could not take the migration lock")
            locked = True
            await conn.commit()
        try:
            applied = await _apply_pending(conn, clock)
        finally:
            if locked:
                await conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": LOCK_NAME})
                await conn.commit()
    if applied:
        log.info("schema migrated", extra={"fields": {"versions": applied}})
    return applied


async def _apply_pending(conn: AsyncConnection, clock: Clock) -> list[int]:
    await conn.run_sync(
        lambda sync: tables.metadata.create_all(
            sync, tables=[tables.schema_migrations], checkfirst=True
        )
    )
    await conn.commit()
    done = set((await conn.scalars(select(tables.schema_migrations.c.version))).all())
    await conn.commit()
    applied: list[int] = []
    for migration in MIGRATIONS:
        if migration.version in done:
            continue
        await conn.run_sync(migration.apply)
        await conn.execute(
            insert(tables.schema_migrations).values(
                version=migration.version, name=migration.name, applied_at=clock.now()
            )
        )
        await conn.commit()
        applied.append(migration.version)
    return applied
