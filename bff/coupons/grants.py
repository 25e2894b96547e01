"""Merchant grants (发券): issue a template to a list of users, with a result per user.

Grants are not claims: no claim window, method, audience, risk or rate check.
Stock, per-user limit and the wallet cap hold as for any issuance (the same
ledger). Idempotent by request_id: the gate answers copies, and the reply is
also kept in ``idempotency_records``; each coupon's request key
(``g:<request_id>:<user>``) makes even a crashed half-done grant finish
without issuing twice when retried.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

import sqlalchemy.exc
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bff import jsonutil
from bff.clock import Clock
from bff.coupons.ledger import IssueRequest, Ledger
from bff.coupons.templates import fetch_row
from bff.db import tables
from bff.db.engine import Database
from bff.errors import not_found
from bff.events import outbox
from bff.gate.base import Gate
from bff.idempotency import Reply, body_hash, idempotency_conflict, run_once

R = tables.idempotency_records
MAX_GRANT_USERS = 10_000


class GrantService:
    def __init__(
        self, db: Database, clock: Clock, gate: Gate, ledger: Ledger, ttl_seconds: int
    ) -> None:
        self.db = db
        self.clock = clock
        self.gate = gate
        self.ledger = ledger
        self.ttl = ttl_seconds

    async def grant(
        self, shop_id: str, template_id: int, user_ids: list[str], request_id: str
    ) -> Reply:
        unique_users = list(dict.fromkeys(user_ids))
        digest = body_hash({"op": "grant", "template_id": template_id, "user_ids": unique_users})
        record_key = f"grant:{request_id}"

        async def work() -> Reply:
            stored = await self._stored(shop_id, record_key)
            if stored is not None:
                if stored.body_hash != digest:
                    raise idempotency_conflict()
                return Reply(stored.status, jsonutil.loads(stored.reply), replayed=True)
            reply = await self._grant(shop_id, template_id, unique_users, request_id, digest)
            finished = outbox.grant_finished(
                shop_id,
                template_id,
                request_id,
                len(reply.body["granted"]),
                reply.body["failed"],
                self.clock.now(),
            )
            await self._store(shop_id, record_key, digest, reply, finished)
            return reply

        key = f"idem:{{{shop_id}:merchant}}:{record_key}"
        return await run_once(self.gate, key, digest, work, ttl_seconds=self.ttl)

    async def _grant(
        self, shop_id: str, template_id: int, user_ids: list[str], request_id: str, digest: str
    ) -> Reply:
        async def find(conn: AsyncConnection) -> Any:
            return await fetch_row(conn, shop_id, template_id)

        if await self.db.read(find) is None:
            raise not_found("coupon template")
        requests = [
            IssueRequest(
                shop_id=shop_id,
                user_id=user_id,
                template_id=template_id,
                source="grant",
                request_key=f"g:{request_id}:{user_id}",
                body_hash=digest,
                check_window=False,
            )
            for user_id in user_ids
        ]
        # A batch that fails (database down mid-grant) fails only its users: they are
        # reported, and the reply is kept, so nothing is left half-done and unreported.
        results = await asyncio.gather(
            *(self.ledger.issue(r) for r in requests), return_exceptions=True
        )
        granted: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for user_id, result in zip(user_ids, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                failed.append({"user_id": user_id, "code": "UNAVAILABLE"})
            elif result.refusal is not None:
                failed.append({"user_id": user_id, "code": result.refusal.code})
            else:
                granted.append({"user_id": user_id, "coupon_id": result.coupon.id})
        return Reply(HTTPStatus.CREATED, {"granted": granted, "failed": failed})

    async def _stored(self, shop_id: str, record_key: str) -> Any:
        async def work(conn: AsyncConnection) -> Any:
            query = select(R).where(R.c.shop_id == shop_id, R.c.request_key == record_key)
            return (await conn.execute(query)).first()

        return await self.db.read(work)

    async def _store(
        self, shop_id: str, record_key: str, digest: str, reply: Reply, finished: outbox.Event
    ) -> None:
        """Keep the reply and write the grant's ``grant.finished`` event with it: a copy
        that stored first (the gate lost its keys) wrote the one event."""

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(
                insert(R).values(
                    shop_id=shop_id,
                    request_key=record_key,
                    body_hash=digest,
                    status=reply.status,
                    reply=jsonutil.dumps_str(reply.body),
                    created_at=self.clock.now(),
                )
            )
            await outbox.append(conn, [finished])

        try:
            await self.db.transaction(work)
        except sqlalchemy.exc.IntegrityError:
            return  # a copy that ran after a gate loss stored the same result first
