"""Every constraint of the wire contract is refused with INVALID_ARGUMENT and a
BadRequest naming the field, and nothing is stored."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from sessions.api.protos import operation_service_pb2, service_pb2, session_pb2
from tests.api.test_lifecycle import entry, open_session

USER, CREATE = 1, 1
LONG = "x" * 51


def change(change_type: int = CREATE, successful: int = 1, failed: int = 0) -> tuple[int, int, int]:
    return (change_type, successful, failed)


def report(session_id: str, *entries: session_pb2.ProgressEntry) -> service_pb2.ReportSessionProgressRequest:
    return service_pb2.ReportSessionProgressRequest(session_id=session_id, progress_entries=entries)


def refused_field(call) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as refused:
        call()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    status = rpc_status.from_call(refused.value)
    assert status is not None, "no rich status details"
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    (violation,) = bad_request.field_violations
    assert violation.description
    return violation.field


def open_request(**fields: object) -> service_pb2.OpenSessionRequest:
    values = {"subject_container_id": "c", "agent_id": "a", "session_type": 1, **fields}
    return service_pb2.OpenSessionRequest(**values)  # type: ignore[arg-type]


def test_every_constraint_is_refused_and_nothing_is_stored(start_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = start_server(f"sqlite://{tmp_path}/s.db")
    stub, ops = server.sessions, server.operations
    _, opened = open_session(stub)
    sid = opened.opened_session.session_id
    head = server.server.app.recorder.max_notification_id()
    before = stub.GetSession(service_pb2.GetSessionRequest(session_id=sid)).session

    cases = {
        "subject_container_id": [
            lambda: stub.OpenSession(open_request(subject_container_id="")),
            lambda: stub.OpenSession(open_request(subject_container_id=LONG)),
            lambda: stub.ListSessions(service_pb2.ListSessionsRequest(subject_container_id="")),
        ],
        "agent_id": [
            lambda: stub.OpenSession(open_request(agent_id="")),
            lambda: stub.OpenSession(open_request(agent_id=LONG)),
        ],
        "session_type": [
            lambda: stub.OpenSession(open_request(session_type=0)),
            lambda: stub.OpenSession(open_request(session_type=99)),
        ],
        "session_id": [
            lambda: stub.GetSession(service_pb2.GetSessionRequest(session_id="")),
            lambda: stub.GetSession(service_pb2.GetSessionRequest(session_id=LONG)),
            lambda: stub.Heartbeat(service_pb2.HeartbeatRequest(session_id=LONG)),
            lambda: stub.CloseSession(service_pb2.CloseSessionRequest(session_id="")),
            lambda: stub.ReportSessionProgress(report(LONG, entry(USER, change()))),
        ],
        "fail_reason": [
            lambda: stub.CloseSession(
                service_pb2.CloseSessionRequest(session_id=sid, failed=True, fail_reason="r" * 257)
            ),
        ],
        "progress_entries": [
            lambda: stub.ReportSessionProgress(report(sid)),
            lambda: stub.ReportSessionProgress(report(sid, *[entry(USER, change())] * 4)),
        ],
        "progress_entries[0].object_type": [
            lambda: stub.ReportSessionProgress(report(sid, entry(0, change()))),
            lambda: stub.ReportSessionProgress(report(sid, entry(7, change()))),
        ],
        "progress_entries[1].change_info": [
            lambda: stub.ReportSessionProgress(report(sid, entry(USER, change()), entry(2))),
            lambda: stub.ReportSessionProgress(
                report(sid, entry(USER, change()), entry(2, *[change()] * 7))
            ),
        ],
        "progress_entries[0].change_info[1].change_type": [
            lambda: stub.ReportSessionProgress(report(sid, entry(USER, change(), change(0)))),
            lambda: stub.ReportSessionProgress(report(sid, entry(USER, change(), change(42)))),
        ],
        "progress_entries[0].change_info[0].successful": [
            lambda: stub.ReportSessionProgress(report(sid, entry(USER, change(successful=-1)))),
        ],
        "progress_entries[0].change_info[0].failed": [
            lambda: stub.ReportSessionProgress(report(sid, entry(USER, change(failed=-5)))),
        ],
        "page_size": [
            lambda: stub.ListSessions(service_pb2.ListSessionsRequest(subject_container_id="c", page_size=1001)),
            lambda: stub.ListSessions(service_pb2.ListSessionsRequest(subject_container_id="c", page_size=-1)),
        ],
        "page_token": [
            lambda: stub.ListSessions(service_pb2.ListSessionsRequest(subject_container_id="c", page_token="t" * 2001)),
        ],
        "filter": [
            lambda: stub.ListSessions(service_pb2.ListSessionsRequest(subject_container_id="c", filter="f" * 1001)),
        ],
        "operation_id": [
            lambda: ops.Get(operation_service_pb2.GetOperationRequest(operation_id="")),
        ],
        "idempotency-key": [
            lambda: stub.Heartbeat(
                service_pb2.HeartbeatRequest(session_id=sid), metadata=[("idempotency-key", "k" * 129)]
            ),
        ],
    }
    for field, calls in cases.items():
        for call in calls:
            assert refused_field(call) == field

    assert server.server.app.recorder.max_notification_id() == head
    assert stub.GetSession(service_pb2.GetSessionRequest(session_id=sid)).session == before


def test_counter_overflow_is_refused(start_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = start_server(f"sqlite://{tmp_path}/s.db")
    stub = server.sessions
    _, opened = open_session(stub)
    sid = opened.opened_session.session_id
    top = 2**63 - 1
    stub.ReportSessionProgress(report(sid, entry(USER, change(successful=top))))
    head = server.server.app.recorder.max_notification_id()
    assert refused_field(
        lambda: stub.ReportSessionProgress(report(sid, entry(USER, change(successful=1))))
    ) == "progress_entries"
    assert server.server.app.recorder.max_notification_id() == head
    shown = stub.GetSession(service_pb2.GetSessionRequest(session_id=sid)).session
    assert shown.progress_entries[0].change_info[0].successful == top
