"""The benchmark in brief (issue 8): ``bench/run.py --smoke`` runs every route, its integrity
checks and the table once, about half a minute, so a change that breaks the bench or a
claim count it checks fails CI. The figures it prints are not worth reading."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[1]
NEEDED = ("wrk", "redis-server", "mariadbd", "mariadb-install-db")

pytestmark = pytest.mark.slow


def _missing() -> list[str]:
    paths = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin"
    return [tool for tool in NEEDED if shutil.which(tool, path=paths) is None]


def test_bench_smoke_prints_the_table_and_every_integrity_check_passes(tmp_path):
    missing = _missing()
    if missing:
        message = f"bench smoke needs {', '.join(missing)} (apt-get install wrk mariadb-server)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFF_")}
    env["BFF_BENCH_WORK"] = str(tmp_path)
    # Ports of its own, so a bench someone runs meanwhile is not disturbed.
    command = [sys.executable, "bench/run.py", "--smoke", "--mariadb-port", "3397"]
    command += ["--redis-port", "6397"]
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "| B: GET /api/v1/ping |" in out, out[-4000:]
    routes = (
        "claims/s while stock lasts",
        "sold-out rejections/s",
        "naive claim",
        "product price, user, 20 holders x 30 products",  # issue 16's mix
    )
    for route in routes:
        assert f"| {route}" in out, route
    assert "Worker RSS after the runs: " in out, out[-4000:]
    checks = [
        line for line in out.splitlines() if line.startswith("- ") and "integrity" not in line
    ]
    verdicts = [line for line in checks if "-> " in line]
    assert verdicts and all(line.endswith("-> OK") for line in verdicts), verdicts
