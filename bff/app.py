"""The one app factory: ``run.py`` and the tests build the app the same way.

Nothing here does I/O at import or in :func:`create_app` itself; connections
are made in one ``cleanup_ctx`` per resource, after any fork.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp import web

from bff import cors, protocol
from bff.auth import TokenCodec, auth_middleware
from bff.cache import Invalidator, ReplyCache, listen
from bff.catalog import ProductService
from bff.clock import Clock, SystemClock
from bff.coupons.claims import ClaimService
from bff.coupons.codes import CodeService
from bff.coupons.grants import GrantService
from bff.coupons.holders import Holders
from bff.coupons.ledger import Ledger
from bff.coupons.risk import build_risk_engine
from bff.coupons.templates import TemplateService
from bff.coupons.wallet import WalletService
from bff.db.engine import Database, describe
from bff.db.migrations import migrate
from bff.errors import error_middleware, is_unavailable
from bff.events.feed import EVENT_FEED, EventFeed
from bff.events.relay import EVENT_RELAY, OutboxUpkeep, Relay
from bff.gate.base import Gate
from bff.gate.memory import MemoryGate
from bff.gate.redis import RedisGate
from bff.idempotency import stop_renewing
from bff.identity import build_identity_provider
from bff.keys import (
    AUTO_CLAIM,
    CLAIM_WIDGET,
    CLAIMS_SERVICE,
    CLOCK,
    CODES_SERVICE,
    DB,
    ENDPOINTS,
    EXCHANGE_OFFERS,
    GATE,
    GRANTS,
    HOLDERS,
    IDENTITY,
    INVALIDATOR,
    LEDGER,
    LIVE_PRICES,
    MEMBERS,
    METRICS,
    OPENAPI,
    PACKS,
    POINTS,
    POINTS_EXCHANGE,
    PRICES,
    PRODUCTS,
    REDEMPTIONS,
    REPLY_CACHE,
    SETTINGS,
    STATS,
    TEMPLATES,
    TOKENS,
    TRACING,
    WALLET,
)
from bff.members import MemberService
from bff.metrics import Metrics
from bff.middlewares import observe_middleware
from bff.openapi import OpenApiDocument
from bff.packs.service import PackService
from bff.points.exchange import ExchangeService
from bff.points.ledger import PointsService
from bff.points.offers import OfferService
from bff.points.policy import Policy
from bff.redemption.service import RedemptionService
from bff.redemption.stats import StatsService
from bff.routing import add_routes
from bff.tracing import Tracing
from bff.versions import UserVersions
from config.loader import Settings, redact_url
from handlers import all_endpoints
from widgets.auto_claim.service import AutoClaimService
from widgets.claim.service import ClaimWidgetService
from widgets.coupon_price.service import PriceService
from widgets.live_price.service import LivePriceService

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("bff.app")


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    base_dir: Path | None = None,
    tracer_provider: TracerProvider | None = None,
) -> web.Application:
    """The app; ``tracer_provider`` turns tracing on with that provider (tests pass one)."""
    protocol.install()  # the HTTP parser's refusals in the error shape (bff.protocol)
    tracing = Tracing.from_settings(settings.tracing, tracer_provider)
    app = web.Application(
        middlewares=[
            *(tracing.middlewares() if tracing is not None else ()),
            observe_middleware,
            error_middleware,
            auth_middleware,
        ],
        client_max_size=settings.server.max_body_bytes,
        handler_args=protocol.HANDLER_ARGS,
    )
    cors.install(app, settings.cors)  # nothing at all unless cors.origins lists some
    clock = clock or SystemClock()
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[TRACING] = tracing
    app[METRICS] = Metrics()
    app[TOKENS] = TokenCodec(settings.jwt, clock)
    app[IDENTITY] = build_identity_provider(settings)
    endpoints = all_endpoints()
    app[ENDPOINTS] = endpoints
    app[OPENAPI] = OpenApiDocument(endpoints, clock)
    add_routes(app, endpoints)
    if tracing is not None:
        app.cleanup_ctx.append(_tracing_ctx)
    app.cleanup_ctx.append(_database_ctx(base_dir))
    app.cleanup_ctx.append(_gate_ctx)
    app.cleanup_ctx.append(_services_ctx)
    app.cleanup_ctx.append(_events_ctx)
    return app


async def _tracing_ctx(app: web.Application) -> AsyncIterator[None]:
    """Flushes the spans of a provider made from the settings as the app stops."""
    try:
        yield
    finally:
        tracing = app[TRACING]
        if tracing is not None:
            tracing.close()


def _database_ctx(base_dir: Path | None):  # type: ignore[no-untyped-def]
    async def database(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        db = Database.from_settings(settings.database, base_dir=base_dir)
        if app[TRACING] is not None:
            app[TRACING].instrument_engine(db.engine)
            app[TRACING].instrument_direct_reads(db)
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
        if app[TRACING] is not None:
            app[TRACING].instrument_redis(gate)
    else:
        gate = MemoryGate(only_process=settings.server.workers == 1)
        where = "in-process"
    try:
        try:
            await gate.ping()
            log.info("gate ready", extra={"fields": {"gate": gate.name, "url": where}})
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            # Start not-ready rather than not at all (a rolling deploy waits on /readyz):
            # every gate call answers 503 UNAVAILABLE until Redis answers, then works again
            # with no restart (the client reconnects, the pub/sub listener retries).
            log.warning(
                "gate not reachable; serving not-ready until it answers",
                extra={"fields": {"gate": gate.name, "url": where}},
            )
        app[GATE] = gate
        yield
    finally:
        await stop_renewing(gate)
        await gate.close()


def _price_channel(settings: Settings) -> str:
    """Pub/sub ignores the db number: name the channel after the Redis db in use."""
    db = urlsplit(settings.redis.url).path.strip("/") or "0"
    return f"bff:{db}:prices-changed"


async def _services_ctx(app: web.Application) -> AsyncIterator[None]:
    db, clock, settings, gate = app[DB], app[CLOCK], app[SETTINGS], app[GATE]
    # Users' pricing-facts versions: bumped after every commit that changed a user's
    # coupons or membership, read by signed-in prices. Only where one gate serves every
    # process (Redis, or the in-process gate of a single worker).
    versions = UserVersions(
        gate,
        enabled=bool(settings.redis.url) or settings.server.workers == 1,
        ttl_seconds=settings.claim.idempotency_ttl_seconds,
    )
    db.after_commit = versions.bump
    templates = TemplateService(db, clock, settings.shop.default_claim_page)
    # The shops' holders filters: like the versions, only where one gate serves every
    # process (another worker's gate would miss this one's holders).
    holders = Holders(
        db,
        gate,
        enabled=bool(settings.redis.url) or settings.server.workers == 1,
        users=settings.claim.holders_users,
        error=settings.claim.holders_error,
        ttl_seconds=settings.claim.holders_ttl_seconds,
    )
    app[HOLDERS] = holders
    ledger = Ledger(
        db,
        clock,
        gate,
        wallet_cap=settings.wallet.max_unused_per_shop,
        timezone=settings.shop.timezone,
        window_ms=settings.claim.batch_window_ms,
        batch_max=settings.claim.batch_max,
        sold_out_seconds=settings.claim.sold_out_seconds,
        facts_ttl_seconds=settings.claim.idempotency_ttl_seconds,
        holders=holders,
    )
    wallet = WalletService(
        db,
        clock,
        settings.wallet.expiring_soon_days,
        timedelta(minutes=settings.redemption.lock_timeout_minutes),
    )
    claims = ClaimService(
        db, clock, gate, ledger, build_risk_engine(settings, gate), wallet, settings
    )
    templates.on_change.append(claims.changed)
    app[TEMPLATES] = templates
    app[PRODUCTS] = ProductService(db, clock)
    members = MemberService(db, clock)
    app[MEMBERS] = members
    app[LEDGER] = ledger
    app[WALLET] = wallet
    app[CLAIMS_SERVICE] = claims
    codes = CodeService(db, clock)
    codes.on_change.append(claims.changed)
    app[CODES_SERVICE] = codes
    app[GRANTS] = GrantService(db, clock, gate, ledger, settings.claim.idempotency_ttl_seconds)
    app[CLAIM_WIDGET] = ClaimWidgetService(db, clock, settings)
    prices = PriceService(db, clock, settings, versions)
    app[PRICES] = prices
    app[LIVE_PRICES] = LivePriceService(db, clock)
    app[AUTO_CLAIM] = AutoClaimService(claims, wallet, prices)
    app[PACKS] = PackService(
        db,
        clock,
        gate,
        ledger,
        wallet,
        members,
        wallet_cap=settings.wallet.max_unused_per_shop,
        idempotency_ttl_seconds=settings.claim.idempotency_ttl_seconds,
    )
    app[REDEMPTIONS] = RedemptionService(
        db,
        clock,
        gate,
        prices,
        lock_timeout=timedelta(minutes=settings.redemption.lock_timeout_minutes),
        ttl_seconds=settings.claim.idempotency_ttl_seconds,
    )
    app[STATS] = StatsService(db, clock)
    cache = ReplyCache(settings.cache.ttl_seconds, clock)
    invalidator = Invalidator(cache, gate.publish, _price_channel(settings))
    invalidator.listeners.append(claims.forget_shop)
    invalidator.listeners.append(prices.facts.forget)  # signed-in prices' shop-wide facts
    app[REPLY_CACHE] = cache
    app[INVALIDATOR] = invalidator
    _points(app, ledger, claims, wallet)
    listener = asyncio.get_running_loop().create_task(listen(gate.subscribe, invalidator))
    try:
        yield
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        await ledger.close()
        await holders.close()
        db.after_commit = None
        await versions.close()


async def _events_ctx(app: web.Application) -> AsyncIterator[None]:
    """Coupon events: the feed always; the relay to the broker when a URL is set; upkeep.

    The outbox is written by every change whether or not a relay runs (the feed reads
    it); the broker is not needed to serve, so it is connected in the relay's own task
    and its absence never fails start-up or /readyz.
    """
    db, clock, settings, metrics = app[DB], app[CLOCK], app[SETTINGS].events, app[METRICS]
    write_timeout = app[SETTINGS].database.write_timeout_seconds
    app[EVENT_FEED] = EventFeed(db, clock, settings, write_timeout=write_timeout)
    relayed = bool(settings.amqp_url)  # here, or by `coupon-bff relay` (relay_in_server off)
    relay = Relay(db, clock, settings, metrics) if relayed and settings.relay_in_server else None
    upkeep = OutboxUpkeep(db, clock, settings, metrics, relayed=relayed)
    if relay is not None:
        app[EVENT_RELAY] = relay
        relay.start()
    upkeep.start()
    try:
        yield
    finally:
        await upkeep.stop()
        if relay is not None:
            await relay.stop()


def _points(
    app: web.Application, ledger: Ledger, claims: ClaimService, wallet: WalletService
) -> None:
    """Points: the ledger, offers under the platform policy, the exchange."""
    db, clock, settings, gate = app[DB], app[CLOCK], app[SETTINGS], app[GATE]
    ttl = settings.claim.idempotency_ttl_seconds
    policy = Policy(settings.points)
    app[TEMPLATES].checks.append(policy.raise_free_template)
    app[POINTS] = PointsService(db, clock, gate, ttl)
    app[EXCHANGE_OFFERS] = OfferService(db, clock, policy, settings)
    app[POINTS_EXCHANGE] = ExchangeService(db, clock, gate, ledger, claims, wallet, ttl)
