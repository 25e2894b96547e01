"""The processes a benchmark or drill needs: its own Redis, its own MariaDB, the BFF itself.

Everything listens on loopback only and is started and stopped by the bench, so a
drill may FLUSHALL, stop or kill it without touching services other people use.
The shared MariaDB (``--db shared``, database ``bff_bench``) is only ever read and
written, never stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pymysql

ROOT = Path(__file__).resolve().parent.parent
WORK = Path(os.environ.get("BFF_BENCH_WORK", "/tmp/bff-bench"))
SECRET = "bench-secret-that-is-at-least-32-bytes-long!!"
BENCH_DB = "bff_bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def wait_until(predicate, seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"timed out after {seconds:.0f}s waiting for {what}")


def _stop_process(process: subprocess.Popen[bytes], seconds: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- Redis -----------------------------------------------------------------------------------
@dataclass
class PrivateRedis:
    """A redis-server of our own: no persistence, so FLUSHALL or a stop hurts nobody."""

    port: int = 6390
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is taken; pass --redis-port")
        WORK.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(WORK),
                "--logfile",
                str(WORK / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await wait_until(lambda: port_open(self.port), 10, "redis-server")

    async def stop(self) -> None:
        if self.process is not None:
            _stop_process(self.process)
            self.process = None

    def command(self, *args: str) -> str:
        result = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return result.stdout.strip()


# --- MariaDB ---------------------------------------------------------------------------------
@dataclass
class MariaDB:
    """Where the bench's database lives: our own mariadbd (default) or the shared server."""

    private: bool = True
    port: int = 3391
    process: subprocess.Popen[bytes] | None = None
    datadir: Path = field(default_factory=lambda: WORK / "mariadb")

    @property
    def url(self) -> str:
        return self.url_at(self.port)

    def url_at(self, port: int) -> str:
        return f"mysql+aiomysql://root@127.0.0.1:{port}/{BENCH_DB}"

    def connect(self) -> pymysql.connections.Connection:
        return pymysql.connect(
            host="127.0.0.1", port=self.port, user="root", database=BENCH_DB, autocommit=True
        )

    async def start(self, fresh: bool = True) -> None:
        if self.private:
            if port_open(self.port):
                raise RuntimeError(f"port {self.port} is taken; pass --mariadb-port")
            if fresh and self.datadir.exists():
                shutil.rmtree(self.datadir)
            if not self.datadir.exists():
                self.datadir.mkdir(parents=True)
                subprocess.run(
                    [
                        "mariadb-install-db",
                        "--no-defaults",
                        f"--datadir={self.datadir}",
                        "--user=root",
                        "--auth-root-authentication-method=normal",
                        "--skip-test-db",
                    ],
                    check=True,
                    capture_output=True,
                    timeout=120,
                )
            await self.launch()
        self.reset()

    async def launch(self) -> None:
        """Start mariadbd on the existing datadir (also what the drill's restart does)."""
        self.process = subprocess.Popen(
            [
                "mariadbd" if shutil.which("mariadbd") else "/usr/sbin/mariadbd",
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.datadir}/mysqld.sock",
                f"--pid-file={self.datadir}/mysqld.pid",
                f"--log-error={WORK}/mariadb.err",
                "--user=root",
                # Loopback only, and started for this run: no accounts to manage.
                "--skip-grant-tables",
                "--skip-name-resolve",
                "--character-set-server=utf8mb4",
                "--max-connections=1000",
                "--innodb-buffer-pool-size=512M",
                # Durable commits, as the shared server (and a production one) has them.
                "--innodb-flush-log-at-trx-commit=1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await wait_until(self._answers, 60, "mariadbd")

    def _answers(self) -> bool:
        try:
            pymysql.connect(
                host="127.0.0.1", port=self.port, user="root", connect_timeout=1
            ).close()
            return True
        except pymysql.MySQLError:
            return False

    async def stop(self) -> None:
        if self.process is not None:
            _stop_process(self.process, 60)
            self.process = None

    def reset(self) -> None:
        """An empty ``bff_bench``: the server creates its schema on start."""
        conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root", autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{BENCH_DB}`")
                cur.execute(f"CREATE DATABASE `{BENCH_DB}` CHARACTER SET utf8mb4")
        finally:
            conn.close()

    def scalar(self, sql: str, *args: object) -> object:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                row = cur.fetchone()
                return row[0] if row else None
        finally:
            conn.close()


# --- the BFF ---------------------------------------------------------------------------------
# The sold-out storm from users seen before sends each of the 1,000 holders ~40
# claims in a wrk run and as many again in each load-generator try: far above
# the default 60 a minute. The limit is still counted in the same gate call, only
# not reached, so that row measures the sold-out answer rather than RATE_LIMITED.
BENCH_CONFIG = """\
[risk]
user_claims_per_minute = 1000000
"""


@dataclass
class Server:
    """``python run.py`` in its own session (so the bench can signal it and its workers)."""

    database_url: str
    redis_url: str
    workers: int = 1
    port: int = field(default_factory=free_port)
    access_log: bool = False
    # BENCH_CONFIG's per-user limit; price_cpu.py runs with the app's defaults instead.
    bench_config: bool = True
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=lambda: WORK / "server.log")
    # bench/profiled.py's output file: serve under a signal-switched cProfile (one worker).
    cprofile: Path | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BFF_")}
        # Events (issue 20) are measured on or off by the bench's caller: its BFF_EVENTS_*
        # variables (BFF_EVENTS_AMQP_URL=amqp://..., BFF_EVENTS_RELAY_IN_SERVER) go through.
        env.update({k: v for k, v in os.environ.items() if k.startswith("BFF_EVENTS_")})
        if self.bench_config:
            WORK.mkdir(parents=True, exist_ok=True)
            config = WORK / "bench.toml"
            config.write_text(BENCH_CONFIG)
            env["BFF_CONFIG"] = str(config)
        env.update(
            BFF_ENV="production",
            BFF_DATABASE_URL=self.database_url,
            BFF_REDIS_URL=self.redis_url,
            BFF_JWT_SECRET=SECRET,
            BFF_WORKERS=str(self.workers),
            BFF_PORT=str(self.port),
            BFF_HOST="127.0.0.1",
            BFF_ACCESS_LOG="true" if self.access_log else "false",
        )
        return env

    async def start(self) -> None:
        WORK.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "run.py")]
            if self.cprofile is None
            else [sys.executable, str(ROOT / "bench" / "profiled.py"), str(self.cprofile)],
            cwd=WORK,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited at start; see {self.log_path}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(self.base + "/readyz") as reply:
                        if reply.status == 200 and len(self.workers_pids()) >= self.workers - (
                            self.workers == 1
                        ):
                            return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"the server did not get ready in 60 s; see {self.log_path}")

    def workers_pids(self) -> list[int]:
        """The worker processes (none with one worker: the parent serves itself)."""
        if self.process is None:
            return []
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return sorted(int(part) for part in path.read_text().split())
        except OSError:
            return []

    def serving_pids(self) -> list[int]:
        if self.process is None:
            return []
        return self.workers_pids() if self.workers > 1 else [self.process.pid]

    async def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            await asyncio.to_thread(self.process.wait, 15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None
