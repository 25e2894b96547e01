"""Gift packs: merchant admin, the member-center popup, and claiming a pack all or nothing.

Claiming a pack is one database transaction: the pack row locked (so its gift
count and the once-per-user row are decided one claim at a time), then its
templates in id order (batched claims lock one template, then wallets: the
same order, so no deadlock cycle), then the user's wallet row. Every coupon
goes through :meth:`bff.coupons.ledger.Ledger.issue_in`, so stock, daily
limits and the wallet cap hold as for any claim; the pack skips only each
template's own per-user limit (DOMAIN: one of each coupon "whatever the
template's own limit"). Any refusal rolls the whole pack back.

Idempotency: the gate answers concurrent copies; ``gift_pack_claims`` holds
the request id durably (unique per user), and the pack's coupons carry request
keys ``k:<user>:<pack>:<template>``, so a replay after the gate lost its keys
rebuilds the first reply and never grants twice.

The popup is decided by inserting a ``pack_popups`` row: the primary key lets
exactly one of two concurrent first entries show it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import Any

import sqlalchemy.exc
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bff import fastdump
from bff.clock import Clock
from bff.coupons.ledger import IssueRequest, Ledger
from bff.coupons.rules import Refusal, refuse
from bff.coupons.templates import fetch_rows
from bff.coupons.wallet import CouponSchema, WalletService, unused_counts
from bff.db import tables
from bff.db.engine import Database
from bff.db.locks import lock_shop, lock_wallets
from bff.db.paging import newest_first
from bff.errors import conflict, not_found, validation_failed
from bff.events import outbox
from bff.gate.base import Gate
from bff.idempotency import Reply, body_hash, idempotency_conflict, run_once
from bff.members import MemberService, fetch_member, is_new_member, member_from_row
from bff.packs import rules
from bff.packs.rules import PackView
from bff.points.ledger import points_balance

P = tables.gift_packs
PC = tables.gift_pack_claims
POP = tables.pack_popups
C = tables.coupons
T = tables.coupon_templates
COUPON_SCHEMA = CouponSchema()
# Ended packs stay listed in the member center this long, so "claimed" / "ended" show.
LISTED_AFTER_END = timedelta(days=30)
MAX_LISTED = 20
CONTENT_FIELDS = ("coupon_template_ids", "gift")


class _Refused(Exception):
    """Raised inside the claim transaction to roll it back with a refusal."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.code)
        self.refusal = refusal


def _view_of(row: Any) -> PackView:
    return PackView(row.kind, row.status, row.starts_at, row.ends_at, row.min_level)


def _data_of(row: Any) -> dict[str, Any]:
    """A stored pack in the shape of a create body (for PATCH: merge, then re-check)."""
    gift = None
    if row.gift_template_id is not None:
        gift = {"template_id": row.gift_template_id, "quantity": row.gift_quantity}
    return {
        "kind": row.kind,
        "name": row.name,
        "status": row.status,
        "starts_at": row.starts_at,
        "ends_at": row.ends_at,
        "popup_starts_at": row.popup_starts_at,
        "popup_ends_at": row.popup_ends_at,
        "min_level": row.min_level,
        "coupon_template_ids": list(row.template_ids),
        "gift": gift,
    }


def _columns(data: dict[str, Any]) -> dict[str, Any]:
    """The columns a create or a PATCH writes from a pack in create-body shape."""
    gift = data["gift"]
    return {
        "name": data["name"],
        "status": data["status"],
        "starts_at": data["starts_at"],
        "ends_at": data["ends_at"],
        "popup_starts_at": data["popup_starts_at"],
        "popup_ends_at": data["popup_ends_at"],
        "min_level": data["min_level"],
        "template_ids": list(data["coupon_template_ids"]),
        "gift_template_id": None if gift is None else gift["template_id"],
        "gift_quantity": None if gift is None else gift["quantity"],
    }


def _template_ids(rows: list[Any]) -> list[int]:
    ids: set[int] = set()
    for row in rows:
        ids.update(int(i) for i in row.template_ids)
        if row.gift_template_id is not None:
            ids.add(int(row.gift_template_id))
    return sorted(ids)


def _benefit(template: Any, kind: str, quantity: int) -> dict[str, Any]:
    return {
        "type": kind,
        "template_id": template.id,
        "name": template.name,
        "description": template.spec.get("description", ""),
        "benefit": template.spec["benefit"],
        "quantity": quantity,
    }


