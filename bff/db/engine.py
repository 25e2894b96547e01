"""One SQLAlchemy async engine over MariaDB (aiomysql) or the embedded SQLite file.

Choices that matter for speed and correctness:

* MySQL: a ping at checkout for a connection idle in the pool for more than
  ``PING_AFTER_IDLE_SECONDS`` (:func:`_ping_idle`), and ``pool_recycle`` (MariaDB
  drops idle connections after ``wait_timeout``). ``pool_pre_ping`` would ping at
  every checkout: a round trip per read or batch under load, for connections that
  answered milliseconds ago. ``pool_reset_on_return=None``: every
  connection is used inside ``engine.begin()`` or ``engine.connect()``, whose
  close already commits or rolls back, so the pool's own ROLLBACK would be a
  second round trip per request for nothing.
* SQLite: WAL, a busy timeout, and our own ``BEGIN IMMEDIATE`` from the
  ``begin`` event: Python's sqlite3 does not begin before a SELECT, which
  would make read-then-write transactions unsafe, and taking the write lock at
  BEGIN avoids the lock-upgrade deadlock between two writers.
* Deadlocks (1213) and lock wait timeouts (1205) are retried at the
  transaction boundary only, in :meth:`Database.transaction`.
* The hottest single-statement reads (:class:`DirectRead`, :meth:`Database.fetch`) go
  straight to the driver on MariaDB: the statement is built and compiled by SQLAlchemy
  once, and run on a connection of a second, AUTOCOMMIT pool (so it leaves no
  transaction open behind it, and needs no ROLLBACK), with its parameters and UTC
  columns converted as the column types would. SQLAlchemy's execution layer cost more
  than the driver's own work: a 20-row read of a checkout took 398 us of CPU through
  it and 224 us through the driver on a pooled connection (aiomysql, in process).
  SQLite runs the same statement through SQLAlchemy.
* Deadlines: every unit of work (:meth:`Database.read`, :meth:`Database.transaction`,
  :meth:`Database.ping`) runs under one ``asyncio.timeout``, from the pool checkout
  to the commit, retries included: ``database.read_timeout_seconds`` for reads,
  ``database.write_timeout_seconds`` for transactions (``bulk_timeout_seconds`` for
  the few that write thousands of rows: codes). A stalled server (failover,
  partition, lock storm) then costs the request a 503, not a hang. The cancellation
  lands inside the driver call; SQLAlchemy treats a cancelled call as a disconnect
  and invalidates the connection (it is closed, never returned to the pool in an
  unknown state), and an interrupted transaction is never committed: either its
  COMMIT had not been sent (the server rolls it back when the socket closes) or it
  had, and the outcome is unknown, which the durable request keys make safe to
  retry. MariaDB also stops waiting for a row lock at the write deadline
  (``innodb_lock_wait_timeout``), so a session the client gave up on does not hold
  its locks for the server's default 50 s; SQLite's busy timeout is the write
  deadline, so a write lock held elsewhere ends in "database is locked" (503).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy.exc
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql import Select

from bff.db.types import UtcDateTime
from bff.errors import Unavailable
from bff.versions import begin_touching, end_touching
from config.loader import DatabaseSettings, redact_url

log = logging.getLogger("bff.db")

T = TypeVar("T")

RETRYABLE_MYSQL_CODES = frozenset({1213, 1205})
MAX_ATTEMPTS = 4


class DeadlineExceeded(Unavailable):
    """A unit of database work did not finish within its deadline (503 UNAVAILABLE)."""


class Database:
    """The engine plus the transaction helper every service uses."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        direct_engine: AsyncEngine | None = None,
        read_timeout_seconds: float = 3.0,
        write_timeout_seconds: float = 5.0,
        bulk_timeout_seconds: float = 60.0,
    ) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name  # "mysql" or "sqlite"
        # MariaDB: the AUTOCOMMIT pool of the direct reads (:meth:`fetch`).
        self.direct_engine = direct_engine
        # Called with each direct read's SQL before it runs (tests observe statements
        # here as well as through the engine's events), and the tracing span factory.
        self.observers: list[Callable[[str], None]] = []
        self.direct_span: Callable[[str], Any] | None = None
        self.read_timeout = read_timeout_seconds
        self.write_timeout = write_timeout_seconds
        self.bulk_timeout = bulk_timeout_seconds
        # Called after a transaction with the users its work marked (bff.versions.touch):
        # the app bumps their pricing-facts versions there, before the transaction returns.
        self.after_commit: Callable[[set[tuple[str, str]]], Awaitable[None]] | None = None

    @classmethod
    def from_settings(cls, settings: DatabaseSettings, *, base_dir: Path | None = None) -> Database:
        engine = create_engine(settings, base_dir=base_dir)
        return cls(
            engine,
            direct_engine=None
            if engine.dialect.name == "sqlite"
            else create_engine(settings, direct=True),
            read_timeout_seconds=settings.read_timeout_seconds,
            write_timeout_seconds=settings.write_timeout_seconds,
            bulk_timeout_seconds=settings.bulk_timeout_seconds,
        )

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    async def transaction(
        self, work: Callable[[AsyncConnection], Awaitable[T]], *, bulk: bool = False
    ) -> T:
        """Run ``work`` in one transaction, retrying it whole on deadlock or lock timeout.

        Within the write deadline (the bulk one for ``bulk`` work: thousands of rows),
        retries included; past it :class:`DeadlineExceeded` and nothing committed by
        this call (unless the deadline fell on the COMMIT itself, whose outcome the
        caller cannot know: writes carry request keys so a retry finds what such a
        commit wrote).
        """
        touched, token = begin_touching()
        try:
            return await self._transaction(work, bulk)
        finally:
            end_touching(token)
            # Also after a failure: a COMMIT whose outcome is unknown may have written, and
            # a needless bump costs one cache miss. (Rolled-back attempts' marks included.)
            if touched and self.after_commit is not None:
                await self.after_commit(touched)

    async def _transaction(self, work: Callable[[AsyncConnection], Awaitable[T]], bulk: bool) -> T:
        async def attempts(done: list[T], deadline: float) -> T:
            loop = asyncio.get_running_loop()
            for attempt in range(1, MAX_ATTEMPTS + 1):
                try:
                    async with self.engine.connect() as conn:
                        async with conn.begin():
                            result = await work(conn)
                        done.append(result)  # committed
                    return result
                except sqlalchemy.exc.OperationalError as exc:
                    if attempt == MAX_ATTEMPTS or not is_retryable(exc):
                        raise
                    if loop.time() + 0.005 * attempt >= deadline:
                        raise  # no time left for another try: the 503 it is
                    log.info("retrying transaction after %s (attempt %d)", _code(exc), attempt)
                    await asyncio.sleep(0.005 * attempt)
            raise AssertionError("unreachable")  # pragma: no cover

        seconds = self.bulk_timeout if bulk else self.write_timeout
        return await _within(seconds, "transaction", attempts)

    async def read(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run read-only ``work`` on a connection (one consistent transaction).

        Within the read deadline, or :class:`DeadlineExceeded`.
        """

        async def once(done: list[T], deadline: float) -> T:
            async with self.engine.connect() as conn:
                done.append(await work(conn))
            return done[0]

        return await _within(self.read_timeout, "read", once)

    async def fetch(self, read: DirectRead, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """The rows of one read-only statement, within the read deadline (see the module
        doc: on MariaDB straight through the driver). Driver errors come as SQLAlchemy's
        (``DBAPIError`` and its subclasses), as from :meth:`read`."""
        if self.direct_engine is None:
            return await self.read(lambda conn: read.through(conn, params))
        direct = self.direct_engine
        sql, args = read.sql, read.arguments(params)
        for observe in self.observers:
            observe(sql)

        async def once(done: list[list[tuple[Any, ...]]], deadline: float) -> Any:
            async with direct.connect() as conn:
                pooled = await conn.get_raw_connection()
                try:
                    async with pooled.driver_connection.cursor() as cursor:
                        await cursor.execute(sql, args)
                        result = None
                        if read.packed:
                            result = read.unpacked(await cursor.fetchall())
                            if result is None:  # cut short: row by row
                                await cursor.execute(read.rows_sql, args)
                        if result is None:
                            result = read.converted(await cursor.fetchall())
                except BaseException as exc:
                    # Cut off mid-statement or failed: its state is unknown, never reused.
                    await conn.invalidate()
                    if isinstance(exc, Exception):
                        raise _as_dbapi_error(direct, sql, exc) from exc
                    raise
            done.append(result)
            return done[0]

        if self.direct_span is None:
            return await _within(self.read_timeout, "read", once)
        with self.direct_span(sql):
            return await _within(self.read_timeout, "read", once)

    async def ping(self) -> None:
        await self.read(_select_one)

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.direct_engine is not None:
            await self.direct_engine.dispose()


class DirectRead:
    """A read-only statement for :meth:`Database.fetch`, compiled once for MariaDB.

    Its parameters are bound by name (literal values the statement holds are its own);
    UTC columns and parameters are converted as :class:`bff.db.types.UtcDateTime` does,
    so rows are what SQLAlchemy would return, as plain tuples. No expanding IN lists.

    ``packed``: on MariaDB the rows come back as one (``GROUP_CONCAT`` of the columns,
    with UTC datetimes as microseconds since the epoch, and ``COUNT(*)``), unpacked
    here: the driver's per-row work (aiomysql reads each row as two packets from the
    stream and parses each datetime in Python) was most of a 20-row read. Only for
    statements of NOT NULL integer and UTC datetime columns; a result cut short by
    ``group_concat_max_len`` (the count tells) is read again row by row."""

    def __init__(self, statement: Select[Any], *, packed: bool = False) -> None:
        from sqlalchemy.dialects.mysql.aiomysql import dialect as mysql_dialect

        dialect = mysql_dialect()
        self.statement = statement
        compiled = statement.compile(dialect=dialect)
        self.rows_sql = compiled.string
        self.sql = self.rows_sql
        columns = list(statement.selected_columns)
        self._utc_columns = [
            index for index, column in enumerate(columns) if isinstance(column.type, UtcDateTime)
        ]
        self.packed = packed
        if packed:
            parts = []
            for column in columns:
                rendered = str(column.compile(dialect=dialect))
                if getattr(column, "nullable", True):
                    raise ValueError(f"a packed read needs NOT NULL columns: {rendered}")
                if isinstance(column.type, UtcDateTime):
                    rendered = f"TIMESTAMPDIFF(MICROSECOND, '1970-01-01', {rendered})"
                elif not _is_integer(column.type):
                    raise ValueError(f"a packed read takes integers and UTC times: {rendered}")
                parts.append(rendered)
            joined = ", ',', ".join(parts)
            select_list = f"GROUP_CONCAT({joined} SEPARATOR ';'), COUNT(*)"
            head = "SELECT "
            from_at = self.rows_sql.index("\nFROM ")
            self.sql = head + select_list + self.rows_sql[from_at:]
        names = compiled.positiontup or []
        binds = compiled.binds
        # Per placeholder: (name, literal value or None, converts a UTC datetime).
        self._params = [
            (
                name,
                binds[name].effective_value
                if binds[name].callable is None and not binds[name].required
                else None,
                isinstance(binds[name].type, UtcDateTime),
            )
            for name in names
        ]

    def arguments(self, params: dict[str, Any]) -> list[Any]:
        out = []
        for name, literal, utc in self._params:
            value = params[name] if name in params else literal
            if utc and value is not None:
                if value.tzinfo is None:
                    raise ValueError("naive datetime given to a UTC column")
                value = value.astimezone(UTC).replace(tzinfo=None)
            out.append(value)
        return out

    def converted(self, rows: Any) -> list[tuple[Any, ...]]:
        if not self._utc_columns:
            return [tuple(row) for row in rows]
        out = []
        for row in rows:
            values = list(row)
            for index in self._utc_columns:
                if values[index] is not None:
                    values[index] = values[index].replace(tzinfo=UTC)
            out.append(tuple(values))
        return out

    def unpacked(self, rows: Any) -> list[tuple[Any, ...]] | None:
        """The rows of a packed result; None when it was cut short (read them again)."""
        ((packed, count),) = rows
        if not count:
            return []
        if isinstance(packed, bytes):
            packed = packed.decode()
        utc = self._utc_columns
        out = []
        for item in packed.split(";"):
            values: list[Any] = [int(part) for part in item.split(",")]
            for index in utc:
                values[index] = _EPOCH + timedelta(microseconds=values[index])
            out.append(tuple(values))
        return out if len(out) == count else None

    async def through(self, conn: AsyncConnection, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """The same statement through SQLAlchemy (SQLite)."""
        return [tuple(row) for row in await conn.execute(self.statement, params)]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _is_integer(kind: Any) -> bool:
    try:
        return kind.python_type is int
    except NotImplementedError:
        return False


def _as_dbapi_error(engine: AsyncEngine, sql: str, exc: Exception) -> Exception:
    """A driver's exception as SQLAlchemy raises it (the app maps those to 503 or 500)."""
    dbapi = engine.dialect.loaded_dbapi
    if not isinstance(exc, dbapi.Error):
        return exc
    return sqlalchemy.exc.DBAPIError.instance(
        sql,
        None,
        exc,
        dbapi.Error,
        hide_parameters=True,
        connection_invalidated=engine.dialect.is_disconnect(exc, None, None),
    )


