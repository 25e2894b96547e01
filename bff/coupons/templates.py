"""Coupon templates (券模板): create, read, list, patch. Every query is scoped by shop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from http import HTTPStatus
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bff import jsonutil
from bff.clock import Clock
from bff.coupons.codegen import insert_generated
from bff.coupons.schemas import CODE_STOCK_TYPES, COVER_REQUIRED
from bff.db import tables
from bff.db.engine import Database
from bff.db.paging import newest_first
from bff.errors import ApiError, not_found, validation_failed
from bff.schemas import page_of

T = tables.coupon_templates

# Columns, not spec, are the truth for what can change after creation.
_COLUMN_FIELDS = ("name", "status", "claim_start", "claim_end", "per_user_limit", "daily_limit")


def _spec_of(data: dict[str, Any]) -> dict[str, Any]:
    """The JSON-safe template spec (datetimes as ISO strings)."""
    spec = {k: v for k, v in data.items() if k not in _COLUMN_FIELDS}
    return jsonutil.loads(jsonutil.dumps(spec))


def _stock_total(data: dict[str, Any]) -> int | None:
    codes = data["codes"]
    if codes["type"] == "pregenerated":
        return int(codes["count"])
    if codes["type"] == "imported":
        return 0  # grows with each upload
    stock = data["stock"]
    return int(stock["total"]) if stock["type"] == "limited" else None


def refuse_identical_pages(claim_page: str, redeem_page: str) -> None:
    """DOMAIN.md's landing pages: the same page (query strings aside) breaks the jump at
    redemption. Checked on the template as stored: the default claim page filled in, a
    PATCH merged with what it leaves alone."""
    if page_of(claim_page) == page_of(redeem_page):
        raise ApiError(
            HTTPStatus.BAD_REQUEST,
            "LANDING_PAGES_IDENTICAL",
            "claim_page and redeem_page must be different pages: the same page breaks "
            "the jump at redemption",
            {"claim_page": claim_page, "redeem_page": redeem_page},
        )


def refuse_product_code_without_cover(spec: dict[str, Any], errors: dict[str, list[str]]) -> None:
    """DOMAIN.md: when product_code is set, cover_image (one png/jpg/jpeg URL) is required."""
    if spec.get("product_code") is not None and spec.get("cover_image") is None:
        errors.setdefault("cover_image", []).append(COVER_REQUIRED)


def template_from_row(row: Row[Any] | Any) -> dict[str, Any]:
    """The wire shape of a template row."""
    spec = dict(row.spec)
    validity = dict(spec["validity"])
    if validity["type"] == "absolute":
        validity["start"] = datetime.fromisoformat(validity["start"])
        validity["end"] = datetime.fromisoformat(validity["end"])
    stock_total = row.stock_total
    if spec["codes"]["type"] in CODE_STOCK_TYPES:
        stock = None
    elif stock_total is None:
        stock = {"type": "unlimited"}
    else:
        stock = {"type": "limited", "total": stock_total}
    return {
        **spec,
        "validity": validity,
        "stock": stock,
        "id": row.id,
        "shop_id": row.shop_id,
        "name": row.name,
        "status": row.status,
        "claim_start": row.claim_start,
        "claim_end": row.claim_end,
        "per_user_limit": row.per_user_limit,
        "daily_limit": row.daily_limit,
        "issued": row.issued,
        "remaining": None if stock_total is None else max(stock_total - row.issued, 0),
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


async def fetch_row(
    conn: AsyncConnection, shop_id: str, template_id: int, *, lock: bool = False
) -> Any:
    query = select(T).where(T.c.shop_id == shop_id, T.c.id == template_id)
    if lock:
        query = query.with_for_update()
    return (await conn.execute(query)).first()


async def fetch_rows(
    conn: AsyncConnection, shop_id: str, template_ids: list[int]
) -> dict[int, Any]:
    if not template_ids:
        return {}
    rows = await conn.execute(select(T).where(T.c.shop_id == shop_id, T.c.id.in_(template_ids)))
    return {row.id: row for row in rows}


class TemplateService:
    def __init__(self, db: Database, clock: Clock, default_claim_page: str) -> None:
        self.db = db
        self.clock = clock
        self.default_claim_page = default_claim_page
        # Awaited with a template id after it changed (caches and sold-out flags drop it).
        self.on_change: list[Callable[[int], Awaitable[None]]] = []
        # Called with a new template's data before it is written; raise to refuse it
        # (the points policy's free-coupon denominations).
        self.checks: list[Callable[[dict[str, Any]], None]] = []

    async def create(self, shop_id: str, data: dict[str, Any]) -> dict[str, Any]:
        # The configured default, not a hard-coded home page, is what the template stores.
        data = {**data, "claim_page": data["claim_page"] or self.default_claim_page}
        refuse_identical_pages(data["claim_page"], data["redeem_page"])
        for check in self.checks:
            check(data)
        now = self.clock.now()
        values = {
            "shop_id": shop_id,
            "name": data["name"],
            "benefit_type": data["benefit"]["type"],
            "status": data["status"],
            "claim_start": data["claim_start"],
            "claim_end": data["claim_end"],
            "stock_total": _stock_total(data),
            "issued": 0,
            "per_user_limit": data["per_user_limit"],
            "daily_limit": data["daily_limit"],
            "spec": _spec_of(data),
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }

        async def work(conn: AsyncConnection) -> dict[str, Any]:
            result = await conn.execute(insert(T).values(**values))
            template_id = int(result.inserted_primary_key[0])
            if data["codes"]["type"] == "pregenerated":
                await insert_generated(conn, shop_id, template_id, data["codes"]["count"], now)
            row = await fetch_row(conn, shop_id, template_id)
            return template_from_row(row)

        return await self.db.transaction(work, bulk=data["codes"]["type"] == "pregenerated")

    async def get(self, shop_id: str, template_id: int) -> dict[str, Any]:
        async def work(conn: AsyncConnection) -> Any:
            return await fetch_row(conn, shop_id, template_id)

        row = await self.db.read(work)
        if row is None:
            raise not_found("coupon template")
        return template_from_row(row)

    async def list(
        self, shop_id: str, limit: int, cursor: str | None, status: str | None
    ) -> dict[str, Any]:
        query = select(T).where(T.c.shop_id == shop_id)
        if status is not None:
            query = query.where(T.c.status == status)
        rows, next_cursor = await newest_first(self.db, query, T.c.id, limit, cursor)
        return {"items": [template_from_row(row) for row in rows], "next_cursor": next_cursor}

    async def patch(
        self, shop_id: str, template_id: int, changes: dict[str, Any]
    ) -> dict[str, Any]:
        async def work(conn: AsyncConnection) -> dict[str, Any]:
            row = await fetch_row(conn, shop_id, template_id, lock=True)
            if row is None:
                raise not_found("coupon template")
            values = _patch_values(row, changes, self.default_claim_page)
            values["updated_at"] = self.clock.now()
            values["version"] = T.c.version + 1
            await conn.execute(update(T).where(T.c.id == template_id).values(**values))
            return template_from_row(await fetch_row(conn, shop_id, template_id))

        template = await self.db.transaction(work)
        for callback in self.on_change:
            await callback(template_id)
        return template


def _patch_values(row: Any, changes: dict[str, Any], default_claim_page: str) -> dict[str, Any]:
    """The column updates for a PATCH, refusing what cannot change.

    Display and landing fields change at any time: coupons already issued read them from
    the template (their redeem_page included), so a change shows everywhere at once. The
    cross-field rules are checked on the merged template, not on the PATCH alone.
    """
    errors: dict[str, list[str]] = {}
    values: dict[str, Any] = {}
    spec = dict(row.spec)
    for field in ("cover_image", "product_code", "redeem_page"):
        if field in changes:
            spec[field] = changes[field]
    if "claim_page" in changes:
        spec["claim_page"] = changes["claim_page"] or default_claim_page
    if "product_code" in changes or "cover_image" in changes:
        refuse_product_code_without_cover(spec, errors)
    if "status" in changes:
        if row.status == "ended" and changes["status"] != "ended":
            errors["status"] = ["An ended template cannot be reopened."]
        values["status"] = changes["status"]
    if "name" in changes:
        values["name"] = changes["name"]
    if "description" in changes:
        spec["description"] = changes["description"]
    if "claim_end" in changes:
        if changes["claim_end"] <= row.claim_start:
            errors["claim_end"] = ["Must be after claim_start."]
        values["claim_end"] = changes["claim_end"]
    if "stock" in changes:
        total = changes["stock"]["total"]
        if spec["codes"]["type"] in CODE_STOCK_TYPES:
            errors["stock"] = [
                "The stock of a template with codes is its codes: add codes instead."
            ]
        elif row.stock_total is None:
            errors["stock"] = ["The stock is unlimited; it cannot be limited afterwards."]
        elif total < row.stock_total:
            errors["stock.total"] = [f"Can only increase the stock (now {row.stock_total})."]
        else:
            values["stock_total"] = total
            spec["stock"] = {"type": "limited", "total": total}
    if errors:
        raise validation_failed(errors)
    if "claim_page" in changes or "redeem_page" in changes:
        refuse_identical_pages(spec["claim_page"], spec["redeem_page"])
    values["spec"] = spec
    return values
