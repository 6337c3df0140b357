"""The REST face meets the gRPC face's access control: the Authorization
header is the bearer metadata, the same roles allow the same methods, and
the caller is admitted before anything about its request is looked at."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import httpx
import pytest
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2

from tests.access.conftest import UNKNOWN_TOKEN, Tokens
from tests.rest.conftest import SESSIONS, Faces

OPEN = f"{SESSIONS}:open"


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _code(answer: httpx.Response) -> tuple[int, int]:
    status = json_format.ParseDict(answer.json(), status_pb2.Status())
    return answer.status_code, status.code


def _open_body(agent: str = "agent-1") -> dict[str, str]:
    return {"subjectContainerId": f"c-{uuid.uuid4().hex[:8]}", "agentId": agent, "sessionType": "AD_SYNC"}


@pytest.mark.parametrize("who", ["none", "unknown", "revoked", "not-bearer"])
def test_without_a_live_credential_every_route_is_401(guarded: Faces, tokens: tuple[Path, Tokens], who: str) -> None:
    headers = {
        "none": {},
        "unknown": _auth(UNKNOWN_TOKEN),
        "revoked": _auth(tokens[1].revoked),
        "not-bearer": {"Authorization": f"Basic {tokens[1].admin}"},
    }[who]
    head = guarded.head()
    calls = [
        ("POST", OPEN, _open_body()),
        ("POST", f"{SESSIONS}/s1:close", {}),
        ("POST", f"{SESSIONS}/s1:reportProgress", {}),
        ("POST", f"{SESSIONS}/s1:heartbeat", {}),
        ("GET", f"{SESSIONS}/s1", None),
        ("GET", f"{SESSIONS}?subjectContainerId=c", None),
        ("GET", "/operations/o1", None),
        ("POST", "/operations/o1:cancel", None),
    ]
    for verb, path, body in calls:
        answer = guarded.http.request(verb, path, json=body, headers=headers)
        assert _code(answer) == (401, code_pb2.UNAUTHENTICATED), (verb, path, answer.text)
    assert guarded.head() == head


def test_the_caller_is_admitted_before_its_request_is_looked_at(guarded: Faces) -> None:
    unreadable = [
        guarded.http.post(OPEN, content=b"{not json"),
        guarded.http.post(OPEN, json={"bogus": 1}),
        guarded.http.get(f"{SESSIONS}/%ff"),
        guarded.http.get(f"{SESSIONS}?subjectContainerId=%ff&nope=1"),
        guarded.http.post(OPEN, json={}, headers={"Idempotency-Key": b"caf\xe9"}),
    ]
    assert [_code(answer) for answer in unreadable] == [(401, code_pb2.UNAUTHENTICATED)] * len(unreadable)


def test_roles_allow_what_they_allow_over_grpc(
    guarded: Faces, tokens: tuple[Path, Tokens], caplog: pytest.LogCaptureFixture
) -> None:
    t = tokens[1]
    opened = guarded.http.post(OPEN, json=_open_body(), headers=_auth(t.agent_owner))
    assert opened.status_code == 200, opened.text
    assert opened.json()["createdBy"] == "agent:owner"  # the principal, never the token
    session_id = opened.json()["metadata"]["sessionId"]

    head = guarded.head()
    with caplog.at_level(logging.WARNING, logger="sessions.access"):
        denied = guarded.http.post(f"{SESSIONS}/{session_id}:heartbeat", json={}, headers=_auth(t.reader))
        assert _code(denied) == (403, code_pb2.PERMISSION_DENIED)
        other_agent = guarded.http.post(f"{SESSIONS}/{session_id}:heartbeat", json={}, headers=_auth(t.agent_other))
        assert _code(other_agent) == (403, code_pb2.PERMISSION_DENIED)
        foreign_open = guarded.http.post(OPEN, json=_open_body("agent-2"), headers=_auth(t.agent_owner))
        assert _code(foreign_open) == (403, code_pb2.PERMISSION_DENIED)
        auditor_cancel = guarded.http.post(f"/operations/{opened.json()['id']}:cancel", headers=_auth(t.auditor))
        assert _code(auditor_cancel) == (403, code_pb2.PERMISSION_DENIED)
    assert guarded.head() == head
    assert "PERMISSION_DENIED principal=reader:dash" in caplog.text
    assert t.reader not in caplog.text

    for token in (t.reader, t.auditor, t.agent_other, t.admin):
        read = guarded.http.get(f"{SESSIONS}/{session_id}", headers=_auth(token))
        assert read.status_code == 200 and read.json()["session"]["sessionId"] == session_id
        operation = guarded.http.get(f"/operations/{opened.json()['id']}", headers=_auth(token))
        assert operation.json() == opened.json()
    admin_close = guarded.http.post(f"{SESSIONS}/{session_id}:close", json={}, headers=_auth(t.admin))
    assert admin_close.status_code == 200 and admin_close.json()["createdBy"] == "admin:ops"


def test_the_openapi_document_is_open_and_asks_for_the_bearer_scheme(guarded: Faces) -> None:
    answer = guarded.http.get("/openapi.json")
    assert answer.status_code == 200
    document = answer.json()
    assert document["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert document["security"] == [{"bearer": []}]
