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

A token seen for the first time (every request of a flash sale's new shoppers)
still paid PyJWT's ~70 µs, an eighth of a claim. An HS256 token of the plain shape
this service mints (header ``alg``/``typ`` only, no ``aud`` or ``crit``, only the
claims listed in ``_PLAIN_CLAIMS``) is checked by ``_plain_hs256`` in ~10 µs:
strict base64url, HMAC-SHA256 compared in constant time, the same required claims
and issuer. Everything else, including every token that fails there, goes through
PyJWT, which then decides and names the error: the fast check only accepts what
PyJWT accepts (tests/test_auth_fast_path.py checks that property).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import orjson
from aiohttp import web

from bff.clock import Clock
from bff.errors import unauthenticated
from bff.keys import CLAIMS, TOKENS
from bff.schemas import ID_PATTERN
from config.loader import JwtSettings

# fullmatch, not match with "$": "$" also matches before a trailing newline.
ID = re.compile(ID_PATTERN)
TOKEN_CACHE_SIZE = 50_000
# What _plain_hs256 takes; any other header or claim goes through PyJWT.
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_PLAIN_CLAIMS = frozenset({"sub", "role", "shop", "iss", "iat", "exp", "nbf", "jti"})
_PLAIN_TYPES = (None, "JWT")


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
        self._hmac_key: bytes | None = None
        if self.algorithm == "HS256":
            self._verify_key = self._signing_key = settings.secret
            self._hmac_key = settings.secret.encode()
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
        payload = self._plain_hs256(token)
        if payload is None:
            payload = self._pyjwt(token)
        exp = payload["exp"]
        if isinstance(exp, bool) or not isinstance(exp, (int, float)):
            raise unauthenticated("token exp must be a number")
        nbf = payload.get("nbf")
        if not isinstance(nbf, (int, float)) or isinstance(nbf, bool):
            nbf = None
        return _claims_from(payload), float(exp), nbf

    def _plain_hs256(self, token: str) -> dict[str, Any] | None:
        """The payload of a valid plain HS256 token, or None: PyJWT decides (module doc)."""
        key = self._hmac_key
        if key is None:
            return None
        parts = token.split(".")
        if len(parts) != 3 or not all(_B64URL.fullmatch(part) for part in parts):
            return None
        try:
            header = orjson.loads(_b64url(parts[0]))
            if (
                type(header) is not dict
                or header.get("alg") != "HS256"
                or header.keys() - {"alg", "typ"}
                or header.get("typ") not in _PLAIN_TYPES
            ):
                return None
            signature = _b64url(parts[2])
            signed = hmac.new(key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(signature, signed):
                return None
            payload = orjson.loads(_b64url(parts[1]))
        except (binascii.Error, orjson.JSONDecodeError, ValueError):
            return None
        if (
            type(payload) is not dict
            or payload.keys() - _PLAIN_CLAIMS
            or type(payload.get("exp")) not in (int, float)
            or type(payload.get("sub")) is not str
            or payload.get("iss") != self.issuer
            or type(payload.get("iat", 0)) is not int
            or type(payload.get("jti", "")) is not str
        ):
            return None
        return payload

    def _pyjwt(self, token: str) -> dict[str, Any]:
        try:
            return jwt.decode(
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


def _b64url(segment: str) -> bytes:
    """Strict base64url (the caller checked the alphabet); binascii.Error if malformed."""
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


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
