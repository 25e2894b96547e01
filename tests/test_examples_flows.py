"""examples/flows.py against a live ``python run.py`` on both backends, and the README
quoting it: the flows a newcomer copies run as written (issue 19, item 1).

The server runs as a newcomer starts it (a subprocess in a fresh working directory, the
development default minting its JWT secret into ``var/``), and the script mints its tokens
with ``python run.py token`` in that same directory, as the README says.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from bff.auth import Role
from tests.conftest import IN_CI
from tests.demo_server import REPO, demo_env, free_port, run_command, stop, wait_until_ready

FLOWS = REPO / "examples" / "flows.py"
README = REPO / "README.md"
FLOWS_SECONDS = 120
START, END = "<!-- flows:start -->", "<!-- flows:end -->"
TOKEN_VARIABLES = ("MERCHANT", "SHOPPER", "SERVICE")
DATE_LINE = re.compile(r"^(\w+)=\S+  # (\$\(date .*\))$", re.MULTILINE)


async def run_flows(workdir: Path, backend: str) -> subprocess.CompletedProcess[str]:
    """Serve on a spare port from ``workdir``, run the flows against it, stop the server."""
    return await run_against_server(workdir, backend, lambda base: [str(FLOWS), "--base", base])


async def run_against_server(
    workdir: Path, backend: str, command: Callable[[str], list[str]], program: str = sys.executable
) -> subprocess.CompletedProcess[str]:
    """Serve on a spare port from ``workdir``; run ``program *command(base_url)`` there."""
    workdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - a test's own tmp dir
    port = free_port()
    # The tokens are minted, as the README says, never taken from the caller's shell.
    env = {k: v for k, v in demo_env(backend, port).items() if k not in TOKEN_VARIABLES}
    process = run_command(workdir, env)
    try:
        await wait_until_ready(process, workdir / "server.log", port)
        return await asyncio.to_thread(
            subprocess.run,
            [program, *command(f"http://127.0.0.1:{port}")],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=FLOWS_SECONDS,
            check=False,
        )
    finally:
        stop(process)


def commands(text: str) -> list[str]:
    """The shell commands of a transcript or a README block that call curl or write a file:
    a line starting with ``curl``/``printf`` and its continuation lines (a trailing
    backslash, or a single-quoted body still open)."""
    found: list[str] = []
    lines = iter(text.splitlines())
    for line in lines:
        if not line.startswith(("curl ", "printf ")):
            continue
        command = [line]
        while command[-1].endswith("\\") or "\n".join(command).count("'") % 2:
            command.append(next(lines))
        found.append("\n".join(command))
    return found


def readme_flows() -> str:
    text = README.read_text()
    assert START in text and END in text, "README.md lost its flows markers"
    return text.split(START, 1)[1].split(END, 1)[0]


def positions(quoted: list[str], ran: list[str]) -> list[int | None]:
    """Where each quoted command ran, each after the one before; None where it did not."""
    found: list[int | None] = []
    start = 0
    for command in quoted:
        try:
            at = ran.index(command, start)
        except ValueError:
            found.append(None)
            continue
        found.append(at)
        start = at + 1
    return found


def statuses(transcript: str) -> dict[int, str]:
    """Command index -> the status the transcript printed after it (curl commands only)."""
    found: dict[int, str] = {}
    ran = commands(transcript)
    replies = iter(re.findall(r"^# -> (\d{3})", transcript, re.MULTILINE))
    for index, command in enumerate(ran):
        if command.startswith("curl "):
            found[index] = next(replies)
    return found


def readme_as_shell(base: str) -> str:
    """The README's setup block and flow commands as one bash script against ``base``,
    each curl printing only its status; the Python of this test mints the tokens."""
    flows = readme_flows()
    setup = flows[flows.index("BASE=http://127.0.0.1:8080") :].split("```", 1)[0]
    setup = setup.replace("BASE=http://127.0.0.1:8080", f"BASE={base}")
    setup = setup.replace(".venv/bin/python run.py", f"{sys.executable} {REPO / 'run.py'}")
    lines = ["set -eu", setup]
    for command in commands(flows):
        lines.append(
            command + (" -o /dev/null -w '%{http_code}\\n'" if command[:5] == "curl " else "")
        )
    return "\n".join(lines) + "\n"


def curl_with_json() -> bool:
    """curl >= 7.82 (its --json), as the README's commands use."""
    try:
        help_text = subprocess.run(
            ["curl", "--help", "all"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except OSError:
        return False
    return "--json" in help_text


async def test_the_flows_run_on_a_live_server(backend, settings, tmp_path):
    # ``settings`` empties the test MariaDB and Redis the server is pointed at.
    result = await run_flows(tmp_path / "clone", backend)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    out = result.stdout
    assert out.rstrip().endswith("# all flows done")
    # The tokens were minted as the README says, and the server took them.
    assert "MERCHANT=$(python run.py token --role merchant --shop s1 --sub m1)" in out
    # A few outputs the README promises: 券后价, the popup and the lottery, points, the
    # live price, the policy refusal, the order's replay and its returned coupon.
    assert '"final_price": 31900' in out
    assert '"new_member": true' in out and '"presentation": "lottery"' in out
    assert '"code": "POLICY_VIOLATION"' in out and '"balance": 700' in out
    assert '"status": "live"' in out and '"status": "upcoming"' in out
    assert '"exclusive_price": 29900' in out
    assert '"replayed": true' in out and '"status": "used"' in out
    assert re.search(r'"status": "cancelled", "returned": \[\d+\]', out)
    assert "this order_id was used with a different body" in out
    # Every request went out as a curl command, each followed by its status.
    curls = [command for command in commands(out) if command.startswith("curl ")]
    assert len(curls) == out.count("# -> ") >= 40


async def test_the_readme_quotes_the_flows_in_order_and_they_run_in_a_shell(tmp_path):
    """The README's flow commands are the script's, in its order (on a fresh database, so
    the ids match), with every date variable defined as the script does; pasted into bash
    on a fresh server they answer the statuses the script saw for them."""
    quoted = commands(readme_flows())
    assert len(quoted) >= 40, "the README's flow sections quote fewer commands than expected"
    flows = await run_flows(tmp_path / "script", "embedded")
    assert flows.returncode == 0, flows.stdout[-4000:] + flows.stderr
    found = positions(quoted, commands(flows.stdout))
    assert [command for command, at in zip(quoted, found, strict=True) if at is None] == []
    for name, expression in DATE_LINE.findall(flows.stdout):
        assert f"{name}={expression}" in readme_flows(), name

    if not curl_with_json():
        if IN_CI:
            pytest.fail("curl with --json (7.82 or later) is needed for the README's commands")
        pytest.skip("curl with --json (7.82 or later) is not installed")
    status_of = statuses(flows.stdout)
    wanted = [
        status_of[at] for command, at in zip(quoted, found, strict=True) if command[:5] == "curl "
    ]
    script = tmp_path / "readme.sh"

    def shell(base: str) -> list[str]:
        script.write_text(readme_as_shell(base))
        return [str(script)]

    result = await run_against_server(tmp_path / "shell", "embedded", shell, program="bash")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == wanted, result.stderr


async def flows_against(client: TestClient, *args: str) -> tuple[int, str, str]:
    """The script against the test app ``client`` serves; (exit code, stdout, stderr).
    No token comes from the environment: only ``args`` give them."""
    base = str(client.make_url("")).rstrip("/")
    env = {key: value for key, value in os.environ.items() if key not in TOKEN_VARIABLES}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(FLOWS),
        "--base",
        base,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), FLOWS_SECONDS)
    return int(process.returncode or 0), out.decode(), err.decode()


