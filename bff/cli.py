"""The command line: serve, ``--demo``, ``token``, ``migrate``.

One entry point behind ``coupon-bff`` (the console script), ``python -m bff`` and
``python run.py``. Settings come from config/defaults.toml, an optional BFF_CONFIG
file and BFF_* variables (config/loader.py).

Start-up fails with one line on stderr that names the cause and the setting, and
an exit code per cause (docs/DEPLOY.md "Start-up and exit codes"):

    2  a setting is wrong (or the command line)
    3  the database cannot be reached or migrated
    4  Redis cannot be reached (with redis.at_start = "refuse", and for --demo)
    5  the address cannot be listened on (port in use, another instance, bad host)
    6  --demo: the demo shop could not be seeded

The listening socket is made here, in the parent, before anything else is done
(migrations, seeding, printing the demo's links), and without SO_REUSEPORT: the
workers of one instance share it by inheritance, and a second instance on the
same port is refused instead of silently splitting its traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
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
from config.loader import (
    ConfigError,
    IdentitySettings,
    Settings,
    load_settings,
    redact_url,
    unknown_variables,
)

log = logging.getLogger("bff.run")
EXIT_CONFIG = 2
EXIT_DATABASE = 3
EXIT_REDIS = 4
EXIT_LISTEN = 5
EXIT_DEMO_SEED = 6
# A dead worker is replaced at most once per this many seconds (per worker slot).
RESPAWN_SECONDS = 1.0
# How long workers get to finish their requests after SIGTERM before SIGKILL.
STOP_SECONDS = 10.0
LISTEN_BACKLOG = 1024

VARIABLES_HELP = """\
main settings (BFF_* variables; all of them: config/defaults.toml, installed with the package,
and docs/DEPLOY.md in the source repository):
  BFF_HOST, BFF_PORT          where to listen (127.0.0.1, 8080)
  BFF_WORKERS                 processes sharing the port (1)
  BFF_DATABASE_URL            mysql+aiomysql://user:password@host:3306/db (empty: SQLite
                              file BFF_SQLITE_PATH, var/bff.sqlite3)
  BFF_REDIS_URL               redis://host:6379/0 (empty: in-process gate, one worker)
  BFF_REDIS_AT_START          wait (serve not-ready until Redis answers) or refuse (exit 4)
  BFF_JWT_SECRET              HS256 secret, 32+ bytes (development keeps one in var/)
  BFF_JWT_ALGORITHM, BFF_JWT_PUBLIC_KEY_FILE, BFF_JWT_PRIVATE_KEY_FILE, BFF_JWT_ISSUER
  BFF_IDENTITY_PROVIDER       none, dev (auth codes dev:<user_id>) or module:Class
  BFF_CORS_ORIGINS            origins whose browser pages may call the API (comma list)
  BFF_EVENTS_AMQP_URL         amqp://user:password@host:5672/: relay coupon events to RabbitMQ
                              (BFF_EVENTS_RELAY_IN_SERVER=false: only `relay` processes do)
  BFF_ENV                     development (default) or anything else (production rules)
  BFF_CONFIG                  a TOML file merged over config/defaults.toml

