"""Pure claim rules: refusal codes, the checks that need no database, the shop's calendar day.

No ``await`` and no I/O here: the claim service gathers what these functions
need and the tests call them directly.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from http import HTTPStatus
from typing import Any

from bff.errors import ApiError

# code -> (status, message). Order of the claim checks is DOMAIN.md's.
REFUSALS: dict[str, tuple[HTTPStatus, str]] = {
    "NOT_FOUND": (HTTPStatus.NOT_FOUND, "coupon template not found"),
    "CLAIM_PAUSED": (HTTPStatus.CONFLICT, "this coupon is paused by the shop"),
    "CLAIM_METHOD_NOT_ALLOWED": (
        HTTPStatus.FORBIDDEN,
        "this coupon cannot be claimed this way",
    ),
    "NOT_STARTED": (HTTPStatus.CONFLICT, "claiming has not started yet"),
    "CLAIM_ENDED": (HTTPStatus.CONFLICT, "claiming has ended"),
    "NOT_ELIGIBLE": (HTTPStatus.FORBIDDEN, "this coupon is not available to you"),
    "RISK_REJECTED": (HTTPStatus.FORBIDDEN, "the claim did not pass the risk check"),
    "RATE_LIMITED": (HTTPStatus.TOO_MANY_REQUESTS, "too many claims, slow down"),
    "LIMIT_REACHED": (HTTPStatus.CONFLICT, "you already hold as many as allowed"),
    "WALLET_FULL": (HTTPStatus.CONFLICT, "your coupon wallet is full"),
    "SOLD_OUT": (HTTPStatus.CONFLICT, "sold out"),
    "DAILY_SOLD_OUT": (HTTPStatus.CONFLICT, "sold out for today"),
    "ALREADY_CLAIMED": (HTTPStatus.CONFLICT, "this has already been claimed"),
    "IDEMPOTENCY_CONFLICT": (
        HTTPStatus.CONFLICT,
        "this request_id was used with a different body",
    ),
}


@dataclass(frozen=True, slots=True)
class Refusal:
    code: str
    details: tuple[tuple[str, Any], ...] = ()

    def error(self, headers: dict[str, str] | None = None) -> ApiError:
        status, message = REFUSALS[self.code]
        return ApiError(status, self.code, message, dict(self.details), headers)


def refuse(code: str, **details: Any) -> Refusal:
    if code not in REFUSALS:
        raise ValueError(f"unknown refusal {code}")
    return Refusal(code, tuple(sorted(details.items())))


@lru_cache(maxsize=32)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def shop_day(instant: datetime, timezone: str) -> str:
    """The calendar day (YYYY-MM-DD) of ``instant`` in the shop's time zone."""
    return instant.astimezone(_zone(timezone)).date().isoformat()


@dataclass(frozen=True, slots=True)
class MemberView:
    """What eligibility needs to know of a membership."""

    level: int
    active: bool


def precheck(
    template: Any, method: str, now: datetime, member: MemberView | None
) -> Refusal | None:
    """The checks before risk, rate and stock: status, method, window, audience.

    ``template`` is a template row (``status``, ``claim_start``, ``claim_end``, ``spec``).
    """
    if template.status == "paused":
        return refuse("CLAIM_PAUSED")
    if template.status == "ended":
        return refuse("CLAIM_ENDED")
    if method not in template.spec["claim_methods"]:
        return refuse("CLAIM_METHOD_NOT_ALLOWED", method=method)
    if now < template.claim_start:
        return refuse("NOT_STARTED", claim_start=template.claim_start.isoformat())
    if now >= template.claim_end:
        return refuse("CLAIM_ENDED")
    return audience_refusal(template.spec, member)


def audience_refusal(spec: dict[str, Any], member: MemberView | None) -> Refusal | None:
    audience = spec["audience"]
    needs_member = audience["type"] == "members" or spec.get("new_member_exclusive", False)
    if not needs_member:
        return None
    if member is None or not member.active:
        return refuse("NOT_ELIGIBLE", reason="members only")
    min_level = audience.get("min_level", 0) if audience["type"] == "members" else 0
    if member.level < min_level:
        return refuse("NOT_ELIGIBLE", reason=f"members of level {min_level} or above")
    return None


def needs_membership(spec: dict[str, Any]) -> bool:
    return spec["audience"]["type"] == "members" or bool(spec.get("new_member_exclusive"))
