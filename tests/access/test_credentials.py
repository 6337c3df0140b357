"""The credentials file and `sessions auth`: hashes only, atomic writes,
revocation, and reloading a running server (in-process and by SIGHUP)."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import grpc
import pytest

from sessions import credentials
from sessions.api.protos import service_pb2, service_pb2_grpc
from sessions.cli import main
from sessions.server import SessionsServer
from tests.access.conftest import bearer
from tests.server_process import ServerProcess
from tests.waiting import wait_until


def _list_sessions(channel: grpc.Channel, token: str) -> None:
    service_pb2_grpc.SynchronizationSessionServiceStub(channel).ListSessions(
        service_pb2.ListSessionsRequest(subject_container_id="c-1"), metadata=bearer(token), timeout=10
    )


def _status(channel: grpc.Channel, token: str) -> grpc.StatusCode:
    try:
        _list_sessions(channel, token)
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def test_the_file_holds_hashes_only_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "auth" / "credentials.json"
    token, made = credentials.add_token(path, "agent", ["agent-1", "agent-1", "agent-2"], name="ad-1")
    text = path.read_text()
    assert token not in text and token.rsplit("_", 1)[1] not in text
    assert made.token_id in token and made.token_sha256 in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = json.loads(text)
    assert raw["format"] == "sessions-credentials/1"
    assert raw["credentials"][0]["agent_ids"] == ["agent-1", "agent-2"]
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []

    loaded = credentials.load(path)
    assert loaded.authenticate(token).credential == made
    assert made.principal == "agent:ad-1"
    assert loaded.authenticate(token + "x").credential is None


@pytest.mark.parametrize(
    ("role", "agent_ids", "name", "problem"),
    [
        ("agent", [], None, "at least one agent id"),
        ("reader", ["agent-1"], None, "only agent credentials"),
        ("boss", [], None, "not one of"),
        ("admin", [], "has space", "name"),
        ("agent", ["x" * 51], None, "1-50 characters"),
    ],
)
def test_bad_credentials_are_refused_and_nothing_is_written(tmp_path: Path, role, agent_ids, name, problem) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "credentials.json"
    with pytest.raises(credentials.CredentialsError, match=problem):
        credentials.add_token(path, role, agent_ids, name)
    assert not path.exists()


def test_cli_add_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "credentials.json"
    assert main(["auth", "add-token", "--role", "agent", "--agent-id", "agent-7", "--auth-file", str(path)]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert token.startswith("sst_") and "shown only this once" in err and "agent:agent-7" in err
    assert main(["auth", "add-token", "--role", "auditor", "--name", "sec", "--auth-file", str(path)]) == 0
    capsys.readouterr()
    assert main(["auth", "add-token", "--role", "auditor", "--name", "sec", "--auth-file", str(path)]) == 2
    assert "already named 'sec'" in capsys.readouterr().err

    assert main(["auth", "list", "--auth-file", str(path)]) == 0
    listed = capsys.readouterr().out
    assert "agent-7" in listed and "sec" in listed and "auditor" in listed
    assert token not in listed and credentials.token_digest(token) not in listed

    assert main(["auth", "revoke", "agent-7", "--auth-file", str(path)]) == 0
    capsys.readouterr()
    assert main(["auth", "revoke", "agent-7", "--auth-file", str(path)]) == 2
    assert "no live credential" in capsys.readouterr().err
    assert main(["auth", "list", "--json", "--auth-file", str(path)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["principal"], r["revoked_at"] is not None) for r in rows] == [
        ("agent:agent-7", True),
        ("auditor:sec", False),
    ]
    assert all("token_sha256" not in r for r in rows)
    assert credentials.load(path).authenticate(token).credential is None
    # The name of a revoked credential can be given again (a new token).
    assert main(["auth", "add-token", "--role", "agent", "--agent-id", "agent-7", "--auth-file", str(path)]) == 0


def test_cli_needs_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SESSIONS_AUTH_FILE", raising=False)
    assert main(["auth", "list"]) == 2
    assert "--auth-file" in capsys.readouterr().err
    monkeypatch.setenv("SESSIONS_AUTH_FILE", str(tmp_path / "via-env.json"))
    assert main(["auth", "add-token", "--role", "admin"]) == 0
    assert (tmp_path / "via-env.json").exists()


def test_a_damaged_file_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    path.write_text("{not json")
    with pytest.raises(credentials.CredentialsError, match="not valid JSON"):
        credentials.load(path)
    path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(credentials.CredentialsError, match="not a credentials file"):
        credentials.load(path)
    with pytest.raises(credentials.CredentialsError, match="does not exist"):
        credentials.load(tmp_path / "missing.json")


def test_revocation_and_new_tokens_apply_on_reload(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    kept, _ = credentials.add_token(path, "reader", name="kept")
    gone, _ = credentials.add_token(path, "reader", name="gone")
    server = SessionsServer(f"sqlite://{tmp_path}/s.db", "127.0.0.1:0", auth_file=path)
    port = server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        assert _status(channel, gone) == grpc.StatusCode.OK
        credentials.revoke(path, "gone")
        late, _ = credentials.add_token(path, "reader", name="late")
        # Nothing changes until the server reloads.
        assert _status(channel, gone) == grpc.StatusCode.OK
        assert _status(channel, late) == grpc.StatusCode.UNAUTHENTICATED
        assert server.reload_credentials() is True
        assert _status(channel, gone) == grpc.StatusCode.UNAUTHENTICATED
        assert _status(channel, late) == grpc.StatusCode.OK
        assert _status(channel, kept) == grpc.StatusCode.OK

        # A broken file does not lock everyone out: the last good set stays.
        path.write_text("{broken")
        assert server.reload_credentials() is False
        assert _status(channel, kept) == grpc.StatusCode.OK
    finally:
        channel.close()
        server.stop(grace=1)


def test_reload_without_credentials_is_a_no_op(tmp_path: Path) -> None:
    server = SessionsServer(f"sqlite://{tmp_path}/s.db", "127.0.0.1:0")
    assert server.reload_credentials() is False


@pytest.mark.slow
def test_sighup_reloads_a_running_server(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    first, _ = credentials.add_token(path, "reader", name="first")
    process = ServerProcess(f"sqlite://{tmp_path}/s.db", tmp_path / "server.log", "--auth-file", str(path))
    try:
        process.wait_serving()
        assert _status(process.channel, first) == grpc.StatusCode.OK
        assert main(["auth", "revoke", "first", "--auth-file", str(path)]) == 0
        second, _ = credentials.add_token(path, "reader", name="second")
        os.kill(process.proc.pid, signal.SIGHUP)
        assert wait_until(lambda: _status(process.channel, first) == grpc.StatusCode.UNAUTHENTICATED, 10)
        assert _status(process.channel, second) == grpc.StatusCode.OK
        assert process.proc.poll() is None  # SIGHUP did not stop it
        log = process.log()
        assert "credentials: reloaded" in log and "1 live credential(s), 1 revoked" in log
        assert first not in log and second not in log
    finally:
        assert process.stop() == 0
