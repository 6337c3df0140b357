"""The REST face's calls go through the gRPC face's own handlers.

Each route's method is served by the handler ``api.edge.add_service``
registers with the gRPC server (decode, the validity rules, the servicer,
errors translated), wrapped by the server's ``AccessInterceptor`` when it has
credentials. So a REST call meets the same access control, the same edge
and the same servicer as a gRPC call, in the same order: authenticate and
authorize, then decode and check the request, then decide. Nothing here
knows a business rule.

What is HTTP's own happens here: the request message is put together from
the path variables, the query parameters and the JSON body (the
google.api.http rules and the protobuf JSON mapping), serialized, and handed
to the handler as the bytes a gRPC client would send; the answer is written
back as JSON by the same mapping. A request that cannot be put together (bad
JSON, an unknown field, a wrong type) is refused INVALID_ARGUMENT naming the
field, *after* access control has admitted the caller, by the edge's own
error translation: an anonymous caller learns nothing about the body.

``Context`` stands in for ``grpc.ServicerContext``: the headers
``Authorization`` and ``Idempotency-Key`` are the call's metadata, and an
abort ends the call with its ``google.rpc.Status``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any, NoReturn, cast

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import code_pb2, status_pb2

from sessions.api import access_log
from sessions.api.edge import add_service
from sessions.api.errors import translated_errors
from sessions.domain.errors import InvalidArgument
from sessions.rest.routes import Route

if TYPE_CHECKING:
    from sessions.api.access import AccessInterceptor

# The standard mapping of gRPC codes to HTTP statuses (google/rpc/code.proto).
HTTP_STATUS = {
    code_pb2.OK: 200,
    code_pb2.CANCELLED: 499,
    code_pb2.UNKNOWN: 500,
    code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.DEADLINE_EXCEEDED: 504,
    code_pb2.NOT_FOUND: 404,
    code_pb2.ALREADY_EXISTS: 409,
    code_pb2.PERMISSION_DENIED: 403,
    code_pb2.UNAUTHENTICATED: 401,
    code_pb2.RESOURCE_EXHAUSTED: 429,
    code_pb2.FAILED_PRECONDITION: 400,
    code_pb2.ABORTED: 409,
    code_pb2.OUT_OF_RANGE: 400,
    code_pb2.UNIMPLEMENTED: 501,
    code_pb2.INTERNAL: 500,
    code_pb2.UNAVAILABLE: 503,
    code_pb2.DATA_LOSS: 500,
}
STATUS_DETAILS_KEY = "grpc-status-details-bin"
# The HTTP headers that are the gRPC call's metadata, under the metadata's names.
METADATA_HEADERS = {"HTTP_AUTHORIZATION": "authorization", "HTTP_IDEMPOTENCY_KEY": "idempotency-key"}


class Aborted(Exception):
    """A call ended with a status other than OK."""

    def __init__(self, status: status_pb2.Status):
        super().__init__(status.message)
        self.status = status


class Context:
    """The parts of ``grpc.ServicerContext`` the handlers use."""

    def __init__(self, metadata: Sequence[tuple[str, str]], peer: str):
        self._metadata = tuple(metadata)
        self._peer = peer
        self._code: grpc.StatusCode | None = None
        self._details = ""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def time_remaining(self) -> float | None:
        return None  # HTTP callers send no deadline

    def is_active(self) -> bool:
        return True

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        self._code, self._details = code, details
        raise Aborted(status_pb2.Status(code=code.value[0], message=details))

    def abort_with_status(self, status: Any) -> NoReturn:
        self._code, self._details = status.code, status.details
        for key, value in status.trailing_metadata or ():
            if key == STATUS_DETAILS_KEY:
                raise Aborted(status_pb2.Status.FromString(value))
        raise Aborted(status_pb2.Status(code=status.code.value[0], message=status.details))

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass

    def send_initial_metadata(self, metadata: Any) -> None:
        pass

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False


class _Registrar:
    """Stands in for a grpc.Server to collect the handlers add_service makes."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        for name, handler in handlers.items():
            self.handlers[f"/{service}/{name}"] = handler


class _Refusal:
    """A request that could not be put together: refused once the caller is admitted."""

    def __init__(self, error: InvalidArgument):
        self.error = error


