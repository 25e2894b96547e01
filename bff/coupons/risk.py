"""Claim risk checks (风控): a pluggable engine with a rule engine driven by config.

An external risk service plugs in as ``risk.engine = "package.module:ClassName"``:
a class built with ``(settings, gate)`` exposing ``async check(context) ->
RiskVerdict``. The claim code only sees :class:`RiskEngine`. Every refusal is
logged with the rule that made it.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from bff.coupons.rules import shop_day
from bff.gate.base import Gate, window_key
from config.loader import ConfigError, Settings

log = logging.getLogger("bff.risk")
DAY_SECONDS = 86_400


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    emulator: bool = False
    multi_open: bool = False


@dataclass(frozen=True, slots=True)
class RiskContext:
    shop_id: str
    user_id: str
    template_id: int
    device: Device | None
    ip: str | None
    now: datetime


@dataclass(frozen=True, slots=True)
class RiskVerdict:
    allowed: bool
    rule: str | None = None

    @classmethod
    def allow(cls) -> RiskVerdict:
        return cls(True)

    @classmethod
    def reject(cls, rule: str) -> RiskVerdict:
        return cls(False, rule)


class RiskEngine(Protocol):
    async def check(self, context: RiskContext) -> RiskVerdict: ...


class RuleRiskEngine:
    """Device present and not flagged; accounts per device per day; claims per device/IP."""

    def __init__(self, settings: Settings, gate: Gate) -> None:
        self.rules = settings.risk
        self.timezone = settings.shop.timezone
        self.gate = gate

    async def check(self, context: RiskContext) -> RiskVerdict:
        verdict = await self._check(context)
        if not verdict.allowed:
            log.info(
                "risk rejected a claim",
                extra={
                    "fields": {
                        "rule": verdict.rule,
                        "shop_id": context.shop_id,
                        "template_id": context.template_id,
                    }
                },
            )
        return verdict

    async def _check(self, context: RiskContext) -> RiskVerdict:
        device = context.device
        if device is None or not device.id:
            return RiskVerdict.reject("device_required")
        if device.emulator:
            return RiskVerdict.reject("emulator")
        if device.multi_open:
            return RiskVerdict.reject("multi_open")
        rules = self.rules
        if rules.accounts_per_device_per_day:
            day = shop_day(context.now, self.timezone)
            key = f"risk:{{dev:{device.id}}}:accounts:{day}"
            admitted = await self.gate.admit_member(
                key, context.user_id, rules.accounts_per_device_per_day, DAY_SECONDS
            )
            if not admitted:
                return RiskVerdict.reject("accounts_per_device_per_day")
        if rules.device_claims_per_minute:
            key, _ = window_key(f"risk:{{dev:{device.id}}}:claims", context.now, 60)
            if not await self.gate.hit(key, rules.device_claims_per_minute, 60):
                return RiskVerdict.reject("device_claims_per_minute")
        if rules.ip_claims_per_minute and context.ip:
            key, _ = window_key(f"risk:{{ip:{context.ip}}}:claims", context.now, 60)
            if not await self.gate.hit(key, rules.ip_claims_per_minute, 60):
                return RiskVerdict.reject("ip_claims_per_minute")
        return RiskVerdict.allow()


def build_risk_engine(settings: Settings, gate: Gate) -> RiskEngine:
    name = settings.risk.engine
    if name == "rules":
        return RuleRiskEngine(settings, gate)
    module_name, _, class_name = name.partition(":")
    try:
        engine_class = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"risk.engine {name!r} cannot be loaded: {exc}") from exc
    return engine_class(settings, gate)
