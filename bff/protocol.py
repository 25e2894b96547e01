"""Requests aiohttp refuses before the app sees them, answered in API.md's error shape.

aiohttp's HTTP parser refuses a request line or header over its limits, too many
headers, or bytes that are not HTTP, before any middleware runs, and answers
``400 text/plain`` with its parser's message, which quotes the start of the
offending line (the start of a bearer token, say). Here those answers become:

* 414 ``URI_TOO_LONG``: the request URL is over :data:`MAX_URL_BYTES`;
* 431 ``HEADERS_TOO_LARGE``: a header (name and value) over :data:`MAX_HEADER_BYTES`,
  or more than :data:`MAX_HEADERS` headers;
* 400 ``VALIDATION_FAILED``: anything else that is not a well-formed request;

with nothing of the request echoed, in the response or the log. aiohttp offers
no setting for this (aio-libs/aiohttp#3287), so :func:`install` makes its server
build connections with :class:`ApiRequestHandler`, a subclass that overrides
``handle_error``; every aiohttp server in the process gets it. The limits reach
the parser through the application's ``handler_args`` (:data:`HANDLER_ARGS`).
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

from aiohttp import web_protocol, web_server
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from bff.errors import error_response

log = logging.getLogger("bff.protocol")

# Two different numbers on purpose: aiohttp's LineTooLong carries the limit it hit, and
# the C parser checks the URL against max_line_size and each header against
# max_field_size, so the limit tells a long URL (414) from a long header (431).
MAX_URL_BYTES = 8190  # aiohttp's default
MAX_HEADER_BYTES = 8192
MAX_HEADERS = 128  # aiohttp's default
HANDLER_ARGS = {
    "max_line_size": MAX_URL_BYTES,
    "max_field_size": MAX_HEADER_BYTES,
    "max_headers": MAX_HEADERS,
}

# What a request line or target starts with: "GET " (the pure-Python parser reports the
# whole request line), "/" or "*" or "scheme://" (the C parser reports the URL alone).
_REQUEST_TARGET = re.compile(rb"^(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+ |/|\*|[A-Za-z][A-Za-z0-9+.-]*://)")


def classify(exc: BaseException | None, max_line_size: int, max_field_size: int) -> HTTPStatus:
    """The status for a request the parser refused."""
    if isinstance(exc, LineTooLong):
        line = exc.args[0] if exc.args else b""
        limit = exc.args[1] if len(exc.args) > 1 else None
        if limit == max_field_size and max_field_size != max_line_size:
            return HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
        if isinstance(line, (bytes, bytearray)) and _REQUEST_TARGET.match(bytes(line)):
            return HTTPStatus.REQUEST_URI_TOO_LONG
        return HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
    if isinstance(exc, BadHttpMessage) and "too many headers" in str(exc).lower():
        return HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
    return HTTPStatus.BAD_REQUEST


_ANSWERS = {
    HTTPStatus.REQUEST_URI_TOO_LONG: (
        "URI_TOO_LONG",
        f"the request URL is longer than {MAX_URL_BYTES} bytes",
    ),
    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE: (
        "HEADERS_TOO_LARGE",
        f"a request header is longer than {MAX_HEADER_BYTES} bytes, "
        f"or there are more than {MAX_HEADERS}",
    ),
    HTTPStatus.BAD_REQUEST: ("VALIDATION_FAILED", "malformed HTTP request"),
}


class ApiRequestHandler(web_protocol.RequestHandler):
    """aiohttp's connection handler, with its parser's refusals in the API's shape."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> StreamResponse:
        if status >= 500:
            # A failure outside the app's middlewares (they answer their own 500s).
            self.log_exception("Error handling request", exc_info=exc)
            code, text, details = "INTERNAL", "internal error", {}
        else:
            status = classify(exc, self.max_line_size, self.max_field_size)
            code, text = _ANSWERS.get(HTTPStatus(status), _ANSWERS[HTTPStatus.BAD_REQUEST])
            details = {"_request": [text]} if code == "VALIDATION_FAILED" else {}
            # The exception's text quotes the request: log its kind only.
            log.info("refused a request the parser could not take: %s", type(exc).__name__)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started, cannot send an error")
        response = error_response(status, code, text, details)
        response.force_close()
        return response


def install() -> None:
    """Make aiohttp's servers in this process use :class:`ApiRequestHandler` (idempotent)."""
    current: Any = web_server.RequestHandler
    if current is not ApiRequestHandler:
        web_server.RequestHandler = ApiRequestHandler  # type: ignore[misc]