async def _within(seconds: float, what: str, run: Callable[[list[T], float], Awaitable[T]]) -> T:
    """``run(done, deadline)`` under a deadline of ``seconds``; past it
    :class:`DeadlineExceeded`, unless ``run`` had put its result in ``done`` (the deadline
    fell on returning the connection, after the work, or the commit, was done)."""
    done: list[T] = []
    bound = asyncio.timeout(seconds)
    try:
        async with bound:
            return await run(done, bound.when() or math.inf)
    except TimeoutError as exc:
        if not bound.expired():
            raise  # a TimeoutError of the work's own, not this deadline
        if done:
            return done[0]
        raise DeadlineExceeded(f"database {what} exceeded its {seconds:g} s deadline") from exc


async def _select_one(conn: AsyncConnection) -> None:
    await conn.execute(text("SELECT 1"))


def is_retryable(exc: sqlalchemy.exc.OperationalError) -> bool:
    code = _code(exc)
    if code in RETRYABLE_MYSQL_CODES:
        return True
    return "database is locked" in str(exc.orig)


def _code(exc: sqlalchemy.exc.DBAPIError) -> Any:
    args = getattr(exc.orig, "args", ())
    return args[0] if args else None


def create_engine(
    settings: DatabaseSettings, *, base_dir: Path | None = None, direct: bool = False
) -> AsyncEngine:
    """The engine of ``settings``; ``direct``: MariaDB's AUTOCOMMIT pool of the direct
    reads (the session still reads at READ COMMITTED: each statement its own snapshot)."""
    url = make_url(settings.effective_url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(settings, url, base_dir or Path.cwd())
    connect_args: dict[str, Any] = {
        "connect_timeout": settings.connect_timeout_seconds,
        "charset": "utf8mb4",
        # A row-lock wait ends with the write deadline, not InnoDB's default 50 s: a
        # session whose client gave up (the deadline passed) stops queueing for locks.
        "init_command": "SET SESSION innodb_lock_wait_timeout = "
        + str(max(1, math.ceil(settings.write_timeout_seconds)))
        + (", SESSION tx_isolation = 'READ-COMMITTED'" if direct else ""),
    }
    engine = create_async_engine(
        url,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_recycle=settings.pool_recycle_seconds,
        pool_reset_on_return=None,
        pool_timeout=settings.connect_timeout_seconds,
        connect_args=connect_args,
        isolation_level="AUTOCOMMIT" if direct else "READ COMMITTED",
        # Statement parameters carry codes and user ids: keep them out of logs and errors.
        hide_parameters=True,
    )
    _ping_idle(engine)
    return engine


# A pooled connection idle for longer is pinged before use: one that answered this
# recently is reused as is. (Under load connections come back within milliseconds; a
# server restart or a network cut lasts longer than this, so the connections it left
# behind have been idle longer and are pinged, found dead and replaced.)
PING_AFTER_IDLE_SECONDS = 1.0


def _ping_idle(engine: AsyncEngine) -> None:
    """``pool_pre_ping`` for connections idle over ``PING_AFTER_IDLE_SECONDS`` only.

    The pool's checkout event (SQLAlchemy's documented hook for a custom pre-ping): a
    ping that finds the connection dead raises ``DisconnectionError``, and the pool
    discards it and checks out another (a new connection is not pinged).
    """
    sync = engine.sync_engine
    dialect = sync.dialect

    def stamp(dbapi_connection: Any, record: Any, *_: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since <= PING_AFTER_IDLE_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                raise sqlalchemy.exc.DisconnectionError("idle connection was closed") from exc
            raise

    event.listen(sync.pool, "connect", stamp)
    event.listen(sync.pool, "checkin", stamp)
    event.listen(sync.pool, "checkout", checkout)


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
        # A write lock held elsewhere is waited for up to the write deadline, then
        # "database is locked" (503 UNAVAILABLE).
        connect_args={"timeout": settings.write_timeout_seconds},
        hide_parameters=True,
    )
    busy_ms = max(1, round(settings.write_timeout_seconds * 1000))

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to the "begin" hook below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def describe(settings: DatabaseSettings) -> str:
    return redact_url(settings.effective_url)
