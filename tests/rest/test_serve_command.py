"""`sessions serve --http-listen` / SESSIONS_HTTP_LISTEN, as a real process,
and the safe default: no open REST face on a public address."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from sessions.server import SessionsServer
from sessions.transport import SecurityConfigError
from tests.rest.conftest import SESSIONS
from tests.server_process import ServerProcess, free_port


@pytest.mark.slow
@pytest.mark.parametrize("how", ["flag", "variable"])
def test_serve_answers_rest_beside_grpc_and_stops_on_sigterm(tmp_path: Path, how: str) -> None:
    http_port = free_port()
    address = f"127.0.0.1:{http_port}"
    args = ("--http-listen", address) if how == "flag" else ()
    env = {"SESSIONS_HTTP_LISTEN": address} if how == "variable" else None
    server = ServerProcess(f"sqlite://{tmp_path}/s.db", tmp_path / "log", *args, env=env)
    try:
        server.wait_serving()
        with httpx.Client(base_url=f"http://{address}") as http:
            opened = http.post(
                f"{SESSIONS}:open", json={"subjectContainerId": "c", "agentId": "a", "sessionType": "LDAP_SYNC"}
            )
            assert opened.status_code == 200, opened.text
            session_id = opened.json()["metadata"]["sessionId"]
            assert http.get(f"{SESSIONS}/{session_id}").json()["session"]["sessionType"] == "LDAP_SYNC"
    finally:
        assert server.stop() == 0
    assert f"listening on 127.0.0.1:{http_port} (REST, http)" in server.log()


def test_an_open_rest_face_on_a_public_address_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SecurityConfigError, match="0.0.0.0:8080"):
        SessionsServer(f"sqlite://{tmp_path}/s.db", "127.0.0.1:0", http_listen="0.0.0.0:8080")
    # said to be intended: accepted
    SessionsServer(f"sqlite://{tmp_path}/s.db", "127.0.0.1:0", http_listen="0.0.0.0:8080", insecure_no_auth=True)


def test_a_bad_http_listen_is_bad_usage_and_a_busy_port_stops_the_start(tmp_path: Path) -> None:
    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sessions", "serve", "--listen", f"127.0.0.1:{free_port()}",
             "--store", f"sqlite://{tmp_path}/s.db", *args],
            capture_output=True, text=True, timeout=60,
        )

    bad = serve("--http-listen", "nonsense")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["sessions: listen address 'nonsense' is not HOST:PORT"]

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        busy = serve("--http-listen", address)
    assert busy.returncode != 0
    assert f"cannot listen on {address} (REST)" in busy.stderr
