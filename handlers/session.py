"""POST /api/v1/session: trade a mini-program login code for a token."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from marshmallow import Schema, fields, validate

from bff.auth import is_id
from bff.errors import ApiError, unauthenticated
from bff.keys import IDENTITY, TOKENS
from bff.routing import API_PREFIX, PUBLIC, Call, Routes

log = logging.getLogger("bff.session")
routes = Routes(prefix=API_PREFIX, tag="session")


class SessionInSchema(Schema):
    auth_code = fields.String(required=True, validate=validate.Length(min=1, max=512))


class SessionOutSchema(Schema):
    token = fields.String(required=True)
    expires_at = fields.AwareDateTime(required=True)
    user_id = fields.String(required=True)


@routes.post(
    "/session",
    auth=PUBLIC,
    body=SessionInSchema,
    reply=SessionOutSchema,
    errors=(HTTPStatus.UNAUTHORIZED, HTTPStatus.NOT_FOUND),
    example={"auth_code": "dev:u1"},
    description="The development provider (off unless configured) accepts dev:<user_id>.",
)
async def create_session(call: Call) -> dict[str, Any]:
    """Log a shopper in with a mini-program auth code."""
    provider = call.app[IDENTITY]
    if not provider.enabled:
        raise ApiError(HTTPStatus.NOT_FOUND, "NOT_FOUND", "no identity provider is configured")
    user_id = await provider.resolve(call.body["auth_code"])
    if user_id is None:
        raise unauthenticated("auth code not accepted")
    if not is_id(user_id):
        # A plugged-in provider answered an id no path can spell: never sign it (a user no
        # merchant endpoint could address). The operator's mapping needs fixing, so say so.
        log.warning("identity provider returned a user id outside the id pattern")
        raise unauthenticated("the identity provider's user id is not a usable id")
    token, expires_at = call.app[TOKENS].mint(user_id)
    return {"token": token, "expires_at": expires_at, "user_id": user_id}
