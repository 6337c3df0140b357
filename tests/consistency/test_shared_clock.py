"""Every process on a PostgreSQL store decides on the database's clock: a
host whose clock is off by 20 s records the same times (created_at,
expires_at, stalls, expiries) as one whose clock is right, and says in its
log that its clock is off. The skewed process runs under libfaketime
(Debian's `faketime` package; .ci/run installs it)."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from sessions.api.protos import service_pb2, service_pb2_grpc
from sessions.store.application import SessionsApplication
from sessions.store.clock import SharedClock, system_clock
from sessions.store.urls import parse_store_url
from tests.server_process import ServerProcess

pytestmark = pytest.mark.postgres

LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


def _database_now(url: str) -> datetime:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]


def test_a_skewed_host_reads_the_databases_time(postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    app = SessionsApplication(parse_store_url(postgres_url))
    try:
        assert isinstance(app.clock, SharedClock)  # the default on PostgreSQL
        skewed = SharedClock(app._database_now, base=lambda: system_clock() - timedelta(seconds=20))
        with caplog.at_level(logging.WARNING, logger="sessions.clock"):
            reading = skewed()
        database = _database_now(postgres_url)
        assert abs((reading - database).total_seconds()) < 1.0
        assert 19 < skewed.offset.total_seconds() < 21
        assert any("20.0s behind the database's" in r.getMessage() for r in caplog.records), caplog.text
    finally:
        app.close()


def _faketime_or_fail() -> str:
    if os.path.exists(LIBFAKETIME):
        return LIBFAKETIME
    message = "libfaketime is not installed (apt-get install faketime)"
    if os.environ.get("CI"):
        pytest.fail(message)  # CI installs it: its absence there is a fault
    pytest.skip(message)


@pytest.mark.slow
def test_processes_with_clocks_20s_apart_record_the_same_times(postgres_url: str, tmp_path: Path) -> None:
    library = _faketime_or_fail()
    behind = ServerProcess(
        postgres_url, tmp_path / "behind.log", "--no-projector",
        env={"LD_PRELOAD": library, "FAKETIME": "-20s"},
    )
    right = ServerProcess(postgres_url, tmp_path / "right.log")
    try:
        behind.wait_serving()
        right.wait_serving()
        stub = service_pb2_grpc.SynchronizationSessionServiceStub(behind.channel)
        before = _database_now(postgres_url)
        answer = stub.OpenSession(
            service_pb2.OpenSessionRequest(subject_container_id="c", agent_id="a", session_type=1), timeout=10
        )
        after = _database_now(postgres_url)
        opened = service_pb2.OpenSessionResponse()
        answer.response.Unpack(opened)
        created = opened.opened_session.created_at.ToDatetime(tzinfo=UTC)
        # Recorded on the database's clock, not 20 s in the past.
        assert before - timedelta(seconds=1) <= created <= after + timedelta(seconds=1), (before, created, after)
        # The other process serves the same session with the same times.
        other = service_pb2_grpc.SynchronizationSessionServiceStub(right.channel)
        shown = other.GetSession(
            service_pb2.GetSessionRequest(session_id=opened.opened_session.session_id), timeout=10
        ).session
        assert shown.created_at == opened.opened_session.created_at
        assert shown.status == opened.opened_session.status  # not EXPIRED, not PENDING
        assert "behind the database's" in behind.log()
        assert "behind the database's" not in right.log()
    finally:
        behind.stop()
        right.stop()
