"""The pull feed (``GET /admin/events``): a shop's events, oldest first, from a position on.

For systems that can take neither a queue nor a webhook: they poll with ``after=<the
last id they saw>`` (or the page's ``next_cursor``) and get each event once, in id
order, over the last ``events.retention_days``.

Why events wait before they are served. Ids are handed out at insert, but
transactions commit in their own order: an event with a lower id may commit after
one with a higher id was already read, and a reader that moved past it would never
see it. Every transaction that writes events ends within the write deadline, so
once an event is ``events.feed_settle_seconds`` old (at least twice that deadline plus
two seconds, whatever the setting says) no lower id can still appear. The page ends
before the first event younger than that.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web
from sqlalchemy import select

from bff.clock import Clock
from bff.db import tables
from bff.db.engine import Database
from bff.db.paging import oldest_first
from bff.events import outbox
from config.loader import EventsSettings

E = tables.coupon_events


# Past twice the write deadline, a margin for clocks of different hosts.
CLOCK_MARGIN_SECONDS = 2.0


class EventFeed:
    def __init__(
        self, db: Database, clock: Clock, settings: EventsSettings, *, write_timeout: float
    ) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        # Never shorter than the promise needs, whatever the setting says (a deployment
        # that raised the write deadline keeps a feed that skips nothing).
        self.settle = timedelta(
            seconds=max(settings.feed_settle_seconds, 2 * write_timeout + CLOCK_MARGIN_SECONDS)
        )

    async def page(
        self,
        shop_id: str,
        *,
        after: int | None,
        types: list[str] | None,
        limit: int,
        cursor: str | None,
    ) -> dict[str, Any]:
        now = self.clock.now()
        settled = now - self.settle
        query = select(E).where(
            E.c.shop_id == shop_id,
            E.c.occurred_at >= now - timedelta(days=self.settings.retention_days),
        )
        if types:
            query = query.where(E.c.type.in_(sorted(set(types))))
        rows, next_cursor = await oldest_first(
            self.db,
            query,
            E.c.id,
            limit,
            after,
            cursor,
            keep=lambda row: row.occurred_at <= settled,
        )
        return {"items": [outbox.envelope(row) for row in rows], "next_cursor": next_cursor}


EVENT_FEED = web.AppKey("event_feed", EventFeed)
