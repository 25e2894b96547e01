"""Start-up failures: one line on stderr naming the cause and the setting, an exit code each.

Every case runs ``run.py`` (the console script is the same ``bff.cli.main``,
tests/test_install.py) as a subprocess in a fresh directory, with no BFF_* of the
caller's. docs/DEPLOY.md "Start-up and exit codes" lists the codes.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_config import _run as run_py
from tests.test_run_workers import SECRET, _free_port, _healthy, _wait_for, serve

EXIT_CONFIG, EXIT_DATABASE, EXIT_REDIS, EXIT_LISTEN = 2, 3, 4, 5


def _variables(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A fresh directory's settings: the embedded default on a free port, fast timeouts."""
    return {
        "BFF_JWT_SECRET": SECRET,
        "BFF_PORT": str(_free_port()),
        "BFF_SQLITE_PATH": str(tmp_path / "bff.sqlite3"),
        "BFF_ACCESS_LOG": "false",
        "BFF_DATABASE_CONNECT_TIMEOUT_SECONDS": "2",
        "BFF_REDIS_TIMEOUT_SECONDS": "2",
        **extra,
    }


def _run(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return run_py(list(args), _variables(tmp_path, **extra), tmp_path)


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def closed_port() -> Iterator[str]:
    """A port bound and kept but never listening: a connection there is refused at once,
    and no other process can take it meanwhile (one bound and released could be reused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        yield str(held.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "variable", "value", "fragment"),
    [
        ((), "BFF_PORT", "abc", "server.port"),
        (("--demo",), "BFF_WORKERS", "0", "BFF_WORKERS"),
        (("migrate",), "BFF_CORS_ORIGINS", "https://a.example/path", "BFF_CORS_ORIGINS"),
        ((), "BFF_REDIS_AT_START", "later", "BFF_REDIS_AT_START"),
    ],
)
def test_a_bad_value_is_exit_2(tmp_path, args, variable, value, fragment):
    result = _run(tmp_path, *args, **{variable: value})
    assert result.returncode == EXIT_CONFIG
    line = _one_line(result)
    assert line.startswith("config error: ") and fragment in line


@pytest.mark.parametrize("args", [(), ("migrate",), ("--demo",)])
@pytest.mark.parametrize(
    ("host", "cause"),
    [("nohost.invalid", "host name not found"), ("127.0.0.1", "connection refused")],
)
def test_a_database_that_cannot_be_reached_is_exit_3(tmp_path, args, host, cause, closed_port):
    url = f"mysql+aiomysql://root@{host}:{closed_port}/bff"
    result = _run(tmp_path, *args, BFF_DATABASE_URL=url)
    assert result.returncode == EXIT_DATABASE
    line = _one_line(result)
    assert line.startswith("start-up failed: database") and f"BFF_DATABASE_URL={url}" in line
    assert line.endswith(cause)
    assert "Storefront" not in result.stdout


def test_a_password_in_the_database_url_is_not_printed(tmp_path, closed_port):
    url = f"mysql+aiomysql://app:hunter2@127.0.0.1:{closed_port}/bff"
    result = _run(tmp_path, "migrate", BFF_DATABASE_URL=url)
    assert result.returncode == EXIT_DATABASE
    assert "hunter2" not in result.stderr and "app:***@" in _one_line(result)


@pytest.mark.parametrize("args", [(), ("--demo",)])
def test_a_port_in_use_is_exit_5_before_anything_is_printed(tmp_path, args):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(tmp_path, *args, BFF_PORT=str(port))
    assert result.returncode == EXIT_LISTEN
    line = _one_line(result)
    assert f"cannot listen on 127.0.0.1:{port} (BFF_HOST, BFF_PORT)" in line
    assert "address already in use" in line
    # --demo claims the port before it seeds and prints its links and "ready".
    assert result.stdout == ""


def test_redis_down_is_exit_4_when_refused_and_for_the_demo(tmp_path, closed_port):
    url = f"redis://127.0.0.1:{closed_port}/0"
    for args, extra in (((), {"BFF_REDIS_AT_START": "refuse"}), (("--demo",), {})):
        result = _run(tmp_path, *args, BFF_REDIS_URL=url, **extra)
        assert result.returncode == EXIT_REDIS, result.stderr
        line = _one_line(result)
        assert line == f"start-up failed: Redis not reachable (BFF_REDIS_URL={url}): " + (
            "connection refused"
        )


def test_unknown_variables_are_warned_about_with_a_guess(tmp_path):
    result = _run(tmp_path, "token", "--sub", "u1", BFF_JWT_SECRT="x" * 40, BFF_NOT_A_SETTING="1")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "warning: unknown variable BFF_JWT_SECRT is ignored; did you mean BFF_JWT_SECRET?",
        "warning: unknown variable BFF_NOT_A_SETTING is ignored",
    ]


def test_a_second_instance_on_a_served_port_is_exit_5(tmp_path):
    """Two instances of 2 workers each used to share a port silently (SO_REUSEPORT)."""
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    variables = _variables(first_dir, BFF_WORKERS="2")
    port = int(variables["BFF_PORT"])
    with serve(first_dir, variables) as first:
        try:
            _wait_for(lambda: _healthy(port))
            second = _run(second_dir, BFF_WORKERS="2", BFF_PORT=str(port))
            assert second.returncode == EXIT_LISTEN
            assert "address already in use" in _one_line(second)
            assert _healthy(port) and first.poll() is None
        finally:
            first.terminate()
            first.wait(timeout=15)


def test_migrate_says_what_it_did(tmp_path: Path) -> None:
    first = _run(tmp_path, "migrate")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("schema up to date (BFF_SQLITE_PATH="), first.stdout
    assert "applied 1" in first.stdout
    again = _run(tmp_path, "migrate")
    assert again.returncode == 0 and "nothing to apply" in again.stdout, again.stdout
