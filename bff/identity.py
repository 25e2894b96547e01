"""Identity providers: trade a mini-program login code for a user id.

A real provider calls the platform (Alipay ``alipay.system.oauth.token`` or
WeChat ``code2session``); it is plugged in by configuration
(``identity.provider = "package.module:ClassName"``), a class built with the
settings and exposing ``async resolve(auth_code) -> user_id | None``. The user
id must be an id as paths spell them (``bff.auth.is_id``); POST /session refuses
any other with 401 rather than mint a token no merchant path can address.
"""

from __future__ import annotations

import importlib
from typing import Protocol

from bff.auth import is_id
from config.loader import ConfigError, Settings

DEV_PREFIX = "dev:"


class IdentityProvider(Protocol):
    enabled: bool

    async def resolve(self, auth_code: str) -> str | None:
        """The user id behind the code, or None when the code is not accepted."""
        ...


class NoIdentityProvider:
    """Sessions are off: no provider is configured."""

    enabled = False

    async def resolve(self, auth_code: str) -> str | None:
        return None


class DevIdentityProvider:
    """Development only: ``dev:<user_id>`` logs in as that user."""

    enabled = True

    async def resolve(self, auth_code: str) -> str | None:
        if not auth_code.startswith(DEV_PREFIX):
            return None
        user_id = auth_code[len(DEV_PREFIX) :]
        return user_id if is_id(user_id) else None


def build_identity_provider(settings: Settings) -> IdentityProvider:
    name = settings.identity.provider
    if name == "none":
        return NoIdentityProvider()
    if name == "dev":
        return DevIdentityProvider()
    module_name, _, class_name = name.partition(":")
    try:
        provider_class = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"identity.provider {name!r} cannot be loaded: {exc}") from exc
    return provider_class(settings)