Service = tuple[Callable[[Any, Any], None], Any, tuple[str, ...]]


class Gateway:
    """Serves the routes with the handlers of ``services`` (as given to
    ``api.edge.add_service``), behind ``access`` (an AccessInterceptor) if
    given."""

    def __init__(self, routes: Iterable[Route], services: Iterable[Service], access: AccessInterceptor | None):
        registrar = _Registrar()
        for add_generated, servicer, serialized in services:
            add_service(add_generated, servicer, registrar, serialized)  # type: ignore[arg-type]
        self.routes = tuple(routes)
        self._calls: dict[str, Callable[[Any, Any], Any]] = {}
        for route in self.routes:
            name = route.grpc_method
            handler = _with_refusals(registrar.handlers[name], route.method.name, name)
            if access is not None:
                handler = access.wrap(handler, name)
            assert handler.unary_unary is not None, f"{name}: only unary methods have routes"
            self._calls[name] = handler.unary_unary
        self._response_classes = {r.grpc_method: GetMessageClass(r.response) for r in self.routes}
        self._request_classes = {r.grpc_method: GetMessageClass(r.request) for r in self.routes}

    def call(
        self,
        route: Route,
        variables: dict[str, str],
        query: Sequence[tuple[str, str]],
        body: bytes | None,
        context: Context,
        unreadable: InvalidArgument | None = None,
    ) -> dict[str, Any]:
        """Run the call; its answer by the JSON mapping. Raises Aborted.
        ``unreadable``: what could not be decoded from the URL or headers,
        refused once access control has admitted the caller."""
        try:
            if unreadable is not None:
                raise unreadable
            request: Any = self._request(route, variables, query, body).SerializeToString()
        except InvalidArgument as e:
            request = _Refusal(e)
        answer = self._calls[route.grpc_method](request, context)
        if isinstance(answer, bytes):
            answer = self._response_classes[route.grpc_method].FromString(answer)
        return json_format.MessageToDict(answer)

    def _request(
        self, route: Route, variables: dict[str, str], query: Sequence[tuple[str, str]], body: bytes | None
    ) -> Message:
        request = self._request_classes[route.grpc_method]()
        if route.body:
            if query:
                raise InvalidArgument(query[0][0], "is no query parameter of this method: send it in the body")
            if body is not None and body.strip():
                _parse_body(body, request if route.body == "*" else getattr(request, route.body))
        else:
            _parse_query(query, request, exclude=set(route.variables))
        for name, value in variables.items():
            field = route.request.fields_by_name[name]
            given = getattr(request, name)
            if given and given != value:
                raise InvalidArgument(field.json_name, f"the body says {given!r}, the path {value!r}")
            _set_scalar(request, field, value, field.name)
        return request


def _with_refusals(edge: grpc.RpcMethodHandler, name: str, full_method: str) -> grpc.RpcMethodHandler:
    behavior = edge.unary_unary
    assert behavior is not None

    def unary(request: Any, context: Any) -> Any:
        if isinstance(request, _Refusal):
            # Refused before the edge's handler (which logs the calls it
            # answers): logged here, as the gRPC face logs a request that
            # does not decode.
            started = perf_counter()
            try:
                with translated_errors(context, name):
                    raise request.error
                raise AssertionError("translated_errors did not abort")
            finally:
                access_log.called(full_method, context, None, started)
        return behavior(request, context)

    return grpc.unary_unary_rpc_method_handler(unary)


# --- the JSON body -------------------------------------------------------------

_PARSE_PATH = re.compile(r' at "?([A-Za-z_][\w.\[\]]*?)"?\.*$')
_PARSE_CHAIN = re.compile(r"Failed to parse (\w+) field")
_PARSE_CHAIN_PREFIX = re.compile(r"Failed to parse \w+ field: ")
_NO_FIELD = re.compile(r'has no field named "([^"]*)"')


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise InvalidArgument(key, "appears twice in the body")
        found[key] = value
    return found


