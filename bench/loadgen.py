"""Open-loop, constant-rate load for latency percentiles (wrk drives a closed loop only).

    python bench/loadgen.py spec.json   ->  one JSON line on stdout

Why our own: wrk keeps each connection busy and so measures the maximum rate,
but its latencies come from a closed loop (a slow reply delays the next
request, hiding the stall: coordinated omission). wrk2 fixes that with a
constant rate but is not packaged by Debian; h2load and httperf are, yet
neither can give each request its own token and request id. So this small
generator sends request ``i`` at ``start + i / rate`` whatever the replies
do, on a fixed set of keep-alive connections (uvloop, raw protocol, no HTTP
client library in the way).

A request whose connection is free is timed from when it is written; one that
finds every connection busy waits in a queue and is timed from its intended
send time, as wrk2 does, so a server stall is charged in full. Timer jitter
of the generator itself (about 1 ms) is not charged. ``late_ms`` reports how
far behind schedule the generator ran: if it is large, the figures say more
about the generator than the server.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

RID = "@RID@"


class Conn(asyncio.Protocol):
    def __init__(self, gen: Generator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.expect: int | None = None
        self.status = 0
        self.started = 0.0
        self.counted = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.gen.idle.append(self)

    def send(self, request: bytes, started: float, counted: bool) -> None:
        self.started = started
        self.counted = counted
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.expect is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buf[:end]).lower()
                self.status = int(head[9:12])
                at = head.find(b"\r\ncontent-length:")
                length = int(head[at + 17 : head.find(b"\r\n", at + 2)]) if at >= 0 else 0
                self.expect = end + 4 + length
            if len(self.buf) < self.expect:
                return
            del self.buf[: self.expect]
            self.expect = None
            self.gen.finished(self, self.status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.lost(self)


class Generator:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.idle: deque[Conn] = deque()
        self.queue: deque[tuple[bytes, float, bool]] = deque()
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.errors = 0
        self.completed = 0
        self.queued = 0
        self.late = 0.0
        self.outstanding = 0
        self.tokens: list[bytes] = []
        if spec.get("token_file"):
            lines = Path(spec["token_file"]).read_text().split()
            self.tokens = [line.encode() for line in lines if line]
        host = f"127.0.0.1:{spec['port']}"
        paths = spec.get("paths") or [spec["path"]]
        # Request i takes path (i x 7919) modulo their number (bench/scenario.py).
        self.heads = [
            f"{spec['method']} {path} HTTP/1.1\r\nHost: {host}\r\n".encode() for path in paths
        ]
        body = spec.get("body")
        self.body_parts: tuple[bytes, bytes] | None = None
        self.fixed_body: bytes | None = None
        if body is not None:
            if RID in body:
                prefix, suffix = body.split(RID)
                self.body_parts = (prefix.encode(), suffix.encode())
            else:
                self.fixed_body = body.encode()
        self.tag = spec.get("tag", "g").encode()
        self.offset = int(spec.get("token_offset", 0))

    def build(self, i: int) -> bytes:
        parts = [self.heads[i * 7919 % len(self.heads)]]
        if self.tokens:
            token = self.tokens[(self.offset + i) % len(self.tokens)]
            parts += [b"Authorization: Bearer ", token, b"\r\n"]
        body = self.fixed_body
        if self.body_parts is not None:
            body = b"".join((self.body_parts[0], self.tag, str(i).encode(), self.body_parts[1]))
        if body is not None:
            parts += [
                b"Content-Type: application/json\r\nContent-Length: ",
                str(len(body)).encode(),
                b"\r\n\r\n",
                body,
            ]
        else:
            parts.append(b"\r\n")
        return b"".join(parts)

    def issue(self, request: bytes, intended: float, counted: bool) -> None:
        self.outstanding += 1
        if self.idle:
            now = time.perf_counter()
            self.late = max(self.late, now - intended)
            self.idle.popleft().send(request, now, counted)
        else:
            self.queued += 1
            self.queue.append((request, intended, counted))

    def finished(self, conn: Conn, status: int) -> None:
        now = time.perf_counter()
        self.outstanding -= 1
        self.statuses[status] += 1
        self.completed += 1
        if conn.counted:
            self.latencies.append(now - conn.started)
        if self.queue:
            request, intended, counted = self.queue.popleft()
            conn.send(request, intended, counted)
        else:
            self.idle.append(conn)

    def lost(self, conn: Conn) -> None:
        if conn in self.idle:
            self.idle.remove(conn)
        elif conn.transport is not None:
            self.errors += 1
            self.outstanding -= 1

    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        spec = self.spec
        for _ in range(int(spec["connections"])):
            await loop.create_connection(lambda: Conn(self), "127.0.0.1", int(spec["port"]))
        rate = float(spec["rate"])
        total = int(rate * float(spec["seconds"]))
        warmup = int(rate * float(spec.get("warmup", 1.0)))
        start = time.perf_counter() + 0.01
        i = 0
        while i < total:
            due = min(total, int((time.perf_counter() - start) * rate) + 1)
            while i < due:
                self.issue(self.build(i), start + i / rate, i >= warmup)
                i += 1
            await asyncio.sleep(0.0005)
        sent_seconds = time.perf_counter() - start
        deadline = time.perf_counter() + float(spec.get("timeout", 5.0))
        while self.outstanding > 0 and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        timeouts = max(0, self.outstanding)
        latencies = sorted(self.latencies)

        def pct(p: float) -> float:
            if not latencies:
                return 0.0
            return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

        return {
            "rate": rate,
            "sent": total,
            "sent_rate": total / sent_seconds,
            "completed": self.completed,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": self.errors,
            "timeouts": timeouts,
            "queued": self.queued,
            "late_ms": round(self.late * 1000, 2),
            "p50_ms": round(pct(50), 3),
            "p90_ms": round(pct(90), 3),
            "p99_ms": round(pct(99), 3),
            "p999_ms": round(pct(99.9), 3),
            "max_ms": round(latencies[-1] * 1000, 3) if latencies else 0.0,
        }


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        result = asyncio.run(Generator(spec).run())
    else:
        result = uvloop.run(Generator(spec).run())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
