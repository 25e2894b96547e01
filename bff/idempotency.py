"""Run a write once per request id, and answer copies and retries with the first reply.

The gate elects one runner per request id and keeps the reply; copies that
arrive meanwhile wait for it (so 20 copies at once get one result). A reply
is kept only for success: a refusal (SOLD_OUT, RATE_LIMITED, ...) is decided
again on retry, as payment APIs do. The gate is a fast path, not the truth:
each write also records its request key durably (the coupon row's
``request_key``, or ``idempotency_records``), so a replay after the gate lost
its keys still finds the first result and never writes twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from bff import jsonutil
from bff.errors import ApiError, conflict
from bff.gate.base import Gate, IdemState

log = logging.getLogger("bff.idempotency")
# A pending marker lives this long unless its runner renews it, which it does every
# RENEW_SECONDS while the work runs: a runner that died (a killed worker) holds its
# request id for seconds, not the half minute a fixed expiry had to allow for slow work.
PENDING_SECONDS = 6
RENEW_SECONDS = 2.0
WAIT_SECONDS = 15.0
POLL_SECONDS = 0.005


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]
    replayed: bool = False

    def payload(self) -> dict[str, Any]:
        return {**self.body, "replayed": True} if self.replayed else self.body


def body_hash(value: Any) -> str:
    """A stable hash of a request body (key order does not matter)."""
    canonical = jsonutil.dumps_str(_sorted(value))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


# What a retried write can answer besides its first reply (for the OpenAPI document).
RETRY_CODES = ("IDEMPOTENCY_CONFLICT", "REQUEST_IN_PROGRESS")


def idempotency_conflict(key_name: str = "request_id") -> ApiError:
    """``key_name`` is the field the caller chose the key with (redemptions: ``order_id``)."""
    return conflict("IDEMPOTENCY_CONFLICT", f"this {key_name} was used with a different body")


Begin = Callable[[str, str, int], Awaitable[IdemState]]


async def run_once(
    gate: Gate,
    key: str,
    digest: str,
    work: Callable[[], Awaitable[Reply]],
    *,
    ttl_seconds: int,
    begin: Begin | None = None,
    decided: Callable[[IdemState], Awaitable[Reply]] | None = None,
    key_name: str = "request_id",
) -> Reply:
    """``work`` once for ``key``; its reply again (``replayed``) for every copy and retry.
    Another body under ``key`` is IDEMPOTENCY_CONFLICT naming ``key_name``.

    ``begin`` replaces ``gate.idem_begin`` (a claim's :meth:`Gate.claim_begin`); a
    state it answers other than new, pending or done (``limited``, ``refused``) is
    handed to ``decided``, and no marker is left to abort.
    """
    deadline = time.monotonic() + WAIT_SECONDS
    start = begin or gate.idem_begin
    while True:
        state = await start(key, digest, PENDING_SECONDS)
        if state.state == "new":
            break
        if state.state not in ("pending", "done"):
            if decided is None:
                raise RuntimeError(f"the gate answered {state.state!r} to a plain begin")
            return await decided(state)
        if state.body_hash is not None and state.body_hash != digest:
            raise idempotency_conflict(key_name)
        if state.state == "done" and state.reply is not None:
            stored = jsonutil.loads(state.reply)
            return Reply(stored["s"], stored["b"], replayed=True)
        # Another copy is running: wait for its reply (or for it to give up).
        if time.monotonic() > deadline:
            raise ApiError(
                HTTPStatus.CONFLICT,
                "REQUEST_IN_PROGRESS",
                "the same request is still being processed; retry shortly",
            )
        await asyncio.sleep(POLL_SECONDS)
    renewer = _renewer(gate)
    renewer.add(key, digest)
    try:
        reply = await work()
    except BaseException:
        await _abort_quietly(gate, key)
        raise
    finally:
        renewer.remove(key)
    stored = jsonutil.dumps({"s": reply.status, "b": reply.body})
    try:
        await gate.idem_finish(key, digest, stored, ttl_seconds)
    except Exception:
        # The work is done and durable; a retry finds it in the database.
        log.warning("could not keep an idempotent reply in the gate", exc_info=True)
    return reply


class _Renewer:
    """Renews this process's pending markers while their work runs: one pipeline a turn."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.live: dict[str, str] = {}
        self.task: asyncio.Task[None] | None = None

    def add(self, key: str, digest: str) -> None:
        self.live[key] = digest
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    def remove(self, key: str) -> None:
        self.live.pop(key, None)

    async def _run(self) -> None:
        while self.live:
            await asyncio.sleep(RENEW_SECONDS)
            try:
                await asyncio.gather(
                    *(self.gate.idem_renew(k, d, PENDING_SECONDS) for k, d in self.live.items())
                )
            except Exception:  # the gate is away: the markers may lapse; the ledger stays exact
                log.warning("could not renew pending request markers", exc_info=True)


_renewers: weakref.WeakKeyDictionary[Any, _Renewer] = weakref.WeakKeyDictionary()


async def stop_renewing(gate: Gate) -> None:
    """The app is stopping: end the gate's renewals (their markers lapse on their own)."""
    renewer = _renewers.pop(gate, None)
    if renewer is not None and renewer.task is not None:
        renewer.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer.task


def _renewer(gate: Gate) -> _Renewer:
    renewer = _renewers.get(gate)
    if renewer is None:
        renewer = _renewers[gate] = _Renewer(gate)
    return renewer


async def _abort_quietly(gate: Gate, key: str) -> None:
    try:
        await gate.idem_abort(key)
    except Exception:  # the pending marker expires on its own
        return
