"""Reading multipart uploads with the same size limit as JSON bodies."""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from bff.bodies import MULTIPART_TYPE, has_lone_surrogate, is_multipart, unsupported_media_type
from bff.errors import ApiError, validation_failed
from bff.keys import SETTINGS

CHUNK = 65536


def too_large() -> ApiError:
    return ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "PAYLOAD_TOO_LARGE", "upload too large")


async def read_form(
    request: web.Request, file_field: str = "file"
) -> tuple[str | None, dict[str, str]]:
    """The uploaded file's text and the other form fields; 413 past the body limit, 415
    unless the body is ``multipart/form-data``, 400 when it is not a well-formed one."""
    limit = request.app[SETTINGS].server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise too_large()
    if not is_multipart(request):
        raise unsupported_media_type([MULTIPART_TYPE])
    try:
        return await _read_parts(request, file_field, limit)
    except (ValueError, AssertionError, HttpProcessingError) as exc:
        # No or a bad boundary, a body cut short, parts without the boundary announced:
        # aiohttp's reader raises ValueError (or BadHttpMessage for a part's headers).
        # Nothing of the body is echoed back.
        raise validation_failed(
            {file_field: ["Malformed multipart/form-data body."]}, "malformed upload"
        ) from exc


async def _read_parts(
    request: web.Request, file_field: str, limit: int
) -> tuple[str | None, dict[str, str]]:
    reader = await request.multipart()
    text: str | None = None
    fields: dict[str, str] = {}
    total = 0
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        # A name that is not text (raw bytes arrive as lone surrogates) names no field of ours.
        name = part.name if part.name and not has_lone_surrogate(part.name) else None
        data = bytearray()
        while chunk := await part.read_chunk(CHUNK):
            total += len(chunk)
            if total > limit:
                raise too_large()
            data.extend(chunk)
        try:
            value = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise validation_failed({name or file_field: ["Must be UTF-8 text."]}) from exc
        if name == file_field:
            text = value
        elif name:
            fields[name] = value
    return text, fields
