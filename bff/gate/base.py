"""The gate interface shared by the Redis gate and its in-process twin."""

from __future__ import annotations

from typing import Protocol


class Gate(Protocol):
    name: str

    async def ping(self) -> None:
        """Raise if the gate cannot answer."""
        ...

    async def close(self) -> None: ...
