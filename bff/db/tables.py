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
)

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

MYSQL_TABLE_ARGS = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}

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
