"""Typed settings: defaults.toml, then an optional BFF_CONFIG file, then BFF_* variables.

This is the only module that reads ``os.environ``. Every bad value raises
:class:`ConfigError` with one line that names the setting, so ``run.py`` can
stop start-up with that line and a non-zero exit instead of a traceback.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
import re
import secrets
import tomllib
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DEFAULTS_FILE = Path(__file__).with_name("defaults.toml")
DATABASE_SCHEMES = ("sqlite+aiosqlite", "mysql+aiomysql")
REDIS_SCHEMES = ("redis", "rediss", "unix")
JWT_ALGORITHMS = ("HS256", "RS256")
# Where spans go ("" = tracing off); the OTLP endpoint is OTEL_EXPORTER_OTLP_ENDPOINT's.
TRACING_EXPORTERS = ("", "otlp", "console")
# What tracing imports (the `tracing` extra), checked only when it is on.
TRACING_MODULES = (
    "opentelemetry.sdk.trace",
    "opentelemetry.instrumentation.aiohttp_server",
    "opentelemetry.instrumentation.sqlalchemy",
    "opentelemetry.instrumentation.redis",
)
OTLP_MODULE = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
MIN_SECRET_BYTES = 32
# A deadline longer than this is no deadline: a request would look hung.
MAX_TIMEOUT_SECONDS = 300
REDIS_AT_START = ("wait", "refuse")
# scheme://host[:port], as a browser sends it in Origin (no path, no trailing slash).
_ORIGIN = re.compile(r"^https?://[^/\s?#]+$")


class ConfigError(Exception):
    """A setting is missing or malformed; the message is one line for the operator."""


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    max_body_bytes: int = 2_097_152
    access_log: bool = True


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = ""
    sqlite_path: str = "var/bff.sqlite3"
    pool_size: int = 20
    max_overflow: int = 20
    pool_recycle_seconds: int = 1800
    connect_timeout_seconds: int = 3
    # One unit of work's deadline (pool wait included): past it, 503 and a rollback.
    read_timeout_seconds: float = 3.0
    write_timeout_seconds: float = 5.0
    # Code generation and import (up to 100,000 rows in one transaction).
    bulk_timeout_seconds: float = 60.0

    @property
    def effective_url(self) -> str:
        """The configured URL, or the embedded SQLite file."""
        if self.url:
            return self.url
        return f"sqlite+aiosqlite:///{self.sqlite_path}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_url.startswith("sqlite")


@dataclass(frozen=True)
class RedisSettings:
    url: str = ""
    socket_timeout_seconds: float = 2.0
    max_connections: int = 64
    # Redis not answering at start: "wait" serves not-ready (/readyz 503, claims 503) until
    # it answers; "refuse" stops start-up with exit code 4 (hosts without a readiness probe).
    at_start: str = "wait"


@dataclass(frozen=True)
class CorsSettings:
    # Comma list of origins ("https://h5.example.com, http://localhost:5173") whose pages may
    # call the API from a browser; "*" for any; empty = CORS off (no header, no extra work).
    origins: str = ""
    max_age_seconds: int = 600

    @property
    def origin_set(self) -> frozenset[str]:
        """The origins as a browser sends them: lower case, no trailing slash."""
        items = (item.strip().rstrip("/").lower() for item in self.origins.split(","))
        return frozenset(item for item in items if item)


@dataclass(frozen=True)
class JwtSettings:
    algorithm: str = "HS256"
    secret: str = field(default="", repr=False)
    public_key_file: str = ""
    private_key_file: str = ""
    issuer: str = "coupon-bff"
    token_ttl_seconds: int = 7200
    leeway_seconds: int = 30


@dataclass(frozen=True)
class IdentitySettings:
    provider: str = "none"


@dataclass(frozen=True)
class ShopSettings:
    timezone: str = "Asia/Shanghai"
    default_claim_page: str = "pages/index/index"


@dataclass(frozen=True)
class WalletSettings:
    max_unused_per_shop: int = 50
    expiring_soon_days: int = 3


@dataclass(frozen=True)
class RiskSettings:
    """Claim risk rules (风控) and rate limits; 0 turns a per-device or per-IP limit off."""

    # "rules" = the built-in rule engine; or "package.module:ClassName" of a RiskEngine.
    engine: str = "rules"
    accounts_per_device_per_day: int = 3
    device_claims_per_minute: int = 0
    ip_claims_per_minute: int = 0
    user_claims_per_minute: int = 60


@dataclass(frozen=True)
class ClaimSettings:
    # How long the batch writer gathers admitted claims before one transaction.
    batch_window_ms: float = 2.0
    batch_max: int = 200
    # After a batch sells a template out, this process answers its claims from a
    # lock-free read for this long (stock coming back is noticed by that read).
    sold_out_seconds: float = 1.0
    # Template definitions are cached per process this long (admin changes apply within it).
    template_cache_seconds: float = 1.0
    # Idempotency replies are kept in the gate this long (the database keeps them for good).
    idempotency_ttl_seconds: int = 86_400
    # Each shop's holders filter (bff.gate.holders): sized for this many users who ever
    # held a coupon of the shop, at this false-positive rate (1,000,000 at 0.01: 1.2 MB
    # per shop); 0 users: off. Kept this long after a rebuild, then rebuilt on demand.
    holders_users: int = 1_000_000
    holders_error: float = 0.01
    holders_ttl_seconds: int = 7 * 86_400


@dataclass(frozen=True)
class CacheSettings:
    # Anonymous product and live-room replies: how long a process may serve a price
    # after an admin write in another process whose invalidation message was lost.
    ttl_seconds: float = 1.0
    # Signed-in prices: each user's pricing facts per process, checked against the user's
    # version in the gate on every read (widgets/coupon_price/user_cache.py). At most this
    # many users (0: off, every signed-in price reads the user's facts)...
    user_facts_entries: int = 50_000
    # ...and about this many bytes of them (an estimate per entry, see the module).
    user_facts_bytes: int = 64 * 1024 * 1024
    # An entry is read again after this long whatever its version says: the bound on a
    # stale price should a writer's bump be lost (the gate down right after a commit).
    user_facts_max_age_seconds: float = 60.0
    # Best quotes per process by the shape of their input (bff.pricing.engine.QuoteMemo):
    # exact, so only a bound on memory (entries of a few KB; 0: off).
    quote_memo_entries: int = 2048
    # ...and about this many bytes of them (an estimate per entry, bff.pricing.engine).
    quote_memo_bytes: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class PointsSettings:
    """The points-for-coupons policy (DOMAIN.md "Points exchange"). Denominations in yuan.

    Defaults are the platform's: points coupons from ``points_denominations`` (rule on);
    free store coupons from ``free_denominations`` (available, off); a points coupon
    strictly stronger than every active free threshold coupon of the shop (on).
    """

    points_denominations: tuple[int, ...] = (
        5, 10, 20, 25, 30, 40, 50, 55, 60, 70, 80, 100, 150, 200, 250, 300, 500, 1000,
    )  # fmt: skip
    points_denomination_rule: bool = True
    free_denominations: tuple[int, ...] = (3, 5, 10, 20, 50, 100)
    free_denomination_rule: bool = False
    strength_rule: bool = True


@dataclass(frozen=True)
class RedemptionSettings:
    # A lock (POST /redemptions) unconfirmed this long lapses and its coupons come back.
    lock_timeout_minutes: int = 30


@dataclass(frozen=True)
class HttpSettings:
    retry_after_seconds: int = 1


@dataclass(frozen=True)
class TracingSettings:
    """OpenTelemetry spans for requests, SQL and Redis (bff/tracing.py); off when empty."""

    exporter: str = ""


@dataclass(frozen=True)
class EventsSettings:
    """Coupon events (bff/events): the outbox is always written; the relay needs a URL."""

    # amqp:// or amqps:// of RabbitMQ; empty = no relay (the feed still serves the events).
    amqp_url: str = ""
    # Whether each serving process runs a relay (with amqp_url set). False: the serving
    # processes only write the outbox and `coupon-bff relay` publishes it, in a process of
    # its own (the relay costs CPU per event; docs/EVENTS.md "Where the relay runs").
    relay_in_server: bool = True
    # The topic exchange the relay publishes to (routing key = event type).
    exchange: str = "coupon-bff.events"
    # Rows a relay claims and publishes per round, and how long its claim (lease) lasts.
    batch_size: int = 500
    lease_seconds: float = 60.0
    # How long a relay with nothing to publish waits before it looks again.
    poll_seconds: float = 0.25
    # The deadline of connecting and of one round's confirms; the longest backoff.
    publish_timeout_seconds: float = 10.0
    backoff_max_seconds: float = 30.0
    # The pull feed (GET /admin/events) serves this many days; rows older are pruned
    # (once published, when a relay is configured).
    retention_days: int = 7
    prune_interval_seconds: float = 60.0
    # How often each process refreshes the outbox gauges of /metrics (rows, lag).
    metrics_seconds: float = 5.0
    # The feed serves an event only once this many seconds old, so that no event with a
    # lower id can still commit after a reader moved past it (never less than twice the
    # write deadline plus 2 s, whatever this says).
    feed_settle_seconds: float = 12.0


@dataclass(frozen=True)
class Settings:
    environment: str = "development"
    server: ServerSettings = field(default_factory=ServerSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    jwt: JwtSettings = field(default_factory=JwtSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    shop: ShopSettings = field(default_factory=ShopSettings)
    wallet: WalletSettings = field(default_factory=WalletSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    cors: CorsSettings = field(default_factory=CorsSettings)
    risk: RiskSettings = field(default_factory=RiskSettings)
    claim: ClaimSettings = field(default_factory=ClaimSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    points: PointsSettings = field(default_factory=PointsSettings)
    redemption: RedemptionSettings = field(default_factory=RedemptionSettings)
    tracing: TracingSettings = field(default_factory=TracingSettings)
    events: EventsSettings = field(default_factory=EventsSettings)

    @property
    def is_development(self) -> bool:
        return self.environment == "development"

    def replace(self, **sections: Any) -> Settings:
        """A copy with whole sections or fields swapped (tests use this)."""
        return dataclasses.replace(self, **sections)


# BFF_* variable -> (section, key). The names API.md documents come first.
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "BFF_HOST": ("server", "host"),
    "BFF_PORT": ("server", "port"),
    "BFF_WORKERS": ("server", "workers"),
    "BFF_DATABASE_URL": ("database", "url"),
    "BFF_REDIS_URL": ("redis", "url"),
    "BFF_JWT_SECRET": ("jwt", "secret"),
    "BFF_JWT_ISSUER": ("jwt", "issuer"),
    "BFF_JWT_ALGORITHM": ("jwt", "algorithm"),
    "BFF_JWT_PUBLIC_KEY_FILE": ("jwt", "public_key_file"),
    "BFF_JWT_PRIVATE_KEY_FILE": ("jwt", "private_key_file"),
    "BFF_IDENTITY_PROVIDER": ("identity", "provider"),
    "BFF_SQLITE_PATH": ("database", "sqlite_path"),
    "BFF_DATABASE_CONNECT_TIMEOUT_SECONDS": ("database", "connect_timeout_seconds"),
    "BFF_DATABASE_READ_TIMEOUT_SECONDS": ("database", "read_timeout_seconds"),
    "BFF_DATABASE_WRITE_TIMEOUT_SECONDS": ("database", "write_timeout_seconds"),
    "BFF_DATABASE_BULK_TIMEOUT_SECONDS": ("database", "bulk_timeout_seconds"),
    "BFF_REDIS_TIMEOUT_SECONDS": ("redis", "socket_timeout_seconds"),
    "BFF_REDIS_AT_START": ("redis", "at_start"),
    "BFF_CORS_ORIGINS": ("cors", "origins"),
    "BFF_CORS_MAX_AGE_SECONDS": ("cors", "max_age_seconds"),
    "BFF_MAX_BODY_BYTES": ("server", "max_body_bytes"),
    "BFF_ACCESS_LOG": ("server", "access_log"),
    "BFF_SHOP_TIMEZONE": ("shop", "timezone"),
    "BFF_WALLET_MAX_UNUSED": ("wallet", "max_unused_per_shop"),
    "BFF_POINTS_DENOMINATIONS": ("points", "points_denominations"),
    "BFF_POINTS_DENOMINATION_RULE": ("points", "points_denomination_rule"),
    "BFF_FREE_DENOMINATIONS": ("points", "free_denominations"),
    "BFF_FREE_DENOMINATION_RULE": ("points", "free_denomination_rule"),
    "BFF_POINTS_STRENGTH_RULE": ("points", "strength_rule"),
    "BFF_REDEMPTION_LOCK_TIMEOUT_MINUTES": ("redemption", "lock_timeout_minutes"),
    "BFF_OTEL_EXPORTER": ("tracing", "exporter"),
    "BFF_EVENTS_AMQP_URL": ("events", "amqp_url"),
    "BFF_EVENTS_EXCHANGE": ("events", "exchange"),
    "BFF_EVENTS_RELAY_IN_SERVER": ("events", "relay_in_server"),
    "BFF_EVENTS_RETENTION_DAYS": ("events", "retention_days"),
}
# "section.key" -> its BFF_* variable, so that an error names the variable to fix.
SETTING_VARIABLES = {f"{section}.{key}": var for var, (section, key) in ENV_OVERRIDES.items()}
SECTIONS: dict[str, type] = {
    "server": ServerSettings,
    "database": DatabaseSettings,
    "redis": RedisSettings,
    "jwt": JwtSettings,
    "identity": IdentitySettings,
    "shop": ShopSettings,
    "wallet": WalletSettings,
    "http": HttpSettings,
    "cors": CorsSettings,
    "risk": RiskSettings,
    "claim": ClaimSettings,
    "cache": CacheSettings,
    "points": PointsSettings,
    "redemption": RedemptionSettings,
    "tracing": TracingSettings,
    "events": EventsSettings,
}
# Read outside the service, by the test suite and the bench: no warning for them.
TOOLING_PREFIXES = ("BFF_TEST_", "BFF_BENCH_", "BFF_SCHEMATHESIS_")
KNOWN_VARIABLES = frozenset({*ENV_OVERRIDES, "BFF_ENV", "BFF_CONFIG"})


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning line per ``BFF_*`` variable that no setting reads (a misspelling, mostly)."""
    env = os.environ if environ is None else environ
    lines: list[str] = []
    for name in sorted(env):
        if not name.startswith("BFF_") or name in KNOWN_VARIABLES:
            continue
        if name.startswith(TOOLING_PREFIXES):
            continue
        close = difflib.get_close_matches(name, sorted(KNOWN_VARIABLES), n=1, cutoff=0.8)
        hint = f"; did you mean {close[0]}?" if close else ""
        lines.append(f"unknown variable {name} is ignored{hint}")
    return lines


