"""Merchant admin: the coupon events feed, for systems that pull (docs/EVENTS.md)."""

from __future__ import annotations

from typing import Any

from bff.events.feed import EVENT_FEED
from bff.events.schemas import EventFeedQuerySchema, EventSchema
from bff.routing import MERCHANT, Call, Routes
from bff.schemas import page_reply

routes = Routes(tag="merchant: events")


@routes.get(
    "/admin/events",
    auth=MERCHANT,
    query=EventFeedQuerySchema,
    reply=page_reply(EventSchema, "EventPage"),
    description="This shop's coupon and points events of the last 7 days "
    "(events.retention_days), oldest first: poll with after=<the last id you saw>, or follow "
    "next_cursor while it is set. An event is listed once it is a few seconds old "
    "(events.feed_settle_seconds), so that none with a lower id can still appear. The same "
    "events the relay publishes to RabbitMQ; each type's fields are in docs/EVENTS.md.",
)
async def list_events(call: Call) -> dict[str, Any]:
    """The shop's events after a position, oldest first."""
    query = call.query
    return await call.app[EVENT_FEED].page(
        call.shop_id,
        after=query["after"],
        types=query["types"],
        limit=query["limit"],
        cursor=query["cursor"],
    )
