"""The in-process gate: the embedded default's twin of the Redis gate (one process only)."""

from __future__ import annotations


class MemoryGate:
    name = "memory"

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