def load_settings(
    environ: Mapping[str, str] | None = None, *, base_dir: Path | None = None
) -> Settings:
    """Build validated settings from the defaults, BFF_CONFIG and the environment."""
    env = os.environ if environ is None else environ
    raw = _read_toml(DEFAULTS_FILE)
    extra = env.get("BFF_CONFIG")
    if extra:
        _merge(raw, _read_toml(Path(extra)))
    if "BFF_ENV" in env:
        raw["environment"] = env["BFF_ENV"]
    for var, (section, key) in ENV_OVERRIDES.items():
        if var in env:
            raw.setdefault(section, {})[key] = env[var]
    settings = _build(raw)
    settings = _with_dev_secret(settings, base_dir or Path.cwd())
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    """Raise ConfigError for the first setting that cannot work."""
    server = settings.server
    if not 1 <= server.port <= 65535:
        raise ConfigError(f"server.port (BFF_PORT) must be 1-65535, got {server.port}")
    if server.workers < 1:
        raise ConfigError(f"server.workers (BFF_WORKERS) must be at least 1, got {server.workers}")
    if server.max_body_bytes < 1024:
        raise ConfigError("server.max_body_bytes must be at least 1024")
    scheme = urlsplit(settings.database.effective_url).scheme
    if scheme not in DATABASE_SCHEMES:
        raise ConfigError(
            f"database.url (BFF_DATABASE_URL) has unknown scheme {scheme!r}; "
            f"use one of {', '.join(DATABASE_SCHEMES)}"
        )
    if settings.database.pool_size < 1:
        raise ConfigError("database.pool_size must be at least 1")
    deadlines = {
        "database.connect_timeout_seconds": settings.database.connect_timeout_seconds,
        "database.read_timeout_seconds": settings.database.read_timeout_seconds,
        "database.write_timeout_seconds": settings.database.write_timeout_seconds,
        "database.bulk_timeout_seconds": settings.database.bulk_timeout_seconds,
        "redis.socket_timeout_seconds": settings.redis.socket_timeout_seconds,
    }
    for name, value in deadlines.items():
        if not 0 < value <= MAX_TIMEOUT_SECONDS:
            raise ConfigError(
                f"{_labelled(name)} must be more than 0 and at most "
                f"{MAX_TIMEOUT_SECONDS} seconds, got {value}"
            )
    if settings.redis.url:
        redis_scheme = urlsplit(settings.redis.url).scheme
        if redis_scheme not in REDIS_SCHEMES:
            raise ConfigError(
                f"redis.url (BFF_REDIS_URL) has unknown scheme {redis_scheme!r}; "
                f"use one of {', '.join(REDIS_SCHEMES)}"
            )
    if settings.redis.at_start not in REDIS_AT_START:
        raise ConfigError(
            f"redis.at_start (BFF_REDIS_AT_START) must be one of {', '.join(REDIS_AT_START)}, "
            f"got {settings.redis.at_start!r}"
        )
    for origin in settings.cors.origin_set:
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            raise ConfigError(
                f"cors.origins (BFF_CORS_ORIGINS): {origin!r} is not an origin; "
                "use scheme://host[:port] (no path), comma-separated, or *"
            )
    if not 0 <= settings.cors.max_age_seconds <= 86_400:
        raise ConfigError("cors.max_age_seconds (BFF_CORS_MAX_AGE_SECONDS) must be 0-86400")
    jwt = settings.jwt
    if jwt.algorithm not in JWT_ALGORITHMS:
        raise ConfigError(
            f"jwt.algorithm (BFF_JWT_ALGORITHM) must be one of {', '.join(JWT_ALGORITHMS)}"
        )
    if not jwt.issuer:
        raise ConfigError("jwt.issuer (BFF_JWT_ISSUER) must not be empty")
    if jwt.algorithm == "HS256":
        if not jwt.secret:
            raise ConfigError(
                "jwt.secret (BFF_JWT_SECRET) is empty; set a secret of at least "
                f"{MIN_SECRET_BYTES} bytes (only development may run without one)"
            )
        if len(jwt.secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"jwt.secret (BFF_JWT_SECRET) must be at least {MIN_SECRET_BYTES} bytes"
            )
    else:
        if not jwt.public_key_file:
            raise ConfigError("jwt.public_key_file (BFF_JWT_PUBLIC_KEY_FILE) is required for RS256")
        for name in ("public_key_file", "private_key_file"):
            path = getattr(jwt, name)
            if path and not Path(path).is_file():
                raise ConfigError(f"jwt.{name}: no such file {path!r}")
    if jwt.token_ttl_seconds < 60:
        raise ConfigError("jwt.token_ttl_seconds must be at least 60")
    provider = settings.identity.provider
    if provider not in ("none", "dev") and ":" not in provider:
        raise ConfigError(
            "identity.provider (BFF_IDENTITY_PROVIDER) must be 'none', 'dev' or 'module:Class'"
        )
    try:
        zoneinfo.ZoneInfo(settings.shop.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"shop.timezone: unknown time zone {settings.shop.timezone!r}") from exc
    cache = settings.cache
    if cache.user_facts_entries < 0 or cache.user_facts_bytes < 0:
        raise ConfigError("cache.user_facts_entries and cache.user_facts_bytes must be >= 0")
    if cache.quote_memo_entries < 0 or cache.quote_memo_bytes < 0:
        raise ConfigError("cache.quote_memo_entries and cache.quote_memo_bytes must be >= 0")
    if cache.user_facts_max_age_seconds < 0:
        raise ConfigError("cache.user_facts_max_age_seconds must be >= 0")
    if settings.wallet.max_unused_per_shop < 1:
        raise ConfigError("wallet.max_unused_per_shop must be at least 1")
    claim = settings.claim
    if not 0 <= claim.holders_users <= 100_000_000:
        raise ConfigError("claim.holders_users must be 0 (off) to 100000000")
    if not 0 < claim.holders_error < 1:
        raise ConfigError("claim.holders_error must be more than 0 and less than 1")
    if claim.holders_ttl_seconds < 60:
        raise ConfigError("claim.holders_ttl_seconds must be at least 60")
    risk = settings.risk
    if risk.engine != "rules" and ":" not in risk.engine:
        raise ConfigError("risk.engine must be 'rules' or 'module:Class'")
    for name in (
        "accounts_per_device_per_day",
        "device_claims_per_minute",
        "ip_claims_per_minute",
        "user_claims_per_minute",
    ):
        if getattr(risk, name) < 0:
            raise ConfigError(f"risk.{name} must not be negative")
    if not 0 < settings.claim.batch_window_ms <= 100 or settings.claim.batch_max < 1:
        raise ConfigError("claim.batch_window_ms must be in (0, 100] and claim.batch_max >= 1")
    for name in ("points_denominations", "free_denominations"):
        values = getattr(settings.points, name)
        if not values or any(not 0 < v <= 100_000 for v in values):
            raise ConfigError(f"points.{name} must list whole yuan amounts from 1 to 100000")
    if settings.redemption.lock_timeout_minutes < 1:
        raise ConfigError("redemption.lock_timeout_minutes must be at least 1")
    if settings.tracing.exporter not in TRACING_EXPORTERS:
        raise ConfigError(
            "tracing.exporter (BFF_OTEL_EXPORTER) must be empty (off), 'otlp' or 'console', "
            f"got {settings.tracing.exporter!r}"
        )
    _validate_events(settings.events)
    if settings.tracing.exporter:
        needed = TRACING_MODULES + ((OTLP_MODULE,) if settings.tracing.exporter == "otlp" else ())
        missing = [name for name in needed if not _importable(name)]
        if missing:
            raise ConfigError(
                f"tracing.exporter (BFF_OTEL_EXPORTER) is {settings.tracing.exporter!r} but "
                f"{missing[0]} is not installed: pip install 'coupon-bff[tracing]'"
            )


