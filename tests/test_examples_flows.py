"""examples/flows.py against a live ``python run.py`` on both backends, and the README
quoting it: the flows a newcomer copies run as written (issue 19, item 1).

The server runs as a newcomer starts it (a subprocess in a fresh working directory, the
development default minting its JWT secret into ``var/``), and the script mints its tokens
with ``python run.py token`` in that same directory, as the README says.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.demo_server import REPO, demo_env, free_port, run_command, stop, wait_until_ready

FLOWS = REPO / "examples" / "flows.py"
README = REPO / "README.md"
FLOWS_SECONDS = 120
START, END = "<!-- flows:start -->", "<!-- flows:end -->"
DATE_LINE = re.compile(r"^(\w+)=\S+  # (\$\(date .*\))$", re.MULTILINE)


async def run_flows(workdir: Path, backend: str) -> subprocess.CompletedProcess[str]:
    """Serve on a spare port from ``workdir``, run the flows against it, stop the server."""
    workdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - a test's own tmp dir
    port = free_port()
    env = demo_env(backend, port)
    process = run_command(workdir, env)
    try:
        await wait_until_ready(process, workdir / "server.log", port)
        command = [sys.executable, str(FLOWS), "--base", f"http://127.0.0.1:{port}"]
        return await asyncio.to_thread(
            subprocess.run,
            command,
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


def in_order(quoted: list[str], ran: list[str]) -> Iterator[str]:
    """Each quoted command not found in ``ran`` after the previous one's position."""
    position = 0
    for command in quoted:
        try:
            position = ran.index(command, position) + 1
        except ValueError:
            yield command


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


async def test_the_readme_quotes_the_flows_in_the_order_they_run(tmp_path):
    """The README's flow commands are the script's, in its order (on a fresh database, so
    the ids match), and it defines every date variable they use as the script does."""
    quoted = commands(readme_flows())
    assert len(quoted) >= 40, "the README's flow sections quote fewer commands than expected"
    result = await run_flows(tmp_path / "clone", "embedded")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    assert list(in_order(quoted, commands(result.stdout))) == []
    flows = readme_flows()
    for name, expression in DATE_LINE.findall(result.stdout):
        assert f"{name}={expression}" in flows, name
