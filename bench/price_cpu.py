"""App CPU per request of the signed-in price reads and the claims, without the whole bench.

    python bench/price_cpu.py [--requests 2000] [--concurrency 8] [--holders 200]
                              [--redis-url redis://127.0.0.1:6379/12] [--only claim]

Starts ``run.py`` (one worker) on the shared MariaDB (its own database,
``bff_price_cpu``, dropped and created) with the in-process gate (the price
routes never use the gate; ``--redis-url`` must name an empty db, since the
seed's request ids are fixed and a used db replays the grants instead of
issuing them), seeds the bench's shop through the admin API (``bench/seed.py``:
20 held coupons per holder, 10 claimable templates) and checks a holder's
wallet, then sends each route's requests with a fixed concurrency and reads
the server process's CPU time from /proc before and after. Claims (a new user
and request id each, ``--claim-concurrency`` in flight so that they batch as
under load) should be measured with ``--redis-url``: the in-process gate saves
the round trips the claim makes in production. ``sold_out`` is the same claim
on a template whose one coupon the warm-up took: every request a new user.
``rate_limited``: one holder claiming far over the per-minute limit (the
warm-up's 200 requests use up the 60 a minute; every measured one is a 429).
Only the server's CPU is counted, so the client sharing the machine does not
inflate the figure (it does compete for the cores: compare runs made together).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("BFF_BENCH_WORK", "/tmp/bff-price-cpu")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import pymysql

from bench.seed import (
    CLAIM_SCOPE,
    HELD_TEMPLATES,
    ROOM,
    SHOP,
    Minter,
    create_template,
    product_id,
    seed_shop,
)
from bench.services import SECRET, WORK, Server

TICKS = os.sysconf("SC_CLK_TCK")
WARM = 200  # requests before the measured ones
CLAIM_ROUTES = ("claim", "sold_out", "rate_limited")  # run with --claim-concurrency


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def reset_database(host: str, port: int, name: str) -> None:
    conn = pymysql.connect(host=host, port=port, user="root", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    finally:
        conn.close()


async def drive(
    base: str,
    method: str,
    path: str | Callable[[int], str],
    body: str | Callable[[int], str] | None,
    tokens: list[str],
    requests: int,
    concurrency: int,
    pid: int,
    profile: bool = False,
) -> tuple[float, float, dict[int, int]]:
    """(server CPU ms per request, wall seconds, statuses) for ``requests`` requests."""
    counter = itertools.count()
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(n: int) -> None:
            headers = {"Content-Type": "application/json"}
            if tokens:
                headers["Authorization"] = "Bearer " + tokens[n % len(tokens)]
            data = body(n) if callable(body) else body
            url = base + (path(n) if callable(path) else path)
            async with session.request(method, url, data=data, headers=headers) as reply:
                await reply.read()
                statuses[reply.status] = statuses.get(reply.status, 0) + 1

        async def worker(limit: int) -> None:
            while (n := next(counter)) < limit:
                await one(n)

        warm = min(WARM, requests)
        await asyncio.gather(*(worker(warm) for _ in range(concurrency)))
        # Go on numbering after the warm-up: a request's number picks its token and body.
        counter = itertools.count(warm)
        statuses.clear()
        if profile:
            os.kill(pid, signal.SIGUSR1)
        started_cpu, started = cpu_seconds(pid), time.monotonic()
        await asyncio.gather(*(worker(warm + requests) for _ in range(concurrency)))
        wall = time.monotonic() - started
        used = cpu_seconds(pid) - started_cpu
        if profile:
            os.kill(pid, signal.SIGUSR2)
            await asyncio.sleep(1)  # it writes the file
    return used * 1000 / requests, wall, statuses


async def check_seed(base: str, token: str) -> None:
    """A holder holds the 20 granted coupons (a replayed grant would have issued none)."""
    url = f"{base}/api/v1/shops/{SHOP}/me/coupons?limit=100"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Authorization": "Bearer " + token}) as reply,
    ):
        held = len((await reply.json())["items"])
    if held != HELD_TEMPLATES:
        raise RuntimeError(f"a holder holds {held} coupons, not {HELD_TEMPLATES}: used Redis db?")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--claim-concurrency", type=int, default=64)
    parser.add_argument("--holders", type=int, default=200)
    parser.add_argument("--mysql", default="127.0.0.1:3306")
    parser.add_argument("--database", default="bff_price_cpu")
    parser.add_argument(
        "--driver", default="aiomysql", choices=("aiomysql", "asyncmy"), help="MariaDB driver"
    )
    parser.add_argument("--redis-url", default="", help="an empty db; default: in-process")
    parser.add_argument("--only", default="", help="comma-separated route names")
    parser.add_argument(
        "--py-spy",
        metavar="ROUTE",
        default="",
        help="sample the server with py-spy during ROUTE (raw output in $BFF_BENCH_WORK)",
    )
    parser.add_argument(
        "--cprofile",
        metavar="ROUTE",
        default="",
        help="profile the server with cProfile during ROUTE (pstats file in $BFF_BENCH_WORK)",
    )
    args = parser.parse_args()

    host, port = args.mysql.split(":")
    reset_database(host, int(port), args.database)
    WORK.mkdir(parents=True, exist_ok=True)
    server = Server(
        f"mysql+{args.driver}://root@{args.mysql}/{args.database}",
        args.redis_url,
        bench_config=False,
        cprofile=WORK / f"cprofile-{args.cprofile}.prof" if args.cprofile else None,
    )
    await server.start()
    try:
        minter = Minter(SECRET)
        shop = await seed_shop(server.base, minter, args.holders)
        holders = minter.many(shop.holders)
        await check_seed(server.base, holders[0])
        pid = server.serving_pids()[0]
        shop_path = f"/api/v1/shops/{SHOP}"
        cart = json.dumps(
            {"items": [{"product_id": product_id(n), "quantity": n} for n in (1, 2, 4)]}
        )
        live_ids = ",".join(product_id(n) for n in range(1, 21))
        def mix_path(n: int) -> str:
            return f"{shop_path}/products/{product_id(1 + (n * 7) % 30)}"

        routes: dict[str, tuple[str, Any, Any, list[str]]] = {
            "ping": ("GET", "/api/v1/ping", None, []),
            # Claims: body and tokens are set below, only for the routes that run.
            **{name: ("POST", f"{shop_path}/coupons/claim", None, []) for name in CLAIM_ROUTES},
            "product_anon": ("GET", f"{shop_path}/products/{product_id(1)}", None, []),
            # The live room's anonymous price list (issue 16: must stay >= 0.80 B).
            "live_anon": (
                "GET",
                f"{shop_path}/live-rooms/{ROOM}/prices?product_ids={live_ids}",
                None,
                [],
            ),
            "product_user": ("GET", f"{shop_path}/products/{product_id(1)}", None, holders),
            # Issue 16's realistic mix: a holder and one of 30 products, neither repeating
            # in step with the other (the bench's product_mix row).
            "product_mix": ("GET", mix_path, None, holders),
            "checkout": ("POST", f"{shop_path}/checkout/preview", cart, holders),
        }
        only = [name for name in args.only.split(",") if name] or list(routes)
        run = int(time.time())
        for name in CLAIM_ROUTES:
            if name not in only:
                continue
            # Every request its own request id; a new user each, as the bench's rows, except
            # rate_limited: one holder (whose facts the gate has) far over 60 claims a minute.
            async with aiohttp.ClientSession() as session:
                if name in ("claim", "rate_limited"):
                    target = await create_template(
                        session, shop, 100, name=f"flash {name}", scope=CLAIM_SCOPE
                    )
                else:  # stock 1, taken by the first request of the warm-up
                    target = await create_template(
                        session,
                        shop,
                        300,
                        name="sold out",
                        scope=CLAIM_SCOPE,
                        stock={"type": "limited", "total": 1},
                    )
            if name == "rate_limited":
                users = holders[:1]
            else:
                users = minter.many([f"{name}-{n:06d}" for n in range(args.requests + WARM)])

            def body_of(n: int, template_id: int = target, prefix: str = name) -> str:
                return json.dumps({"template_id": template_id, "request_id": f"{prefix}-{run}-{n}"})

            method, path, _, _ = routes[name]
            routes[name] = (method, path, body_of, users)
        for name in only:
            method, path, body, tokens = routes[name]
            spy = None
            if name == args.py_spy:
                out = WORK / f"py-spy-{name}.txt"
                spy = subprocess.Popen(
                    [
                        *("py-spy", "record", "--pid", str(pid), "--rate", "500"),
                        *("--format", "raw", "-o", str(out)),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            concurrency = args.claim_concurrency if name in CLAIM_ROUTES else args.concurrency
            profiled = name == args.cprofile
            ms, wall, statuses = await drive(
                server.base,
                method,
                path,
                body,
                tokens,
                args.requests,
                concurrency,
                pid,
                profile=profiled,
            )
            if profiled:
                print(f"cProfile of {name}: {server.cprofile} (times include its overhead)")
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait()
                print(f"py-spy samples of {name}: {out}", flush=True)
            print(
                f"{name:<14} {ms:7.3f} ms CPU/req  {args.requests / wall:8.0f} req/s  {statuses}",
                flush=True,
            )
    finally:
        await server.stop()


if __name__ == "__main__":
    asyncio.run(main())
