"""While PostgreSQL cannot be reached a REST call answers 503 UNAVAILABLE at
once, as a gRPC call answers UNAVAILABLE, and 200 again once it is back; and
the gRPC codes map to the standard HTTP statuses."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest
from google.rpc import code_pb2

from sessions.rest.gateway import HTTP_STATUS
from sessions.server import SessionsServer
from tests.rest.conftest import SESSIONS
from tests.tcp_proxy import TcpProxy
from tests.waiting import wait_until


def test_codes_map_to_the_standard_http_statuses() -> None:
    assert {code_pb2.Code.Name(code): status for code, status in HTTP_STATUS.items()} == {
        "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
        "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "UNAUTHENTICATED": 401,
        "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400,
        "UNIMPLEMENTED": 501, "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500,
    }
    assert set(HTTP_STATUS) == set(code_pb2.Code.values())  # every code has its status


@pytest.mark.postgres
def test_an_outage_is_503_unavailable_and_ends_when_the_store_is_back(postgres_url: str) -> None:
    direct = urlsplit(postgres_url)
    proxy = TcpProxy((direct.hostname or "127.0.0.1", direct.port or 5432))
    proxy.up()
    server = SessionsServer(
        f"postgresql://{direct.username}@127.0.0.1:{proxy.port}{direct.path}",
        "127.0.0.1:0",
        http_listen="127.0.0.1:0",
    )
    server.start()
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{server.http_port}", timeout=10)
        opened = http.post(f"{SESSIONS}:open", json={"subjectContainerId": "c", "agentId": "a", "sessionType": 1})
        session_id = opened.json()["metadata"]["sessionId"]
        beat = f"{SESSIONS}/{session_id}:heartbeat"
        assert http.post(beat, json={}).status_code == 200

        proxy.down()
        answers: list[httpx.Response] = []

        def refused() -> bool:
            answers.append(http.post(beat, json={}))
            return answers[-1].status_code == 503

        assert wait_until(refused, 10, interval=0.05), answers[-1].text
        assert answers[-1].json() == {"code": code_pb2.UNAVAILABLE, "message": "the event store is unavailable"}
        assert {a.status_code for a in answers} <= {200, 503}  # never a 500

        proxy.up()
        assert wait_until(lambda: http.post(beat, json={}).status_code == 200, 15, interval=0.05)
        http.close()
    finally:
        server.stop(grace=1)
        proxy.close()
