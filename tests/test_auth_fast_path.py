"""The plain-HS256 fast check accepts only what PyJWT accepts, with the same payload.

``TokenCodec._plain_hs256`` skips PyJWT for the tokens this service mints (see
bff/auth.py). The property: whatever the token (valid, tampered, other headers,
other claims, another key, broken base64 or JSON), when the fast check returns a
payload, PyJWT with the codec's options returns the same one; and the tokens the
app mints do take the fast path (else the property would hold vacuously).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bff.auth import Role, TokenCodec
from bff.clock import SystemClock
from bff.errors import ApiError
from config.loader import JwtSettings

SECRET = "fast-path-test-secret-0123456789abcdef"
CODEC = TokenCodec(JwtSettings(secret=SECRET), SystemClock())


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def pyjwt_payload(token: str):
    try:
        return CODEC._pyjwt(token)
    except ApiError:
        return None


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=8),
)
claim_names = st.sampled_from(
    ["sub", "role", "shop", "iss", "iat", "exp", "nbf", "jti", "aud", "kid", "x"]
)
claim_values = st.one_of(
    json_scalars,
    st.sampled_from(["coupon-bff", "u1", "user", "merchant", "s1", 1_900_000_000]),
    st.lists(st.text(max_size=3), max_size=2),
)
headers = st.one_of(
    st.just({"alg": "HS256", "typ": "JWT"}),
    st.just({"alg": "HS256"}),
    st.dictionaries(
        st.sampled_from(["alg", "typ", "kid", "crit", "b64", "cty"]),
        st.one_of(st.sampled_from(["HS256", "HS384", "none", "RS256", "JWT", "jwt"]), json_scalars),
        max_size=4,
    ),
)


@st.composite
def tokens(draw):
    header = draw(headers)
    payload = {"sub": "u1", "iss": "coupon-bff", "exp": 1_900_000_000}
    payload.update(draw(st.dictionaries(claim_names, claim_values, max_size=5)))
    for name in draw(st.lists(claim_names, max_size=2)):
        payload.pop(name, None)
    raw_header = json.dumps(header).encode()
    raw_payload = draw(
        st.one_of(
            st.just(json.dumps(payload).encode()),
            st.binary(max_size=12),  # not JSON, or JSON that is no object
            st.sampled_from([b"[]", b"1", b'"x"', b'{"exp": NaN, "sub": "u1"}']),
        )
    )
    head, body = b64(raw_header), b64(raw_payload)
    key = draw(st.sampled_from([SECRET, SECRET + "x", ""])).encode()
    signature = b64(hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest())
    token = f"{head}.{body}.{signature}"
    mangle = draw(st.sampled_from(["none", "none", "char", "pad", "cut", "extra"]))
    if mangle == "char":
        index = draw(st.integers(min_value=0, max_value=len(token) - 1))
        token = token[:index] + draw(st.sampled_from("A_-=+/.!é")) + token[index + 1 :]
    elif mangle == "pad":
        token += "=="
    elif mangle == "cut":
        token = token[: draw(st.integers(min_value=0, max_value=len(token)))]
    elif mangle == "extra":
        token += ".AAAA"
    return token


@settings(max_examples=3000, deadline=None)
@given(tokens())
def test_fast_check_accepts_only_what_pyjwt_accepts(token):
    fast = CODEC._plain_hs256(token)
    if fast is not None:
        assert pyjwt_payload(token) == fast


@pytest.mark.parametrize("role, shop", [(Role.USER, None), (Role.MERCHANT, "s1")])
def test_minted_tokens_take_the_fast_path(role, shop):
    token, _ = CODEC.mint("u1", role, shop)
    fast = CODEC._plain_hs256(token)
    assert fast is not None and fast == jwt.decode(
        token, SECRET, algorithms=["HS256"], options={"verify_exp": False}
    )


def test_wrong_key_and_alg_none_fall_through_to_pyjwt_errors():
    other = TokenCodec(JwtSettings(secret="another-secret-0123456789abcdef00"), SystemClock())
    token, _ = other.mint("u1")
    assert CODEC._plain_hs256(token) is None
    with pytest.raises(ApiError) as caught:
        CODEC.decode(token)
    assert "signature" in str(caught.value.message)
    unsigned = jwt.encode({"sub": "u1", "iss": "coupon-bff", "exp": 1_900_000_000}, None, "none")
    assert CODEC._plain_hs256(unsigned) is None
    with pytest.raises(ApiError):
        CODEC.decode(unsigned)
