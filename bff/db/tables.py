"""SQLAlchemy Core tables: one MetaData with a naming convention.

Invariants live here as well as in code: the CHECK on ``issued`` means no
write, however it is reached, can issue past a limited stock.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql

from bff.db.types import BigId, UtcDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Binary collation: ids, request keys and codes compare exactly, as Python does.
# (MariaDB's default compares case- and trailing-space-insensitively: "Bob" would be "bob".)
MYSQL_TABLE_ARGS = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", String(100), nullable=False),
    Column("applied_at", UtcDateTime, nullable=False),
    **MYSQL_TABLE_ARGS,
)

coupon_templates = Table(
    "coupon_templates",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("shop_id", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    Column("benefit_type", String(16), nullable=False),
    Column("status", String(8), nullable=False),
    Column("claim_start", UtcDateTime, nullable=False),
    Column("claim_end", UtcDateTime, nullable=False),
    # NULL = unlimited. With pregenerated or imported codes, the number of codes.
    Column("stock_total", BigInteger, nullable=True),
    Column("issued", BigInteger, nullable=False, server_default="0"),
    Column("per_user_limit", Integer, nullable=False),
    Column("daily_limit", Integer, nullable=True),
    # The validated template as merchants wrote it (benefit, scope, validity, ...).
    Column("spec", JSON, nullable=False),
    # Bumped on every change: cache keys and the gate use it to see stale data.
    Column("version", Integer, nullable=False, server_default="1"),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint("issued >= 0", name="issued_not_negative"),
    CheckConstraint("stock_total IS NULL OR issued <= stock_total", name="issued_within_stock"),
    Index(None, "shop_id", "id"),
    **MYSQL_TABLE_ARGS,
)

products = Table(
    "products",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("product_id", String(64), primary_key=True),
    Column("title", String(200), nullable=False),
    Column("list_price", BigInteger, nullable=False),
    Column("promo_price", BigInteger, nullable=True),
    Column("category", String(64), nullable=True),
    Column("auto_claim_template_ids", JSON, nullable=False),
    Column("cover_image", String(512), nullable=True),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint("list_price > 0", name="list_price_positive"),
    CheckConstraint(
        "promo_price IS NULL OR (promo_price > 0 AND promo_price < list_price)",
        name="promo_below_list",
    ),
    **MYSQL_TABLE_ARGS,
)

members = Table(
    "members",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("user_id", String(64), primary_key=True),
    Column("level", Integer, nullable=False, server_default="0"),
    # Never reset: the first time this user joined this shop.
    Column("first_joined_at", UtcDateTime, nullable=False),
    Column("joined_at", UtcDateTime, nullable=False),
    # NULL while a member; set when the user leaves.
    Column("left_at", UtcDateTime, nullable=True),
    Column("rejoined", Boolean, nullable=False, server_default="0"),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint("level >= 0", name="level_not_negative"),
    **MYSQL_TABLE_ARGS,
)

# --- the coupon ledger (migration 2) ---------------------------------------------------------
coupons = Table(
    "coupons",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("shop_id", String(64), nullable=False),
    Column("template_id", BigInteger, nullable=False),
    Column("user_id", String(64), nullable=False),
    # The user's n-th coupon of this template: unique, so no user passes per_user_limit
    # even if two writers raced past the code's own check.
    Column("slot", Integer, nullable=False),
    Column("code", String(64), nullable=True),
    # unused | locked | used | revoked; "expired" is derived from valid_to, never stored.
    Column("status", String(8), nullable=False),
    Column("source", String(12), nullable=False),
    # Who asked, and which request: unique per shop, so a retry never issues twice.
    Column("request_key", String(200), nullable=False),
    Column("body_hash", String(64), nullable=False),
    Column("valid_from", UtcDateTime, nullable=False),
    Column("valid_to", UtcDateTime, nullable=False),
    Column("claimed_at", UtcDateTime, nullable=False),
    Column("order_id", String(64), nullable=True),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("template_id", "user_id", "slot"),
    UniqueConstraint("shop_id", "request_key"),
    Index(None, "shop_id", "user_id", "status", "valid_to"),
    Index(None, "shop_id", "user_id", "id"),
    # Confirm, cancel and lapse release find an order's coupons by it (migration 8): without
    # it those UPDATEs scan, and wait on, every coupon row of the shop.
    Index(None, "shop_id", "order_id"),
    **MYSQL_TABLE_ARGS,
)

coupon_codes = Table(
    "coupon_codes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("shop_id", String(64), nullable=False),
    Column("template_id", BigInteger, nullable=False),
    # Unique per shop (so a typed code names one template), hence per template too.
    Column("code", String(64), nullable=False),
    Column("coupon_id", BigInteger, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("shop_id", "code"),
    Index(None, "template_id", "coupon_id", "id"),
    **MYSQL_TABLE_ARGS,
)

template_daily = Table(
    "template_daily",
    metadata,
    Column("template_id", BigInteger, primary_key=True, autoincrement=False),
    # The calendar day in the shop's time zone, YYYY-MM-DD.
    Column("day", String(10), primary_key=True),
    Column("issued", Integer, nullable=False),
    CheckConstraint("issued >= 0", name="daily_issued_not_negative"),
    **MYSQL_TABLE_ARGS,
)

# One row per (shop, user) that has ever been issued a coupon: the row a writer locks
# so the wallet cap holds across templates being claimed at the same moment.
wallets = Table(
    "wallets",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("user_id", String(64), primary_key=True),
    **MYSQL_TABLE_ARGS,
)

# Merchant batch operations (grants) and other replies kept for idempotency.
idempotency_records = Table(
    "idempotency_records",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("request_key", String(200), primary_key=True),
    Column("body_hash", String(64), nullable=False),
    Column("status", Integer, nullable=False),
    # A grant's reply holds a result per user (up to 10,000): over MariaDB's 64 KB TEXT.
    Column("reply", Text().with_variant(mysql.MEDIUMTEXT(), "mysql"), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    **MYSQL_TABLE_ARGS,
)

# --- live-room exclusive prices (migration 3) --------------------------------------------------
live_room_prices = Table(
    "live_room_prices",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("room_id", String(64), primary_key=True),
    Column("product_id", String(64), primary_key=True),
    Column("exclusive_price", BigInteger, nullable=False),
    Column("starts_at", UtcDateTime, nullable=False),
    Column("ends_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint("exclusive_price > 0", name="exclusive_positive"),
    Index(None, "shop_id", "product_id"),
    **MYSQL_TABLE_ARGS,
)

# --- member center: gift packs, popups, new-member exclusives (migration 5) -------------------
gift_packs = Table(
    "gift_packs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("shop_id", String(64), nullable=False),
    Column("kind", String(12), nullable=False),  # new_member | member
    Column("name", String(40), nullable=False),
    Column("status", String(8), nullable=False),  # active | ended
    Column("starts_at", UtcDateTime, nullable=False),
    Column("ends_at", UtcDateTime, nullable=False),
    # NULL: the popup shows for the whole pack window (and follows it when it changes).
    Column("popup_starts_at", UtcDateTime, nullable=True),
    Column("popup_ends_at", UtcDateTime, nullable=True),
    Column("min_level", Integer, nullable=False, server_default="0"),
    # The coupon template ids, in the merchant's order (JSON list of ints).
    Column("template_ids", JSON, nullable=False),
    Column("gift_template_id", BigInteger, nullable=True),
    # Gifts set aside for this pack (礼品数, no more than the gift's stock), and given.
    Column("gift_quantity", Integer, nullable=True),
    Column("gifts_given", Integer, nullable=False, server_default="0"),
    Column("claimed", Integer, nullable=False, server_default="0"),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint("gifts_given <= gift_quantity", name="gifts_within_quantity"),
    Index(None, "shop_id", "kind", "ends_at"),
    **MYSQL_TABLE_ARGS,
)

# One row per pack a user claimed: the primary key makes a pack once per user.
gift_pack_claims = Table(
    "gift_pack_claims",
    metadata,
    Column("pack_id", BigInteger, primary_key=True, autoincrement=False),
    Column("user_id", String(64), primary_key=True),
    Column("shop_id", String(64), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("body_hash", String(64), nullable=False),
    Column("claimed_at", UtcDateTime, nullable=False),
    UniqueConstraint("shop_id", "user_id", "request_id"),
    **MYSQL_TABLE_ARGS,
)

# One row per pack popup shown to a user: inserting it is what decides "first entry".
pack_popups = Table(
    "pack_popups",
    metadata,
    Column("pack_id", BigInteger, primary_key=True, autoincrement=False),
    Column("user_id", String(64), primary_key=True),
    Column("shown_at", UtcDateTime, nullable=False),
    **MYSQL_TABLE_ARGS,
)

# A member takes one new-member exclusive coupon or gift, once, ever (per shop).
exclusive_takes = Table(
    "exclusive_takes",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("user_id", String(64), primary_key=True),
    Column("template_id", BigInteger, nullable=False),
    Column("request_key", String(200), nullable=False),
    Column("taken_at", UtcDateTime, nullable=False),
    **MYSQL_TABLE_ARGS,
)

# A row a writer upserts to serialize one kind of change per shop (say, creating packs of
# one kind, so two overlapping packs cannot both pass the overlap check).
shop_locks = Table(
    "shop_locks",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("name", String(32), primary_key=True),
    **MYSQL_TABLE_ARGS,
)

# --- points (migration 6) ----------------------------------------------------------------------
# One row per (shop, user) holding points: the row an exchange or a merchant change locks,
# and whose conditional update (``WHERE balance + :delta >= 0``) keeps the balance from
# going negative under any concurrency. The CHECK makes that hold for every writer.
points_balances = Table(
    "points_balances",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("user_id", String(64), primary_key=True),
    Column("balance", BigInteger, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint("balance >= 0", name="points_not_negative"),
    **MYSQL_TABLE_ARGS,
)

# Append-only: one row per change, never updated or deleted. ``request_key`` is the durable
# idempotency record of the write that made the row (unique per shop), so a retry after the
# gate lost its keys finds the first change instead of charging or granting twice.
points_ledger = Table(
    "points_ledger",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("shop_id", String(64), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("delta", BigInteger, nullable=False),
    Column("reason", String(64), nullable=False),
    Column("ref", String(128), nullable=True),
    Column("balance_after", BigInteger, nullable=False),
    Column("request_key", String(200), nullable=False),
    Column("body_hash", String(64), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    CheckConstraint("delta <> 0", name="points_delta_not_zero"),
    CheckConstraint("balance_after >= 0", name="points_after_not_negative"),
    UniqueConstraint("shop_id", "request_key"),
    Index(None, "shop_id", "user_id", "id"),
    **MYSQL_TABLE_ARGS,
)

# A coupon template sold for points (积分兑换). NULL starts_at / ends_at follow the
# template's own claim window; set, they narrow it.
exchange_offers = Table(
    "exchange_offers",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("shop_id", String(64), nullable=False),
    Column("template_id", BigInteger, nullable=False),
    Column("points_cost", BigInteger, nullable=False),
    Column("starts_at", UtcDateTime, nullable=True),
    Column("ends_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint("points_cost > 0", name="points_cost_positive"),
    Index(None, "shop_id", "id"),
    **MYSQL_TABLE_ARGS,
)

# --- redemption (核销) for the order system (migration 7) -----------------------------------
# One row per order: the order id is the idempotency key (unique per shop), and the first
# reply is kept so a retry gets the same bytes.
redemptions = Table(
    "redemptions",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("order_id", String(64), primary_key=True),
    Column("user_id", String(64), nullable=False),
    # locked | used | cancelled | expired (the lock lapsed before a confirm)
    Column("status", String(10), nullable=False),
    Column("body_hash", String(64), nullable=False),
    Column("reply", Text, nullable=False),
    Column("live_room_id", String(64), nullable=True),
    Column("total", BigInteger, nullable=False),
    Column("discount", BigInteger, nullable=False),
    Column("payable", BigInteger, nullable=False),
    Column("locked_at", UtcDateTime, nullable=False),
    Column("confirmed_at", UtcDateTime, nullable=True),
    Column("cancelled_at", UtcDateTime, nullable=True),
    Column("released_at", UtcDateTime, nullable=True),
    CheckConstraint("discount >= 0 AND payable >= 0", name="money_not_negative"),
    Index(None, "shop_id", "user_id", "status", "locked_at"),
    **MYSQL_TABLE_ARGS,
)

# The coupons an order holds, with the discount the engine apportioned to each: what the
# merchant statistics sum. ``outcome`` stays NULL while the order holds the coupon; on
# cancel or lapse it records what happened: returned | expired | not_returnable.
redemption_coupons = Table(
    "redemption_coupons",
    metadata,
    Column("shop_id", String(64), primary_key=True),
    Column("order_id", String(64), primary_key=True),
    Column("coupon_id", BigInteger, primary_key=True, autoincrement=False),
    Column("template_id", BigInteger, nullable=False),
    Column("discount", BigInteger, nullable=False),
    Column("outcome", String(16), nullable=True),
    CheckConstraint("discount >= 0", name="coupon_discount_not_negative"),
    Index(None, "template_id", "order_id"),
    **MYSQL_TABLE_ARGS,
)

# --- coupon events: the transactional outbox (migration 10) ----------------------------------
# One row per event, inserted in the transaction of the change it reports (bff/events). The
# id is the event's id: stable across redelivery, increasing in insertion order (not strictly
# in commit order: the feed waits for ids to settle, bff/events/feed.py). A row stays after it
# is published (``published_at``), for the pull feed, and is pruned after the retention.
coupon_events = Table(
    "coupon_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("shop_id", String(64), nullable=False),
    Column("type", String(32), nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("schema_version", Integer, nullable=False),
    # The event's ``data`` object as JSON text (serialized once, sent as is).
    Column("data", Text().with_variant(mysql.MEDIUMTEXT(), "mysql"), nullable=False),
    # NULL until the broker confirmed it (the relay, bff/events/relay.py).
    Column("published_at", UtcDateTime, nullable=True),
    # A relay's claim on an unpublished row: until when, and which relay. A crashed relay's
    # lease runs out and another publishes the row again (consumers dedupe by id).
    Column("lease_until", UtcDateTime, nullable=True),
    Column("lease_owner", String(36), nullable=True),
    Index(None, "published_at", "id"),
    Index(None, "shop_id", "id"),
    Index(None, "occurred_at"),
    **MYSQL_TABLE_ARGS,
)
