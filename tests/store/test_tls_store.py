"""A store URL's libpq parameters reach every connection: against a
PostgreSQL of the test's own that accepts TLS connections only."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from sessions.api.protos import service_pb2, service_pb2_grpc
from tests.server_process import ServerProcess
from tests.store.tls_postgres import TLSPostgres, tls_postgres

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def pg() -> Iterator[TLSPostgres]:
    try:
        server = tls_postgres()
        started = server.__enter__()
    except (FileNotFoundError, RuntimeError) as e:
        if os.environ.get("SESSIONS_TEST_POSTGRES_OPTIONAL") == "1":
            pytest.skip(f"no PostgreSQL of our own: {e}")
        raise
    try:
        yield started
    finally:
        server.__exit__(None, None, None)


def sessions(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sessions", *args], capture_output=True, text=True, timeout=60
    )


def test_sslmode_require_serves_open_and_get(pg: TLSPostgres, tmp_path: Path) -> None:
    url = pg.url(sslmode="require", application_name="sessions-tls-test")
    server = ServerProcess(url, tmp_path / "server.log")
    try:
        server.wait_serving()
        stub = service_pb2_grpc.SynchronizationSessionServiceStub(server.channel)
        operation = stub.OpenSession(
            service_pb2.OpenSessionRequest(subject_container_id="c", agent_id="a", session_type=1),
            timeout=10,
        )
        opened = service_pb2.OpenSessionResponse()
        assert operation.response.Unpack(opened)
        got = stub.GetSession(
            service_pb2.GetSessionRequest(session_id=opened.opened_session.session_id), timeout=10
        )
        assert got.session == opened.opened_session
        # Every connection the service holds is TLS, under the URL's application_name.
        with psycopg.connect(pg.url(sslmode="require")) as conn:
            rows = conn.execute(
                "SELECT a.application_name, s.ssl FROM pg_stat_activity a "
                "JOIN pg_stat_ssl s USING (pid) WHERE a.pid <> pg_backend_pid() "
                "AND a.backend_type = 'client backend'"
            ).fetchall()
        assert rows
        assert {row[0] for row in rows} == {"sessions-tls-test"}
        assert all(row[1] for row in rows)
    finally:
        assert server.stop() == 0, server.log()


def test_verify_full_with_the_right_ca_connects(pg: TLSPostgres) -> None:
    url = pg.url(sslmode="verify-full", sslrootcert=str(pg.certificates.ca))
    shown = sessions("projections", "status", "--json", "--store", url)
    assert shown.returncode == 0, shown.stderr


@pytest.mark.parametrize("command", [("projections", "status"), ("serve",)])
def test_verify_full_with_a_wrong_ca_is_one_clear_line(pg: TLSPostgres, command: tuple[str, ...]) -> None:
    # The rogue certificate was signed by another CA: it cannot vouch for the server's.
    url = pg.url(sslmode="verify-full", sslrootcert=str(pg.certificates.rogue_client.cert))
    refused = sessions("--log-level", "ERROR", *command, "--store", url)
    assert refused.returncode == 3, refused.stderr
    assert "Traceback" not in refused.stderr
    (line,) = refused.stderr.splitlines()
    assert line.startswith("sessions: store unreachable: ")
    assert "certificate verify failed" in line


def test_a_connection_without_tls_is_refused_by_that_server(pg: TLSPostgres) -> None:
    refused = sessions("projections", "status", "--store", pg.url(sslmode="disable"))
    assert refused.returncode == 3, refused.stderr
    (line,) = refused.stderr.splitlines()
    assert "no encryption" in line
