"""aiohttp handlers: glue between HTTP and the core. Each module exposes ``routes``."""

from __future__ import annotations

from bff.routing import Endpoint
from handlers import (
    admin_catalog,
    admin_coupons,
    admin_events,
    admin_packs,
    admin_stats,
    admin_templates,
    claim,
    demo,
    member_center,
    points,
    prices,
    redemption,
    session,
    system,
)


def all_endpoints() -> list[Endpoint]:
    modules = (
        system,
        session,
        claim,
        prices,
        member_center,
        admin_templates,
        admin_coupons,
        admin_catalog,
        admin_packs,
        points,
        redemption,
        admin_stats,
        admin_events,
        demo,
    )
    return [endpoint for module in modules for endpoint in module.routes.endpoints]
