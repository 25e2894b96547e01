"""The one app factory: ``run.py`` and the tests build the app the same way.

Nothing here does I/O at import or in :func:`create_app` itself; connections
are made in one ``cleanup_ctx`` per resource, after any fork.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from bff.auth import TokenCodec, auth_middleware
from bff.catalog import ProductService
from bff.clock import Clock, SystemClock
from bff.coupons.templates import TemplateService
from bff.db.engine import Database, create_engine, describe
from bff.db.migrations import migrate
from bff.errors import error_middleware
from bff.gate.base import Gate
from bff.gate.memory import MemoryGate
from bff.gate.redis import RedisGate
from bff.identity import build_identity_provider
from bff.keys import (
    CLOCK,
    DB,
    ENDPOINTS,
    GATE,
    IDENTITY,
    MEMBERS,
    METRICS,
    OPENAPI,
    PRODUCTS,
    SETTINGS,
    TEMPLATES,
    TOKENS,
)
from bff.members import MemberService
from bff.metrics import Metrics
from bff.middlewares import observe_middleware
from bff.openapi import render_openapi
from bff.routing import add_routes
from config.loader import Settings, redact_url
from handlers import all_endpoints

log = logging.getLogger("bff.app")


def create_app(
    settings: Settings, *, clock: Clock | None = None, base_dir: Path | None = None
) -> web.Application:
    app = web.Application(
        middlewares=[observe_middleware, error_middleware, auth_middleware],
        client_max_size=settings.server.max_body_bytes,
    )
    clock = clock or SystemClock()
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[METRICS] = Metrics()
    app[TOKENS] = TokenCodec(settings.jwt, clock)
    app[IDENTITY] = build_identity_provider(settings)
    endpoints = all_endpoints()
    app[ENDPOINTS] = endpoints
    app[OPENAPI] = render_openapi(endpoints)
    add_routes(app, endpoints)
    app.cleanup_ctx.append(_database_ctx(base_dir))
    app.cleanup_ctx.append(_gate_ctx)
    app.cleanup_ctx.append(_services_ctx)
    return app


def _database_ctx(base_dir: Path | None):  # type: ignore[no-untyped-def]
    async def database(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        db = Database(create_engine(settings.database, base_dir=base_dir))
        try:
            await db.ping()
            await migrate(db, app[CLOCK])
            log.info("database ready", extra={"fields": {"url": describe(settings.database)}})
            app[DB] = db
            yield
        finally:
            await db.dispose()

    return database


async def _gate_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    gate: Gate
    if settings.redis.url:
        gate = RedisGate.from_settings(settings.redis)
        where = redact_url(settings.redis.url)
    else:
        gate = MemoryGate()
        where = "in-process"
    try:
        await gate.ping()
        log.info("gate ready", extra={"fields": {"gate": gate.name, "url": where}})
        app[GATE] = gate
        yield
    finally:
        await gate.close()


async def _services_ctx(app: web.Application) -> AsyncIterator[None]:
    db, clock, settings = app[DB], app[CLOCK], app[SETTINGS]
    app[TEMPLATES] = TemplateService(db, clock, settings.shop.default_claim_page)
    app[PRODUCTS] = ProductService(db, clock)
    app[MEMBERS] = MemberService(db, clock)
    yield
