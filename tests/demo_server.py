"""``python run.py --demo`` as a newcomer runs it: a subprocess on a free port, stopped after.

Shared by the demo tests and the browser test. The server runs in its own working
directory (its ``var/`` with the SQLite file and the development JWT secret), on the
embedded default or on the test MariaDB + Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.conftest import MYSQL_URL, REDIS_URL

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_SECONDS = 60.0
STOREFRONT = re.compile(r"Storefront:\s+(\S+)#token=(\S+)")


@dataclass
class DemoServer:
    base_url: str
    token: str
    output: str


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def demo_env(backend: str, port: int, **extra: str) -> dict[str, str]:
    """The environment of a fresh shell: no BFF_* of the caller's, only the backend's."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("BFF_")}
    env.update(BFF_HOST="127.0.0.1", BFF_PORT=str(port), PYTHONUNBUFFERED="1")
    if backend == "mariadb":
        env.update(BFF_DATABASE_URL=MYSQL_URL, BFF_REDIS_URL=REDIS_URL)
    env.update(extra)
    return env


def run_demo_command(workdir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``python run.py --demo`` in ``workdir``, its output going to ``workdir/server.log``."""
    return run_command(workdir, env, "--demo")


def run_command(workdir: Path, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    """``python run.py *args`` in ``workdir``, its output going to ``workdir/server.log``."""
    with (workdir / "server.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, str(REPO / "run.py"), *args],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@contextlib.asynccontextmanager
async def demo_server(workdir: Path, backend: str, **extra: str) -> AsyncIterator[DemoServer]:
    """Start ``run.py --demo`` (``extra``: more variables); yield once it printed its URLs
    and answers /healthz."""
    workdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - a test's own tmp dir
    port = free_port()
    process = run_demo_command(workdir, demo_env(backend, port, **extra))
    try:
        server = await _wait_until_serving(process, workdir / "server.log", port)
        yield server
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a graceful aiohttp shutdown), then SIGKILL; only this process."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


async def _wait_until_serving(process: subprocess.Popen[bytes], log: Path, port: int) -> DemoServer:
    found = STOREFRONT.search(await wait_until_ready(process, log, port, STOREFRONT, "/healthz"))
    assert found is not None  # wait_until_ready returns once the pattern is in the output
    return DemoServer(found.group(1).removesuffix("/demo"), found.group(2), found.string)


async def wait_until_ready(
    process: subprocess.Popen[bytes],
    log: Path,
    port: int,
    printed: re.Pattern[str] | None = None,
    path: str = "/readyz",
) -> str:
    """Wait until the server printed ``printed`` (if given) and ``path`` answers 200;
    its output so far. A server that exits first fails the test with its output."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            output = log.read_text(errors="replace")  # noqa: ASYNC240 - a small local file
            if process.poll() is not None:
                raise AssertionError(f"run.py exited {process.returncode}:\n{output}")
            if printed is None or printed.search(output) is not None:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                        if response.status == 200:
                            return output
            await asyncio.sleep(0.2)
    raise AssertionError(f"run.py did not serve within {START_TIMEOUT_SECONDS:.0f} s")
