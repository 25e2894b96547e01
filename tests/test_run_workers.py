"""run.py with BFF_WORKERS=2: a killed worker is replaced, SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret-that-is-at-least-32-bytes-long!"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(part) for part in path.read_text().split()} if path.exists() else set()


def _wait_for(predicate, seconds: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as reply:
            return reply.status == 200
    except OSError:
        return False


def serve(cwd: Path, variables: dict[str, str]) -> subprocess.Popen[bytes]:
    """``run.py`` in ``cwd`` with these ``BFF_*`` variables only (the caller's dropped)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFF_")} | variables
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run.py")],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_a_killed_worker_is_replaced_and_sigterm_stops_every_worker(tmp_path):
    port = _free_port()
    variables = {
        "BFF_ENV": "test",
        "BFF_JWT_SECRET": SECRET,
        "BFF_PORT": str(port),
        "BFF_WORKERS": "2",
        "BFF_SQLITE_PATH": str(tmp_path / "bff.sqlite3"),
        "BFF_ACCESS_LOG": "false",
    }
    with serve(tmp_path, variables) as parent:
        try:
            workers = _wait_for(lambda: len(_children(parent.pid)) == 2 and _children(parent.pid))
            _wait_for(lambda: _healthy(port))
            victim = min(workers)
            os.kill(victim, signal.SIGKILL)
            replaced = _wait_for(
                lambda: (
                    (kids := _children(parent.pid)) - {victim} == kids and len(kids) == 2 and kids
                )
            )
            assert victim not in replaced and (workers - {victim}) < replaced
            _wait_for(lambda: _healthy(port))
            parent.send_signal(signal.SIGTERM)
            assert parent.wait(timeout=15) == 0
            for pid in replaced:
                _wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists() or _zombie(pid))
        finally:
            if parent.poll() is None:
                parent.kill()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