def _parse_body(body: bytes, message: Message) -> None:
    try:
        document = json.loads(body, object_pairs_hook=_no_duplicates)
    except InvalidArgument:
        raise
    except RecursionError:
        raise InvalidArgument("body", "is nested too deeply") from None
    except ValueError as e:  # (also UnicodeDecodeError)
        raise InvalidArgument("body", f"is not JSON: {e}") from None
    if not isinstance(document, dict):
        raise InvalidArgument("body", f"must be a JSON object, got {type(document).__name__}")
    try:
        json_format.ParseDict(document, message)
    except json_format.ParseError as e:
        raise InvalidArgument(_field_of(e, message.DESCRIPTOR.name), _first_line(e)) from None
    except RecursionError:
        raise InvalidArgument("body", "is nested too deeply") from None


def _field_of(error: json_format.ParseError, message_name: str) -> str:
    """The field a ParseError names, as a path below the request ("body" if none)."""
    text = str(error).splitlines()[0]
    where = _PARSE_PATH.search(text)
    if where:
        head, _, path = where.group(1).partition(".")
        path = path if head == message_name else where.group(1)
    else:
        path = ".".join(_PARSE_CHAIN.findall(text))
    unknown = _NO_FIELD.search(text)
    if unknown:
        return f"{path}.{unknown.group(1)}" if path else unknown.group(1)
    return path or "body"


def _first_line(error: Exception) -> str:
    """The parser's reason, without the field path it is refused on."""
    text = _PARSE_CHAIN_PREFIX.sub("", str(error).splitlines()[0])
    return _PARSE_PATH.sub("", text).rstrip(".")[:500] or "cannot be parsed"


# --- query parameters and path variables -----------------------------------------


def _parse_query(query: Sequence[tuple[str, str]], request: Message, exclude: set[str]) -> None:
    fields: Sequence[FieldDescriptor] = cast(Any, request.DESCRIPTOR).fields
    by_name = {f.json_name: f for f in fields} | {f.name: f for f in fields}
    seen: set[str] = set()
    for key, value in query:
        field = by_name.get(key)
        if field is None or field.name in exclude or field.message_type is not None:
            raise InvalidArgument(key, "is no query parameter of this method")
        if not field.is_repeated and field.name in seen:
            raise InvalidArgument(key, "is given more than once")
        seen.add(field.name)
        _set_scalar(request, field, value, key)


_INTEGER = re.compile(r"-?[0-9]+")


def _set_scalar(message: Message, field: FieldDescriptor, text: str, name: str) -> None:
    """Set a scalar field from its text in a URL (google.api.http rules)."""
    kind = field.cpp_type
    value: Any
    if kind == FieldDescriptor.CPPTYPE_STRING:
        value = text.encode() if field.type == FieldDescriptor.TYPE_BYTES else text
    elif kind == FieldDescriptor.CPPTYPE_BOOL:
        if text not in ("true", "false"):
            raise InvalidArgument(name, f"must be true or false, got {text[:100]!r}")
        value = text == "true"
    elif kind == FieldDescriptor.CPPTYPE_ENUM:
        assert field.enum_type is not None
        known = field.enum_type.values_by_name.get(text)
        if known is None:
            raise InvalidArgument(name, f"unknown value {text[:100]!r}")
        value = known.number
    elif kind in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        try:
            value = float(text)
        except ValueError:
            raise InvalidArgument(name, f"must be a number, got {text[:100]!r}") from None
    else:
        if not _INTEGER.fullmatch(text):
            raise InvalidArgument(name, f"must be an integer, got {text[:100]!r}")
        value = int(text)
    try:
        if field.is_repeated:
            getattr(message, field.name).append(value)
        else:
            setattr(message, field.name, value)
    except (ValueError, TypeError) as e:  # out of the field's range
        raise InvalidArgument(name, str(e)[:200]) from None


def error_document(status: status_pb2.Status) -> dict[str, Any]:
    return json_format.MessageToDict(status)


def invalid(field: str, description: str) -> status_pb2.Status:
    """The Status the edge would answer for a bad ``field``."""
    context: Any = Context((), "")
    try:
        with translated_errors(context, "REST"):
            raise InvalidArgument(field, description)
    except Aborted as e:
        return e.status
    raise AssertionError("translated_errors did not abort")


__all__ = ["HTTP_STATUS", "METADATA_HEADERS", "Aborted", "Context", "Gateway", "error_document", "invalid"]
