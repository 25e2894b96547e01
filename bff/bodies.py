"""What a request body may be: its declared media type, and JSON that is safe to load.

API.md: JSON in and out, UTF-8. A request that carries a body must say so with
``Content-Type: application/json`` (``charset=utf-8`` optional; no other
charset), or ``multipart/form-data`` where the route takes files; anything
else is 415 ``UNSUPPORTED_MEDIA_TYPE``, before the body is read. A request
without a body (no ``Content-Length`` or ``Content-Length: 0``) needs no type.

A JSON body is refused with 400 ``VALIDATION_FAILED`` when it is not UTF-8,
not JSON, nested deeper than :data:`MAX_DEPTH` arrays and objects, or holds
a lone surrogate (``"\\udc00"``: valid JSON, but not a Unicode string, so it
cannot be encoded, hashed, stored or echoed; a query string is checked for
them too, see :func:`query_of`). The checks cost nothing for
ordinary bodies: the parsed tree is walked only when the raw bytes hold more
than ``MAX_DEPTH`` brackets or an escaped surrogate.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from bff.errors import ApiError, validation_failed

# Deeper than any request of the API (a template is 3 levels) by far, shallow enough that
# nothing downstream (marshmallow, the request hash, the error reply) recurses far.
MAX_DEPTH = 64
JSON_TYPE = "application/json"
MULTIPART_TYPE = "multipart/form-data"
UTF8_CHARSETS = frozenset({"utf-8", "utf8"})

# An escaped surrogate, paired (an emoji sent as \ud83d\ude00 is fine) or not: a hint only.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# What orjson must not read: a surrogate escape (named below), or 19 digits in a row,
# since orjson reads integers beyond 64 bits as floats where the standard library keeps them.
_NOT_FOR_ORJSON = re.compile(rb"\\u[dD][89a-fA-F]|[0-9]{19}")
# One decoder: json.loads with an argument builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=lambda name: _refuse_constant(name))
NOT_UNICODE = "Must be valid Unicode text: a lone surrogate (\\ud800-\\udfff) is not."
TOO_DEEP = f"Must not nest arrays and objects more than {MAX_DEPTH} levels deep."


def unsupported_media_type(accepted: Iterable[str]) -> ApiError:
    accepted = list(accepted)
    return ApiError(
        HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
        "UNSUPPORTED_MEDIA_TYPE",
        f"send the body as {' or '.join(accepted)}",
        {"accepted": accepted},
    )


def is_json(request: web.BaseRequest) -> bool:
    if request.content_type != JSON_TYPE:
        return False
    charset = request.charset
    return charset is None or charset.lower() in UTF8_CHARSETS


def is_multipart(request: web.BaseRequest) -> bool:
    return request.content_type == MULTIPART_TYPE


def check_media_type(request: web.BaseRequest, *, multipart: bool, json_too: bool = True) -> None:
    """415 unless a body, if there is one, is JSON (or, with ``multipart``, a form)."""
    if not request.body_exists:
        return
    if json_too and is_json(request):
        return
    if multipart and is_multipart(request):
        return
    accepted = ([JSON_TYPE] if json_too else []) + ([MULTIPART_TYPE] if multipart else [])
    raise unsupported_media_type(accepted)


def parse_json(raw: bytes) -> Any:
    """``raw`` as JSON, or 400 naming what is wrong with it (never a 500).

    orjson reads the common body (shallow, no surrogate escape, no long number) ten
    times faster; it refuses what the standard library must name (a byte order mark,
    invalid UTF-8, NaN, bad syntax), and those go the standard way.
    """
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH and not _NOT_FOR_ORJSON.search(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return parse_json_standard(raw)


def parse_json_standard(raw: bytes) -> Any:
    """``parse_json`` with the standard library only: what orjson's answers must equal."""
    try:
        text = raw.decode("utf-8")  # strict: UTF-8-encoded surrogates are refused here too
    except UnicodeDecodeError as exc:
        raise validation_failed(
            {"_body": ["Must be UTF-8 text."]}, "request body is not UTF-8"
        ) from exc
    if text.startswith("\ufeff"):  # a byte order mark, as json.loads(bytes) allowed
        text = text[1:]
    try:
        data = _DECODER.decode(text)
    except RecursionError as exc:
        raise validation_failed({"_body": [TOO_DEEP]}, "request body nested too deeply") from exc
    except ValueError as exc:
        raise validation_failed({"_body": ["Malformed JSON."]}, "request body is not JSON") from exc
    deep = raw.count(b"[") + raw.count(b"{") > MAX_DEPTH
    if deep or _SURROGATE_ESCAPE.search(text):
        problem = _find_problem(data, 0, "")
        if problem is not None:
            field, message = problem
            summary = "request body nested too deeply" if message == TOO_DEEP else "invalid text"
            raise validation_failed({field or "_body": [message]}, summary)
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: Python's extension, not JSON


def _find_problem(value: Any, depth: int, path: str) -> tuple[str, str] | None:
    """The first (field, message) wrong in a parsed body: too deep, or a lone surrogate."""
    if isinstance(value, str):
        return (path, NOT_UNICODE) if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    if depth >= MAX_DEPTH:
        return ("_body", TOO_DEEP)
    for key, item in items:
        name = f"{path}.{_printable(key)}" if path else _printable(key)
        if isinstance(key, str) and _SURROGATE.search(key):
            return (name, NOT_UNICODE)
        problem = _find_problem(item, depth + 1, name)
        if problem is not None:
            return problem
    return None


def _printable(key: Any) -> str:
    """A key as a field name that can be written back (a lone surrogate becomes "?")."""
    return str(key).encode("utf-8", "replace").decode("utf-8")


def has_lone_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def query_of(request: web.BaseRequest) -> dict[str, str]:
    """The query string as a dict; 400 when it holds a lone surrogate.

    aiohttp's C parser refuses bytes that are not URL characters, and yarl decodes bad
    percent-escapes to U+FFFD; the pure-Python parser lets raw bytes through as lone
    surrogates (``surrogateescape``).
    """
    query = dict(request.query)
    for key, value in query.items():
        if _SURROGATE.search(key) or _SURROGATE.search(value):
            name = "_query" if _SURROGATE.search(key) else key
            raise validation_failed({name: [NOT_UNICODE]}, "invalid text")
    return query