def pack_view(row: Any, templates: dict[int, Any]) -> dict[str, Any]:
    """The wire shape of a pack, with remaining computed from live template counts."""
    coupon_rows = [templates[int(i)] for i in row.template_ids if int(i) in templates]
    gift_row = templates.get(row.gift_template_id) if row.gift_template_id is not None else None
    benefits = [_benefit(t, "coupon", 1) for t in coupon_rows]
    gift = None
    gift_left = None
    if row.gift_template_id is not None:
        gift = {
            "template_id": row.gift_template_id,
            "quantity": row.gift_quantity,
            "given": row.gifts_given,
        }
        gift_left = max(row.gift_quantity - row.gifts_given, 0)
        if gift_row is not None:
            benefits.append(_benefit(gift_row, "gift", row.gift_quantity))
    return {
        "id": row.id,
        "kind": row.kind,
        "name": row.name,
        "status": row.status,
        "starts_at": row.starts_at,
        "ends_at": row.ends_at,
        # NULL popup window: the pack window, also after the pack window is changed.
        "popup_starts_at": row.popup_starts_at or row.starts_at,
        "popup_ends_at": row.popup_ends_at or row.ends_at,
        "min_level": row.min_level,
        "coupon_template_ids": [int(i) for i in row.template_ids],
        "gift": gift,
        "benefits": benefits,
        "remaining": rules.pack_remaining(coupon_rows, gift_row, gift_left),
        "claimed": row.claimed,
    }


async def _views(conn: AsyncConnection, shop_id: str, rows: list[Any]) -> list[dict[str, Any]]:
    templates = await fetch_rows(conn, shop_id, _template_ids(rows))
    return [pack_view(row, templates) for row in rows]


async def _fetch_pack(
    conn: AsyncConnection, shop_id: str, pack_id: int, *, lock: bool = False
) -> Any:
    query = select(P).where(P.c.shop_id == shop_id, P.c.id == pack_id)
    if lock and conn.dialect.name != "sqlite":
        query = query.with_for_update()
    return (await conn.execute(query)).first()


@dataclass(frozen=True)
class JoinReply:
    created: bool
    body: dict[str, Any]


