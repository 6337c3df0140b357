"""The REST routes, read from the services' descriptors.

Every route comes from a method's ``google.api.http`` option in protos/ (the
public definitions declare them); nothing here keeps a second table of
paths. A template such as ``/operations/{operation_id}:cancel`` becomes a
regular expression over the raw (still percent-encoded) path; each variable
matches one path segment and is percent-decoded after the match, so an id
holding ``/`` arrives as ``%2F`` and stays one value (google.api.http's
rule for single-segment variables).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import Descriptor, MethodDescriptor, ServiceDescriptor

from sessions.api.protos import operation_service_pb2, service_pb2
from sessions.generated.yandex.cloud.api import operation_pb2 as api_operation_pb2

SERVICES: tuple[ServiceDescriptor, ...] = (
    service_pb2.DESCRIPTOR.services_by_name["SynchronizationSessionService"],
    operation_service_pb2.DESCRIPTOR.services_by_name["OperationService"],
)

_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)(?:=([^}]*))?\}")
_VERBS = ("get", "put", "post", "delete", "patch")


class TemplateError(ValueError):
    """A google.api.http template this gateway does not serve."""


@dataclass(frozen=True)
class Route:
    http_method: str  # GET, POST, ...
    template: str  # as declared, e.g. /operations/{operation_id}:cancel
    pattern: re.Pattern[str]
    variables: tuple[str, ...]  # the request fields the path binds, in order
    body: str  # "" (no body), "*" (every field the path does not bind) or a field
    method: MethodDescriptor

    @property
    def grpc_method(self) -> str:
        """The gRPC method path: /package.Service/Method."""
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def request(self) -> Descriptor:
        return self.method.input_type

    @property
    def response(self) -> Descriptor:
        return self.method.output_type

    @property
    def operation(self) -> api_operation_pb2.Operation | None:
        """The method's api.operation option (metadata and response types)."""
        options: Any = self.method.GetOptions()
        if options.HasExtension(api_operation_pb2.operation):
            return cast(api_operation_pb2.Operation, options.Extensions[api_operation_pb2.operation])
        return None

    def match(self, path: str) -> dict[str, str] | None:
        """The path variables (percent-decoded) if ``path`` (raw) is this route's."""
        found = self.pattern.fullmatch(path)
        if found is None:
            return None
        values = found.groups()
        return {name: unquote(value, errors="strict") for name, value in zip(self.variables, values, strict=True)}


def _compile(template: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    if not template.startswith("/"):
        raise TemplateError(f"{template!r}: a template starts with '/'")
    parts: list[str] = []
    names: list[str] = []
    position = 0
    for variable in _VARIABLE.finditer(template):
        parts.append(re.escape(template[position : variable.start()]))
        name, sub = variable.group(1), variable.group(2)
        if "." in name or sub not in (None, "*"):
            raise TemplateError(f"{template!r}: only single-segment variables of top-level fields are served")
        names.append(name)
        parts.append("([^/]+?)")  # lazy: a ":verb" after it stays the verb
        position = variable.end()
    parts.append(re.escape(template[position:]))
    return re.compile("".join(parts)), tuple(names)


def _route(method: MethodDescriptor) -> Route | None:
    options: Any = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return None
    rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
    verb = rule.WhichOneof("pattern")
    if verb not in _VERBS:
        raise TemplateError(f"{method.full_name}: HTTP pattern {verb!r} is not served")
    template = getattr(rule, verb)
    pattern, variables = _compile(template)
    fields = method.input_type.fields_by_name
    for name in variables:
        if name not in fields:
            raise TemplateError(f"{method.full_name}: path variable {name!r} is no field of the request")
    if rule.body not in ("", "*") and rule.body not in fields:
        raise TemplateError(f"{method.full_name}: body {rule.body!r} is no field of the request")
    return Route(verb.upper(), template, pattern, variables, rule.body, method)


def routes(services: tuple[ServiceDescriptor, ...] = SERVICES) -> tuple[Route, ...]:
    """Every method with an HTTP rule, in the order the services declare them."""
    found = []
    for service in services:
        for method in service.methods:
            route = _route(method)
            if route is not None:
                found.append(route)
    return tuple(found)


__all__ = ["SERVICES", "Route", "TemplateError", "routes"]
