"""Without credentials the server is open on loopback only; any other address
is refused (exit 2) unless --insecure-no-auth says it is meant."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from sessions import credentials
from sessions.api.protos import service_pb2, service_pb2_grpc
from sessions.server import SessionsServer
from sessions.transport import SecurityConfigError, is_loopback
from tests.server_process import free_port


@pytest.mark.parametrize(
    ("listen", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.8.9.10:1", True),
        ("localhost:0", True),
        ("[::1]:50051", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        (":50051", False),
        ("10.0.0.5:50051", False),
        ("sessions.example.com:50051", False),
    ],
)
def test_what_counts_as_loopback(listen: str, loopback: bool) -> None:
    assert is_loopback(listen) is loopback


def test_a_server_without_credentials_refuses_a_public_address(tmp_path: Path) -> None:
    store = tmp_path / "s.db"
    with pytest.raises(SecurityConfigError, match="refusing to listen on 0.0.0.0:0 without credentials"):
        SessionsServer(f"sqlite://{store}", "0.0.0.0:0")
    assert not store.exists()  # refused before anything was opened


def test_open_on_loopback_accepts_everyone_as_before(start_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = start_server(f"sqlite://{tmp_path}/s.db")
    operation = server.sessions.OpenSession(
        service_pb2.OpenSessionRequest(subject_container_id="c", agent_id="a", session_type=1)
    )
    assert operation.created_by == "anonymous"


@pytest.mark.parametrize("how", ["credentials", "insecure"])
def test_a_public_address_with_credentials_or_insecure_flag_serves(tmp_path: Path, how: str) -> None:
    kwargs: dict[str, object] = {"insecure_no_auth": True}
    token = None
    if how == "credentials":
        path = tmp_path / "credentials.json"
        token, _ = credentials.add_token(path, "reader", name="r")
        kwargs = {"auth_file": path}
    server = SessionsServer(f"sqlite://{tmp_path}/s.db", "0.0.0.0:0", **kwargs)  # type: ignore[arg-type]
    port = server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        metadata = [("authorization", f"Bearer {token}")] if token else []
        service_pb2_grpc.SynchronizationSessionServiceStub(channel).ListSessions(
            service_pb2.ListSessionsRequest(subject_container_id="c"), metadata=metadata, timeout=10
        )
    finally:
        channel.close()
        server.stop(grace=1)


def _serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sessions", "serve", "--store", f"sqlite://{tmp_path}/s.db", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )


@pytest.mark.slow
def test_the_command_refuses_a_public_address_without_credentials(tmp_path: Path) -> None:
    run = _serve(tmp_path, "--listen", f"0.0.0.0:{free_port()}")
    assert run.returncode == 2, run.stderr
    assert "refusing to listen on 0.0.0.0" in run.stderr
    assert "--auth-file" in run.stderr and "--insecure-no-auth" in run.stderr
    assert not (tmp_path / "s.db").exists()


@pytest.mark.slow
def test_the_command_refuses_a_missing_credentials_file(tmp_path: Path) -> None:
    run = _serve(tmp_path, "--listen", "127.0.0.1:0", "--auth-file", str(tmp_path / "nope.json"))
    assert run.returncode == 2, run.stderr
    assert "does not exist" in run.stderr and "sessions auth add-token" in run.stderr


@pytest.mark.slow
def test_the_command_serves_a_public_address_with_insecure_no_auth(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sessions", "serve", "--store", f"sqlite://{tmp_path}/t.db",
         "--listen", f"0.0.0.0:{port}", "--insecure-no-auth"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=20)
        channel.close()
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, output
    assert "the server is OPEN to every caller" in output
