"""JWT auth exactly as API.md says, and the role and shop checks."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from http import HTTPStatus

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bff.app import create_app
from config.loader import JwtSettings
from tests.conftest import TEST_SECRET, expect

ADMIN = "/api/v1/shops/s1/admin/coupon-templates"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims(clock, **overrides):
    now = int(clock.now().timestamp())
    payload = {
        "sub": "m1",
        "role": "merchant",
        "shop": "s1",
        "iss": "coupon-bff",
        "iat": now,
        "exp": now + 600,
    }
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


async def test_valid_merchant_token_is_accepted(client, clock):
    token = jwt.encode(claims(clock), TEST_SECRET, algorithm="HS256")
    await expect(await client.get(ADMIN, headers=bearer(token)), HTTPStatus.OK)


async def test_a_token_seen_before_still_expires_by_the_app_clock(client, clock):
    """Decoded tokens are kept per process; their exp and nbf are checked on every use."""
    token = jwt.encode(claims(clock, exp=int(clock.now().timestamp()) + 60), TEST_SECRET)
    await expect(await client.get(ADMIN, headers=bearer(token)), HTTPStatus.OK)
    await expect(await client.get(ADMIN, headers=bearer(token)), HTTPStatus.OK)
    clock.advance(timedelta(seconds=60 + 31))  # past exp and the 30 s leeway
    response = await client.get(ADMIN, headers=bearer(token))
    body = await expect(response, HTTPStatus.UNAUTHORIZED, "UNAUTHENTICATED")
    assert "expired" in body["error"]["message"], body


async def test_a_token_not_valid_yet_becomes_valid_when_its_time_comes(client, clock):
    later = int(clock.now().timestamp()) + 120
    token = jwt.encode(claims(clock, nbf=later), TEST_SECRET)
    response = await client.get(ADMIN, headers=bearer(token))
    await expect(response, HTTPStatus.UNAUTHORIZED, "UNAUTHENTICATED")
    clock.advance(timedelta(seconds=120))
    await expect(await client.get(ADMIN, headers=bearer(token)), HTTPStatus.OK)


@pytest.mark.parametrize(
    "case",
    [
        "none_alg",
        "wrong_key",
        "expired",
        "wrong_issuer",
        "no_issuer",
        "no_exp",
        "no_sub",
        "padded_sub",
        "garbage",
        "unknown_role",
        "merchant_without_shop",
        "empty_bearer",
        "basic_scheme",
    ],
)
async def test_bad_tokens_are_401(client, clock, case):
    if case == "none_alg":
        header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        body = base64.urlsafe_b64encode(json.dumps(claims(clock)).encode())
        headers = bearer(header.decode().rstrip("=") + "." + body.decode().rstrip("=") + ".")
    elif case == "wrong_key":
        headers = bearer(jwt.encode(claims(clock), "another-secret-" * 4, algorithm="HS256"))
    elif case == "expired":
        past = int((clock.now() - timedelta(hours=1)).timestamp())
        headers = bearer(jwt.encode(claims(clock, exp=past), TEST_SECRET, algorithm="HS256"))
    elif case == "wrong_issuer":
        headers = bearer(jwt.encode(claims(clock, iss="evil"), TEST_SECRET, algorithm="HS256"))
    elif case == "no_issuer":
        payload = claims(clock)
        del payload["iss"]
        headers = bearer(jwt.encode(payload, TEST_SECRET, algorithm="HS256"))
    elif case == "no_exp":
        payload = claims(clock)
        del payload["exp"]
        headers = bearer(jwt.encode(payload, TEST_SECRET, algorithm="HS256"))
    elif case == "no_sub":
        payload = claims(clock)
        del payload["sub"]
        headers = bearer(jwt.encode(payload, TEST_SECRET, algorithm="HS256"))
    elif case == "padded_sub":
        # MariaDB's utf8mb4_bin compares "m1 " equal to "m1": never let such an id in.
        headers = bearer(jwt.encode(claims(clock, sub="m1 "), TEST_SECRET, algorithm="HS256"))
    elif case == "garbage":
        headers = bearer("not.a.token")
    elif case == "unknown_role":
        headers = bearer(jwt.encode(claims(clock, role="admin"), TEST_SECRET, algorithm="HS256"))
    elif case == "merchant_without_shop":
        payload = claims(clock)
        del payload["shop"]
        headers = bearer(jwt.encode(payload, TEST_SECRET, algorithm="HS256"))
    elif case == "empty_bearer":
        headers = {"Authorization": "Bearer "}
    else:
        headers = {"Authorization": "Basic bTE6cGFzcw=="}
    await expect(
        await client.get(ADMIN, headers=headers), HTTPStatus.UNAUTHORIZED, "UNAUTHENTICATED"
    )


async def test_missing_token_on_admin_is_401(client):
    await expect(await client.get(ADMIN), HTTPStatus.UNAUTHORIZED, "UNAUTHENTICATED")


async def test_token_without_role_is_a_user_token(client, clock):
    payload = claims(clock)
    del payload["role"], payload["shop"]
    token = jwt.encode(payload, TEST_SECRET, algorithm="HS256")
    await expect(await client.get(ADMIN, headers=bearer(token)), HTTPStatus.FORBIDDEN, "FORBIDDEN")


@pytest.mark.parametrize("role", ["user", "service"])
async def test_other_roles_on_admin_are_403(client, auth, role):
    headers = auth(role, shop="s1" if role == "service" else None)
    await expect(await client.get(ADMIN, headers=headers), HTTPStatus.FORBIDDEN, "FORBIDDEN")


async def test_merchant_of_another_shop_is_403(client, auth, clock):
    other = auth("merchant", shop="s2", sub="m2")
    await expect(await client.get(ADMIN, headers=other), HTTPStatus.FORBIDDEN, "FORBIDDEN")
    from tests.conftest import template_body

    response = await client.post(ADMIN, json=template_body(clock), headers=other)
    await expect(response, HTTPStatus.FORBIDDEN, "FORBIDDEN")


@pytest.fixture
def rsa_keys(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = tmp_path / "jwt.key"
    public = tmp_path / "jwt.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public.write_bytes(public_pem)
    return key, private, public, public_pem


async def test_rs256_option(aiohttp_client, settings, clock, tmp_path, rsa_keys):
    key, private, public, _ = rsa_keys
    rs_settings = settings.replace(
        jwt=JwtSettings(
            algorithm="RS256", public_key_file=str(public), private_key_file=str(private)
        )
    )
    client = await aiohttp_client(create_app(rs_settings, clock=clock, base_dir=tmp_path))
    good = jwt.encode(claims(clock), key, algorithm="RS256")
    await expect(await client.get(ADMIN, headers=bearer(good)), HTTPStatus.OK)
    # The algorithm is pinned: an HS256 token "signed" with the public key is refused.
    forged = jwt.encode(claims(clock), TEST_SECRET, algorithm="HS256")
    await expect(await client.get(ADMIN, headers=bearer(forged)), HTTPStatus.UNAUTHORIZED)
    # The session endpoint mints RS256 tokens with the private key.
    session = await expect(
        await client.post("/api/v1/session", json={"auth_code": "dev:u9"}), HTTPStatus.OK
    )
    assert jwt.get_unverified_header(session["token"])["alg"] == "RS256"


async def test_session_dev_provider(client, tokens):
    body = await expect(
        await client.post("/api/v1/session", json={"auth_code": "dev:u42"}), HTTPStatus.OK
    )
    assert body["user_id"] == "u42"
    decoded = tokens.decode(body["token"])
    assert decoded.sub == "u42" and decoded.role == "user"
    assert body["expires_at"].endswith("+00:00")


@pytest.mark.parametrize("code", ["u42", "dev:", "dev:bad id", "dev:" + "x" * 65])
async def test_session_refuses_bad_codes(client, code):
    response = await client.post("/api/v1/session", json={"auth_code": code})
    await expect(response, HTTPStatus.UNAUTHORIZED, "UNAUTHENTICATED")


async def test_session_off_without_provider(aiohttp_client, settings, clock, tmp_path):
    from config.loader import IdentitySettings

    app = create_app(
        settings.replace(identity=IdentitySettings(provider="none")), clock=clock, base_dir=tmp_path
    )
    client = await aiohttp_client(app)
    response = await client.post("/api/v1/session", json={"auth_code": "dev:u1"})
    await expect(response, HTTPStatus.NOT_FOUND, "NOT_FOUND")


async def test_session_validates_body(client):
    await expect(
        await client.post("/api/v1/session", json={}), HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED"
    )
