"""A poison event: an event the store holds but whose read-model row the
store refuses (here a NUL in a text column, on PostgreSQL; written past the
API's edge, as an older release or a direct write could). The projector
parks it with its error instead of retrying the batch forever, moves on,
and the server stays SERVING, also after a restart; once the stored event
is repaired, retry-parked applies it."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sessions.api.protos import service_pb2, service_pb2_grpc
from sessions.domain.commands import OpenSession
from sessions.domain.enums import SessionType
from sessions.projection.status import read_model_status
from sessions.store.application import Caller, SessionsApplication
from sessions.store.urls import parse_store_url
from tests.projections_ops.ops_support import described, sessions_command, sql
from tests.server_process import ServerProcess
from tests.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _render(operation_id: str, now: datetime, result: Any) -> bytes:
    return b""


def _serving(server: ServerProcess) -> int:
    stub = health_pb2_grpc.HealthStub(server.channel)
    return stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status


def _caught_up(app: SessionsApplication) -> bool:
    status = read_model_status(app)
    return status.live.lag_events == 0


def test_a_row_the_store_refuses_is_parked_and_the_server_goes_on(
    postgres_url: str, tmp_path: Path
) -> None:
    server = ServerProcess(postgres_url, tmp_path / "server.log")
    try:
        server.wait_serving()
        api = service_pb2_grpc.SynchronizationSessionServiceStub(server.channel)

        # Past the edge: an application of the test's own (no rows written
        # with its events) stores a session whose agent id has a NUL.
        writer = SessionsApplication(parse_store_url(postgres_url))
        try:
            outcome = writer.execute(OpenSession("c-poison", "agent\x00", SessionType.AD_SYNC), Caller("test"), _render)
        finally:
            writer.close()
        assert not outcome.replayed

        app = SessionsApplication(parse_store_url(postgres_url))
        try:
            assert wait_until(lambda: _caught_up(app), timeout=15), server.log()
            status = read_model_status(app)
            assert status.live.parked >= 1, status
            assert "refused the row" in server.log()
            assert _serving(server) == health_pb2.HealthCheckResponse.SERVING

            # Everything else goes on: a new session is served at once.
            opened = api.OpenSession(
                service_pb2.OpenSessionRequest(
                    subject_container_id="c-ok", agent_id="agent", session_type=1
                ),
                timeout=10,
            )
            metadata = service_pb2.OpenSessionMetadata()
            opened.metadata.Unpack(metadata)
            got = api.GetSession(service_pb2.GetSessionRequest(session_id=metadata.session_id), timeout=10)
            assert got.session.agent_id == "agent"

            # A restart with the event parked reaches SERVING.
            assert server.stop() == 0, server.log()
            server = ServerProcess(postgres_url, tmp_path / "server-2.log")
            server.wait_serving(timeout=30)

            # Repair the stored event, then retry it.
            poisoned = _parked_stream(app)
            for position, state in sql(
                app, "SELECT notification_id, state FROM sessions_events WHERE originator_id = ?", (poisoned,)
            ):
                repaired = json.dumps(_without_nul(json.loads(bytes(state)))).encode()
                sql(app, "UPDATE sessions_events SET state = ? WHERE notification_id = ?", (repaired, position))
            result = sessions_command("projections", "retry-parked", "--store", postgres_url)
            assert result.returncode == 0, described(result)
            assert read_model_status(app).live.parked == 0
            got = api_of(server).GetSession(service_pb2.GetSessionRequest(session_id=poisoned), timeout=10)
            assert got.session.agent_id == "agent"
        finally:
            app.close()
    finally:
        server.stop()


def api_of(server: ServerProcess) -> service_pb2_grpc.SynchronizationSessionServiceStub:
    return service_pb2_grpc.SynchronizationSessionServiceStub(server.channel)


def _parked_stream(app: SessionsApplication) -> str:
    table = read_model_status(app).live.table
    parked = sql(app, f"SELECT DISTINCT stream FROM {table}_parked")
    assert len(parked) == 1, parked
    return str(parked[0][0])


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {k: _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value