exit codes: 2 config, 3 database unreachable, 4 Redis unreachable, 5 cannot listen
(port in use), 6 demo seeding failed
"""


class StartupError(Exception):
    """Start-up cannot go on; the message is the one line for stderr."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def reason(exc: BaseException) -> str:
    """Why a connection failed, in a few words on one line (drivers wrap the cause)."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = getattr(seen, "orig", None) or seen.__cause__ or seen.__context__
    for item in chain:
        if isinstance(item, socket.gaierror):
            return "host name not found"
    for item in chain:
        if isinstance(item, ConnectionRefusedError):
            return "connection refused"
        if isinstance(item, TimeoutError):
            return "no answer in time"
    cause = getattr(exc, "orig", None) or exc
    text = " ".join(str(cause).split()) or type(cause).__name__
    return text[:300]


def listen_socket(settings: Settings) -> socket.socket:
    """Bind and listen on the configured address, or raise StartupError (exit 5)."""
    host, port = settings.server.host, settings.server.port
    where = f"{f'[{host}]' if ':' in host else host}:{port}"
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        # SO_REUSEADDR only: a restart may bind while old connections sit in TIME_WAIT,
        # but no second listener (SO_REUSEPORT would let another instance share the port).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            why = "address already in use (another instance or program serves this port)"
        elif isinstance(exc, socket.gaierror):
            why = "host name not found"
        else:
            why = exc.strerror or str(exc)
        raise StartupError(
            EXIT_LISTEN, f"start-up failed: cannot listen on {where} (BFF_HOST, BFF_PORT): {why}"
        ) from exc
    sock.set_inheritable(True)
    return sock


def _database_setting(settings: Settings) -> str:
    if settings.database.url:
        return f"BFF_DATABASE_URL={describe(settings.database)}"
    return f"BFF_SQLITE_PATH={settings.database.sqlite_path}"


async def _migrate(settings: Settings) -> list[int]:
    db = Database(create_engine(settings.database))
    try:
        return await migrate(db, SystemClock())
    finally:
        await db.dispose()


def migrate_database(settings: Settings) -> list[int]:
    """Apply the migrations once (the versions applied now), or raise StartupError (exit 3)."""
    try:
        return asyncio.run(_migrate(settings))
    except Exception as exc:
        raise StartupError(
            EXIT_DATABASE,
            f"start-up failed: database not reachable or not migratable "
            f"({_database_setting(settings)}): {reason(exc)}",
        ) from exc


async def _ping_redis(settings: Settings) -> None:
    from bff.gate.redis import RedisGate

    gate = RedisGate.from_settings(settings.redis)
    try:
        await gate.ping()
    finally:
        await gate.close()


def check_redis(settings: Settings, *, required: bool) -> None:
    """Redis down at start: a warning (start not-ready) or, when required, StartupError."""
    if not settings.redis.url:
        return
    try:
        asyncio.run(_ping_redis(settings))
    except Exception as exc:
        where = f"BFF_REDIS_URL={redact_url(settings.redis.url)}"
        if required:
            raise StartupError(
                EXIT_REDIS, f"start-up failed: Redis not reachable ({where}): {reason(exc)}"
            ) from exc
        print(
            f"warning: Redis not reachable ({where}): {reason(exc)}; serving not-ready "
            "(/readyz 503) until it answers (BFF_REDIS_AT_START=refuse to stop instead)",
            file=sys.stderr,
            flush=True,
        )


def _serve_one(settings: Settings, sock: socket.socket) -> None:
    setup_logging()
    _install_uvloop()
    app = create_app(settings)
    host, port = settings.server.host, settings.server.port
    log.info("serving", extra={"fields": {"host": host, "port": port, "pid": os.getpid()}})
    web.run_app(app, sock=sock, access_log=None, print=None, handle_signals=True)


def serve(settings: Settings, sock: socket.socket) -> int:
    """Serve on ``sock`` with ``settings.server.workers`` processes until SIGTERM."""
    workers = settings.server.workers
    if workers == 1:
        _serve_one(settings, sock)
        return 0
    # The workers inherit the one listening socket across the fork; each makes its own
    # pools after it, in the app's cleanup_ctx.
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


def seed_demo(settings: Settings) -> None:
    """Seed the demo shop and print where to go, or raise StartupError (exit 6)."""
    from bff.demo.seed import SeedError, seed_app

    try:
        report = asyncio.run(seed_app(settings))
    except SeedError as exc:
        raise StartupError(EXIT_DEMO_SEED, f"demo seeding failed: {exc}") from exc
    host = settings.server.host
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base_url = f"http://{f'[{shown}]' if ':' in shown else shown}:{settings.server.port}"
    where = describe(settings.database) + (" + Redis" if settings.redis.url else "")
    if settings.identity.provider != "dev":
        report.notes.append("an identity provider is configured: the page's 'New shopper' is off.")
    print("\n".join(report.lines(base_url, where)), flush=True)


def relay_events(settings: Settings) -> int:
    """``relay``: the events relay alone, in this process, until SIGTERM or SIGINT."""
    if not settings.events.amqp_url:
        print("config error: relay needs BFF_EVENTS_AMQP_URL (events.amqp_url)", file=sys.stderr)
        return EXIT_CONFIG
    from bff.events.relay import relay_until

    setup_logging()
    _install_uvloop()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await relay_until(stop, settings)

    try:
        asyncio.run(run())
    except Exception as exc:
        print(
            f"start-up failed: database not reachable or not migratable "
            f"({_database_setting(settings)}): {reason(exc)}",
            file=sys.stderr,
        )
        return EXIT_DATABASE
    return 0


def parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Coupon BFF: serve (the default), seed a demo shop, mint a token, migrate, "
        "relay events.",
        epilog=VARIABLES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="verb")
    token = sub.add_parser("token", help="print a signed token for local use")
    token.add_argument("--role", choices=[r.value for r in Role], default="user")
    token.add_argument("--shop", default=None)
    token.add_argument("--sub", required=True)
    sub.add_parser("migrate", help="apply the schema migrations and exit")
    sub.add_parser("serve", help="serve (the default)")
    sub.add_parser(
        "relay",
        help="publish the events outbox to RabbitMQ until SIGTERM (needs BFF_EVENTS_AMQP_URL; "
        "pair with BFF_EVENTS_RELAY_IN_SERVER=false)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="seed the demo shop (idempotent), print its URLs and a shopper token, then serve",
    )
    return parser


def main(argv: list[str] | None = None, prog: str = "coupon-bff") -> int:
    args = parser(prog).parse_args(argv)
    for line in unknown_variables():
        print(f"warning: {line}", file=sys.stderr)
    try:
        settings = load_settings(base_dir=Path.cwd())
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.verb == "token":
        return mint_token(settings, args)
    if args.verb == "relay":
        return relay_events(settings)
    try:
        if args.verb == "migrate":
            applied = migrate_database(settings)
            done = f"applied {', '.join(map(str, applied))}" if applied else "nothing to apply"
            print(f"schema up to date ({_database_setting(settings)}): {done}")
            return 0
        if args.demo and not settings.is_development:
            print("--demo is for development only (BFF_ENV=development)", file=sys.stderr)
            return EXIT_CONFIG
        sock = listen_socket(settings)
        try:
            # Migrate once in the parent, before any worker starts: workers never race on DDL.
            migrate_database(settings)
            if args.demo:
                settings = demo_settings(settings)
                check_redis(settings, required=True)  # seeding claims through the gate
                seed_demo(settings)
            else:
                check_redis(settings, required=settings.redis.at_start == "refuse")
            return serve(settings, sock)
        finally:
            sock.close()
    except StartupError as exc:
        print(exc, file=sys.stderr, flush=True)
        return exc.exit_code


def console() -> None:
    """The ``coupon-bff`` console script."""
    sys.exit(main())
