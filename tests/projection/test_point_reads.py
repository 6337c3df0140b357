"""GetSession's own read path (projection.point_reads): the same row as the
library's path, through the live view, and on PostgreSQL connections that
are replaced when the server cut them, without a failed call."""

from __future__ import annotations

import psycopg
import pytest

from sessions.api.protos import service_pb2


def _open(server) -> str:  # type: ignore[no-untyped-def]
    answer = server.sessions.OpenSession(
        service_pb2.OpenSessionRequest(subject_container_id="c", agent_id="a", session_type=1), timeout=10
    )
    metadata = service_pb2.OpenSessionMetadata()
    answer.metadata.Unpack(metadata)
    return metadata.session_id


def test_the_point_read_is_the_views_row(store_url, start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server(store_url, run_deadlines=False)
    session_id = _open(server)
    read_model = server.server.read_model
    assert read_model.point is not None
    assert read_model.point.get(session_id) == read_model.live.get(session_id)
    assert read_model.point.get("ses-missing") is None


@pytest.mark.postgres
def test_read_connections_cut_by_the_server_are_replaced(postgres_url, start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server(postgres_url, run_deadlines=False)
    session_id = _open(server)
    get = service_pb2.GetSessionRequest(session_id=session_id)
    shown = server.sessions.GetSession(get, timeout=10)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        cut = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'sessions-reads' AND datname = current_database()"
        ).fetchall()
    assert cut, "no read connection to cut"
    for _ in range(5):
        assert server.sessions.GetSession(get, timeout=10) == shown
