"""One validity rule for every string, on every backend, at the edge: a NUL
anywhere (PostgreSQL cannot store it, SQLite can) or a control character in
an id is INVALID_ARGUMENT naming the field, before anything is decided or
stored; so are timestamps outside the Timestamp type's range."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from sessions.api.protos import audit_pb2, audit_pb2_grpc, operation_service_pb2, service_pb2

AD_SYNC = 1


def _violation(error: grpc.RpcError) -> str:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    status = rpc_status.from_call(error)
    assert status is not None, error.details()
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    return bad_request.field_violations[0].field


def _calls(server: Any, session_id: str, bad: str) -> list[tuple[str, Callable[[], Any]]]:
    s, ops = server.sessions, server.operations
    audit = audit_pb2_grpc.AuditServiceStub(server.channel)
    return [
        (
            "subject_container_id",
            lambda: s.OpenSession(
                service_pb2.OpenSessionRequest(subject_container_id=bad, agent_id="a", session_type=AD_SYNC)
            ),
        ),
        (
            "agent_id",
            lambda: s.OpenSession(
                service_pb2.OpenSessionRequest(subject_container_id="c9", agent_id=bad, session_type=AD_SYNC)
            ),
        ),
        ("session_id", lambda: s.ReportSessionProgress(service_pb2.ReportSessionProgressRequest(session_id=bad))),
        ("session_id", lambda: s.Heartbeat(service_pb2.HeartbeatRequest(session_id=bad))),
        ("session_id", lambda: s.CloseSession(service_pb2.CloseSessionRequest(session_id=bad))),
        ("session_id", lambda: s.GetSession(service_pb2.GetSessionRequest(session_id=bad))),
        ("subject_container_id", lambda: s.ListSessions(service_pb2.ListSessionsRequest(subject_container_id=bad))),
        ("operation_id", lambda: ops.Get(operation_service_pb2.GetOperationRequest(operation_id=bad))),
        ("operation_id", lambda: ops.Cancel(operation_service_pb2.CancelOperationRequest(operation_id=bad))),
        ("session_id", lambda: list(audit.StreamHistory(audit_pb2.StreamHistoryRequest(session_id=bad)))),
        ("session_id", lambda: audit.GetSessionAt(audit_pb2.GetSessionAtRequest(session_id=bad, version=1))),
    ]


def _text_calls(server: Any, session_id: str, bad: str) -> list[tuple[str, Callable[[], Any]]]:
    s = server.sessions
    return [
        (
            "fail_reason",
            lambda: s.CloseSession(
                service_pb2.CloseSessionRequest(session_id=session_id, failed=True, fail_reason=bad)
            ),
        ),
        (
            "filter",
            lambda: s.ListSessions(
                service_pb2.ListSessionsRequest(subject_container_id="c1", filter=f'status = "{bad}"')
            ),
        ),
        (
            "page_token",
            lambda: s.ListSessions(service_pb2.ListSessionsRequest(subject_container_id="c1", page_token=bad)),
        ),
    ]


@pytest.fixture
def served(start_server: Any, store_url: str) -> tuple[Any, str]:
    server = start_server(store_url)
    opened = server.sessions.OpenSession(
        service_pb2.OpenSessionRequest(subject_container_id="c1", agent_id="a", session_type=AD_SYNC)
    )
    metadata = service_pb2.OpenSessionMetadata()
    opened.metadata.Unpack(metadata)
    return server, metadata.session_id


def _head(server: Any) -> int:
    return server.server.app.recorder.max_notification_id() or 0


@pytest.mark.parametrize("bad", ["a\x00", "\x00", "a\x01b", "a\nb", "a\x7f", "a\x9b"])
def test_ids_with_nul_or_control_characters_are_refused_by_every_method(served: tuple[Any, str], bad: str) -> None:
    server, session_id = served
    before, shown = _head(server), server.sessions.GetSession(service_pb2.GetSessionRequest(session_id=session_id))
    for field, call in _calls(server, session_id, bad):
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert _violation(refused.value) == field
    assert _head(server) == before
    assert server.sessions.GetSession(service_pb2.GetSessionRequest(session_id=session_id)) == shown


def test_text_with_nul_is_refused_and_other_control_characters_are_not(served: tuple[Any, str]) -> None:
    server, session_id = served
    before = _head(server)
    for field, call in _text_calls(server, session_id, "x\x00y"):
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert _violation(refused.value) == field
    assert _head(server) == before
    # A tab or a newline in a reason is text, stored and served as given.
    server.sessions.CloseSession(
        service_pb2.CloseSessionRequest(session_id=session_id, failed=True, fail_reason="line 1\n\tline 2")
    )
    got = server.sessions.GetSession(service_pb2.GetSessionRequest(session_id=session_id))
    assert got.session.fail_reason == "line 1\n\tline 2"


@pytest.mark.parametrize(
    "as_of",
    [
        Timestamp(seconds=253402300800),
        Timestamp(seconds=-62135596801),
        Timestamp(seconds=1, nanos=-1),
        Timestamp(seconds=1, nanos=10**9),
    ],
    ids=["after-9999", "before-0001", "negative-nanos", "nanos-overflow"],
)
def test_get_session_at_refuses_times_out_of_range(served: tuple[Any, str], as_of: Timestamp) -> None:
    server, session_id = served
    audit = audit_pb2_grpc.AuditServiceStub(server.channel)
    with pytest.raises(grpc.RpcError) as refused:
        audit.GetSessionAt(audit_pb2.GetSessionAtRequest(session_id=session_id, as_of=as_of))
    assert _violation(refused.value) == "as_of"
    # The edges of the range are valid times.
    for edge in (Timestamp(seconds=253402300799, nanos=999_999_999), Timestamp(seconds=-62135596800)):
        try:
            audit.GetSessionAt(audit_pb2.GetSessionAtRequest(session_id=session_id, as_of=edge))
        except grpc.RpcError as e:  # before the session existed: NOT_FOUND
            assert e.code() == grpc.StatusCode.NOT_FOUND, e.details()
