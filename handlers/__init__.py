"""aiohttp handlers: glue between HTTP and the core. Each module exposes ``routes``."""

from __future__ import annotations

from bff.routing import Endpoint
from handlers import (
    admin_catalog,
    admin_coupons,
    admin_stats,
    admin_templates,
    claim,
    prices,
    redemption,
    session,
    system,
)


def all_endpoints() -> list[Endpoint]:
    modules = (system, session, claim, prices, admin_templates, admin_coupons, admin_catalog)
    modules += (redemption, admin_stats)
    return [endpoint for module in modules for endpoint in module.routes.endpoints]
