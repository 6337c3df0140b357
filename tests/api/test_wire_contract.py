"""The generated descriptors honour the public wire contract.

The contract (the public SynchronizationSessionService definitions)
is encoded below as data rather than parsed, so that this test runs in any
checkout. Wire-compatible means the same proto package, service and method
names (they form the HTTP/2 paths), the same message field numbers and types,
the same enum numbers. Comments, options and file layout are ours, except the
two file names the spec fixes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FieldDescriptor

from sessions.api.protos import (
    operation_pb2,
    operation_service_pb2,
    operation_service_pb2_grpc,
    service_pb2,
    service_pb2_grpc,
    session_pb2,
    settings_pb2,
)

IDP = "yandex.cloud.organizationmanager.v1.idp"
OPERATION_PACKAGE = "yandex.cloud.operation"
SERVICE = f"{IDP}.SynchronizationSessionService"
OPERATION_SERVICE = f"{OPERATION_PACKAGE}.OperationService"
OPERATION = f"{OPERATION_PACKAGE}.Operation"

SERVICE_FILE = "yandex/cloud/organizationmanager/v1/idp/synchronization_session_service.proto"
OPERATION_FILE = "yandex/cloud/operation/operation.proto"

TIMESTAMP = "google.protobuf.Timestamp"
ANY = "google.protobuf.Any"
STATUS = "google.rpc.Status"


# --- the contract, as data ---------------------------------------------------


@dataclass(frozen=True)
class Kind:
    type: int
    type_name: str | None = None  # full name of a message or enum type


STRING = Kind(FieldDescriptor.TYPE_STRING)
INT64 = Kind(FieldDescriptor.TYPE_INT64)
BOOL = Kind(FieldDescriptor.TYPE_BOOL)


def msg(full_name: str | None) -> Kind:
    """A message field; None when the spec fixes only that it is a message."""
    return Kind(FieldDescriptor.TYPE_MESSAGE, full_name)


def enum(full_name: str) -> Kind:
    return Kind(FieldDescriptor.TYPE_ENUM, full_name)


@dataclass(frozen=True)
class Field:
    number: int
    name: str
    kind: Kind
    repeated: bool = False
    oneof: str | None = None


def repeated(number: int, name: str, kind: Kind) -> Field:
    return Field(number, name, kind, repeated=True)


MESSAGES: dict[str, list[Field]] = {
    f"{IDP}.GetSessionRequest": [Field(1, "session_id", STRING)],
    f"{IDP}.GetSessionResponse": [Field(1, "session", msg(f"{IDP}.SynchronizationSession"))],
    f"{IDP}.SynchronizationSession": [
        Field(1, "session_id", STRING),
        Field(2, "agent_id", STRING),
        Field(3, "created_at", msg(TIMESTAMP)),
        Field(4, "expires_at", msg(TIMESTAMP)),
        Field(5, "closed_at", msg(TIMESTAMP)),
        Field(6, "sync_mode", enum(f"{IDP}.SyncMode")),
        Field(7, "status", enum(f"{IDP}.SessionStatus")),
        repeated(8, "progress_entries", msg(f"{IDP}.ProgressEntry")),
        Field(9, "fail_reason", STRING),
        Field(10, "session_type", enum(f"{IDP}.SessionType")),
    ],
    f"{IDP}.ProgressEntry": [
        Field(1, "object_type", enum(f"{IDP}.RelatedObjectType")),
        repeated(2, "change_info", msg(f"{IDP}.ChangeInfo")),
    ],
    f"{IDP}.ChangeInfo": [
        Field(1, "change_type", enum(f"{IDP}.ChangeType")),
        Field(2, "successful", INT64),
        Field(3, "failed", INT64),
    ],
    f"{IDP}.OpenSessionRequest": [
        Field(1, "subject_container_id", STRING),
        Field(2, "agent_id", STRING),
        Field(3, "session_type", enum(f"{IDP}.SessionType")),
    ],
    f"{IDP}.OpenSessionResponse": [
        Field(1, "result", enum(f"{IDP}.OpenSessionResult")),
        Field(2, "opened_session", msg(f"{IDP}.SynchronizationSession"), oneof="session_info"),
        Field(3, "next_session_at", msg(TIMESTAMP), oneof="session_info"),
        Field(4, "replication_token", STRING),
        # The spec fixes only that field 5 is the (public SynchronizationService's)
        # settings message; its contents and full name are not part of it.
        Field(5, "synchronization_settings", msg(None)),
    ],
    f"{IDP}.OpenSessionMetadata": [Field(1, "session_id", STRING)],
    f"{IDP}.CloseSessionMetadata": [Field(1, "session_id", STRING)],
    f"{IDP}.ReportSessionProgressMetadata": [Field(1, "session_id", STRING)],
    f"{IDP}.HeartbeatMetadata": [Field(1, "session_id", STRING)],
    f"{IDP}.ReportSessionProgressRequest": [
        Field(1, "session_id", STRING),
        repeated(2, "progress_entries", msg(f"{IDP}.ProgressEntry")),
    ],
    f"{IDP}.CloseSessionRequest": [
        Field(1, "session_id", STRING),
        Field(2, "failed", BOOL),
        Field(3, "fail_reason", STRING),
    ],
    f"{IDP}.HeartbeatRequest": [Field(1, "session_id", STRING)],
    f"{IDP}.ListSessionsRequest": [
        Field(1, "subject_container_id", STRING),
        Field(2, "page_size", INT64),
        Field(3, "page_token", STRING),
        Field(4, "filter", STRING),
    ],
    f"{IDP}.ListSessionsResponse": [
        repeated(1, "sessions", msg(f"{IDP}.SynchronizationSession")),
        Field(2, "next_page_token", STRING),
    ],
    OPERATION: [
        Field(1, "id", STRING),
        Field(2, "description", STRING),
        Field(3, "created_at", msg(TIMESTAMP)),
        Field(4, "created_by", STRING),
        Field(5, "modified_at", msg(TIMESTAMP)),
        Field(6, "done", BOOL),
        Field(7, "metadata", msg(ANY)),
        Field(8, "error", msg(STATUS), oneof="result"),
        Field(9, "response", msg(ANY), oneof="result"),
    ],
    f"{OPERATION_PACKAGE}.GetOperationRequest": [Field(1, "operation_id", STRING)],
    f"{OPERATION_PACKAGE}.CancelOperationRequest": [Field(1, "operation_id", STRING)],
}

ENUMS: dict[str, dict[int, str]] = {
    f"{IDP}.SyncMode": {0: "SYNC_MODE_UNSPECIFIED", 1: "FULL_SYNC", 2: "DELTA"},
    f"{IDP}.SessionStatus": {
        0: "SESSION_STATUS_UNSPECIFIED",
        1: "OPENED",
        2: "PENDING",
        3: "COMPLETED",
        4: "FAILED",
        5: "EXPIRED",
    },
    f"{IDP}.SessionType": {
        0: "SESSION_TYPE_UNSPECIFIED",
        1: "AD_SYNC",
        2: "AD_PASSWORD_HASH",
        3: "AD_USER_CONTROL",
        4: "LDAP_SYNC",
    },
    f"{IDP}.RelatedObjectType": {
        0: "RELATED_OBJECT_TYPE_UNSPECIFIED",
        1: "USER",
        2: "GROUP",
        3: "MEMBERSHIP",
    },
    f"{IDP}.ChangeType": {
        0: "CHANGE_TYPE_UNSPECIFIED",
        1: "CREATE",
        2: "UPDATE",
        3: "DELETE",
        4: "ACTIVATE",
        5: "DEACTIVATE",
        6: "PASSWORD_HASH_UPDATE",
    },
    f"{IDP}.OpenSessionResult": {
        0: "OPEN_SESSION_RESULT_UNSPECIFIED",
        1: "SUCCESS",
        2: "OPENED_SESSION_EXISTS",
        3: "TOO_EARLY",
    },
}

# method -> (input full name, output full name)
SERVICES: dict[str, dict[str, tuple[str, str]]] = {
    SERVICE: {
        "OpenSession": (f"{IDP}.OpenSessionRequest", OPERATION),
        "CloseSession": (f"{IDP}.CloseSessionRequest", OPERATION),
        "ReportSessionProgress": (f"{IDP}.ReportSessionProgressRequest", OPERATION),
        "Heartbeat": (f"{IDP}.HeartbeatRequest", OPERATION),
        "GetSession": (f"{IDP}.GetSessionRequest", f"{IDP}.GetSessionResponse"),
        "ListSessions": (f"{IDP}.ListSessionsRequest", f"{IDP}.ListSessionsResponse"),
    },
    OPERATION_SERVICE: {
        "Get": (f"{OPERATION_PACKAGE}.GetOperationRequest", OPERATION),
        "Cancel": (f"{OPERATION_PACKAGE}.CancelOperationRequest", OPERATION),
    },
}

# The Operation each mutating call answers with carries these in its Any fields.
OPERATION_PAYLOADS: dict[str, tuple[str, str]] = {
    "OpenSession": (f"{IDP}.OpenSessionMetadata", f"{IDP}.OpenSessionResponse"),
    "CloseSession": (f"{IDP}.CloseSessionMetadata", f"{IDP}.SynchronizationSession"),
    "ReportSessionProgress": (
        f"{IDP}.ReportSessionProgressMetadata",
        f"{IDP}.SynchronizationSession",
    ),
    "Heartbeat": (f"{IDP}.HeartbeatMetadata", "google.protobuf.Empty"),
}


# --- helpers ------------------------------------------------------------------

GENERATED = [service_pb2, session_pb2, settings_pb2, operation_pb2, operation_service_pb2]


@pytest.fixture(scope="module")
def pool() -> descriptor_pool.DescriptorPool:
    pools = {id(module.DESCRIPTOR.pool) for module in GENERATED}
    assert len(pools) == 1, "the generated modules are spread over several descriptor pools"
    return service_pb2.DESCRIPTOR.pool


def _type_names() -> dict[int, str]:
    return {
        value: name
        for name, value in vars(FieldDescriptor).items()
        if name.startswith("TYPE_") and isinstance(value, int)
    }


def _describe(field: Any) -> Field:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        type_name = field.message_type.full_name
    elif field.type == FieldDescriptor.TYPE_ENUM:
        type_name = field.enum_type.full_name
    else:
        type_name = None
    oneof = field.containing_oneof.name if field.containing_oneof is not None else None
    return Field(field.number, field.name, Kind(field.type, type_name), field.is_repeated, oneof)


def _default_json_name(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


# --- names and files -----------------------------------------------------------


def test_service_file_and_package() -> None:
    assert service_pb2.DESCRIPTOR.name == SERVICE_FILE
    assert service_pb2.DESCRIPTOR.package == IDP
    assert "SynchronizationSessionService" in service_pb2.DESCRIPTOR.services_by_name
    assert service_pb2.DESCRIPTOR.services_by_name["SynchronizationSessionService"].full_name == (
        SERVICE
    )


def test_operation_file_and_package() -> None:
    assert operation_pb2.DESCRIPTOR.name == OPERATION_FILE
    assert operation_pb2.DESCRIPTOR.package == OPERATION_PACKAGE
    assert operation_pb2.DESCRIPTOR.message_types_by_name["Operation"].full_name == OPERATION
    assert operation_service_pb2.DESCRIPTOR.package == OPERATION_PACKAGE
    assert operation_service_pb2.DESCRIPTOR.services_by_name["OperationService"].full_name == (
        OPERATION_SERVICE
    )


def test_idp_modules_share_the_package() -> None:
    for module in (session_pb2, settings_pb2):
        assert module.DESCRIPTOR.package == IDP, module.DESCRIPTOR.name


# --- services -------------------------------------------------------------------


@pytest.mark.parametrize("service_name", sorted(SERVICES))
def test_service_methods(pool: descriptor_pool.DescriptorPool, service_name: str) -> None:
    service = pool.FindServiceByName(service_name)
    actual = {
        method.name: (method.input_type.full_name, method.output_type.full_name)
        for method in service.methods
    }
    assert actual == SERVICES[service_name]
    for method in service.methods:
        assert not method.client_streaming and not method.server_streaming, method.full_name
        assert method.full_name == f"{service_name}.{method.name}"


@pytest.mark.parametrize("method", sorted(OPERATION_PAYLOADS))
def test_operation_payload_types_exist(pool: descriptor_pool.DescriptorPool, method: str) -> None:
    metadata, response = OPERATION_PAYLOADS[method]
    assert pool.FindMessageTypeByName(metadata).full_name == metadata
    if response.startswith("google.protobuf."):
        from google.protobuf import empty_pb2  # noqa: F401  (registers Empty)

        assert response == "google.protobuf.Empty"
    else:
        assert pool.FindMessageTypeByName(response).full_name == response


# --- messages and enums -----------------------------------------------------------


@pytest.mark.parametrize("message_name", sorted(MESSAGES))
def test_message_fields(pool: descriptor_pool.DescriptorPool, message_name: str) -> None:
    message = pool.FindMessageTypeByName(message_name)
    assert message.full_name == message_name
    actual = {field.number: _describe(field) for field in message.fields}
    expected = {field.number: field for field in MESSAGES[message_name]}
    # Where the spec leaves a message type open, accept any message type.
    for number, field in expected.items():
        open_type = field.kind.type == FieldDescriptor.TYPE_MESSAGE and field.kind.type_name is None
        if open_type and number in actual and actual[number].kind.type == FieldDescriptor.TYPE_MESSAGE:
            actual[number] = Field(
                number, actual[number].name, msg(None), actual[number].repeated,
                actual[number].oneof,
            )
    type_names = _type_names()

    def show(fields: dict[int, Field]) -> dict[int, str]:
        return {
            n: f"{'repeated ' if f.repeated else ''}"
            f"{f.kind.type_name or type_names.get(f.kind.type, f.kind.type)} {f.name}"
            f"{f' (oneof {f.oneof})' if f.oneof else ''}"
            for n, f in sorted(fields.items())
        }

    assert show(actual) == show(expected)
    assert actual == expected


@pytest.mark.parametrize("message_name", sorted(MESSAGES))
def test_message_json_names_are_default(
    pool: descriptor_pool.DescriptorPool, message_name: str
) -> None:
    # The public API's JSON/REST mapping uses protoc's default lowerCamel names.
    message = pool.FindMessageTypeByName(message_name)
    custom = {
        field.name: field.json_name
        for field in message.fields
        if field.json_name != _default_json_name(field.name)
    }
    assert not custom


def test_oneofs(pool: descriptor_pool.DescriptorPool) -> None:
    response = pool.FindMessageTypeByName(f"{IDP}.OpenSessionResponse")
    assert {o.name: sorted(f.name for f in o.fields) for o in response.oneofs} == {
        "session_info": ["next_session_at", "opened_session"]
    }
    operation = pool.FindMessageTypeByName(OPERATION)
    assert {o.name: sorted(f.name for f in o.fields) for o in operation.oneofs} == {
        "result": ["error", "response"]
    }


@pytest.mark.parametrize("enum_name", sorted(ENUMS))
def test_enum_values(pool: descriptor_pool.DescriptorPool, enum_name: str) -> None:
    descriptor = pool.FindEnumTypeByName(enum_name)
    assert descriptor.full_name == enum_name
    assert {value.number: value.name for value in descriptor.values} == ENUMS[enum_name]


def test_enum_value_names_are_unique_in_the_package() -> None:
    seen: dict[str, str] = {}
    for enum_name, values in ENUMS.items():
        if not enum_name.startswith(f"{IDP}."):
            continue
        for name in values.values():
            assert name not in seen, f"{name} in both {seen[name]} and {enum_name}"
            seen[name] = enum_name


def test_session_type_full_name() -> None:
    # Lives in synchronization_settings.proto, as in the public definitions.
    assert settings_pb2.DESCRIPTOR.enum_types_by_name["SessionType"].full_name == (
        f"{IDP}.SessionType"
    )


# --- gRPC paths of the generated helpers -------------------------------------------


class _RecordingChannel:
    """Stands in for a grpc.Channel; records what each stub attribute was built from."""

    def __init__(self) -> None:
        self.unary_unary_calls: dict[str, tuple[Any, Any]] = {}
        self.other_calls: list[str] = []

    def unary_unary(self, method: str, request_serializer=None, response_deserializer=None,
                    _registered_method=False):  # type: ignore[no-untyped-def]
        self.unary_unary_calls[method] = (request_serializer, response_deserializer)
        return ("unary_unary", method)

    def _other(self, method: str, *args: Any, **kwargs: Any) -> tuple[str, str]:
        self.other_calls.append(method)
        return ("other", method)

    unary_stream = stream_unary = stream_stream = _other


class _RecordingServer:
    """Stands in for a grpc.Server; keeps the handlers that servicers add."""

    def __init__(self) -> None:
        self.generic: list[grpc.GenericRpcHandler] = []
        self.registered: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    def add_generic_rpc_handlers(self, handlers) -> None:  # type: ignore[no-untyped-def]
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service_name, method_handlers) -> None:  # type: ignore[no-untyped-def]
        self.registered[service_name] = dict(method_handlers)


class _CallDetails(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


STUBS = {
    SERVICE: (
        service_pb2_grpc.SynchronizationSessionServiceStub,
        service_pb2_grpc.SynchronizationSessionServiceServicer,
        service_pb2_grpc.add_SynchronizationSessionServiceServicer_to_server,
    ),
    OPERATION_SERVICE: (
        operation_service_pb2_grpc.OperationServiceStub,
        operation_service_pb2_grpc.OperationServiceServicer,
        operation_service_pb2_grpc.add_OperationServiceServicer_to_server,
    ),
}


def _message_class(pool: descriptor_pool.DescriptorPool, full_name: str) -> type:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))


@pytest.mark.parametrize("service_name", sorted(STUBS))
def test_stub_method_paths(pool: descriptor_pool.DescriptorPool, service_name: str) -> None:
    stub_class, _, _ = STUBS[service_name]
    channel = _RecordingChannel()
    stub = stub_class(channel)
    expected = {f"/{service_name}/{method}": method for method in SERVICES[service_name]}
    assert set(channel.unary_unary_calls) == set(expected)
    assert channel.other_calls == []
    for path, method in expected.items():
        assert getattr(stub, method) == ("unary_unary", path)
        serializer, deserializer = channel.unary_unary_calls[path]
        request_name, response_name = SERVICES[service_name][method]
        request = _message_class(pool, request_name)()
        assert isinstance(serializer(request), bytes)
        response = deserializer(b"")
        assert response.DESCRIPTOR.full_name == response_name, path


@pytest.mark.parametrize("service_name", sorted(STUBS))
def test_servicer_registration_paths(
    pool: descriptor_pool.DescriptorPool, service_name: str
) -> None:
    _, servicer_class, add_to_server = STUBS[service_name]
    server = _RecordingServer()
    add_to_server(servicer_class(), server)
    methods = SERVICES[service_name]

    assert set(server.registered) == {service_name}
    assert set(server.registered[service_name]) == set(methods)

    assert len(server.generic) == 1
    handler = server.generic[0]
    assert handler.service_name() == service_name
    for method, (request_name, response_name) in methods.items():
        path = f"/{service_name}/{method}"
        rpc = handler.service(_CallDetails(path))
        assert rpc is not None, f"no handler for {path}"
        assert not rpc.request_streaming and not rpc.response_streaming, path
        request = rpc.request_deserializer(b"")
        assert request.DESCRIPTOR.full_name == request_name, path
        response = _message_class(pool, response_name)()
        assert isinstance(rpc.response_serializer(response), bytes)
    assert handler.service(_CallDetails(f"/{service_name}/NoSuchMethod")) is None


def test_servicer_paths_on_a_real_server() -> None:
    """A real grpc.Server accepts both servicers side by side (no path clashes)."""
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    try:
        for _, servicer_class, add_to_server in STUBS.values():
            add_to_server(servicer_class(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        assert port > 0
        server.start()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.SynchronizationSessionServiceStub(channel)
            # The default servicer answers UNIMPLEMENTED; an unknown path would
            # also be UNIMPLEMENTED, so check the method-specific message.
            with pytest.raises(grpc.RpcError) as raised:
                stub.GetSession(service_pb2.GetSessionRequest(session_id="x"), timeout=10)
            assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert raised.value.details() == "Method not implemented!"
            unknown = channel.unary_unary(f"/{SERVICE}/NoSuchMethod")
            with pytest.raises(grpc.RpcError) as raised:
                unknown(b"", timeout=10)
            assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert raised.value.details() != "Method not implemented!"
    finally:
        server.stop(grace=None)
