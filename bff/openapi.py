"""The OpenAPI document, generated from the endpoint registry and its marshmallow schemas."""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import fields

from bff import jsonutil
from bff.bodies import MAX_DEPTH
from bff.openapi_examples import FLOWS, REPLY_EXAMPLES, REQUEST_EXAMPLES
from bff.protocol import MAX_HEADER_BYTES, MAX_HEADERS, MAX_URL_BYTES
from bff.routing import Endpoint
from bff.schemas import Bool, Discriminated, ErrorReply, Int

DESCRIPTION = """Coupon backend-for-frontend for mini-program storefronts.

Auth: `Authorization: Bearer <JWT>` (HS256 by default). Claims: `sub`, `role`
(`user` | `merchant` | `service`), `shop` (merchant and service), `exp`, `iss`.

Errors always have the shape
```
{"error": {"code": "SOLD_OUT", "message": "human text", "details": {}}}
```
Money is in integer cents; times are ISO-8601 with an offset.
"""

# What bff.bodies and bff.protocol refuse before any operation runs.
LIMITS = f"""A request body is `application/json` (UTF-8; `charset=utf-8` optional), or
`multipart/form-data` where an operation takes files; anything else is 415
`UNSUPPORTED_MEDIA_TYPE`. JSON nested more than {MAX_DEPTH} levels, or holding a lone
surrogate (`"\\udc00"`), is 400 `VALIDATION_FAILED`. A request URL over {MAX_URL_BYTES}
bytes is 414 `URI_TOO_LONG`; a header over {MAX_HEADER_BYTES} bytes, or more than
{MAX_HEADERS} headers, 431 `HEADERS_TOO_LARGE`; neither echoes the request.
"""

_ERROR_TEXT = {
    HTTPStatus.BAD_REQUEST: "VALIDATION_FAILED (details: field -> messages) or another 400 code",
    HTTPStatus.UNAUTHORIZED: "UNAUTHENTICATED",
    HTTPStatus.FORBIDDEN: "FORBIDDEN (wrong role or shop)",
    HTTPStatus.NOT_FOUND: "NOT_FOUND",
    HTTPStatus.CONFLICT: "a business rule refused the request (see the code)",
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "PAYLOAD_TOO_LARGE",
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: "UNSUPPORTED_MEDIA_TYPE (a body that is not "
    "application/json, or multipart/form-data where the operation takes files)",
    HTTPStatus.TOO_MANY_REQUESTS: "RATE_LIMITED (with Retry-After)",
    HTTPStatus.SERVICE_UNAVAILABLE: "UNAVAILABLE (a dependency is down; with Retry-After)",
}


def _discriminated_properties(
    plugin: MarshmallowPlugin, field: fields.Field, **_: Any
) -> dict[str, Any]:
    if not isinstance(field, Discriminated):
        return {}
    refs = []
    for kind, schema in field.schemas.items():
        name = f"{schema.__name__.removesuffix('Schema')}"
        if name not in plugin.spec.components.schemas:
            plugin.spec.components.schema(name, schema=schema)
            plugin.spec.components.schemas[name].setdefault("properties", {})["type"] = {
                "type": "string",
                "enum": [kind],
            }
            plugin.spec.components.schemas[name].setdefault("required", []).insert(0, "type")
        refs.append({"$ref": f"#/components/schemas/{name}"})
    return {"oneOf": refs, "discriminator": {"propertyName": "type"}}


def build_openapi(endpoints: list[Endpoint], version: str = "0.1.0") -> dict[str, Any]:
    plugin = MarshmallowPlugin(schema_name_resolver=lambda schema: _schema_name(schema))
    spec = APISpec(
        title="Coupon BFF",
        version=version,
        openapi_version="3.0.2",
        plugins=[plugin],
        info={"description": DESCRIPTION + "\n" + LIMITS + "\n" + FLOWS},
    )
    if plugin.converter is None:  # set by APISpec.__init__; a plugin change would break here
        raise RuntimeError("apispec MarshmallowPlugin has no converter")
    plugin.converter.field_mapping[Int] = ("integer", None)
    plugin.converter.field_mapping[Bool] = ("boolean", None)
    plugin.converter.add_attribute_function(
        lambda self, field, **kw: _discriminated_properties(plugin, field, **kw)
    )
    spec.components.security_scheme(
        "bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )
    spec.components.schema("Error", schema=ErrorReply)
    for endpoint in endpoints:
        spec.path(
            path=endpoint.openapi_path, operations={endpoint.method.lower(): _operation(endpoint)}
        )
    return spec.to_dict()


def render_openapi(endpoints: list[Endpoint]) -> bytes:
    return jsonutil.dumps(build_openapi(endpoints))


def _schema_name(schema: Any) -> str:
    cls = schema if isinstance(schema, type) else type(schema)
    name = cls.__name__.removesuffix("Schema")
    modifiers = []
    if not isinstance(schema, type):
        if schema.only:
            modifiers.append("Only" + "".join(sorted(schema.only)))
        if schema.exclude:
            modifiers.append("Ex" + "".join(sorted(schema.exclude)))
        if schema.partial:
            modifiers.append("Partial")
    return name + "".join(modifiers)


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": endpoint.summary,
        "operationId": endpoint.handler.__name__,
        "tags": list(endpoint.tags),
        "responses": {},
    }
    if endpoint.description:
        operation["description"] = endpoint.description
    if not endpoint.auth.public:
        roles = ", ".join(sorted(str(role) for role in endpoint.auth.roles))
        note = f"Roles: {roles}" + (" (or anonymous)" if endpoint.auth.anonymous else "")
        operation["description"] = (operation.get("description", "") + "\n\n" + note).strip()
        operation["security"] = [{"bearer": []}] + ([{}] if endpoint.auth.anonymous else [])
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", endpoint.openapi_path)
    ]
    if endpoint.query is not None:
        parameters.append({"in": "query", "schema": endpoint.query})
    if parameters:
        operation["parameters"] = parameters
    if endpoint.body is not None:
        media = "multipart/form-data" if endpoint.multipart else "application/json"
        content: dict[str, Any] = {"schema": endpoint.body}
        example = endpoint.example or REQUEST_EXAMPLES.get(endpoint.handler.__name__)
        if example is not None:
            content["example"] = example
        operation["requestBody"] = {"required": True, "content": {media: content}}
    ok: dict[str, Any] = {"description": HTTPStatus(endpoint.status).phrase}
    if endpoint.reply is not None:
        ok["content"] = {"application/json": {"schema": endpoint.reply}}
        if endpoint.handler.__name__ in REPLY_EXAMPLES:
            ok["content"]["application/json"]["example"] = REPLY_EXAMPLES[endpoint.handler.__name__]
    operation["responses"][str(int(endpoint.status))] = ok
    statuses = set(endpoint.errors) | {HTTPStatus.SERVICE_UNAVAILABLE}
    if endpoint.body is not None or endpoint.query is not None:
        statuses.add(HTTPStatus.BAD_REQUEST)
    if endpoint.body is not None or endpoint.method != "GET":
        statuses.add(HTTPStatus.UNSUPPORTED_MEDIA_TYPE)  # bff.bodies
    if not endpoint.auth.public:
        statuses |= {HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN}
    for status in sorted(statuses):
        operation["responses"][str(int(status))] = {
            "description": _ERROR_TEXT.get(status, status.phrase),
            "content": {"application/json": {"schema": "Error"}},
        }
    return operation
