"""The claim done the common way, for comparison only: never part of the app.

    python bench/naive_claim.py --port P --database-url mysql://root@127.0.0.1:3391/bff_bench \
        [--workers N] [--setup TEMPLATE_ID STOCK]

One MariaDB transaction per claim: ``SELECT ... FOR UPDATE`` on the template
row, count the user's coupons of it, INSERT the coupon, bump ``issued``,
COMMIT. The same front as the app's claim (aiohttp + uvloop, a bearer JWT
checked with the same secret and issuer, a JSON body with ``template_id`` and
``request_id``, 201 with the coupon or 409 SOLD_OUT / LIMIT_REACHED), with a
lean driver (aiomysql, no ORM), so the comparison is against a fair version
of the usual design rather than a straw man. Its own two tables live beside
the app's in the same database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import aiomysql
import jwt
import pymysql
from aiohttp import web

SECRET_DEFAULT = "bench-secret-that-is-at-least-32-bytes-long!!"
ISSUER = "coupon-bff"

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS naive_templates (
        id BIGINT PRIMARY KEY,
        stock_total BIGINT NOT NULL,
        issued BIGINT NOT NULL DEFAULT 0,
        per_user_limit INT NOT NULL DEFAULT 1,
        valid_days INT NOT NULL DEFAULT 7
    ) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    """CREATE TABLE IF NOT EXISTS naive_coupons (
        id BIGINT AUTO_INCREMENT PRIMARY KEY,
        template_id BIGINT NOT NULL,
        user_id VARCHAR(64) NOT NULL,
        request_id VARCHAR(64) NOT NULL,
        status VARCHAR(8) NOT NULL,
        valid_from DATETIME(6) NOT NULL,
        valid_to DATETIME(6) NOT NULL,
        created_at DATETIME(6) NOT NULL,
        UNIQUE KEY uq_request (user_id, request_id),
        KEY ix_template_user (template_id, user_id)
    ) ENGINE=InnoDB CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
)


def connect_args(url: str) -> dict[str, object]:
    parts = urlsplit(url.replace("mysql+aiomysql://", "mysql://"))
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": parts.username or "root",
        "password": parts.password or "",
        "db": parts.path.strip("/"),
    }


def setup_template(url: str, template_id: int, stock: int) -> None:
    """Create the tables if needed and (re)set one template with an empty ledger."""
    args = connect_args(url)
    conn = pymysql.connect(
        host=args["host"],
        port=args["port"],
        user=args["user"],
        password=args["password"],
        database=args["db"],
        autocommit=True,
    )
    try:
        with conn.cursor() as cur:
            for statement in SCHEMA:
                cur.execute(statement)
            cur.execute("DELETE FROM naive_coupons WHERE template_id = %s", (template_id,))
            cur.execute("DELETE FROM naive_templates WHERE id = %s", (template_id,))
            cur.execute(
                "INSERT INTO naive_templates (id, stock_total) VALUES (%s, %s)",
                (template_id, stock),
            )
    finally:
        conn.close()


def error(status: int, code: str, message: str) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": {}}}
    return web.json_response(body, status=status)


def build_app(url: str, secret: str) -> web.Application:
    app = web.Application()
    pool_key = web.AppKey("pool", aiomysql.Pool)

    async def pool_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app[pool_key] = await aiomysql.create_pool(
            minsize=5, maxsize=40, autocommit=False, **connect_args(url)
        )
        yield
        app[pool_key].close()
        await app[pool_key].wait_closed()

    app.cleanup_ctx.append(pool_ctx)

    async def claim(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        try:
            claims = jwt.decode(
                header.removeprefix("Bearer "),
                secret,
                algorithms=["HS256"],
                issuer=ISSUER,
                options={"require": ["exp", "sub", "iss"]},
            )
        except jwt.InvalidTokenError:
            return error(401, "UNAUTHENTICATED", "bad token")
        try:
            body = json.loads(await request.read())
            template_id = int(body["template_id"])
            request_id = str(body["request_id"])
        except (ValueError, KeyError, TypeError):
            return error(400, "VALIDATION_FAILED", "template_id and request_id are required")
        user_id = claims["sub"]
        now = datetime.now(UTC).replace(tzinfo=None)
        async with request.app[pool_key].acquire() as conn, conn.cursor() as cur:
            try:
                await cur.execute(
                    "SELECT stock_total, issued, per_user_limit, valid_days "
                    "FROM naive_templates WHERE id = %s FOR UPDATE",
                    (template_id,),
                )
                row = await cur.fetchone()
                if row is None:
                    await conn.rollback()
                    return error(404, "NOT_FOUND", "no such template")
                stock, issued, limit, valid_days = row
                await cur.execute(
                    "SELECT COUNT(*) FROM naive_coupons WHERE template_id = %s AND user_id = %s",
                    (template_id, user_id),
                )
                (held,) = await cur.fetchone()
                if held >= limit:
                    await conn.rollback()
                    return error(409, "LIMIT_REACHED", "limit reached")
                if issued >= stock:
                    await conn.rollback()
                    return error(409, "SOLD_OUT", "sold out")
                valid_to = now + timedelta(days=valid_days)
                await cur.execute(
                    "INSERT INTO naive_coupons (template_id, user_id, request_id, status, "
                    "valid_from, valid_to, created_at) VALUES (%s, %s, %s, 'unused', %s, %s, %s)",
                    (template_id, user_id, request_id, now, valid_to, now),
                )
                coupon_id = cur.lastrowid
                await cur.execute(
                    "UPDATE naive_templates SET issued = issued + 1 WHERE id = %s", (template_id,)
                )
                await conn.commit()
            except pymysql.err.IntegrityError:
                await conn.rollback()
                return error(409, "IDEMPOTENCY_CONFLICT", "request_id used")
            except BaseException:
                await conn.rollback()
                raise
        coupon = {
            "coupon_id": coupon_id,
            "template_id": template_id,
            "status": "unused",
            "valid_from": now.isoformat() + "+00:00",
            "valid_to": valid_to.isoformat() + "+00:00",
        }
        return web.json_response({"coupon": coupon}, status=201)

    app.router.add_post("/api/v1/shops/{shop_id}/coupons/claim", claim)
    return app


def serve(url: str, secret: str, sock: socket.socket) -> None:
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(build_app(url, secret), sock=sock, print=None, access_log=None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--secret", default=SECRET_DEFAULT)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(1024)
    sock.set_inheritable(True)
    if args.workers == 1:
        serve(args.database_url, args.secret, sock)
        return
    context = multiprocessing.get_context("fork")
    processes = [
        context.Process(target=serve, args=(args.database_url, args.secret, sock))
        for _ in range(args.workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()


if __name__ == "__main__":
    main()
