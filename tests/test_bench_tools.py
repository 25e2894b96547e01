"""The benchmark's own tools: tokens, the constant-rate generator, the wrk script, the
profile summary and the naive claim it compares against (bench/, issue 8)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import pymysql
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bench.naive_claim import build_app, connect_args, setup_template
from bench.run import summarize_profile
from bench.scenario import RID, Scenario, run_wrk
from bench.seed import Minter
from bff.auth import TokenCodec
from bff.clock import SystemClock
from config.loader import JwtSettings
from tests.conftest import MYSQL_URL, base_settings, mariadb_settings

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-tools-secret-at-least-32-bytes-long"


def test_minted_tokens_are_the_apps_and_each_names_its_own_user():
    subs = [f"u-{i}" for i in range(50)]
    tokens = Minter(SECRET).many(subs)
    codec = TokenCodec(JwtSettings(secret=SECRET), SystemClock())
    assert [codec.decode(token).sub for token in tokens] == subs


class Recorder:
    """A tiny server that answers 201 and remembers who asked what."""

    def __init__(self) -> None:
        self.users: list[str] = []
        self.request_ids: list[str] = []

    def app(self) -> web.Application:
        async def claim(request: web.Request) -> web.Response:
            self.users.append(request.headers.get("Authorization", ""))
            self.request_ids.append((await request.json())["request_id"])
            return web.json_response({"coupon": {"coupon_id": len(self.users)}}, status=201)

        app = web.Application()
        app.router.add_post("/claim", claim)
        return app


def _scenario(tmp_path: Path, users: int) -> Scenario:
    tokens = tmp_path / "tokens"
    tokens.write_text("\n".join(f"token-{i}" for i in range(users)) + "\n")
    return Scenario("t", "POST", "/claim", json.dumps({"request_id": RID}), str(tokens), "t")


async def _loadgen(
    tmp_path: Path, scenario: Scenario, port: int, rate: int, seconds: float, warmup: float
) -> dict:
    """Run bench/loadgen.py on ``scenario`` (4 connections) and return its result."""
    spec = {
        **scenario.to_json(),
        "port": port,
        "rate": rate,
        "seconds": seconds,
        "warmup": warmup,
        "connections": 4,
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "bench" / "loadgen.py"),
        str(path),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    return json.loads(out)


async def test_loadgen_holds_the_rate_and_answers_every_request_once(tmp_path):
    recorder = Recorder()
    async with TestServer(recorder.app()) as server:
        result = await _loadgen(tmp_path, _scenario(tmp_path, 1000), server.port, 200, 1.0, 0.2)
    assert result["sent"] == result["completed"] == 200
    assert result["statuses"] == {"201": 200}
    assert result["errors"] == result["timeouts"] == 0
    assert 150 < result["sent_rate"] < 260
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
    # Every request its own user and its own request id.
    assert len(set(recorder.users)) == len(set(recorder.request_ids)) == 200


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"
)
async def test_wrk_script_gives_every_request_its_own_user_and_request_id(tmp_path):
    recorder = Recorder()
    users = 100_000
    async with TestServer(recorder.app()) as server:
        result = await asyncio.to_thread(
            run_wrk,
            shutil.which("wrk") or "wrk",
            f"http://127.0.0.1:{server.port}",
            _scenario(tmp_path, users),
            1,
            threads=2,
            connections=4,
            workdir=tmp_path,
        )
    seen = len(recorder.request_ids)
    assert 0 < result.count(201) <= seen <= result.sent
    assert len(set(recorder.request_ids)) == seen
    assert seen < users and len(set(recorder.users)) == seen


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"
)
async def test_a_wrk_run_from_the_tokens_used_so_far_meets_no_earlier_user(tmp_path):
    """What Bench.fresh_users does: each run starts where the last one's busiest thread got."""
    users = 200_000
    scenario = _scenario(tmp_path, users)
    seen: list[set[str]] = []
    offset = 0
    for _ in range(2):
        recorder = Recorder()
        async with TestServer(recorder.app()) as server:
            result = await asyncio.to_thread(
                run_wrk,
                shutil.which("wrk") or "wrk",
                f"http://127.0.0.1:{server.port}",
                dataclasses.replace(scenario, token_offset=offset),
                1,
                threads=2,
                connections=4,
                workdir=tmp_path,
            )
        numbers = sorted(int(user.rsplit("-", 1)[1]) for user in recorder.users)
        assert numbers and offset <= numbers[0] and numbers[-1] < offset + result.tokens_used
        assert len(set(numbers)) == len(numbers)
        seen.append(set(recorder.users))
        offset += result.tokens_used
    assert offset < users, "the file ran out: the runs wrapped round"
    assert not seen[0] & seen[1]


