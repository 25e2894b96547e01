"""Fault drills: what a claim burst sees when Redis is flushed, a worker is killed, or
MariaDB or Redis goes away; and that nothing is oversold or issued twice.

Bounded: each drill sends at most a few thousand requests to loopback and
gives up after a fixed time. Services are the bench's own (``bench/services``);
"stopped" is a TCP proxy in front of the service that the drill cuts (refuses
new connections, drops open ones: what a client sees when the server process
dies) and starts again on the same port. ``--stop-processes`` also stops and
restarts the bench's own mariadbd or redis-server process for real.

Every drill ends with the ledger checked straight from MariaDB: ``issued`` ==
coupon rows == the distinct coupons the clients were given, no user above the
per-user limit, stock never passed, and each request id answered with one
coupon at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.seed import SHOP, Minter, Shop, create_template
from bench.services import SECRET, MariaDB, PrivateRedis, Server
from bff.auth import Role
from tests.proxy import TcpProxy

CLAIM = f"/api/v1/shops/{SHOP}/coupons/claim"
TIMEOUT = aiohttp.ClientTimeout(total=20)
UNAVAILABLE_WITHIN = 1.0


@dataclass
class Outcome:
    name: str
    checks: list[tuple[str, bool]] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(ok for _, ok in self.checks)

    def check(self, what: str, ok: bool) -> None:
        self.checks.append((what, bool(ok)))

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "checks": [{"check": what, "ok": ok} for what, ok in self.checks],
            "facts": self.facts,
            "seconds": round(self.seconds, 1),
        }


def render(outcomes: list[Outcome]) -> str:
    lines = []
    for outcome in outcomes:
        lines.append(
            f"**{outcome.name}**: {'PASSED' if outcome.passed else 'FAILED'} "
            f"({outcome.seconds:.0f} s)\n"
        )
        lines.extend(f"- {'ok' if ok else 'FAILED'}: {what}" for what, ok in outcome.checks)
        lines.extend(f"- {fact}" for fact in outcome.facts)
        lines.append("")
    return "\n".join(lines)


# --- claims as a client sees them ------------------------------------------------------------
@dataclass
class Answer:
    status: int  # 0 = no HTTP answer (connection refused or dropped)
    code: str | None
    coupon_id: int | None
    retry_after: str | None
    seconds: float
    replayed: bool = False


class Claimer:
    """Sends claims and remembers every answer per request id."""

    def __init__(self, session: aiohttp.ClientSession, base: str, template_id: int) -> None:
        self.session = session
        self.base = base
        self.template_id = template_id
        self.answers: dict[str, list[Answer]] = defaultdict(list)

    async def claim(self, token: str, request_id: str) -> Answer:
        started = time.perf_counter()
        try:
            async with self.session.post(
                self.base + CLAIM,
                json={"template_id": self.template_id, "request_id": request_id},
                headers={"Authorization": f"Bearer {token}"},
            ) as reply:
                body = await reply.json(content_type=None)
                coupon = body.get("coupon") if isinstance(body, dict) else None
                error = body.get("error") if isinstance(body, dict) else None
                answer = Answer(
                    reply.status,
                    error.get("code") if error else None,
                    coupon.get("coupon_id") if coupon else None,
                    reply.headers.get("Retry-After"),
                    time.perf_counter() - started,
                    bool(body.get("replayed")) if isinstance(body, dict) else False,
                )
        except (TimeoutError, aiohttp.ClientError, OSError):
            answer = Answer(0, None, None, None, time.perf_counter() - started)
        self.answers[request_id].append(answer)
        return answer

    def final(self, request_id: str) -> Answer:
        return self.answers[request_id][-1]

    def coupons(self) -> dict[str, set[int]]:
        """Per request id, the coupon ids it was ever answered with."""
        return {
            rid: {a.coupon_id for a in answers if a.coupon_id is not None}
            for rid, answers in self.answers.items()
        }

    def statuses(self) -> Counter[str]:
        return Counter(
            f"{a.status} {a.code}" if a.code else str(a.status)
            for answers in self.answers.values()
            for a in answers
        )


async def burst(
    claimer: Claimer,
    requests: list[tuple[str, str]],
    concurrency: int,
    on_progress: Any = None,
) -> None:
    """Every (token, request id) once, ``concurrency`` at a time; ``on_progress(done)``."""
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(token: str, rid: str) -> None:
        nonlocal done
        async with gate:
            await claimer.claim(token, rid)
        done += 1
        if on_progress is not None:
            await on_progress(done)

    await asyncio.gather(*(one(token, rid) for token, rid in requests))


async def settle(
    claimer: Claimer, requests: list[tuple[str, str]], deadline_seconds: float
) -> tuple[int, float]:
    """Retry (same request id) every request without a final answer, until all have one.

    A request that was in flight on a killed worker, or cut from its dependency,
    has no final answer; a copy of one still marked pending in the gate answers
    409 REQUEST_IN_PROGRESS until the marker expires. Returns (retries, seconds).
    """
    started = time.monotonic()
    retries = 0
    tokens = {rid: token for token, rid in requests if claimer.answers.get(rid)}
    while time.monotonic() - started < deadline_seconds:
        open_ids = [
            rid
            for rid in tokens
            if claimer.final(rid).status in (0, 500, 502, 503)
            or claimer.final(rid).code == "REQUEST_IN_PROGRESS"
        ]
        if not open_ids:
            break
        retries += len(open_ids)
        await burst(claimer, [(tokens[rid], rid) for rid in open_ids], 32)
        await asyncio.sleep(0.5)
    return retries, time.monotonic() - started


def ledger_checks(
    outcome: Outcome, db: MariaDB, claimer: Claimer, template_id: int, stock: int
) -> None:
    issued = int(db.scalar("SELECT issued FROM coupon_templates WHERE id=%s", template_id))  # type: ignore[arg-type]
    rows = int(db.scalar("SELECT COUNT(*) FROM coupons WHERE template_id=%s", template_id))  # type: ignore[arg-type]
    over = int(
        db.scalar(  # type: ignore[arg-type]
            "SELECT COUNT(*) FROM (SELECT user_id FROM coupons WHERE template_id=%s "
            "GROUP BY user_id HAVING COUNT(*) > 1) t",
            template_id,
        )
    )
    per_rid = claimer.coupons()
    given = set().union(*per_rid.values()) if per_rid else set()
    twice = [rid for rid, ids in per_rid.items() if len(ids) > 1]
    outcome.check(f"issued ({issued}) == coupon rows ({rows})", issued == rows)
    outcome.check(f"no oversell: rows ({rows}) <= stock ({stock})", rows <= stock)
    outcome.check(
        f"coupon rows ({rows}) == distinct coupons the clients were given ({len(given)})",
        rows == len(given),
    )
    outcome.check(f"no user above the per-user limit ({over} over)", over == 0)
    outcome.check(
        f"no double issue: every request id answered with one coupon at most ({len(twice)} not)",
        not twice,
    )
    unanswered = [rid for rid in per_rid if claimer.final(rid).status in (0, 500, 502, 503)]
    outcome.check(f"every request answered in the end ({len(unanswered)} not)", not unanswered)
    outcome.facts.append(f"answers seen: {dict(sorted(claimer.statuses().items()))}")


# --- the drills ------------------------------------------------------------------------------
async def _shop(server: Server, minter: Minter) -> Shop:
    return Shop(server.base, minter.one("m1", Role.MERCHANT, SHOP))


def _users(minter: Minter, prefix: str, count: int) -> list[tuple[str, str]]:
    subs = [f"{prefix}-{i:05d}" for i in range(count)]
    return [(token, f"{prefix}-r{i}") for i, token in enumerate(minter.many(subs))]


async def drill_flushall(db: MariaDB, redis: PrivateRedis, minter: Minter, quick: bool) -> Outcome:
    outcome = Outcome("Redis FLUSHALL in the middle of a claim burst (2 workers)")
    stock, users = (200, 800) if quick else (500, 2000)
    server = Server(db.url, redis.url, workers=2)
    await server.start()
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            shop = await _shop(server, minter)
            template_id = await create_template(
                session, shop, 1, name="drill flush", stock={"type": "limited", "total": stock}
            )
            requests = _users(minter, "f", users)
            # A quarter of the requests are sent twice at once (a double tap): each copy
            # right behind its original, so both are in flight together.
            doubled = [copy for pair in requests[: users // 4] for copy in (pair, pair)]
            doubled += requests[users // 4 :]
            claimer = Claimer(session, server.base, template_id)
            flushed_at: list[int] = []

            async def flush_midway(done: int) -> None:
                if not flushed_at and done >= len(doubled) * 0.3:
                    flushed_at.append(done)
                    redis.command("FLUSHALL")

            await burst(claimer, doubled, 64, flush_midway)
            retries, _ = await settle(claimer, requests, 40)
            # After the flush the gate has no replies: every success must replay from MariaDB.
            before = dict(claimer.coupons())
            winners = [(t, rid) for t, rid in requests if before.get(rid)]
            await burst(claimer, winners, 32)
            replays = [claimer.final(rid) for _, rid in winners]
            outcome.check(
                f"after the flush, {len(winners)} successful requests retried: each replayed "
                "the same coupon",
                all(a.status == 201 and a.replayed for a in replays)
                and all(claimer.coupons()[rid] == before[rid] for _, rid in winners),
            )
            outcome.facts.append(
                f"FLUSHALL after {flushed_at[0] if flushed_at else '?'} of {len(doubled)} answers; "
                f"{retries} retries of unanswered requests"
            )
            ledger_checks(outcome, db, claimer, template_id, stock)
            rows = int(db.scalar("SELECT COUNT(*) FROM coupons WHERE template_id=%s", template_id))  # type: ignore[arg-type]
            outcome.check(f"sold out exactly: rows ({rows}) == stock ({stock})", rows == stock)
    finally:
        await server.stop()
    return outcome


async def drill_kill_worker(
    db: MariaDB, redis: PrivateRedis, minter: Minter, quick: bool
) -> Outcome:
    outcome = Outcome("A worker killed with SIGKILL in a claim burst, then started again")
    stock, first, second = (300, 300, 400) if quick else (800, 800, 1000)
    server = Server(db.url, redis.url, workers=2)
    await server.start()
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            shop = await _shop(server, minter)
            template_id = await create_template(
                session, shop, 2, name="drill kill", stock={"type": "limited", "total": stock}
            )
            claimer = Claimer(session, server.base, template_id)
            requests = _users(minter, "k", first + second)
            one, two = requests[:first], requests[first:]
            before = server.workers_pids()
            killed: list[int] = []
            killed_at: list[float] = []
            watcher: list[asyncio.Future[float | None]] = []

            async def replaced_after(victim: int, since: float) -> float | None:
                while time.monotonic() - since < 15:
                    pids = server.workers_pids()
                    if len(pids) == 2 and victim not in pids:
                        return time.monotonic() - since
                    await asyncio.sleep(0.02)
                return None

            async def kill_midway(done: int) -> None:
                if not killed and done >= first * 0.3:
                    victim = before[0]
                    os.kill(victim, signal.SIGKILL)
                    killed.append(victim)
                    killed_at.append(time.monotonic())
                    watcher.append(asyncio.ensure_future(replaced_after(victim, killed_at[0])))

            await burst(claimer, one, 64, kill_midway)
            cut = [rid for _, rid in one if claimer.final(rid).status == 0]
            started = killed_at[0] if killed_at else time.monotonic()
            while time.monotonic() - started < 15:
                after = server.workers_pids()
                if len(after) == 2 and killed[0] not in after:
                    break
                await asyncio.sleep(0.1)
            after = server.workers_pids()
            outcome.check(
                f"the killed worker ({killed[0]}) was replaced: workers {before} -> {after}",
                len(after) == 2 and killed[0] not in after,
            )
            respawn = await watcher[0] if watcher else None
            outcome.facts.append(
                f"{len(cut)} requests lost their connection when the worker died; a new worker "
                f"process was there {respawn if respawn is not None else float('nan'):.2f} s "
                "after the kill"
            )
            # Wait for the new worker to serve before the second half of the burst.
            for _ in range(100):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(server.base + "/readyz") as reply:
                        if reply.status == 200:
                            break
                await asyncio.sleep(0.1)
            retries, waited = await settle(claimer, one, 60)
            in_progress = sum(
                1 for rid in cut for a in claimer.answers[rid] if a.code == "REQUEST_IN_PROGRESS"
            )
            outcome.facts.append(
                f"retrying them (same request ids) took {waited:.1f} s and {retries} retries; "
                f"{in_progress} retries were answered 409 REQUEST_IN_PROGRESS while the dead "
                "worker's pending markers lived"
            )
            await burst(claimer, two, 64)
            await settle(claimer, two, 30)
            ledger_checks(outcome, db, claimer, template_id, stock)
            rows = int(db.scalar("SELECT COUNT(*) FROM coupons WHERE template_id=%s", template_id))  # type: ignore[arg-type]
            outcome.check(
                f"after the restart the gate and the ledger agree: sold out exactly "
                f"(rows {rows} == stock {stock}), later claims SOLD_OUT",
                rows == stock and all(claimer.final(rid).status in (201, 409) for _, rid in two),
            )
    finally:
        await server.stop()
    return outcome


async def _outage(
    outcome: Outcome,
    db: MariaDB,
    server: Server,
    session: aiohttp.ClientSession,
    claimer: Claimer,
    minter: Minter,
    prefix: str,
    cut: Any,
    restore: Any,
    stock: int,
    seconds: float,
) -> None:
    """Claims before, during and after an outage of one dependency."""
    pid = server.process.pid if server.process else None
    before = _users(minter, prefix + "b", 40)
    await burst(claimer, before, 8)
    outcome.check(
        "before the outage, claims succeed",
        all(claimer.final(rid).status == 201 for _, rid in before),
    )
    await cut()
    during = _users(minter, prefix + "d", int(seconds * 20))
    ready_during: list[int] = []
    started = time.monotonic()
    for index in range(0, len(during), 4):
        await burst(claimer, during[index : index + 4], 4)
        if index % 20 == 0:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.get(server.base + "/readyz") as reply:
                    ready_during.append(reply.status)
        await asyncio.sleep(max(0.0, started + (index + 4) / 20 - time.monotonic()))
    answers = [claimer.final(rid) for _, rid in during]
    kinds = Counter(f"{a.status} {a.code or ''}".strip() for a in answers)
    slowest = max(a.seconds for a in answers)
    outcome.facts.append(
        f"during the outage: {dict(kinds)}; slowest answer {slowest * 1000:.0f} ms; "
        f"/readyz {dict(Counter(ready_during))}"
    )
    unavailable = [a for a in answers if a.status == 503]
    issued = [a for a in answers if a.status == 201]
    outcome.check(
        "every claim during the outage answered 201 or 503 UNAVAILABLE with Retry-After "
        "(no 500, no hang)",
        all(a.status == 201 for a in issued)
        and all(a.code == "UNAVAILABLE" and a.retry_after for a in unavailable)
        and len(unavailable) + len(issued) == len(answers),
    )
    outcome.check(
        f"each answered within {UNAVAILABLE_WITHIN:.0f} s (slowest {slowest * 1000:.0f} ms)",
        slowest <= UNAVAILABLE_WITHIN,
    )
    outcome.check(
        "/readyz answered 503 during the outage",
        bool(ready_during) and all(status == 503 for status in ready_during),
    )
    await restore()
    recovered_at = None
    started = time.monotonic()
    probe = _users(minter, prefix + "p", 300)
    for token, rid in probe:
        answer = await claimer.claim(token, rid)
        if answer.status == 201:
            recovered_at = time.monotonic() - started
            break
        await asyncio.sleep(0.1)
    outcome.check(
        f"recovered without a restart: first 201 {recovered_at:.1f} s after the service came back"
        if recovered_at is not None
        else "recovered without a restart (did not within 30 s)",
        recovered_at is not None
        and server.process is not None
        and server.process.pid == pid
        and server.process.poll() is None,
    )
    async with session.get(server.base + "/readyz") as reply:
        outcome.check("/readyz 200 again", reply.status == 200)
    await settle(claimer, before + during + probe, 30)
    after = _users(minter, prefix + "a", stock)
    await burst(claimer, after, 32)
    await settle(claimer, after, 30)
    ledger_checks(outcome, db, claimer, claimer.template_id, stock)


async def drill_mariadb_down(
    db: MariaDB, redis: PrivateRedis, minter: Minter, quick: bool, stop_process: bool
) -> Outcome:
    how = "mariadbd stopped and started again" if stop_process else "TCP proxy cut and restored"
    outcome = Outcome(f"MariaDB stopped ({how})")
    proxy = TcpProxy("127.0.0.1", db.port)
    await proxy.start()
    server = Server(db.url_at(proxy.port), redis.url, workers=1)
    await server.start()
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            stock = 150
            template_id = await create_template(
                session,
                await _shop(server, minter),
                3,
                name="drill db",
                stock={"type": "limited", "total": stock},
            )
            claimer = Claimer(session, server.base, template_id)

            async def cut() -> None:
                if stop_process:
                    await db.stop()
                await proxy.stop()

            async def restore() -> None:
                if stop_process:
                    await db.launch()
                await proxy.start()

            await _outage(
                outcome,
                db,
                server,
                session,
                claimer,
                minter,
                "ms" if stop_process else "m",
                cut,
                restore,
                stock,
                3 if quick else 6,
            )
    finally:
        await server.stop()
        await proxy.stop()
    return outcome


async def drill_redis_down(
    db: MariaDB, redis: PrivateRedis, minter: Minter, quick: bool, stop_process: bool
) -> Outcome:
    how = "redis-server stopped and started again, empty" if stop_process else "TCP proxy cut"
    outcome = Outcome(f"Redis stopped ({how})")
    proxy = TcpProxy("127.0.0.1", redis.port)
    await proxy.start()
    server = Server(db.url, f"redis://127.0.0.1:{proxy.port}/0", workers=1)
    await server.start()
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            stock = 150
            prefix = "rs" if stop_process else "r"
            template_id = await create_template(
                session,
                await _shop(server, minter),
                4,
                name="drill redis",
                stock={"type": "limited", "total": stock},
            )
            claimer = Claimer(session, server.base, template_id)

            async def cut() -> None:
                if stop_process:
                    await redis.stop()
                await proxy.stop()

            async def restore() -> None:
                if stop_process:
                    await redis.start()
                await proxy.start()

            await _outage(
                outcome,
                db,
                server,
                session,
                claimer,
                minter,
                prefix,
                cut,
                restore,
                stock,
                3 if quick else 6,
            )
            during = [
                answers[0]  # the answer while Redis was away, not the retry's
                for rid, answers in claimer.answers.items()
                if rid.startswith(prefix + "d-") and answers
            ]
            mode = (
                "claims kept working on the database alone"
                if any(a.status == 201 for a in during)
                else "claims answered 503 UNAVAILABLE (the app's decision, see docs/PERFORMANCE.md)"
            )
            outcome.facts.append(f"behaviour without Redis: {mode}")
    finally:
        await server.stop()
        await proxy.stop()
    return outcome


async def run_all(
    db: MariaDB, redis: PrivateRedis, *, quick: bool, stop_processes: bool = False
) -> list[Outcome]:
    minter = Minter(SECRET)
    db.reset()
    outcomes = []
    drills = [
        ("Redis FLUSHALL", lambda: drill_flushall(db, redis, minter, quick)),
        ("worker SIGKILL", lambda: drill_kill_worker(db, redis, minter, quick)),
        ("MariaDB stopped", lambda: drill_mariadb_down(db, redis, minter, quick, False)),
        ("Redis stopped", lambda: drill_redis_down(db, redis, minter, quick, False)),
    ]
    if stop_processes:
        if not db.private:
            raise RuntimeError("--stop-processes needs the bench's own mariadbd (--db private)")
        drills += [
            ("mariadbd stopped", lambda: drill_mariadb_down(db, redis, minter, quick, True)),
            ("redis-server stopped", lambda: drill_redis_down(db, redis, minter, quick, True)),
        ]
    for name, drill in drills:
        started = time.monotonic()
        try:
            outcome = await asyncio.wait_for(drill(), 240)
        except Exception as exc:  # a drill that crashes is a failed drill, with the reason
            outcome = Outcome(name)
            outcome.check(f"ran to the end ({type(exc).__name__}: {exc})", False)
            where = traceback.extract_tb(exc.__traceback__)[-3:]
            outcome.facts.append("at " + " <- ".join(f"{f.name}:{f.lineno}" for f in where[::-1]))
        outcome.seconds = time.monotonic() - started
        print(f"  drill: {outcome.name}: {'PASSED' if outcome.passed else 'FAILED'}", flush=True)
        outcomes.append(outcome)
    return outcomes