def _validate_events(events: EventsSettings) -> None:
    if events.amqp_url and urlsplit(events.amqp_url).scheme not in ("amqp", "amqps"):
        raise ConfigError(
            "events.amqp_url (BFF_EVENTS_AMQP_URL) must be an amqp:// or amqps:// URL "
            f"(or empty: no relay), got {redact_url(events.amqp_url)!r}"
        )
    if not events.exchange:
        raise ConfigError("events.exchange (BFF_EVENTS_EXCHANGE) must not be empty")
    if events.retention_days < 1:
        raise ConfigError("events.retention_days (BFF_EVENTS_RETENTION_DAYS) must be at least 1")
    if events.batch_size < 1 or events.lease_seconds <= events.publish_timeout_seconds:
        raise ConfigError(
            "events.batch_size must be at least 1 and events.lease_seconds longer than "
            "events.publish_timeout_seconds (a lease must outlast the round it covers)"
        )


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def redact_url(url: str) -> str:
    """The URL with any password replaced, safe for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def _merge(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _build(raw: Mapping[str, Any]) -> Settings:
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "environment":
            kwargs[key] = str(value)
            continue
        section_type = SECTIONS.get(key)
        if section_type is None or not isinstance(value, Mapping):
            raise ConfigError(f"unknown config section {key!r}")
        kwargs[key] = _build_section(key, section_type, value)
    return Settings(**kwargs)


def _build_section(name: str, section_type: type, values: Mapping[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(section_type)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"unknown setting {name}.{key}")
        default = fields[key].default
        kwargs[key] = _coerce(_labelled(f"{name}.{key}"), value, type(default))
    return section_type(**kwargs)


def _labelled(name: str) -> str:
    """``server.port (BFF_PORT)``: the setting and, when one overrides it, its variable."""
    variable = SETTING_VARIABLES.get(name)
    return f"{name} ({variable})" if variable else name


def _coerce(name: str, value: Any, kind: type) -> Any:
    """Turn a TOML or environment value into the field's type, or say why not."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if kind is tuple:
        # A TOML list, or a comma list from the environment: "5, 10, 20".
        items = value if isinstance(value, list) else str(value).split(",")
        return tuple(_coerce(name, item, int) for item in items if str(item).strip())
    if isinstance(value, list):  # a TOML list for a comma-list setting (cors.origins)
        return ",".join(str(item) for item in value)
    if kind in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        try:
            return kind(str(value).strip()) if isinstance(value, str) else kind(value)
        except ValueError as exc:
            raise ConfigError(f"{name} must be a number, got {value!r}") from exc
    return str(value)


def _with_dev_secret(settings: Settings, base_dir: Path) -> Settings:
    """In development without a secret, use one kept in ./var/ so tokens survive restarts.

    The file is made on first use with mode 0600; it is never in the repository.
    """
    jwt = settings.jwt
    if not settings.is_development or jwt.algorithm != "HS256" or jwt.secret:
        return settings
    path = base_dir / "var" / "jwt-secret"
    try:
        if path.is_file():
            secret = path.read_text().strip()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            secret = secrets.token_urlsafe(48)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secret)
    except OSError as exc:
        raise ConfigError(f"cannot keep the development JWT secret at {path}: {exc}") from exc
    return settings.replace(jwt=dataclasses.replace(jwt, secret=secret))
