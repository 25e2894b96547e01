"""One SQLAlchemy async engine over MariaDB (aiomysql) or the embedded SQLite file.

Choices that matter for speed and correctness:

* MySQL: ``pool_pre_ping`` and ``pool_recycle`` (MariaDB drops idle
  connections after ``wait_timeout``). ``pool_reset_on_return=None``: every
  connection is used inside ``engine.begin()`` or ``engine.connect()``, whose
  close already commits or rolls back, so the pool's own ROLLBACK would be a
  second round trip per request for nothing.
* SQLite: WAL, a busy timeout, and our own ``BEGIN IMMEDIATE`` from the
  ``begin`` event: Python's sqlite3 does not begin before a SELECT, which
  would make read-then-write transactions unsafe, and taking the write lock at
  BEGIN avoids the lock-upgrade deadlock between two writers.
* Deadlocks (1213) and lock wait timeouts (1205) are retried at the
  transaction boundary only, in :meth:`Database.transaction`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy.exc
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from config.loader import DatabaseSettings, redact_url

log = logging.getLogger("bff.db")

T = TypeVar("T")

RETRYABLE_MYSQL_CODES = frozenset({1213, 1205})
MAX_ATTEMPTS = 4


class Database:
    """The engine plus the transaction helper every service uses."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name  # "mysql" or "sqlite"

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    async def transaction(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``work`` in one transaction, retrying it whole on deadlock or lock timeout."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                async with self.engine.begin() as conn:
                    return await work(conn)
            except sqlalchemy.exc.OperationalError as exc:
                if attempt == MAX_ATTEMPTS or not is_retryable(exc):
                    raise
                log.info("retrying transaction after %s (attempt %d)", _code(exc), attempt)
                await asyncio.sleep(0.005 * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def read(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run read-only ``work`` on a connection (one consistent transaction)."""
        async with self.engine.connect() as conn:
            return await work(conn)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


def is_retryable(exc: sqlalchemy.exc.OperationalError) -> bool:
    code = _code(exc)
    if code in RETRYABLE_MYSQL_CODES:
        return True
    return "database is locked" in str(exc.orig)


def _code(exc: sqlalchemy.exc.DBAPIError) -> Any:
    args = getattr(exc.orig, "args", ())
    return args[0] if args else None


def create_engine(settings: DatabaseSettings, *, base_dir: Path | None = None) -> AsyncEngine:
    url = make_url(settings.effective_url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(settings, url, base_dir or Path.cwd())
    connect_args: dict[str, Any] = {
        "connect_timeout": settings.connect_timeout_seconds,
        "charset": "utf8mb4",
    }
    return create_async_engine(
        url,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_recycle=settings.pool_recycle_seconds,
        pool_pre_ping=True,
        pool_reset_on_return=None,
        pool_timeout=settings.connect_timeout_seconds,
        connect_args=connect_args,
        isolation_level="READ COMMITTED",
        # Statement parameters carry codes and user ids: keep them out of logs and errors.
        hide_parameters=True,
    )


def _sqlite_engine(settings: DatabaseSettings, url: Any, base_dir: Path) -> AsyncEngine:
    database = url.database or ""
    if database in ("", ":memory:"):
        # One shared in-memory connection cannot serve concurrent requests.
        raise ValueError("the embedded database needs a file path, not :memory:")
    path = Path(database)
    if not path.is_absolute():
        path = base_dir / path
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(
        url.set(database=str(path)),
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        connect_args={"timeout": 30},
        hide_parameters=True,
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to the "begin" hook below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def describe(settings: DatabaseSettings) -> str:
    return redact_url(settings.effective_url)
