"""JSON logs and the access log, from a real server process: every line of
its standard error parses as JSON, each call has its access line, and no
token appears anywhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from sessions import credentials
from sessions.api.protos import service_pb2, service_pb2_grpc
from tests.server_process import ServerProcess

pytestmark = pytest.mark.slow

SERVICE = "yandex.cloud.organizationmanager.v1.idp.SynchronizationSessionService"


def json_lines(server: ServerProcess) -> list[dict[str, Any]]:
    lines = server.log_path.read_text().splitlines()
    assert lines
    return [json.loads(line) for line in lines]  # every line, or the test fails here


def access_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["logger"] == "sessions.access" and "method" in line]


def serve(tmp_path: Path, access: str, *args: str) -> tuple[ServerProcess, str]:
    auth = tmp_path / "credentials.json"
    token, _ = credentials.add_token(auth, "admin", name="ops")
    server = ServerProcess(
        f"sqlite://{tmp_path}/s.db",
        tmp_path / "server.log",
        "--auth-file", str(auth), *args,
        env={"SESSIONS_LOG_FORMAT": "json", "SESSIONS_ACCESS_LOG": access},
    )
    server.wait_serving()
    return server, token


def workload(server: ServerProcess, token: str) -> str:
    """An OK open (with an idempotency key) and get, a NOT_FOUND, an
    INVALID_ARGUMENT and an UNAUTHENTICATED call; returns the session id."""
    stub = service_pb2_grpc.SynchronizationSessionServiceStub(server.channel)
    bearer = [("authorization", f"Bearer {token}")]
    operation = stub.OpenSession(
        service_pb2.OpenSessionRequest(subject_container_id="c", agent_id="a", session_type=1),
        metadata=[*bearer, ("idempotency-key", "k-1")],
        timeout=10,
    )
    opened = service_pb2.OpenSessionResponse()
    assert operation.response.Unpack(opened)
    session_id = opened.opened_session.session_id
    stub.GetSession(service_pb2.GetSessionRequest(session_id=session_id), metadata=bearer, timeout=10)
    for unknown, code in (("nosuchsession", grpc.StatusCode.NOT_FOUND),
                          ("bad\x01id", grpc.StatusCode.INVALID_ARGUMENT)):
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetSession(service_pb2.GetSessionRequest(session_id=unknown), metadata=bearer, timeout=10)
        assert refused.value.code() == code
    with pytest.raises(grpc.RpcError) as refused:
        stub.GetSession(
            service_pb2.GetSessionRequest(session_id=session_id),
            metadata=[("authorization", "Bearer sst_0123456789abcdef_" + "B" * 43)],
            timeout=10,
        )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    return str(session_id)


def test_json_lines_with_an_access_line_per_call_and_no_token(tmp_path: Path) -> None:
    server, token = serve(tmp_path, "on")
    try:
        session_id = workload(server, token)
    finally:
        assert server.stop() == 0
    lines = json_lines(server)
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line), line
    text = server.log_path.read_text()
    assert token not in text and token.split("_")[-1] not in text
    assert "B" * 43 not in text

    calls = [(a["method"], a["code"], a["session_id"], a["idempotency_key"]) for a in access_lines(lines)]
    assert calls == [
        (f"{SERVICE}/OpenSession", "OK", None, True),
        (f"{SERVICE}/GetSession", "OK", session_id, False),
        (f"{SERVICE}/GetSession", "NOT_FOUND", "nosuchsession", False),
        # A request the edge refuses is not taken apart: its id is not logged.
        (f"{SERVICE}/GetSession", "INVALID_ARGUMENT", None, False),
    ]
    for line in access_lines(lines):
        assert line["principal"] == "admin:ops"
        assert line["duration_ms"] >= 0
    # The call refused before it reached the service is logged as a refusal.
    refusals = [line for line in lines if line["logger"] == "sessions.access" and "UNAUTHENTICATED" in line["message"]]
    assert len(refusals) == 1
    # At start: the version, the store and every setting.
    (settings,) = [line["settings"] for line in lines if "settings" in line]
    assert settings["log_format"] == "json" and settings["access_log"] == "on"
    assert settings["threads"] == 32 and settings["grace"] == 10.0
    assert any(line["message"].startswith("sessions ") for line in lines)


def test_the_access_log_of_errors_only_or_none(tmp_path: Path) -> None:
    server, token = serve(tmp_path, "errors")
    try:
        workload(server, token)
    finally:
        assert server.stop() == 0
    codes = [a["code"] for a in access_lines(json_lines(server))]
    assert codes == ["NOT_FOUND", "INVALID_ARGUMENT"]

    (tmp_path / "off").mkdir()
    server, token = serve(tmp_path / "off", "off")
    try:
        workload(server, token)
    finally:
        assert server.stop() == 0
    assert access_lines(json_lines(server)) == []
