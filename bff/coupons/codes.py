"""Coupon codes: generated up front (pregenerated) or uploaded (imported).

With codes, the stock is the codes not yet assigned: ``stock_total`` counts
the codes, ``issued`` the assigned ones, under the same guard as any stock.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy.exc
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bff.clock import Clock
from bff.coupons.codegen import INSERT_CHUNK, insert_generated
from bff.coupons.templates import fetch_row
from bff.db import tables
from bff.db.engine import Database
from bff.errors import not_found, validation_failed

CODES = tables.coupon_codes
T = tables.coupon_templates
CODE_PATTERN = re.compile(r"^[A-Za-z0-9-]{1,64}$")
MAX_GENERATE = 100_000


@dataclass(frozen=True)
class ParsedCodes:
    codes: list[str]
    duplicates: int
    invalid: int


def parse_code_file(text: str) -> ParsedCodes:
    """One code per line; surrounding white space stripped; a final newline is no line.

    Invalid: empty lines, over 64 characters, characters outside ``[A-Za-z0-9-]``.
    Duplicates within the file are counted and kept once.
    """
    lines = text.splitlines()
    codes: list[str] = []
    seen: set[str] = set()
    duplicates = invalid = 0
    for line in lines:
        code = line.strip()
        if not CODE_PATTERN.fullmatch(code):
            invalid += 1
        elif code in seen:
            duplicates += 1
        else:
            seen.add(code)
            codes.append(code)
    return ParsedCodes(codes, duplicates, invalid)


class CodeService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        # Awaited with a template id after codes changed its stock (as TemplateService's).
        self.on_change: list[Callable[[int], Awaitable[None]]] = []

    async def _changed(self, template_id: int) -> None:
        for callback in self.on_change:
            await callback(template_id)

    async def generate(self, shop_id: str, template_id: int, count: int) -> dict[str, Any]:
        now = self.clock.now()

        async def work(conn: AsyncConnection) -> dict[str, Any]:
            template = await self._locked_template(conn, shop_id, template_id, "pregenerated")
            await insert_generated(conn, shop_id, template_id, count, now)
            available = await self._grow_stock(conn, template, count)
            return {"generated": count, "available": available}

        result = await self.db.transaction(work, bulk=True)
        await self._changed(template_id)
        return result

    async def import_codes(self, shop_id: str, template_id: int, text: str) -> dict[str, Any]:
        parsed = parse_code_file(text)
        now = self.clock.now()

        async def work(conn: AsyncConnection) -> dict[str, Any]:
            template = await self._locked_template(conn, shop_id, template_id, "imported")
            known: set[str] = set()
            for start in range(0, len(parsed.codes), INSERT_CHUNK):
                chunk = parsed.codes[start : start + INSERT_CHUNK]
                rows = await conn.execute(
                    select(CODES.c.code).where(CODES.c.shop_id == shop_id, CODES.c.code.in_(chunk))
                )
                known.update(code for (code,) in rows)
            fresh = [code for code in parsed.codes if code not in known]
            for start in range(0, len(fresh), INSERT_CHUNK):
                await conn.execute(
                    CODES.insert(),
                    [
                        {
                            "shop_id": shop_id,
                            "template_id": template_id,
                            "code": code,
                            "coupon_id": None,
                            "created_at": now,
                        }
                        for code in fresh[start : start + INSERT_CHUNK]
                    ],
                )
            available = await self._grow_stock(conn, template, len(fresh))
            return {
                "imported": len(fresh),
                "duplicates": parsed.duplicates + len(parsed.codes) - len(fresh),
                "invalid": parsed.invalid,
                "available": available,
            }

        try:
            result = await self.db.transaction(work, bulk=True)
        except sqlalchemy.exc.IntegrityError:
            # Another upload added some of these codes meanwhile: run again, and they
            # count as duplicates.
            result = await self.db.transaction(work, bulk=True)
        await self._changed(template_id)
        return result

    async def _locked_template(
        self, conn: AsyncConnection, shop_id: str, template_id: int, codes_type: str
    ) -> Any:
        template = await fetch_row(conn, shop_id, template_id, lock=not self.db.is_sqlite)
        if template is None:
            raise not_found("coupon template")
        if template.spec["codes"]["type"] != codes_type:
            raise validation_failed(
                {
                    "codes": [
                        f"This template's codes are {template.spec['codes']['type']}, "
                        f"not {codes_type}."
                    ]
                }
            )
        return template

    async def _grow_stock(self, conn: AsyncConnection, template: Any, added: int) -> int:
        if added:
            await conn.execute(
                update(T)
                .where(T.c.id == template.id)
                .values(
                    stock_total=T.c.stock_total + added,
                    version=T.c.version + 1,
                    updated_at=self.clock.now(),
                )
            )
        total = (template.stock_total or 0) + added
        return total - template.issued
