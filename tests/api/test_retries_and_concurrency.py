"""Idempotent retries (also across a restart) and concurrent callers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from sessions.api.protos import operation_service_pb2, service_pb2, session_pb2
from tests.api.test_lifecycle import entry, get, open_session, unpack

USER, GROUP, CREATE, UPDATE = 1, 2, 1, 2


def report_request(session_id: str, successful: int = 1) -> service_pb2.ReportSessionProgressRequest:
    return service_pb2.ReportSessionProgressRequest(
        session_id=session_id, progress_entries=[entry(USER, (CREATE, successful, 0))]
    )


def test_keyed_retries_apply_once_even_across_a_restart(start_server, store_url) -> None:  # type: ignore[no-untyped-def]
    server = start_server(store_url)
    stub = server.sessions
    open_op, opened = open_session(stub, **{"idempotency-key": "open-1"})
    retried_open, _ = open_session(stub, **{"idempotency-key": "open-1"})
    assert retried_open == open_op
    sid = opened.opened_session.session_id

    key = [("idempotency-key", "report-1")]
    first = stub.ReportSessionProgress(report_request(sid, 7), metadata=key)
    head = server.server.app.recorder.max_notification_id()
    assert stub.ReportSessionProgress(report_request(sid, 7), metadata=key) == first
    assert server.server.app.recorder.max_notification_id() == head
    assert get(stub, sid).progress_entries[0].change_info[0].successful == 7

    # Another caller's identical key is another operation.
    other = [("idempotency-key", "report-1"), ("authorization", "Bearer someone-else")]
    assert stub.ReportSessionProgress(report_request(sid, 7), metadata=other).id != first.id
    assert get(stub, sid).progress_entries[0].change_info[0].successful == 14

    close_key = [("idempotency-key", "close-1")]
    closed = stub.CloseSession(service_pb2.CloseSessionRequest(session_id=sid), metadata=close_key)

    server.server.stop(grace=1)
    restarted = start_server(store_url)
    stub = restarted.sessions
    # After the restart and after the close, keyed retries still get the first answers.
    assert stub.ReportSessionProgress(report_request(sid, 7), metadata=key) == first
    assert stub.CloseSession(service_pb2.CloseSessionRequest(session_id=sid), metadata=close_key) == closed
    assert open_session(stub, **{"idempotency-key": "open-1"})[0] == open_op
    assert get(stub, sid).progress_entries[0].change_info[0].successful == 14
    for op in (open_op, first, closed):
        got = restarted.operations.Get(operation_service_pb2.GetOperationRequest(operation_id=op.id))
        assert got == op


def test_a_key_used_for_another_request_is_refused_and_applies_nothing(start_server, store_url) -> None:  # type: ignore[no-untyped-def]
    server = start_server(store_url)
    stub = server.sessions
    _, a = open_session(stub, "c-a")
    _, b = open_session(stub, "c-b")
    a_id, b_id = a.opened_session.session_id, b.opened_session.session_id
    key = [("idempotency-key", "hb-1")]
    first = stub.Heartbeat(service_pb2.HeartbeatRequest(session_id=a_id), metadata=key)
    head = server.server.app.recorder.max_notification_id()
    reused = [
        lambda: stub.Heartbeat(service_pb2.HeartbeatRequest(session_id=b_id), metadata=key),
        lambda: stub.ReportSessionProgress(report_request(a_id), metadata=key),
        lambda: stub.CloseSession(service_pb2.CloseSessionRequest(session_id=a_id), metadata=key),
    ]
    for call in reused:
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "idempotency-key" in refused.value.details() and a_id in refused.value.details()
    assert server.server.app.recorder.max_notification_id() == head
    # The same request again is still the first answer.
    assert stub.Heartbeat(service_pb2.HeartbeatRequest(session_id=a_id), metadata=key) == first


def test_sixteen_concurrent_opens_give_exactly_one_success(start_server, store_url) -> None:  # type: ignore[no-untyped-def]
    server = start_server(store_url)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: open_session(server.sessions, "contended")[1], range(16)))
    results = [a.result for a in answers]
    assert results.count(service_pb2.SUCCESS) == 1
    assert results.count(service_pb2.OPENED_SESSION_EXISTS) == 15
    assert len({a.opened_session.session_id for a in answers}) == 1
    listed = server.sessions.ListSessions(service_pb2.ListSessionsRequest(subject_container_id="contended"))
    assert len(listed.sessions) == 1


def test_concurrent_reports_sum_exactly(start_server, store_url) -> None:  # type: ignore[no-untyped-def]
    server = start_server(store_url)
    _, opened = open_session(server.sessions)
    sid = opened.opened_session.session_id

    def agent(worker: int) -> list[int]:
        successes = []
        for i in range(25):
            operation = server.sessions.ReportSessionProgress(
                service_pb2.ReportSessionProgressRequest(
                    session_id=sid,
                    progress_entries=[entry(USER, (CREATE, 1, 0)), entry(GROUP, (UPDATE, 0, 1))],
                ),
                metadata=[("idempotency-key", f"w{worker}-{i}")],
            )
            successes.append(unpack(operation, session_pb2.SynchronizationSession)
                             .progress_entries[0].change_info[0].successful)
        return successes

    with ThreadPoolExecutor(8) as pool:
        seen = [n for worker in pool.map(agent, range(8)) for n in worker]
    assert len(set(seen)) == 200  # every report saw its own distinct total
    final = get(server.sessions, sid)
    assert final.progress_entries[0].change_info[0].successful == 200
    assert final.progress_entries[1].change_info[0].failed == 200
    assert server.server.app.get_session(sid).version == 201


def test_a_key_names_one_request_not_only_one_method_and_session(start_server, store_url) -> None:  # type: ignore[no-untyped-def]
    """The key reused with other values (an open of another container, a
    report of other counts) is refused and stores nothing; it would
    otherwise be answered with the first request's result, untrue for the
    second."""
    server = start_server(store_url)
    stub = server.sessions
    first_open, opened = open_session(stub, "c-first", **{"idempotency-key": "open-k"})
    sid = opened.opened_session.session_id
    report_key = [("idempotency-key", "report-k")]
    first_report = stub.ReportSessionProgress(report_request(sid, 2), metadata=report_key)
    head = server.server.app.recorder.max_notification_id()

    with pytest.raises(grpc.RpcError) as refused:
        open_session(stub, "c-second", **{"idempotency-key": "open-k"})
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "idempotency-key" in refused.value.details() and "another request" in refused.value.details()
    with pytest.raises(grpc.RpcError) as refused:
        stub.ReportSessionProgress(report_request(sid, 5), metadata=report_key)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    assert server.server.app.recorder.max_notification_id() == head  # nothing stored
    listed = stub.ListSessions(service_pb2.ListSessionsRequest(subject_container_id="c-second"))
    assert list(listed.sessions) == []
    assert sum(c.successful for e in get(stub, sid).progress_entries for c in e.change_info) == 2
    # The same requests again are still their first answers.
    assert open_session(stub, "c-first", **{"idempotency-key": "open-k"})[0] == first_open
    assert stub.ReportSessionProgress(report_request(sid, 2), metadata=report_key) == first_report
