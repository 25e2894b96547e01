"""aiohttp handlers: glue between HTTP and the core. Each module exposes ``routes``."""

from __future__ import annotations

from bff.routing import Endpoint
from handlers import admin_catalog, admin_templates, session, system


def all_endpoints() -> list[Endpoint]:
    modules = (system, session, admin_templates, admin_catalog)
    return [endpoint for module in modules for endpoint in module.routes.endpoints]