class PackService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        gate: Gate,
        ledger: Ledger,
        wallet: WalletService,
        members: MemberService,
        *,
        wallet_cap: int,
        idempotency_ttl_seconds: int,
    ) -> None:
        self.db = db
        self.clock = clock
        self.gate = gate
        self.ledger = ledger
        self.wallet = wallet
        self.members = members
        self.wallet_cap = wallet_cap
        self.ttl = idempotency_ttl_seconds

    # --- merchant admin -------------------------------------------------------------------
    async def create(self, shop_id: str, data: dict[str, Any]) -> dict[str, Any]:
        errors = rules.window_errors(data)
        if errors:
            raise validation_failed(errors)
        now = self.clock.now()

        async def work(conn: AsyncConnection) -> dict[str, Any]:
            await lock_shop(conn, shop_id, f"pack:{data['kind']}")
            await self._check_contents(conn, shop_id, data)
            if data["status"] == "active":
                await _check_overlap(conn, shop_id, data, None)
            result = await conn.execute(
                insert(P).values(
                    shop_id=shop_id,
                    kind=data["kind"],
                    **_columns(data),
                    gifts_given=0,
                    claimed=0,
                    created_at=now,
                    updated_at=now,
                )
            )
            row = await _fetch_pack(conn, shop_id, int(result.inserted_primary_key[0]))
            return (await _views(conn, shop_id, [row]))[0]

        return await self.db.transaction(work)

    async def get(self, shop_id: str, pack_id: int) -> dict[str, Any]:
        async def work(conn: AsyncConnection) -> dict[str, Any]:
            row = await _fetch_pack(conn, shop_id, pack_id)
            if row is None:
                raise not_found("gift pack")
            return (await _views(conn, shop_id, [row]))[0]

        return await self.db.read(work)

    async def list(
        self, shop_id: str, kind: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        query = select(P).where(P.c.shop_id == shop_id)
        if kind is not None:
            query = query.where(P.c.kind == kind)
        rows, next_cursor = await newest_first(self.db, query, P.c.id, limit, cursor)

        async def work(conn: AsyncConnection) -> list[dict[str, Any]]:
            return await _views(conn, shop_id, rows)

        return {"items": await self.db.read(work), "next_cursor": next_cursor}

    async def patch(self, shop_id: str, pack_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        now = self.clock.now()

        async def work(conn: AsyncConnection) -> dict[str, Any]:
            current = await _fetch_pack(conn, shop_id, pack_id)
            if current is None:
                raise not_found("gift pack")
            await lock_shop(conn, shop_id, f"pack:{current.kind}")
            row = await _fetch_pack(conn, shop_id, pack_id, lock=True)
            data = {**_data_of(row), **changes}
            errors = rules.window_errors(data)
            if row.status == "ended" and data["status"] != "ended":
                errors["status"] = ["An ended pack cannot be reopened."]
            contents_changed = any(name in changes for name in CONTENT_FIELDS)
            if contents_changed and row.claimed:
                for name in CONTENT_FIELDS:
                    if name in changes:
                        errors[name] = ["Members have claimed this pack: its contents are fixed."]
            if errors:
                raise validation_failed(errors)
            if contents_changed:
                await self._check_contents(conn, shop_id, data)
            if data["status"] == "active":
                await _check_overlap(conn, shop_id, data, pack_id)
            await conn.execute(
                update(P).where(P.c.id == pack_id).values(**_columns(data), updated_at=now)
            )
            row = await _fetch_pack(conn, shop_id, pack_id)
            return (await _views(conn, shop_id, [row]))[0]

        return await self.db.transaction(work)

    async def _check_contents(
        self, conn: AsyncConnection, shop_id: str, data: dict[str, Any]
    ) -> None:
        gift = data["gift"]
        ids = [i for i in data["coupon_template_ids"] if isinstance(i, int)]
        wanted = ids + ([gift["template_id"]] if gift is not None else [])
        templates = await fetch_rows(conn, shop_id, wanted)
        gift_row = templates.get(gift["template_id"]) if gift is not None else None
        errors = rules.content_errors(data, templates, gift_row)
        if errors:
            raise validation_failed(errors)

    # --- membership and the member center ---------------------------------------------------
    async def join(self, shop_id: str, user_id: str) -> JoinReply:
        """Join (or rejoin); a new member sees the new-member pack, once, in the reply."""
        joined = await self.members.join(shop_id, user_id)
        now = self.clock.now()
        new_member = is_new_member(joined.row, now)
        popup = None
        if new_member:
            popup = await self._popup(shop_id, user_id, "new_member", joined.row, now)
        body = {"member": joined.member, "new_member": new_member, "popup": popup}
        return JoinReply(created=joined.outcome != "already", body=body)

    async def member_center(self, shop_id: str, user_id: str) -> dict[str, Any]:
        now = self.clock.now()

        async def work(conn: AsyncConnection) -> tuple[Any, int, list[Any], set[int]]:
            member = await fetch_member(conn, shop_id, user_id)
            points = await points_balance(conn, shop_id, user_id)
            packs = list(
                await conn.execute(
                    select(P)
                    .where(
                        P.c.shop_id == shop_id,
                        P.c.starts_at <= now,
                        P.c.ends_at > now - LISTED_AFTER_END,
                    )
                    .order_by(P.c.id.desc())
                    .limit(MAX_LISTED)
                )
            )
            claimed = await _claimed_packs(conn, user_id, [p.id for p in packs])
            return member, points, packs, claimed

        member, points, packs, claimed = await self.db.read(work)
        popup = None
        if member is not None and member.left_at is None:
            popup = await self._popup(shop_id, user_id, "member", member, now)

        async def views(conn: AsyncConnection) -> list[dict[str, Any]]:
            return await _views(conn, shop_id, packs)

        listed = []
        for row, view in zip(packs, await self.db.read(views), strict=True):
            state = rules.pack_state(
                _view_of(row), member, row.id in claimed, view["remaining"], now
            )
            listed.append({"pack": view, "state": state})
        return {
            "member": None if member is None else member_from_row(member),
            "new_member": is_new_member(member, now),
            "points": points,
            "popup": popup,
            "gift_packs": listed,
        }

    async def _popup(
        self, shop_id: str, user_id: str, kind: str, member: Any, now: datetime
    ) -> dict[str, Any] | None:
        """The pack of ``kind`` to pop up for this user now, at most once per pack."""

        async def find(conn: AsyncConnection) -> Any:
            row = (
                await conn.execute(
                    select(P)
                    .where(
                        P.c.shop_id == shop_id,
                        P.c.kind == kind,
                        P.c.status == "active",
                        func.coalesce(P.c.popup_starts_at, P.c.starts_at) <= now,
                        func.coalesce(P.c.popup_ends_at, P.c.ends_at) > now,
                    )
                    .order_by(P.c.starts_at)
                    .limit(1)
                )
            ).first()
            if row is None or rules.eligibility_refusal(_view_of(row), member, now) is not None:
                return None
            if await _claimed_packs(conn, user_id, [row.id]):
                return None
            return row

        pack = await self.db.read(find)
        if pack is None:
            return None

        async def record(conn: AsyncConnection) -> dict[str, Any]:
            await conn.execute(insert(POP).values(pack_id=pack.id, user_id=user_id, shown_at=now))
            return (await _views(conn, shop_id, [pack]))[0]

        try:
            return await self.db.transaction(record)
        except sqlalchemy.exc.IntegrityError:
            return None  # shown before (or by a concurrent first entry)

    # --- claiming a pack --------------------------------------------------------------------
    async def claim(self, shop_id: str, user_id: str, pack_id: int, request_id: str) -> Reply:
        digest = body_hash({"op": "gift_pack", "pack_id": pack_id})

        async def work() -> Reply:
            replay = await self._replay(shop_id, user_id, request_id, digest)
            if replay is not None:
                return replay
            now = self.clock.now()

            async def read(conn: AsyncConnection) -> tuple[Any, Any]:
                pack = await _fetch_pack(conn, shop_id, pack_id)
                member = await fetch_member(conn, shop_id, user_id)
                return pack, member

            pack, member = await self.db.read(read)
            if pack is None:
                raise not_found("gift pack")
            view = _view_of(pack)
            refusal = rules.window_refusal(view, now) or rules.eligibility_refusal(
                view, member, now
            )
            if refusal is not None:
                raise refusal.error()
            try:
                issued = await self.db.transaction(
                    lambda conn: self._grant(conn, shop_id, user_id, pack_id, request_id, digest)
                )
            except (_Refused, sqlalchemy.exc.IntegrityError) as error:
                refusal = (
                    error.refusal
                    if isinstance(error, _Refused)
                    else refuse("ALREADY_CLAIMED", reason="gift_pack")
                )
                if refusal.code == "ALREADY_CLAIMED":
                    # A copy that ran after the gate lost its keys committed first: this
                    # one hit the claim row's key, or found the pack claimed (by itself).
                    replay = await self._replay(shop_id, user_id, request_id, digest)
                    if replay is not None:
                        return replay
                raise refusal.error() from None
            return Reply(HTTPStatus.CREATED, self._claim_body(pack_id, pack, issued))

        key = f"idem:{{{shop_id}:{user_id}}}:k:{request_id}"
        return await run_once(self.gate, key, digest, work, ttl_seconds=self.ttl)

    async def _grant(
        self,
        conn: AsyncConnection,
        shop_id: str,
        user_id: str,
        pack_id: int,
        request_id: str,
        digest: str,
    ) -> list[tuple[Any, Any]]:
        """Inside one transaction: every benefit of the pack, or a _Refused and nothing."""
        now = self.clock.now()
        pack = await _fetch_pack(conn, shop_id, pack_id, lock=True)
        if pack is None:
            raise not_found("gift pack")
        # Decided again under the pack lock: a member who left (or a level lowered) a
        # moment ago is not granted the pack.
        member = await fetch_member(conn, shop_id, user_id)
        refusal = rules.window_refusal(_view_of(pack), now) or rules.eligibility_refusal(
            _view_of(pack), member, now
        )
        if refusal is not None:
            raise _Refused(refusal)
        if await _claimed_packs(conn, user_id, [pack_id]):
            raise _Refused(refuse("ALREADY_CLAIMED", reason="gift_pack"))
        template_ids = _benefit_ids(pack)
        lock = select(T).where(T.c.id.in_(sorted(template_ids))).order_by(T.c.id)
        if conn.dialect.name != "sqlite":
            lock = lock.with_for_update()
        templates = {row.id: row for row in await conn.execute(lock)}
        await lock_wallets(conn, shop_id, [user_id])
        in_wallet = (await unused_counts(conn, shop_id, [user_id], now)).get(user_id, 0)
        if in_wallet + len(template_ids) > self.wallet_cap:
            raise _Refused(refuse("WALLET_FULL", needed=len(template_ids)))
        gift_exhausted = (
            pack.gift_template_id is not None and pack.gifts_given >= pack.gift_quantity
        )
        if gift_exhausted or any(
            rules.template_remaining(templates[t]) == 0 for t in template_ids if t in templates
        ):
            raise _Refused(refuse("SOLD_OUT"))
        issued: list[tuple[Any, Any]] = []
        for template_id in template_ids:
            result = await self.ledger.issue_in(
                conn,
                IssueRequest(
                    shop_id=shop_id,
                    user_id=user_id,
                    template_id=template_id,
                    source="gift_pack",
                    request_key=f"k:{user_id}:{pack_id}:{template_id}",
                    body_hash=digest,
                    check_window=False,
                    check_limit=False,
                ),
            )
            if result.refusal is not None:
                raise _Refused(result.refusal)
            issued.append((result.coupon, templates[template_id]))
        counted = await conn.execute(
            update(P)
            .where(
                P.c.id == pack_id,
                P.c.gift_quantity.is_(None) | (P.c.gifts_given < P.c.gift_quantity),
            )
            .values(
                claimed=P.c.claimed + 1,
                gifts_given=P.c.gifts_given + (1 if pack.gift_template_id is not None else 0),
            )
        )
        if counted.rowcount != 1:
            raise _Refused(refuse("SOLD_OUT"))
        await conn.execute(
            insert(PC).values(
                pack_id=pack_id,
                user_id=user_id,
                shop_id=shop_id,
                request_id=request_id,
                body_hash=digest,
                claimed_at=now,
            )
        )
        await outbox.append(
            conn,
            [
                outbox.gift_pack_claimed(
                    shop_id, pack_id, user_id, [c for c, _ in issued], pack.gift_template_id, now
                )
            ],
        )
        return issued

    def _claim_body(self, pack_id: int, pack: Any, issued: list[tuple[Any, Any]]) -> dict[str, Any]:
        gift_id = pack.gift_template_id
        coupons = [self.wallet.view(c, t) for c, t in issued if c.template_id != gift_id]
        gifts = [self.wallet.view(c, t) for c, t in issued if c.template_id == gift_id]
        return {
            "pack_id": pack_id,
            "presentation": "lottery",
            "coupons": [fastdump.dump(COUPON_SCHEMA, c) for c in coupons],
            "gift": fastdump.dump(COUPON_SCHEMA, gifts[0]) if gifts else None,
        }

    async def _replay(
        self, shop_id: str, user_id: str, request_id: str, digest: str
    ) -> Reply | None:
        """The first reply again, rebuilt from the durable claim row and its coupons."""

        async def work(conn: AsyncConnection) -> Any:
            claim = (
                await conn.execute(
                    select(PC).where(
                        PC.c.shop_id == shop_id,
                        PC.c.user_id == user_id,
                        PC.c.request_id == request_id,
                    )
                )
            ).first()
            if claim is None or claim.body_hash != digest:
                return claim, None, []
            pack = await _fetch_pack(conn, shop_id, claim.pack_id)
            keys = [f"k:{user_id}:{pack.id}:{t}" for t in _benefit_ids(pack)]
            rows = list(
                await conn.execute(
                    select(C, T.c.name.label("t_name"), T.c.spec.label("t_spec"))
                    .join(T, T.c.id == C.c.template_id)
                    .where(C.c.shop_id == shop_id, C.c.request_key.in_(keys))
                )
            )
            return claim, pack, rows

        claim, pack, rows = await self.db.read(work)
        if claim is None:
            return None
        if claim.body_hash != digest:
            raise idempotency_conflict()
        by_template = {row.template_id: row for row in rows}
        issued = [
            (row, _TemplateName(row.t_name, row.t_spec))
            for row in (by_template.get(t) for t in _benefit_ids(pack))
            if row is not None
        ]
        return Reply(HTTPStatus.CREATED, self._claim_body(pack.id, pack, issued), replayed=True)


@dataclass(frozen=True)
class _TemplateName:
    """The two template fields a coupon view needs."""

    name: str
    spec: dict[str, Any]


def _benefit_ids(pack: Any) -> list[int]:
    """The pack's coupon template ids in the merchant's order, then its gift's."""
    ids = [int(i) for i in pack.template_ids]
    if pack.gift_template_id is not None:
        ids.append(int(pack.gift_template_id))
    return ids


async def _claimed_packs(conn: AsyncConnection, user_id: str, pack_ids: list[int]) -> set[int]:
    if not pack_ids:
        return set()
    rows = await conn.execute(
        select(PC.c.pack_id).where(PC.c.user_id == user_id, PC.c.pack_id.in_(pack_ids))
    )
    return {pack_id for (pack_id,) in rows}


async def _check_overlap(
    conn: AsyncConnection, shop_id: str, data: dict[str, Any], pack_id: int | None
) -> None:
    """409 PACK_WINDOW_OVERLAP when another active pack of the kind shares any instant."""
    query = select(P.c.id, P.c.name, P.c.starts_at, P.c.ends_at).where(
        P.c.shop_id == shop_id,
        P.c.kind == data["kind"],
        P.c.status == "active",
        P.c.starts_at < data["ends_at"],
        P.c.ends_at > data["starts_at"],
    )
    if pack_id is not None:
        query = query.where(P.c.id != pack_id)
    other = (await conn.execute(query.limit(1))).first()
    if other is not None:
        raise conflict(
            "PACK_WINDOW_OVERLAP",
            f"another active {data['kind']} pack overlaps this window",
            {"pack_id": other.id, "name": other.name},
        )
