"""Reading multipart uploads with the same size limit as JSON bodies."""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import BodyPartReader, web

from bff.errors import ApiError, validation_failed
from bff.keys import SETTINGS

CHUNK = 65536


def too_large() -> ApiError:
    return ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "PAYLOAD_TOO_LARGE", "upload too large")


async def read_form(
    request: web.Request, file_field: str = "file"
) -> tuple[str | None, dict[str, str]]:
    """The uploaded file's text and the other form fields; 413 past the body limit."""
    limit = request.app[SETTINGS].server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise too_large()
    if not request.content_type.startswith("multipart/"):
        raise validation_failed({file_field: ["Send multipart/form-data with a file field."]})
    reader = await request.multipart()
    text: str | None = None
    fields: dict[str, str] = {}
    total = 0
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        data = bytearray()
        while chunk := await part.read_chunk(CHUNK):
            total += len(chunk)
            if total > limit:
                raise too_large()
            data.extend(chunk)
        try:
            value = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise validation_failed({part.name or file_field: ["Must be UTF-8 text."]}) from exc
        if part.name == file_field:
            text = value
        elif part.name:
            fields[part.name] = value
    return text, fields
