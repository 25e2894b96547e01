"""JWT auth: tokens are decoded once, in the middleware; handlers read ``request[CLAIMS]``.

HS256 with the configured secret by default, RS256 with a public key as an
option. The algorithm is pinned (``alg: none`` or an HS/RS swap is refused),
``exp``, ``sub`` and ``iss`` are required, and ``iss`` must equal the
configured issuer. A token without ``role`` is a user token; merchant and
service tokens must name their ``shop``. ``sub`` and ``shop`` are ids of the
one pattern every path id has (``bff.schemas.ID_PATTERN``): a user whose id no
path can spell (``PUT /admin/members/{user_id}``) could hold coupons that no
merchant can address, so such a token is 401, and ``mint`` never signs one.

A session sends the same token with every request, and PyJWT's decode (key
preparation, HMAC or RSA check, JSON) costs about a tenth of a claim. So
tokens that decoded cleanly are kept per process (at most ``TOKEN_CACHE_SIZE``,
oldest dropped first) with their claims; ``exp`` and ``nbf`` are still checked
against the app's clock on every request. Only valid tokens are kept, so a
flood of forged ones cannot push the real ones out faster than they come in.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web

from bff.clock import Clock
from bff.errors import unauthenticated
from bff.keys import CLAIMS, TOKENS
from bff.schemas import ID_PATTERN
from config.loader import JwtSettings

# fullmatch, not match with "$": "$" also matches before a trailing newline.
ID = re.compile(ID_PATTERN)
TOKEN_CACHE_SIZE = 50_000


class Role(enum.StrEnum):
    USER = "user"
    MERCHANT = "merchant"
    SERVICE = "service"


@dataclass(frozen=True, slots=True)
class Claims:
    sub: str
    role: Role
    shop: str | None
    exp: int


class TokenCodec:
    """Decodes (and, where a signing key is configured, mints) the API's tokens."""

    def __init__(self, settings: JwtSettings, clock: Clock) -> None:
        self.algorithm = settings.algorithm
        self.issuer = settings.issuer
        self.ttl = settings.token_ttl_seconds
        self.leeway = settings.leeway_seconds
        self.clock = clock
        # token -> (claims, exp, nbf or None); see the module doc
        self._decoded: dict[str, tuple[Claims, float, float | None]] = {}
        self._verify_key: Any
        self._signing_key: Any
        if self.algorithm == "HS256":
            self._verify_key = self._signing_key = settings.secret
        else:
            self._verify_key = Path(settings.public_key_file).read_text()
            self._signing_key = (
                Path(settings.private_key_file).read_text() if settings.private_key_file else None
            )

    @property
    def can_mint(self) -> bool:
        return self._signing_key is not None

    def decode(self, token: str) -> Claims:
        known = self._decoded.get(token)
        if known is None:
            known = self._verify(token)
            if len(self._decoded) >= TOKEN_CACHE_SIZE:
                del self._decoded[next(iter(self._decoded))]
            self._decoded[token] = known
        claims, exp, nbf = known
        now = self.clock.now().timestamp()
        if exp + self.leeway < now:
            raise unauthenticated("token expired")
        if nbf is not None and nbf - self.leeway > now:
            raise unauthenticated("token not valid yet")
        return claims

    def _verify(self, token: str) -> tuple[Claims, float, float | None]:
        """Signature, issuer and the claims' shapes (time is checked by ``decode``)."""
        try:
            payload = jwt.decode(
                token,
                self._verify_key,
                algorithms=[self.algorithm],
                issuer=self.issuer,
                leeway=self.leeway,
                # exp and nbf are checked below against the app's clock, so time can move in tests.
                options={
                    "require": ["exp", "sub", "iss"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.ExpiredSignatureError as exc:
            raise unauthenticated("token expired") from exc
        except jwt.InvalidIssuerError as exc:
            raise unauthenticated("token issuer not accepted") from exc
        except jwt.InvalidSignatureError as exc:
            raise unauthenticated("token signature invalid") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise unauthenticated(f"token lacks the {exc.claim} claim") from exc
        except jwt.InvalidTokenError as exc:
            raise unauthenticated("token malformed or not accepted") from exc
        exp = payload["exp"]
        if isinstance(exp, bool) or not isinstance(exp, (int, float)):
            raise unauthenticated("token exp must be a number")
        nbf = payload.get("nbf")
        if not isinstance(nbf, (int, float)) or isinstance(nbf, bool):
            nbf = None
        return _claims_from(payload), float(exp), nbf

    def mint(
        self, sub: str, role: Role = Role.USER, shop: str | None = None
    ) -> tuple[str, datetime]:
        if not self.can_mint:
            raise RuntimeError("no signing key configured (jwt.private_key_file)")
        if not is_id(sub) or (shop is not None and not is_id(shop)):
            raise ValueError(f"sub and shop must be ids ({ID_PATTERN}), got {sub!r}, {shop!r}")
        now = self.clock.now()
        expires_at = now + timedelta(seconds=self.ttl)
        payload: dict[str, Any] = {
            "sub": sub,
            "role": str(role),
            "iss": self.issuer,
            "iat": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
        }
        if shop is not None:
            payload["shop"] = shop
        return jwt.encode(payload, self._signing_key, algorithm=self.algorithm), expires_at


def is_id(value: Any) -> bool:
    """A user or shop id as paths spell them: 1-64 of ``A-Z a-z 0-9 _ -``.

    Spaces are outside it too: MariaDB's utf8mb4_bin compares "u1 " equal to "u1",
    so such an id could reach another user's rows.
    """
    return isinstance(value, str) and ID.fullmatch(value) is not None


def _claims_from(payload: dict[str, Any]) -> Claims:
    sub = payload.get("sub")
    if not is_id(sub):
        raise unauthenticated("token sub must be an id: 1-64 of A-Z a-z 0-9 _ -")
    raw_role = payload.get("role", "user")
    try:
        role = Role(raw_role)
    except ValueError as exc:
        raise unauthenticated("token role unknown") from exc
    shop = payload.get("shop")
    if shop is not None and not is_id(shop):
        raise unauthenticated("token shop must be an id: 1-64 of A-Z a-z 0-9 _ -")
    if role in (Role.MERCHANT, Role.SERVICE) and shop is None:
        raise unauthenticated(f"a {role} token must name its shop")
    return Claims(sub=sub, role=role, shop=shop, exp=int(payload["exp"]))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Puts the caller's claims (or None) on the request; a bad token is 401 on any path."""
    header = request.headers.get("Authorization")
    if header is None:
        request[CLAIMS] = None
        return await handler(request)
    scheme, _, token = header.partition(" ")
    # A JWT is ASCII; other bytes arrive as lone surrogates that no codec could encode.
    if scheme.lower() != "bearer" or not token.strip() or not token.isascii():
        raise unauthenticated("Authorization must be 'Bearer <token>'")
    request[CLAIMS] = request.app[TOKENS].decode(token.strip())
    return await handler(request)
