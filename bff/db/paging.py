"""Keyset paging for the API's lists: ``{"items": [...], "next_cursor": ...}``, newest first
(or, for feeds read from a position on, oldest first)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import ColumnElement, Select

from bff.db.engine import Database
from bff.errors import validation_failed
from bff.schemas import MAX_ID, decode_cursor, encode_cursor


async def newest_first(
    db: Database, query: Select[Any], id_column: ColumnElement[int], limit: int, cursor: str | None
) -> tuple[list[Any], str | None]:
    """One page of ``query`` by descending id, and the cursor of the next page (or None).

    A cursor that was not made here is a 400 on the ``cursor`` field.
    """
    try:
        position = decode_cursor(cursor)
    except ValidationError as exc:
        raise validation_failed(exc.messages) from exc
    if position is not None:
        before = position.get("before")
        if not isinstance(before, int) or isinstance(before, bool) or not 0 < before <= MAX_ID:
            raise validation_failed({"cursor": ["Invalid cursor."]})
        query = query.where(id_column < before)
    query = query.order_by(id_column.desc()).limit(limit + 1)

    async def work(conn: Any) -> list[Any]:
        return list(await conn.execute(query))

    rows = await db.read(work)
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor({"before": rows[-1].id})


async def oldest_first(
    db: Database,
    query: Select[Any],
    id_column: ColumnElement[int],
    limit: int,
    after: int | None,
    cursor: str | None,
    keep: Callable[[Any], bool] | None = None,
) -> tuple[list[Any], str | None]:
    """One page of ``query`` by ascending id after ``after`` (or the ``cursor``'s position).

    For feeds read from a position on (a pull consumer's last id). ``keep``: the page
    ends before the first row it refuses (a row not final yet), and has no next
    cursor then. A cursor not made here, or both a cursor and ``after``, is a 400.
    """
    try:
        position = decode_cursor(cursor)
    except ValidationError as exc:
        raise validation_failed(exc.messages) from exc
    if position is not None:
        if after is not None:
            raise validation_failed({"cursor": ["Give either cursor or after, not both."]})
        after = position.get("after")
        if not isinstance(after, int) or isinstance(after, bool) or not 0 <= after <= MAX_ID:
            raise validation_failed({"cursor": ["Invalid cursor."]})
    if after is not None:
        query = query.where(id_column > after)
    query = query.order_by(id_column).limit(limit + 1)

    async def work(conn: Any) -> list[Any]:
        return list(await conn.execute(query))

    rows = await db.read(work)
    if keep is not None:
        for index, row in enumerate(rows):
            if not keep(row):
                return rows[: min(index, limit)], None
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor({"after": rows[-1].id})
