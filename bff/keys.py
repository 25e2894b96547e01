"""Every ``web.AppKey`` and ``web.RequestKey`` of the app, typed. No string keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from bff.auth import Claims, TokenCodec
    from bff.cache import Invalidator, ReplyCache
    from bff.catalog import ProductService
    from bff.clock import Clock
    from bff.coupons.claims import ClaimService
    from bff.coupons.codes import CodeService
    from bff.coupons.grants import GrantService
    from bff.coupons.holders import Holders
    from bff.coupons.ledger import Ledger
    from bff.coupons.templates import TemplateService
    from bff.coupons.wallet import WalletService
    from bff.db.engine import Database
    from bff.gate.base import Gate
    from bff.identity import IdentityProvider
    from bff.members import MemberService
    from bff.metrics import Metrics
    from bff.openapi import OpenApiDocument
    from bff.packs.service import PackService
    from bff.points.exchange import ExchangeService
    from bff.points.ledger import PointsService
    from bff.points.offers import OfferService
    from bff.redemption.service import RedemptionService
    from bff.redemption.stats import StatsService
    from bff.routing import Endpoint
    from bff.tracing import Tracing
    from config.loader import Settings
    from widgets.auto_claim.service import AutoClaimService
    from widgets.claim.service import ClaimWidgetService
    from widgets.coupon_price.service import PriceService
    from widgets.live_price.service import LivePriceService

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
DB: web.AppKey[Database] = web.AppKey("db")
GATE: web.AppKey[Gate] = web.AppKey("gate")
TOKENS: web.AppKey[TokenCodec] = web.AppKey("tokens")
IDENTITY: web.AppKey[IdentityProvider] = web.AppKey("identity")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
ENDPOINTS: web.AppKey[list[Endpoint]] = web.AppKey("endpoints")
OPENAPI: web.AppKey[OpenApiDocument] = web.AppKey("openapi")
# None while tracing is off (bff.tracing).
TRACING: web.AppKey[Tracing | None] = web.AppKey("tracing")
TEMPLATES: web.AppKey[TemplateService] = web.AppKey("templates")
PRODUCTS: web.AppKey[ProductService] = web.AppKey("products")
MEMBERS: web.AppKey[MemberService] = web.AppKey("members")
LEDGER: web.AppKey[Ledger] = web.AppKey("ledger")
HOLDERS: web.AppKey[Holders] = web.AppKey("holders")
CLAIMS_SERVICE: web.AppKey[ClaimService] = web.AppKey("claims")
WALLET: web.AppKey[WalletService] = web.AppKey("wallet")
CODES_SERVICE: web.AppKey[CodeService] = web.AppKey("codes")
GRANTS: web.AppKey[GrantService] = web.AppKey("grants")
CLAIM_WIDGET: web.AppKey[ClaimWidgetService] = web.AppKey("claim_widget")
PRICES: web.AppKey[PriceService] = web.AppKey("prices")
LIVE_PRICES: web.AppKey[LivePriceService] = web.AppKey("live_prices")
AUTO_CLAIM: web.AppKey[AutoClaimService] = web.AppKey("auto_claim")
REPLY_CACHE: web.AppKey[ReplyCache] = web.AppKey("reply_cache")
INVALIDATOR: web.AppKey[Invalidator] = web.AppKey("invalidator")
PACKS: web.AppKey[PackService] = web.AppKey("packs")
POINTS: web.AppKey[PointsService] = web.AppKey("points")
EXCHANGE_OFFERS: web.AppKey[OfferService] = web.AppKey("exchange_offers")
POINTS_EXCHANGE: web.AppKey[ExchangeService] = web.AppKey("points_exchange")
REDEMPTIONS: web.AppKey[RedemptionService] = web.AppKey("redemptions")
STATS: web.AppKey[StatsService] = web.AppKey("stats")

CLAIMS: web.RequestKey[Claims | None] = web.RequestKey("claims")
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id")
# The reply-cache key of this request's raw form (routing.Endpoint.raw_cache_key).
RAW_CACHE_KEY: web.RequestKey[str] = web.RequestKey("raw_cache_key")
