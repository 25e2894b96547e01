"""Start the coupon BFF, or run a small CLI verb.

    python run.py                      serve (embedded SQLite + in-process gate by default)
    python run.py token --role merchant --shop s1 --sub m1
                                       print a signed token for local use
    python run.py migrate              apply the schema migrations and exit
    python run.py --demo               seed the demo shop, print its URLs and a token, serve

Settings come from config/defaults.toml and BFF_* variables (config/loader.py).
A bad setting stops start-up with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from bff.app import create_app
from bff.auth import Role, TokenCodec
from bff.clock import SystemClock
from bff.db.engine import Database, create_engine, describe
from bff.db.migrations import migrate
from bff.logs import setup_logging
from config.loader import ConfigError, IdentitySettings, Settings, load_settings

log = logging.getLogger("bff.run")
EXIT_CONFIG = 2
EXIT_STARTUP = 3
# A dead worker is replaced at most once per this many seconds (per worker slot).
RESPAWN_SECONDS = 1.0
# How long workers get to finish their requests after SIGTERM before SIGKILL.
STOP_SECONDS = 10.0


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _serve_one(settings: Settings, sock: socket.socket | None) -> None:
    setup_logging()
    _install_uvloop()
    app = create_app(settings)
    host, port = settings.server.host, settings.server.port
    log.info("serving", extra={"fields": {"host": host, "port": port, "pid": os.getpid()}})
    web.run_app(
        app,
        host=None if sock else host,
        port=None if sock else port,
        sock=sock,
        access_log=None,
        print=None,
        handle_signals=True,
    )


async def _migrate(settings: Settings) -> None:
    db = Database(create_engine(settings.database))
    try:
        await migrate(db, SystemClock())
    finally:
        await db.dispose()


def serve(settings: Settings) -> int:
    # Migrate once in the parent, before any worker starts, so workers never race on DDL.
    try:
        asyncio.run(_migrate(settings))
    except Exception as exc:
        print(f"start-up failed: database not reachable or not migratable: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    workers = settings.server.workers
    if workers == 1:
        _serve_one(settings, None)
        return 0
    # Several processes share one listening socket (SO_REUSEPORT); each makes its
    # own pools after the fork, in the app's cleanup_ctx.
    sock = socket.socket(socket.AF_INET6 if ":" in settings.server.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((settings.server.host, settings.server.port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return _supervise(settings, sock, workers)


def _supervise(settings: Settings, sock: socket.socket, workers: int) -> int:
    """Keep ``workers`` processes serving ``sock`` until SIGTERM or SIGINT.

    A worker that dies (OOM killer, a crash, SIGKILL) is replaced, so the port
    does not stay served by fewer processes until someone restarts the service;
    the new worker builds its pools and gate state from scratch like any
    start. SIGTERM to this parent is passed on to the workers: without that
    they would go on serving as orphans.
    """
    setup_logging()
    context = multiprocessing.get_context("fork")
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def start() -> tuple[multiprocessing.process.BaseProcess, float]:
        process = context.Process(target=_serve_one, args=(settings, sock), daemon=False)
        process.start()
        return process, time.monotonic()

    processes = [start() for _ in range(workers)]
    while not stopping:
        multiprocessing.connection.wait([p.sentinel for p, _ in processes], timeout=0.5)
        for slot, (process, started) in enumerate(processes):
            if process.is_alive() or stopping:
                continue
            log.warning(
                "worker exited; starting another",
                extra={"fields": {"pid": process.pid, "exitcode": process.exitcode}},
            )
            # A worker that cannot even start (database down) must not be respawned in a
            # tight loop: at most one start per RESPAWN_SECONDS per slot.
            time.sleep(max(0.0, started + RESPAWN_SECONDS - time.monotonic()))
            processes[slot] = start()
    for process, _ in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + STOP_SECONDS
    for process, _ in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
    return 0


def mint_token(settings: Settings, args: argparse.Namespace) -> int:
    role = Role(args.role)
    if role is not Role.USER and not args.shop:
        print("a merchant or service token needs --shop", file=sys.stderr)
        return EXIT_CONFIG
    codec = TokenCodec(settings.jwt, SystemClock())
    if not codec.can_mint:
        print("no signing key configured (jwt.private_key_file for RS256)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        token, _ = codec.mint(args.sub, role, args.shop)
    except ValueError as exc:  # the server would refuse such a token
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    print(token)
    return 0


def demo_settings(settings: Settings) -> Settings:
    """Demo mode signs shoppers in with ``dev:<user_id>`` (the page's "New shopper")
    unless an identity provider is configured; it never replaces a configured one."""
    if settings.identity.provider == "none":
        return settings.replace(identity=IdentitySettings(provider="dev"))
    return settings


def seed_demo(settings: Settings) -> int:
    """Seed the demo shop and print where to go; 0, or the exit code to stop with."""
    from bff.demo.seed import SeedError, seed_app

    try:
        asyncio.run(_migrate(settings))
        report = asyncio.run(seed_app(settings))
    except SeedError as exc:
        print(f"demo seeding failed: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    except Exception as exc:
        print(f"start-up failed: database not reachable or not migratable: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    host = settings.server.host
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base_url = f"http://{f'[{shown}]' if ':' in shown else shown}:{settings.server.port}"
    where = describe(settings.database) + (" + Redis" if settings.redis.url else "")
    if settings.identity.provider != "dev":
        report.notes.append("an identity provider is configured: the page's 'New shopper' is off.")
    print("\n".join(report.lines(base_url, where)), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run.py", description="Coupon BFF")
    sub = parser.add_subparsers(dest="verb")
    token = sub.add_parser("token", help="print a signed token for local use")
    token.add_argument("--role", choices=[r.value for r in Role], default="user")
    token.add_argument("--shop", default=None)
    token.add_argument("--sub", required=True)
    sub.add_parser("migrate", help="apply the schema migrations and exit")
    sub.add_parser("serve", help="serve (the default)")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="seed the demo shop (idempotent), print its URLs and a shopper token, then serve",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings(base_dir=Path.cwd())
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.verb == "token":
        return mint_token(settings, args)
    if args.verb == "migrate":
        asyncio.run(_migrate(settings))
        return 0
    if args.demo:
        if not settings.is_development:
            print("--demo is for development only (BFF_ENV=development)", file=sys.stderr)
            return EXIT_CONFIG
        settings = demo_settings(settings)
        status = seed_demo(settings)
        if status:
            return status
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
