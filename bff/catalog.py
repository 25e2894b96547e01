"""Products (商品): list price, store promotion price, category, auto-claim templates."""

from __future__ import annotations

from typing import Any

import sqlalchemy.exc
from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bff.clock import Clock
from bff.coupons.templates import fetch_rows
from bff.db import tables
from bff.db.engine import Database
from bff.errors import not_found, validation_failed
from bff.schemas import MAX_ID, Cents, ImageUrl, Instant, Int, Text

P = tables.products


def _unique_ids(values: list[int]) -> None:
    if len(set(values)) != len(values):
        raise ValidationError("Must not repeat a template.")


class ProductInSchema(Schema):
    title = Text(required=True, not_blank=True, validate=validate.Length(min=1, max=200))
    list_price = Cents(
        required=True, validate=validate.Range(min=1, error="Must be positive cents.")
    )
    promo_price = Cents(
        load_default=None,
        allow_none=True,
        validate=validate.Range(min=1, error="Must be positive cents."),
        metadata={"description": "store promotion price (店铺优惠), below list_price"},
    )
    category = fields.String(load_default=None, allow_none=True, validate=validate.Length(1, 64))
    auto_claim_template_ids = fields.List(
        Int(validate=validate.Range(min=1, max=MAX_ID)),
        load_default=list,
        validate=[validate.Length(max=20), _unique_ids],
    )
    cover_image = ImageUrl(load_default=None, allow_none=True)

    @validates_schema
    def promo_below_list(self, data: dict[str, Any], **_: Any) -> None:
        promo = data.get("promo_price")
        if promo is not None and promo >= data["list_price"]:
            raise ValidationError("Must be below list_price.", "promo_price")


class ProductOutSchema(Schema):
    product_id = fields.String(required=True)
    title = fields.String(required=True)
    list_price = fields.Integer(required=True)
    promo_price = fields.Integer(allow_none=True)
    category = fields.String(allow_none=True)
    auto_claim_template_ids = fields.List(fields.Integer(), required=True)
    cover_image = fields.String(allow_none=True)
    updated_at = Instant(required=True)


def product_from_row(row: Any) -> dict[str, Any]:
    return {
        "product_id": row.product_id,
        "title": row.title,
        "list_price": row.list_price,
        "promo_price": row.promo_price,
        "category": row.category,
        "auto_claim_template_ids": list(row.auto_claim_template_ids),
        "cover_image": row.cover_image,
        "updated_at": row.updated_at,
    }


async def fetch_product(conn: AsyncConnection, shop_id: str, product_id: str) -> Any:
    query = select(P).where(P.c.shop_id == shop_id, P.c.product_id == product_id)
    return (await conn.execute(query)).first()


class ProductService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def put(self, shop_id: str, product_id: str, data: dict[str, Any]) -> dict[str, Any]:
        template_ids: list[int] = data["auto_claim_template_ids"]
        now = self.clock.now()
        values = {
            "title": data["title"],
            "list_price": data["list_price"],
            "promo_price": data["promo_price"],
            "category": data["category"],
            "auto_claim_template_ids": template_ids,
            "cover_image": data["cover_image"],
            "updated_at": now,
        }

        async def work(conn: AsyncConnection) -> dict[str, Any]:
            await _check_auto_claim_templates(conn, shop_id, template_ids)
            changed = await conn.execute(
                update(P)
                .where(P.c.shop_id == shop_id, P.c.product_id == product_id)
                .values(**values, version=P.c.version + 1)
            )
            if changed.rowcount == 0:
                await conn.execute(
                    insert(P).values(
                        shop_id=shop_id, product_id=product_id, created_at=now, version=1, **values
                    )
                )
            return product_from_row(await fetch_product(conn, shop_id, product_id))

        try:
            return await self.db.transaction(work)
        except sqlalchemy.exc.IntegrityError:
            # Two first PUTs raced on the insert: the loser's update now finds the row.
            return await self.db.transaction(work)

    async def get(self, shop_id: str, product_id: str) -> dict[str, Any]:
        async def work(conn: AsyncConnection) -> Any:
            return await fetch_product(conn, shop_id, product_id)

        row = await self.db.read(work)
        if row is None:
            raise not_found("product")
        return product_from_row(row)


async def _check_auto_claim_templates(
    conn: AsyncConnection, shop_id: str, template_ids: list[int]
) -> None:
    """Auto-claim templates must be this shop's and allow the ``auto`` method."""
    found = await fetch_rows(conn, shop_id, template_ids)
    messages = []
    for template_id in template_ids:
        row = found.get(template_id)
        if row is None:
            messages.append(f"Template {template_id} does not exist in this shop.")
        elif "auto" not in row.spec["claim_methods"]:
            messages.append(f"Template {template_id} does not allow the auto claim method.")
    if messages:
        raise validation_failed({"auto_claim_template_ids": messages})