async def test_an_unexpected_status_stops_the_flows_with_exit_1(client, tokens):
    """A merchant token for another shop: the first step answers 403, not 201."""
    minted = {
        "--merchant-token": tokens.mint("m1", Role.MERCHANT, "another-shop")[0],
        "--shopper-token": tokens.mint("u1", Role.USER)[0],
        "--service-token": tokens.mint("orders", Role.SERVICE, "s1")[0],
    }
    code, out, err = await flows_against(
        client, *[part for pair in minted.items() for part in pair]
    )
    assert code == 1, out + err
    assert "# -> 403 " in out and "# all flows done" not in out
    assert "flows failed: POST /api/v1/shops/s1/admin/coupon-templates answered 403" in err


async def test_a_second_run_on_the_same_shop_says_to_pass_another_shop(tmp_path):
    """The request ids are fixed: run again on one shop, a claim's id comes with a new body."""

    def twice(base: str) -> list[str]:
        flows = shlex.join([sys.executable, str(FLOWS), "--base", base])
        return ["-c", f"{flows} > /dev/null && {flows}"]

    result = await run_against_server(tmp_path / "twice", "embedded", twice, program="bash")
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr
    assert '"code": "IDEMPOTENCY_CONFLICT"' in result.stdout
    assert result.stderr.strip().endswith("already ran the flows: pass another --shop")


async def test_tokens_that_cannot_be_minted_stop_the_flows_with_exit_2(client):
    code, out, err = await flows_against(client, "--mint-command", "false")
    assert code == 2 and out == "", out + err
    assert "cannot mint the MERCHANT token with false" in err
