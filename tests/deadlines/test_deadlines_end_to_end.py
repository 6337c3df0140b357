"""A session left alone goes OPENED -> PENDING -> EXPIRED with both events in
its history, with real server processes and second-scale settings."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sessions.api.protos import service_pb2, service_pb2_grpc, session_pb2
from sessions.domain.policy import Policy
from sessions.store.application import SessionsApplication
from sessions.store.urls import parse_store_url
from tests.server_process import ServerProcess
from tests.waiting import wait_until

SETTINGS = ["--session-ttl", "3", "--heartbeat-grace", "1", "--sync-interval", "0.001",
            "--deadline-interval", "0.1"]


def wait_for_status(stub, session_id: str, status: int, timeout: float = 15) -> session_pb2.SynchronizationSession:  # type: ignore[no-untyped-def]
    def get() -> session_pb2.SynchronizationSession:
        return stub.GetSession(service_pb2.GetSessionRequest(session_id=session_id)).session

    wait_until(lambda: get().status == status, timeout, interval=0.05)
    return get()


@pytest.mark.slow
def test_left_alone_with_two_servers(store_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    first = ServerProcess(store_url, tmp_path / "first.log", *SETTINGS)
    # The second server has no projector (the production shape on PostgreSQL);
    # both run deadline workers.
    second = ServerProcess(store_url, tmp_path / "second.log", *SETTINGS, "--no-projector")
    try:
        first.wait_serving()
        second.wait_serving()
        reader = service_pb2_grpc.SynchronizationSessionServiceStub(first.channel)
        writer = service_pb2_grpc.SynchronizationSessionServiceStub(second.channel)

        request = service_pb2.OpenSessionRequest(subject_container_id="c", agent_id="a", session_type=1)
        opened = service_pb2.OpenSessionResponse()
        writer.OpenSession(request).response.Unpack(opened)
        sid = opened.opened_session.session_id

        pending = wait_for_status(reader, sid, session_pb2.PENDING)
        assert pending.status == session_pb2.PENDING, pending
        expired = wait_for_status(reader, sid, session_pb2.EXPIRED)
        assert expired.status == session_pb2.EXPIRED and expired.closed_at == expired.expires_at

        app = SessionsApplication(parse_store_url(store_url), policy=Policy())
        try:
            assert wait_until(
                lambda: type(list(app.events.get(sid))[-1]).__name__ == "SessionExpired", 10, 0.05
            ), "expiry event not recorded"
            events = list(app.events.get(sid))
        finally:
            app.close()
        names = [type(e).__name__ for e in events]
        assert names == ["SessionOpened", "SessionStalled", "SessionExpired"]
        opened_at, stalled_at, expired_at = (e.timestamp for e in events)
        assert stalled_at >= opened_at + timedelta(seconds=1)
        assert expired_at >= opened_at + timedelta(seconds=3)
        assert events[2].closed_at == opened_at + timedelta(seconds=3)

        again = service_pb2.OpenSessionResponse()
        writer.OpenSession(request).response.Unpack(again)
        assert again.result == service_pb2.SUCCESS
        assert again.opened_session.sync_mode == session_pb2.FULL_SYNC
    finally:
        assert second.stop() == 0, second.log()
        assert first.stop() == 0, first.log()
