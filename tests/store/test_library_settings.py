"""Library settings from the process environment cannot change what the
store URL decides, above all the write path: the read model's rows are
written with the events whatever the environment says."""

from __future__ import annotations

import logging

import pytest

from sessions.api.protos import service_pb2, service_pb2_grpc
from sessions.store.application import SessionsApplication
from sessions.store.urls import parse_store_url, pin_settings
from tests.server_process import ServerProcess


def test_a_prefixed_or_plain_variable_cannot_change_a_pinned_setting() -> None:
    settings = parse_store_url("postgresql://u:secret@db:5432/sessions")
    library_env = {
        "POSTGRES_ENABLE_DB_FUNCTIONS": "y",
        "SESSIONS_POSTGRES_ENABLE_DB_FUNCTIONS": "yes",
        "SESSIONS_POSTGRES_HOST": "elsewhere",
        "SESSIONS_POSTGRES_PASSWORD": "hunter2",
        "SESSIONS_APPLICATION_RECORDER_TOPIC": "eventsourcing.postgres:PostgresApplicationRecorder",
        "POSTGRES_PRE_PING": "y",  # not decided by the URL: left alone
    }
    ignored = pin_settings(library_env, settings, "sessions", dict(library_env))
    assert library_env["POSTGRES_ENABLE_DB_FUNCTIONS"] == "n"
    assert library_env["POSTGRES_HOST"] == "db"
    assert library_env["POSTGRES_PASSWORD"] == "secret"
    assert library_env["APPLICATION_RECORDER_TOPIC"] == settings.env["APPLICATION_RECORDER_TOPIC"]
    assert not any(k.startswith("SESSIONS_") for k in library_env)  # looked up first: gone
    assert library_env["POSTGRES_PRE_PING"] == "y"
    assert len(ignored) == 5
    assert not any("secret" in line or "hunter2" in line for line in ignored)
    assert any(line.startswith("POSTGRES_ENABLE_DB_FUNCTIONS=y") and "rows" in line for line in ignored)


def test_events_stay_plain_json_whatever_the_environment_names(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A cipher or compressor named in the environment is overridden: the
    projector and the audit read the stored JSON as the codec wrote it."""
    monkeypatch.setenv("COMPRESSOR_TOPIC", "eventsourcing.compressor:ZlibCompressor")
    monkeypatch.setenv("SESSIONS_CIPHER_TOPIC", "eventsourcing.cipher:AESCipher")
    app = SessionsApplication(parse_store_url(f"sqlite://{tmp_path}/s.db"))
    try:
        assert app.mapper.cipher is None and app.mapper.compressor is None
    finally:
        app.close()


def test_the_same_value_spelled_differently_is_not_reported() -> None:
    settings = parse_store_url("postgresql://u@db/sessions")
    ignored = pin_settings({}, settings, "sessions", {"POSTGRES_ENABLE_DB_FUNCTIONS": "false"})
    assert ignored == []


def test_the_application_overrides_the_environment_and_says_so(
    tmp_path, monkeypatch, caplog
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SESSIONS_SQLITE_DBNAME", str(tmp_path / "elsewhere.db"))
    monkeypatch.setenv("SESSIONS_AGGREGATE_CACHE_FASTFORWARD", "y")
    caplog.set_level(logging.WARNING, "sessions.store.application")
    app = SessionsApplication(parse_store_url(f"sqlite://{tmp_path}/s.db"))
    try:
        assert app.env.get("SQLITE_DBNAME") == str(tmp_path / "s.db")
        assert app.env.get("AGGREGATE_CACHE_FASTFORWARD") == "n"
    finally:
        app.close()
    assert not (tmp_path / "elsewhere.db").exists()
    lines = [r.getMessage() for r in caplog.records]
    assert sum("SESSIONS_SQLITE_DBNAME=" in line for line in lines) == 1
    assert sum("SESSIONS_AGGREGATE_CACHE_FASTFORWARD=y" in line for line in lines) == 1


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("variable", ["POSTGRES_ENABLE_DB_FUNCTIONS", "SESSIONS_POSTGRES_ENABLE_DB_FUNCTIONS"])
def test_db_functions_in_the_environment_do_not_skip_the_rows(
    postgres_url: str, tmp_path, variable: str
) -> None:  # type: ignore[no-untyped-def]
    server = ServerProcess(postgres_url, tmp_path / "server.log", env={variable: "y"})
    try:
        server.wait_serving()
        stub = service_pb2_grpc.SynchronizationSessionServiceStub(server.channel)
        opened = service_pb2.OpenSessionResponse()
        stub.OpenSession(
            service_pb2.OpenSessionRequest(subject_container_id="c", agent_id="a", session_type=1),
            timeout=10,
        ).response.Unpack(opened)
        assert opened.result == service_pb2.SUCCESS
        sid = opened.opened_session.session_id
        got = stub.GetSession(service_pb2.GetSessionRequest(session_id=sid), timeout=10)
        assert got.session.session_id == sid
        log = server.log()
        assert f"{variable}=y from the environment is overridden" in log, log
    finally:
        assert server.stop() == 0, server.log()


def test_libpq_parameters_overridden_are_reported_without_their_secrets() -> None:
    settings = parse_store_url("postgresql://u:pw@db/sessions?sslpassword=TOPSECRET&sslmode=require")
    ignored = pin_settings({}, settings, "sessions", {"POSTGRES_LIBPQ_PARAMETERS": "sslmode=disable"})
    assert len(ignored) == 1 and ignored[0].startswith("POSTGRES_LIBPQ_PARAMETERS=")
    assert "TOPSECRET" not in ignored[0] and "***" in ignored[0]
