"""End to end through a real gRPC channel, on SQLite and PostgreSQL."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import empty_pb2

from sessions.api.protos import operation_service_pb2, service_pb2, session_pb2
from sessions.domain.policy import Policy
from sessions.store.clock import ManualClock

USER, GROUP, MEMBERSHIP = 1, 2, 3
CREATE, UPDATE, DELETE = 1, 2, 3
AD_SYNC = 1


def entry(object_type: int, *changes: tuple[int, int, int]) -> session_pb2.ProgressEntry:
    return session_pb2.ProgressEntry(
        object_type=object_type,
        change_info=[session_pb2.ChangeInfo(change_type=c, successful=s, failed=f) for c, s, f in changes],
    )


def unpack(operation, message_type):  # type: ignore[no-untyped-def]
    message = message_type()
    assert operation.response.Unpack(message), operation.response.type_url
    return message


def open_session(stub, container: str = "container-1", **metadata: str):  # type: ignore[no-untyped-def]
    operation = stub.OpenSession(
        service_pb2.OpenSessionRequest(subject_container_id=container, agent_id="agent-1", session_type=AD_SYNC),
        metadata=list(metadata.items()),
    )
    return operation, unpack(operation, service_pb2.OpenSessionResponse)


def get(stub, session_id: str) -> session_pb2.SynchronizationSession:  # type: ignore[no-untyped-def]
    return stub.GetSession(service_pb2.GetSessionRequest(session_id=session_id)).session


def test_whole_lifecycle_and_read_your_writes(start_server, store_url) -> None:  # type: ignore[no-untyped-def]
    clock = ManualClock()
    server = start_server(store_url, clock=clock)
    stub = server.sessions

    operation, opened = open_session(stub)
    assert operation.done and operation.id
    assert opened.result == service_pb2.SUCCESS
    session = opened.opened_session
    assert session.status == session_pb2.OPENED
    assert session.sync_mode == session_pb2.FULL_SYNC
    assert session.session_type == AD_SYNC
    assert get(stub, session.session_id) == session  # read-your-writes, field for field
    metadata = service_pb2.OpenSessionMetadata()
    assert operation.metadata.Unpack(metadata) and metadata.session_id == session.session_id

    clock.advance(30)
    report = stub.ReportSessionProgress(
        service_pb2.ReportSessionProgressRequest(
            session_id=session.session_id,
            progress_entries=[entry(GROUP, (UPDATE, 2, 0)), entry(USER, (DELETE, 1, 1), (CREATE, 5, 1))],
        )
    )
    reported = unpack(report, session_pb2.SynchronizationSession)
    assert get(stub, session.session_id) == reported
    assert [e.object_type for e in reported.progress_entries] == [USER, GROUP]
    assert [c.change_type for c in reported.progress_entries[0].change_info] == [CREATE, DELETE]
    assert reported.expires_at.ToSeconds() == session.expires_at.ToSeconds() + 30

    clock.advance(30)
    beat = stub.Heartbeat(service_pb2.HeartbeatRequest(session_id=session.session_id))
    assert unpack(beat, empty_pb2.Empty) == empty_pb2.Empty()
    after_beat = get(stub, session.session_id)
    assert after_beat.expires_at.ToSeconds() == session.expires_at.ToSeconds() + 60

    clock.advance(5)
    close = stub.CloseSession(service_pb2.CloseSessionRequest(session_id=session.session_id))
    closed = unpack(close, session_pb2.SynchronizationSession)
    assert closed.status == session_pb2.COMPLETED
    assert closed.closed_at.ToSeconds() == clock().timestamp()
    assert closed.expires_at == after_beat.expires_at  # a close never moves it back
    assert get(stub, session.session_id) == closed

    listed = stub.ListSessions(service_pb2.ListSessionsRequest(subject_container_id="container-1"))
    assert list(listed.sessions) == [closed]

    # Every operation is readable later, as it was returned.
    for op in (operation, report, beat, close):
        assert server.operations.Get(operation_service_pb2.GetOperationRequest(operation_id=op.id)) == op


def test_open_rules_over_the_wire(start_server, store_url) -> None:  # type: ignore[no-untyped-def]
    clock = ManualClock()
    policy = Policy.from_seconds(sync_interval=300, full_sync_period=3600)
    server = start_server(store_url, clock=clock, policy=policy)
    stub = server.sessions

    _, first = open_session(stub)
    _, again = open_session(stub)
    assert again.result == service_pb2.OPENED_SESSION_EXISTS
    assert again.opened_session == first.opened_session

    stub.CloseSession(service_pb2.CloseSessionRequest(session_id=first.opened_session.session_id))
    clock.advance(100)
    too_early_op, too_early = open_session(stub)
    assert too_early.result == service_pb2.TOO_EARLY
    assert too_early.next_session_at.ToSeconds() == clock().timestamp() + 200
    assert (
        server.operations.Get(operation_service_pb2.GetOperationRequest(operation_id=too_early_op.id)) == too_early_op
    )

    clock.advance(200)
    _, delta = open_session(stub)
    assert delta.result == service_pb2.SUCCESS
    assert delta.opened_session.sync_mode == session_pb2.DELTA


def test_final_states_refuse_changes(start_server, store_url) -> None:  # type: ignore[no-untyped-def]
    server = start_server(store_url)
    stub = server.sessions
    _, opened = open_session(stub)
    session_id = opened.opened_session.session_id
    stub.CloseSession(service_pb2.CloseSessionRequest(session_id=session_id, failed=True, fail_reason="LDAP down"))
    failed = get(stub, session_id)
    assert failed.status == session_pb2.FAILED and failed.fail_reason == "LDAP down"

    # The same close again answers with the session as it is.
    repeat = stub.CloseSession(
        service_pb2.CloseSessionRequest(session_id=session_id, failed=True, fail_reason="LDAP down")
    )
    assert unpack(repeat, session_pb2.SynchronizationSession) == failed
    # With another reason it is refused: an OK would say the reason was taken.
    with pytest.raises(grpc.RpcError) as refused:
        stub.CloseSession(service_pb2.CloseSessionRequest(session_id=session_id, failed=True, fail_reason="again"))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "LDAP down" in refused.value.details()
    assert get(stub, session_id) == failed

    calls = [
        lambda: stub.CloseSession(service_pb2.CloseSessionRequest(session_id=session_id)),
        lambda: stub.Heartbeat(service_pb2.HeartbeatRequest(session_id=session_id)),
        lambda: stub.ReportSessionProgress(
            service_pb2.ReportSessionProgressRequest(
                session_id=session_id, progress_entries=[entry(USER, (CREATE, 1, 0))]
            )
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert get(stub, session_id) == failed

    for call in (
        lambda: stub.GetSession(service_pb2.GetSessionRequest(session_id="ses-unknown")),
        lambda: stub.Heartbeat(service_pb2.HeartbeatRequest(session_id="ses-unknown")),
        lambda: server.operations.Get(operation_service_pb2.GetOperationRequest(operation_id="opn-unknown")),
    ):
        with pytest.raises(grpc.RpcError) as missing:
            call()
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_expired_session_is_never_shown_open(start_server, store_url) -> None:  # type: ignore[no-untyped-def]
    clock = ManualClock()
    server = start_server(
        store_url, clock=clock, policy=Policy.from_seconds(session_ttl=60, heartbeat_grace=20, sync_interval=0.001)
    )
    stub = server.sessions
    _, opened = open_session(stub)
    session_id = opened.opened_session.session_id

    clock.advance(61)
    shown = get(stub, session_id)  # no expiry event yet: the read side decides by time
    assert shown.status == session_pb2.EXPIRED
    assert shown.closed_at == shown.expires_at

    with pytest.raises(grpc.RpcError) as refused:
        stub.Heartbeat(service_pb2.HeartbeatRequest(session_id=session_id))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # The refusal recorded the expiry as an event.
    assert server.server.app.get_session(session_id).status.name == "EXPIRED"

    _, next_open = open_session(stub)
    assert next_open.result == service_pb2.SUCCESS
    assert next_open.opened_session.sync_mode == session_pb2.FULL_SYNC
