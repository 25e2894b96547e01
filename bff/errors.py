"""Domain errors and the one middleware that turns every failure into API.md's error shape.

``{"error": {"code": "SOLD_OUT", "message": "human text", "details": {}}}``

Services raise :class:`ApiError` (or one of the helpers below); aiohttp's own
HTTP exceptions (404, 405, 413) are reshaped here too; a database or Redis that
cannot be reached becomes 503 ``UNAVAILABLE`` with ``Retry-After``; anything
else is logged with the request id and answered as a plain 500.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

import redis.exceptions
import sqlalchemy.exc
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from bff import jsonutil
from bff.keys import SETTINGS

log = logging.getLogger("bff.errors")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error the caller should see, with its API.md code."""

    def __init__(
        self,
        status: HTTPStatus,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class Unavailable(Exception):
    """A dependency (database, Redis, risk service) cannot answer right now."""


def validation_failed(details: Mapping[str, Any], message: str = "invalid request") -> ApiError:
    return ApiError(HTTPStatus.BAD_REQUEST, "VALIDATION_FAILED", message, details)


def not_found(what: str = "resource") -> ApiError:
    return ApiError(HTTPStatus.NOT_FOUND, "NOT_FOUND", f"{what} not found")


def forbidden(message: str = "not allowed") -> ApiError:
    return ApiError(HTTPStatus.FORBIDDEN, "FORBIDDEN", message)


def unauthenticated(message: str) -> ApiError:
    return ApiError(HTTPStatus.UNAUTHORIZED, "UNAUTHENTICATED", message)


def conflict(code: str, message: str, details: Mapping[str, Any] | None = None) -> ApiError:
    return ApiError(HTTPStatus.CONFLICT, code, message, details)


def error_response(
    status: HTTPStatus | int,
    code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": dict(details or {})}}
    try:
        encoded = jsonutil.dumps(body)
    except UnicodeEncodeError:
        # Text that is not Unicode (a lone surrogate) in a message: escape it rather than
        # turn a refusal into a 500. Request bodies are checked before this (bff.bodies).
        encoded = json.dumps(body, ensure_ascii=True, separators=(",", ":")).encode()
    return web.Response(
        body=encoded,
        status=int(status),
        content_type="application/json",
        headers=headers,
    )


# aiohttp's own HTTP exceptions -> our codes.
_HTTP_CODES: dict[int, tuple[str, str]] = {
    HTTPStatus.NOT_FOUND: ("NOT_FOUND", "no such path"),
    HTTPStatus.METHOD_NOT_ALLOWED: ("METHOD_NOT_ALLOWED", "method not allowed on this path"),
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: ("PAYLOAD_TOO_LARGE", "request body too large"),
    HTTPStatus.BAD_REQUEST: ("VALIDATION_FAILED", "bad request"),
    HTTPStatus.REQUEST_URI_TOO_LONG: ("URI_TOO_LONG", "request URL too long"),
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: ("UNSUPPORTED_MEDIA_TYPE", "unsupported media type"),
    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE: ("HEADERS_TOO_LARGE", "request headers too large"),
}

UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    Unavailable,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DisconnectionError,
    sqlalchemy.exc.TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)


# MySQL client/server codes that mean "cannot reach or keep the server", not "bad SQL".
MYSQL_UNREACHABLE = frozenset({1040, 1053, 1205, 1213, 2002, 2003, 2005, 2006, 2013, 2055})
SQLITE_UNAVAILABLE = ("database is locked", "unable to open database", "disk i/o error")


def is_unavailable(exc: BaseException) -> bool:
    """True for failures that mean a dependency is down, not that the request is wrong.

    A schema or SQL error is a bug (500), even though drivers raise it as an
    OperationalError too.
    """
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sqlalchemy.exc.OperationalError):
        args = getattr(exc.orig, "args", ())
        if args and isinstance(args[0], int):
            return args[0] in MYSQL_UNREACHABLE
        text = str(exc.orig).lower()
        return any(fragment in text for fragment in SQLITE_UNAVAILABLE)
    return isinstance(exc, UNAVAILABLE_ERRORS)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
    except (HttpProcessingError, RequestPayloadError) as exc:
        # The body could not be read as HTTP (a broken chunked encoding, say, or a body
        # that does not decode as its Content-Encoding): the request is malformed.
        # aiohttp's message may quote the request: not echoed.
        log.info("malformed request body: %s", type(exc).__name__)
        return error_response(
            HTTPStatus.BAD_REQUEST,
            "VALIDATION_FAILED",
            "malformed request",
            {"_body": ["Malformed HTTP message."]},
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, message = _HTTP_CODES.get(exc.status, ("HTTP_ERROR", exc.reason))
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return error_response(exc.status, code, message, headers=headers)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if is_unavailable(exc):
            retry_after = str(request.app[SETTINGS].http.retry_after_seconds)
            log.warning(
                "dependency unavailable: %s: %s",
                type(exc).__name__,
                _first_line(exc),
            )
            return error_response(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "a dependency is unavailable, try again shortly",
                headers={"Retry-After": retry_after},
            )
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, "INTERNAL", "internal error")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""