def test_profile_summary_names_the_libraries_where_time_went():
    collapsed = "\n".join(
        [
            "main (run.py:1);view (bff/routing.py:2);execute (sqlalchemy/engine/base.py:3) 6",
            "main (run.py:1);view (bff/routing.py:2);query (aiomysql/connection.py:4) 3",
            "main (run.py:1);view (bff/routing.py:5) 1",
        ]
    )
    summary = summarize_profile(collapsed)
    assert summary["samples"] == 10
    assert dict(summary["by_library"]) == {
        "SQLAlchemy": 60.0,
        "aiomysql/PyMySQL driver": 30.0,
        "our code (bff, handlers, widgets)": 10.0,
    }
    assert dict(summary["total"])["view (bff/routing.py)"] == 100.0


async def test_naive_claim_never_oversells_under_concurrency(aiohttp_client, tmp_path):
    """The comparison claim is a fair one: exact under a burst, like ours."""
    await mariadb_settings(base_settings())  # skips (or fails in CI) without MariaDB

    setup_template(MYSQL_URL, 7, 5)
    client: TestClient = await aiohttp_client(build_app(MYSQL_URL, SECRET))
    minter = Minter(SECRET)
    tokens = minter.many([f"n-{i}" for i in range(12)])

    async def claim(i: int) -> int:
        response = await client.post(
            "/api/v1/shops/s1/coupons/claim",
            json={"template_id": 7, "request_id": f"r{i}"},
            headers={"Authorization": f"Bearer {tokens[i]}"},
        )
        await response.read()
        return response.status

    statuses = Counter(await asyncio.gather(*(claim(i) for i in range(12))))
    assert statuses == {201: 5, 409: 7}
    again = await claim(0)  # the same user again: at the per-user limit
    assert again == 409
    args = connect_args(MYSQL_URL)
    conn = pymysql.connect(
        host=args["host"], port=args["port"], user=args["user"], database=args["db"]
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT issued FROM naive_templates WHERE id = 7")
            issued = cur.fetchone()[0]
            cur.execute(
                "SELECT COUNT(*), COUNT(DISTINCT user_id) FROM naive_coupons WHERE template_id = 7"
            )
            rows, users = cur.fetchone()
    finally:
        conn.close()
    assert issued == rows == users == 5


async def test_a_scenario_with_paths_mixes_them_in_loadgen_and_wrk(tmp_path):
    """Issue 16's realistic mix: every request the next user and one of 30 products."""
    seen: list[tuple[str, str]] = []

    async def product(request: web.Request) -> web.Response:
        seen.append((request.headers.get("Authorization", ""), request.match_info["n"]))
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/p/{n}", product)
    tokens = tmp_path / "tokens"
    tokens.write_text("\n".join(f"user-{i}" for i in range(1000)) + "\n")
    paths = [f"/p/{n}" for n in range(30)]
    scenario = Scenario("mix", "GET", paths[0], None, str(tokens), "m", paths=paths)
    async with TestServer(app) as server:
        await _loadgen(tmp_path, scenario, server.port, 300, 0.5, 0.1)
        assert {n for _, n in seen} == {str(n) for n in range(30)}
        assert len(set(seen)) == len(seen)  # no (user, product) pair twice
        if shutil.which("wrk") is not None:
            seen.clear()
            await asyncio.to_thread(
                run_wrk,
                shutil.which("wrk") or "wrk",
                f"http://127.0.0.1:{server.port}",
                scenario,
                0.5,
                threads=2,
                connections=4,
                workdir=tmp_path,
            )
            assert {n for _, n in seen} == {str(n) for n in range(30)}
            assert len({user for user, _ in seen}) > 30
