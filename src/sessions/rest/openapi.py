"""The OpenAPI 3.1 document of the REST face, generated from the descriptors.

Paths and operations come from the routes (``google.api.http``), schemas
from the messages by the protobuf JSON mapping (lowerCamelCase names, enums
by name, 64-bit integers as strings or numbers, Timestamp as RFC 3339, Any
with ``@type``), constraints from the public validation options
(``yandex.cloud.required``, ``length``, ``size``, ``value``), the metadata
and response types of an Operation from ``yandex.cloud.api.operation``.
Every error is a ``google.rpc.Status``.
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

import sessions
from sessions.api.identity import MAX_IDEMPOTENCY_KEY
from sessions.generated.yandex.cloud import validation_pb2
from sessions.rest.routes import Route

STATUS = "google.rpc.Status"
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Any": {
        "type": "object",
        "description": "A message of the type that @type names, its fields beside @type.",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
}
_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED64,
}
_INT32 = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_FIXED32,
}
_RANGE = re.compile(r"^\s*(?:(<=|>=|<|>)\s*(-?\d+)|(-?\d+)\s*-\s*(-?\d+))\s*$")


def _option(options: Any, name: str) -> Any:
    """A validation option's value (its default when unset)."""
    return options.Extensions[getattr(validation_pb2, name)]


def _bounds(spec: str) -> tuple[int | None, int | None]:
    """A validation range ("<=50", "1-3", ">0") as inclusive (low, high)."""
    found = _RANGE.match(spec)
    if found is None:
        return None, None
    operator, number, low, high = found.groups()
    if operator is None:
        return int(low), int(high)
    n = int(number)
    return {"<=": (None, n), "<": (None, n - 1), ">=": (n, None), ">": (n + 1, None)}[operator]


class _Schemas:
    def __init__(self) -> None:
        self.components: dict[str, dict[str, Any]] = {}

    def ref(self, descriptor: Descriptor) -> dict[str, Any]:
        name = descriptor.full_name
        if name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[name])
        if name not in self.components:
            self.components[name] = {}  # placeholder: recursion ends here
            self.components[name] = self.message(descriptor)
        return {"$ref": f"#/components/schemas/{name}"}

    def message(self, descriptor: Descriptor, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        required: list[str] = []
        for field in descriptor.fields:
            if field.name in exclude:
                continue
            properties[field.json_name] = self.field(field)
            if _option(field.GetOptions(), "required"):
                required.append(field.json_name)
        schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
        if required:
            schema["required"] = required
        return schema

    def field(self, field: FieldDescriptor) -> dict[str, Any]:
        options = field.GetOptions()
        item = self.value(field)
        if field.type == FieldDescriptor.TYPE_STRING:
            low, high = _bounds(_option(options, "length"))
            if _option(options, "required"):
                low = max(low or 0, 1)
            if low:
                item["minLength"] = low
            if high is not None:
                item["maxLength"] = high
        low, high = _bounds(_option(options, "value"))
        if low is not None:
            item["minimum"] = low
        if high is not None:
            item["maximum"] = high
        if field.enum_type is not None and _option(options, "required"):
            item["not"] = {"const": field.enum_type.values[0].name}
        if not field.is_repeated:
            return item
        array: dict[str, Any] = {"type": "array", "items": item}
        low, high = _bounds(_option(options, "size"))
        if low is not None:
            array["minItems"] = low
        if high is not None:
            array["maxItems"] = high
        return array

    def value(self, field: FieldDescriptor) -> dict[str, Any]:
        kind = field.type
        if field.message_type is not None:
            return self.ref(field.message_type)
        if field.enum_type is not None:
            return {"type": "string", "enum": [v.name for v in field.enum_type.values]}
        if kind in _INT64:
            # The JSON mapping writes 64-bit integers as strings and reads both.
            return {"type": ["string", "integer"], "format": "int64", "pattern": "^-?[0-9]+$"}
        if kind in _INT32:
            return {"type": "integer", "format": "int32"}
        if kind == FieldDescriptor.TYPE_BOOL:
            return {"type": "boolean"}
        if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return {"type": "number"}
        if kind == FieldDescriptor.TYPE_BYTES:
            return {"type": "string", "contentEncoding": "base64"}
        return {"type": "string"}


def _operation_note(route: Route) -> str:
    option = route.operation
    if option is None:
        return ""
    package = route.method.containing_service.file.package

    def full(name: str) -> str:
        return name if "." in name else f"{package}.{name}"

    return f" Answers a done Operation: metadata {full(option.metadata)}, response {full(option.response)}."


def document(routes: tuple[Route, ...], *, bearer_required: bool) -> dict[str, Any]:
    """The OpenAPI document; ``bearer_required`` says whether the server has
    credentials (without, the token is optional: the server is open)."""
    from google.rpc import status_pb2

    schemas = _Schemas()
    status_ref = schemas.ref(status_pb2.Status.DESCRIPTOR)
    error = {
        "description": "The call failed: a google.rpc.Status.",
        "content": {"application/json": {"schema": status_ref}},
    }
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        request = route.request
        parameters: list[dict[str, Any]] = []
        for name in route.variables:
            field = request.fields_by_name[name]
            schema = schemas.field(field)
            schema.setdefault("minLength", 1)
            parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
        if not route.body:
            for field in request.fields:
                if field.name in route.variables or field.message_type is not None:
                    continue
                required = bool(_option(field.GetOptions(), "required"))
                parameters.append(
                    {"name": field.json_name, "in": "query", "required": required, "schema": schemas.field(field)}
                )
        if route.operation is not None:
            parameters.append(
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": "A retry with the same key by the same caller returns the first answer.",
                    "schema": {"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY},
                }
            )
        operation: dict[str, Any] = {
            "operationId": f"{route.method.containing_service.name}_{route.method.name}",
            "summary": f"{route.method.containing_service.full_name}.{route.method.name}",
            "description": f"The gRPC method {route.grpc_method} over HTTP.{_operation_note(route)}",
            "tags": [route.method.containing_service.name],
            "parameters": parameters,
            "responses": {
                "200": {
                    "description": route.response.full_name,
                    "content": {"application/json": {"schema": schemas.ref(route.response)}},
                },
                "default": error,
            },
        }
        if route.body:
            body_schema = (
                schemas.message(request, frozenset(route.variables))
                if route.body == "*"
                else schemas.field(request.fields_by_name[route.body])
            )
            operation["requestBody"] = {
                "required": route.body == "*" and not route.variables,
                "content": {"application/json": {"schema": body_schema}},
            }
        paths.setdefault(route.template, {})[route.http_method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sessions REST API",
            "version": sessions.version(),
            "description": (
                "The gRPC services SynchronizationSessionService and OperationService over HTTP/JSON, "
                "by their google.api.http rules and the protobuf JSON mapping."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}] if bearer_required else [{"bearer": []}, {}],
    }


__all__ = ["document"]
