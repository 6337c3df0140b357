"""Every error class over HTTP: a JSON google.rpc.Status under the HTTP
status of the standard gRPC mapping, the field named for bad input, and
nothing stored for a refused request."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2

from tests.rest.conftest import SESSIONS, Faces


def _status(answer: httpx.Response, http_status: int, code: int) -> status_pb2.Status:
    assert answer.status_code == http_status, answer.text
    assert answer.headers["content-type"] == "application/json"
    status = json_format.ParseDict(answer.json(), status_pb2.Status())  # a valid Status, details resolvable
    assert status.code == code, answer.text
    return status


def _violation(answer: httpx.Response) -> str:
    """The one field a 400 INVALID_ARGUMENT names."""
    status = _status(answer, 400, code_pb2.INVALID_ARGUMENT)
    (detail,) = answer.json()["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    (violation,) = detail["fieldViolations"]
    assert violation["description"] and status.message
    return str(violation["field"])


def _open_body(**fields: Any) -> dict[str, Any]:
    return {"subjectContainerId": f"c-{uuid.uuid4().hex[:8]}", "agentId": "agent-1", "sessionType": "AD_SYNC"} | fields


OPEN = f"{SESSIONS}:open"


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b"{not json", "body"),
        (b"[1, 2]", "body"),
        (b'{"agentId": "a", "agentId": "b"}', "agentId"),
        (b"\xff\xfe", "body"),
        (b"[" * 100_000 + b"]" * 100_000, "body"),
        (json.dumps(_open_body(bogus=1)).encode(), "bogus"),
        (json.dumps(_open_body(sessionType="NO_SUCH_TYPE")).encode(), "sessionType"),
        (json.dumps(_open_body(agentId=12)).encode(), "agentId"),
        (json.dumps(_open_body(subjectContainerId="x\u0000y")).encode(), "subject_container_id"),
        (json.dumps(_open_body(agentId="a" * 51)).encode(), "agent_id"),
        (json.dumps(_open_body(sessionType="SESSION_TYPE_UNSPECIFIED")).encode(), "session_type"),
    ],
    ids=["malformed", "not-an-object", "duplicate-key", "not-utf8", "too-deep", "unknown-field", "unknown-enum",
         "wrong-type", "nul", "too-long", "required"],
)
def test_a_bad_body_is_400_naming_the_field_and_stores_nothing(faces: Faces, content: bytes, field: str) -> None:
    head = faces.head()
    answer = faces.http.post(OPEN, content=content, headers={"Content-Type": "application/json"})
    assert _violation(answer) == field
    assert faces.head() == head


def test_a_body_over_the_limit_is_400_on_body(faces: Faces) -> None:
    limit = faces.server.max_message_bytes
    head = faces.head()
    padded = json.dumps(_open_body(agentId="x" * limit)).encode()
    assert _violation(faces.http.post(OPEN, content=padded)) == "body"

    def chunks():  # no Content-Length: read no further than the limit
        yield b'{"agentId": "'
        for _ in range(limit // 4096 + 2):
            yield b"y" * 4096
        yield b'"}'

    assert _violation(faces.http.post(OPEN, content=chunks())) == "body"
    assert faces.head() == head


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"pageSize": "ten"}, "pageSize"),
        ({"pageSize": "1001"}, "page_size"),
        ({"pageSize": "99999999999999999999999"}, "pageSize"),
        ({"nope": "1"}, "nope"),
        ({"filter": 'status = "FAILD"'}, "filter"),
        ({"pageToken": "forged"}, "page_token"),
    ],
)
def test_bad_query_parameters_are_400_naming_the_parameter(faces: Faces, params: dict[str, str], field: str) -> None:
    answer = faces.http.get(SESSIONS, params={"subjectContainerId": "c-1"} | params)
    assert _violation(answer) == field


def test_query_parameter_errors_of_url_shape(faces: Faces) -> None:
    assert _violation(faces.http.get(f"{SESSIONS}?subjectContainerId=c&subjectContainerId=d")) == "subjectContainerId"
    assert _violation(faces.http.get(f"{SESSIONS}?subjectContainerId=%ff")) == "query"
    assert _violation(faces.http.get(f"{SESSIONS}/%ff%fe")) == "path"
    assert _violation(faces.http.post(f"{OPEN}?agentId=x", json=_open_body())) == "agentId"
    assert _violation(faces.http.get(SESSIONS)) == "subject_container_id"


def test_a_body_that_contradicts_the_path_is_refused(faces: Faces) -> None:
    answer = faces.http.post(f"{SESSIONS}/ses-a:heartbeat", json={"sessionId": "ses-b"})
    assert _violation(answer) == "sessionId"


def test_not_found_precondition_and_bad_methods(faces: Faces) -> None:
    _status(faces.http.get(f"{SESSIONS}/ses-missing"), 404, code_pb2.NOT_FOUND)
    _status(faces.http.get("/operations/opn-missing"), 404, code_pb2.NOT_FOUND)
    _status(faces.http.post(f"{SESSIONS}/ses-missing:heartbeat", json={}), 404, code_pb2.NOT_FOUND)
    _status(faces.http.get("/no/such/path"), 404, code_pb2.NOT_FOUND)
    _status(faces.http.delete(f"{SESSIONS}/ses-1"), 405, code_pb2.UNIMPLEMENTED)
    _status(faces.http.put(OPEN, json={}), 405, code_pb2.UNIMPLEMENTED)
    _status(faces.http.post("/openapi.json"), 405, code_pb2.UNIMPLEMENTED)

    opened = faces.http.post(OPEN, json=_open_body()).json()
    session_id = opened["metadata"]["sessionId"]
    first = faces.http.post(f"{SESSIONS}/{session_id}:close", json={"failed": True, "failReason": "a"})
    assert first.status_code == 200
    head = faces.head()
    other = faces.http.post(f"{SESSIONS}/{session_id}:close", json={"failed": True, "failReason": "b"})
    assert "'a'" in _status(other, 400, code_pb2.FAILED_PRECONDITION).message
    beat = faces.http.post(f"{SESSIONS}/{session_id}:heartbeat", json={})
    _status(beat, 400, code_pb2.FAILED_PRECONDITION)
    assert faces.head() == head
    reason_without_failure = faces.http.post(f"{SESSIONS}/{session_id}:close", json={"failReason": "c"})
    assert _violation(reason_without_failure) == "fail_reason"


def test_a_bad_idempotency_key_header_is_400_on_the_key(faces: Faces) -> None:
    head = faces.head()
    long_key = faces.http.post(OPEN, json=_open_body(), headers={"Idempotency-Key": "k" * 129})
    assert _violation(long_key) == "idempotency-key"
    not_utf8 = faces.http.post(OPEN, json=_open_body(), headers={"Idempotency-Key": b"caf\xe9"})
    assert _violation(not_utf8) == "idempotency-key"
    assert faces.head() == head


def test_a_fault_of_the_server_is_500_with_a_status_and_no_traceback(
    faces: Faces, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A read model that breaks (a fault of ours, not of the request): INTERNAL, as over gRPC.
    def broken(session_id: str) -> None:
        raise RuntimeError("read model broke")

    monkeypatch.setattr(faces.server.read_model, "get", broken)
    answer = faces.http.get(f"{SESSIONS}/ses-1")
    status = _status(answer, 500, code_pb2.INTERNAL)
    assert "read model broke" not in status.message and "Traceback" not in answer.text
    assert "read model broke" in caplog.text


def test_requests_refused_before_the_handler_get_their_access_line(
    faces: Faces, caplog: pytest.LogCaptureFixture
) -> None:
    """A body or query the gateway refuses is logged like any other call
    (`--access-log errors` shows REST 400s as it shows gRPC ones)."""
    import logging

    with caplog.at_level(logging.INFO, logger="sessions.access"):
        _violation(faces.http.post(f"{SESSIONS}:open", json={"bogus": 1}))
        _violation(faces.http.get(SESSIONS, params={"subjectContainerId": "c", "pageSize": "x"}))
    lines = [r.getMessage() for r in caplog.records if r.name == "sessions.access"]
    assert any("/OpenSession INVALID_ARGUMENT" in line for line in lines), lines
    assert any("/ListSessions INVALID_ARGUMENT" in line for line in lines), lines


def test_a_header_over_the_limit_is_refused_before_it_is_held(faces: Faces) -> None:
    from sessions.rest.serving import MAX_HEADER_BYTES

    answer = faces.http.get(f"{SESSIONS}/ses-1", headers={"X-Big": "x" * (MAX_HEADER_BYTES + 1)})
    assert answer.status_code in (400, 413, 431)
    # Within the limit the same request is answered as usual.
    assert faces.http.get(f"{SESSIONS}/ses-1", headers={"X-Big": "x" * 1000}).status_code == 404
