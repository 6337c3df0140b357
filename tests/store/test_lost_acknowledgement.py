"""A commit whose acknowledgement is lost: PostgreSQL committed the call's
events, but the connection failed before the client heard so. The call
must then answer with what was stored (looked up by its operation record),
never ABORTED (which says nothing was stored) and never apply the change
twice; with or without an idempotency key, alone or in a group commit."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest
from eventsourcing.persistence import OperationalError

from sessions.api.protos import operation_service_pb2, service_pb2
from sessions.store.health import StoreUnavailable
from tests.requests import created_users, report_request
from tests.waiting import wait_until

pytestmark = pytest.mark.postgres


class LostAcknowledgements:
    """The next ``count`` commits of events (of any thread) end with an
    error raised after the transaction committed, as when the connection
    breaks between PostgreSQL's COMMIT and its answer."""

    def __init__(self, app: Any, monkeypatch: pytest.MonkeyPatch, error: type[Exception], count: int = 1):
        self.remaining = count
        self.lost = 0
        self._inserting = threading.local()
        self._lock = threading.Lock()
        datastore, recorder = app.factory.datastore, app.recorder
        real_connection, real_insert = datastore.get_connection, recorder._insert_one

        @contextmanager
        def get_connection() -> Iterator[Any]:
            with real_connection() as conn:
                yield conn
            if getattr(self._inserting, "on", False) and self._take():
                raise error("server closed the connection unexpectedly")

        def insert_one(events: Any, kwargs: Any) -> Any:
            self._inserting.on = True
            try:
                return real_insert(events, kwargs)
            finally:
                self._inserting.on = False

        monkeypatch.setattr(datastore, "get_connection", get_connection)
        monkeypatch.setattr(recorder, "_insert_one", insert_one)

    def _take(self) -> bool:
        with self._lock:
            if self.remaining <= 0:
                return False
            self.remaining -= 1
            self.lost += 1
            return True


def _opened(server: Any, container: str) -> str:
    answer = server.sessions.OpenSession(
        service_pb2.OpenSessionRequest(subject_container_id=container, agent_id="a", session_type=1),
        timeout=10,
    )
    metadata = service_pb2.OpenSessionMetadata()
    answer.metadata.Unpack(metadata)
    return metadata.session_id


def _created(server: Any, session_id: str) -> int:
    return created_users(
        server.sessions.GetSession(service_pb2.GetSessionRequest(session_id=session_id), timeout=10).session
    )


def _versions(server: Any, session_id: str) -> int:
    return len(server.server.app.recorder.select_events(session_id))


@pytest.mark.parametrize("error", [OperationalError, StoreUnavailable], ids=["retried-by-the-library", "not-retried"])
@pytest.mark.parametrize("key", ["", "k-1"], ids=["no-key", "key"])
def test_a_committed_call_whose_answer_was_lost_answers_ok_and_applies_once(
    postgres_url: str, start_server: Any, monkeypatch: pytest.MonkeyPatch, error: type[Exception], key: str
) -> None:
    server = start_server(postgres_url, run_deadlines=False)
    session_id = _opened(server, "c-1")
    before = _versions(server, session_id)
    lost = LostAcknowledgements(server.server.app, monkeypatch, error)

    metadata = [("idempotency-key", key)] if key else []
    answer = server.sessions.ReportSessionProgress(report_request(session_id), metadata=metadata, timeout=10)

    assert lost.lost == 1  # the acknowledgement was lost ...
    assert answer.done  # ... and the call still answered with its operation
    assert _versions(server, session_id) == before + 1  # stored once
    assert _created(server, session_id) == 1
    # OperationService returns the same operation: it is the stored one.
    stored = server.operations.Get(operation_service_pb2.GetOperationRequest(operation_id=answer.id), timeout=10)
    assert stored == answer


def test_every_caller_of_a_group_whose_commit_answer_was_lost_is_told_the_truth(
    postgres_url: str, start_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server(postgres_url, run_deadlines=False)
    # Sessions whose commands do not share a stream lock (striped), so that
    # all six reach the commit queue at once.
    app = server.server.app
    ids: list[str] = []
    k = 0
    while len(ids) < 6:
        sid = _opened(server, f"c-{k}")
        k += 1
        if all(app.stream_lock(sid) is not app.stream_lock(other) for other in ids):
            ids.append(sid)
    before = {sid: _versions(server, sid) for sid in ids}
    recorder = server.server.app.recorder
    lost = LostAcknowledgements(server.server.app, monkeypatch, OperationalError)

    answers: dict[str, Any] = {}

    def report(session_id: str) -> None:
        try:
            answers[session_id] = server.sessions.ReportSessionProgress(report_request(session_id), timeout=20)
        except grpc.RpcError as e:
            answers[session_id] = e

    with recorder._turns:  # as if a save were committing: the calls queue up
        recorder._committing = True
    threads = [threading.Thread(target=report, args=(sid,)) for sid in ids]
    for t in threads:
        t.start()
    assert wait_until(lambda: len(recorder._queue) == len(ids), timeout=10)
    recorder._pass_turn()  # the first queued commits the whole group
    for t in threads:
        t.join(30)

    assert lost.lost == 1 and recorder.group_sizes.largest == len(ids)
    failed = {sid: a for sid, a in answers.items() if isinstance(a, grpc.RpcError)}
    assert failed == {}, {sid: (e.code(), e.details()) for sid, e in failed.items()}
    for sid in ids:
        assert _versions(server, sid) == before[sid] + 1
        assert _created(server, sid) == 1
