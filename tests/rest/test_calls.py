"""Every route over real HTTP, and the two faces answering the same state:
a write over one face is read back over the other, and GetSession over REST
is, field by field, the JSON mapping of the gRPC answer."""

from __future__ import annotations

import uuid
from typing import Any

from google.protobuf import json_format

from sessions.api.protos import operation_service_pb2, service_pb2, session_pb2
from tests.requests import report_request
from tests.rest.conftest import SESSIONS, Faces


def _container() -> str:
    return f"c-{uuid.uuid4().hex[:12]}"


def _open(faces: Faces, container: str, agent: str = "agent-1", **headers: str) -> dict[str, Any]:
    answer = faces.http.post(
        f"{SESSIONS}:open",
        json={"subjectContainerId": container, "agentId": agent, "sessionType": "AD_SYNC"},
        headers=headers,
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    return answer.json()


def _grpc_session(faces: Faces, session_id: str) -> dict[str, Any]:
    response = faces.sessions.GetSession(service_pb2.GetSessionRequest(session_id=session_id))
    return json_format.MessageToDict(response)


def test_a_session_through_every_route(faces: Faces) -> None:
    container = _container()
    operation = _open(faces, container)
    assert operation["done"] is True
    assert operation["metadata"]["@type"].endswith("idp.OpenSessionMetadata")
    opened = operation["response"]
    assert opened["@type"].endswith("idp.OpenSessionResponse") and opened["result"] == "SUCCESS"
    session_id = opened["openedSession"]["sessionId"]
    assert operation["metadata"]["sessionId"] == session_id

    report = {
        "progressEntries": [
            {"objectType": "USER", "changeInfo": [{"changeType": "CREATE", "successful": "5", "failed": 2}]}
        ]
    }
    reported = faces.http.post(f"{SESSIONS}/{session_id}:reportProgress", json=report)
    assert reported.status_code == 200, reported.text
    entries = reported.json()["response"]["progressEntries"]
    change = {"changeType": "CREATE", "successful": "5", "failed": "2"}  # int64 as strings, as the mapping says
    assert entries == [{"objectType": "USER", "changeInfo": [change]}]

    beat = faces.http.post(f"{SESSIONS}/{session_id}:heartbeat", json={})
    assert beat.status_code == 200, beat.text
    assert beat.json()["response"] == {"@type": "type.googleapis.com/google.protobuf.Empty"}

    got = faces.http.get(f"{SESSIONS}/{session_id}")
    assert got.status_code == 200
    assert got.json()["session"]["status"] == "OPENED"

    listed = faces.http.get(SESSIONS, params={"subjectContainerId": container})
    assert listed.status_code == 200
    assert [s["sessionId"] for s in listed.json()["sessions"]] == [session_id]

    closed = faces.http.post(f"{SESSIONS}/{session_id}:close", json={"failed": True, "failReason": "disk\tfull"})
    assert closed.status_code == 200, closed.text
    assert closed.json()["response"]["status"] == "FAILED"
    assert closed.json()["response"]["failReason"] == "disk\tfull"

    for path, verb in ((f"/operations/{operation['id']}", "GET"), (f"/operations/{operation['id']}:cancel", "POST")):
        again = faces.http.request(verb, path)
        assert again.status_code == 200, again.text
        assert again.json() == operation


def test_list_takes_its_fields_as_query_parameters_by_json_or_proto_name(faces: Faces) -> None:
    container = _container()
    session_id = _open(faces, container)["metadata"]["sessionId"]
    first = faces.http.get(SESSIONS, params={"subjectContainerId": container, "pageSize": "1"})
    assert first.status_code == 200
    assert [s["sessionId"] for s in first.json()["sessions"]] == [session_id]
    filtered = faces.http.get(SESSIONS, params={"subject_container_id": container, "filter": 'status = "COMPLETED"'})
    assert filtered.status_code == 200 and filtered.json() == {}
    running = faces.http.get(SESSIONS, params={"subject_container_id": container, "filter": 'status IN ("OPENED")'})
    assert [s["sessionId"] for s in running.json()["sessions"]] == [session_id]


def test_page_tokens_work_across_faces(faces: Faces) -> None:
    container = _container()
    opened = []
    for kind in ("AD_SYNC", "LDAP_SYNC", "AD_PASSWORD_HASH"):
        answer = faces.http.post(
            f"{SESSIONS}:open", json={"subjectContainerId": container, "agentId": "agent-1", "sessionType": kind}
        )
        opened.append(answer.json()["metadata"]["sessionId"])
    first = faces.http.get(SESSIONS, params={"subjectContainerId": container, "pageSize": 2}).json()
    assert len(first["sessions"]) == 2 and first["nextPageToken"]
    rest = faces.sessions.ListSessions(
        service_pb2.ListSessionsRequest(subject_container_id=container, page_size=2, page_token=first["nextPageToken"])
    )
    seen = [s["sessionId"] for s in first["sessions"]] + [s.session_id for s in rest.sessions]
    assert sorted(seen) == sorted(opened) and not rest.next_page_token


def test_rest_get_equals_the_json_mapping_of_the_grpc_answer(faces: Faces) -> None:
    session_id = _open(faces, _container())["metadata"]["sessionId"]
    faces.sessions.ReportSessionProgress(report_request(session_id, created=4))
    over_rest = faces.http.get(f"{SESSIONS}/{session_id}").json()
    assert over_rest == _grpc_session(faces, session_id)
    assert over_rest["session"]["progressEntries"][0]["changeInfo"][0]["successful"] == "4"


def test_writes_over_one_face_are_read_back_over_the_other(faces: Faces) -> None:
    container = _container()
    # gRPC writes, REST reads
    response = faces.sessions.OpenSession(
        service_pb2.OpenSessionRequest(subject_container_id=container, agent_id="agent-1", session_type=1)
    )
    opened = service_pb2.OpenSessionResponse()
    response.response.Unpack(opened)
    session_id = opened.opened_session.session_id
    faces.sessions.ReportSessionProgress(report_request(session_id, created=7))
    read = faces.http.get(f"{SESSIONS}/{session_id}").json()["session"]
    assert read["progressEntries"][0]["changeInfo"][0]["successful"] == "7"
    # REST writes, gRPC reads: at once, no waiting for a projector
    closed = faces.http.post(f"{SESSIONS}/{session_id}:close", json={})
    assert closed.status_code == 200, closed.text
    assert _grpc_session(faces, session_id)["session"]["status"] == "COMPLETED"
    operation = faces.operations.Get(operation_service_pb2.GetOperationRequest(operation_id=closed.json()["id"]))
    assert json_format.MessageToDict(operation) == closed.json()


def test_idempotency_key_header_is_the_metadata(faces: Faces) -> None:
    container = _container()
    first = _open(faces, container, **{"Idempotency-Key": "rest-key-1"})
    session_id = first["metadata"]["sessionId"]
    body = {"progressEntries": [{"objectType": "GROUP", "changeInfo": [{"changeType": "UPDATE", "successful": "1"}]}]}
    key = {"Idempotency-Key": "rest-key-2"}
    one = faces.http.post(f"{SESSIONS}/{session_id}:reportProgress", json=body, headers=key)
    head = faces.head()
    two = faces.http.post(f"{SESSIONS}/{session_id}:reportProgress", json=body, headers=key)
    assert one.status_code == two.status_code == 200
    assert one.json() == two.json()  # the first answer, applied once
    assert faces.head() == head
    # the same key over gRPC (same anonymous caller) is the same call
    again = faces.sessions.ReportSessionProgress(
        service_pb2.ReportSessionProgressRequest(
            session_id=session_id,
            progress_entries=[json_format.ParseDict(body["progressEntries"][0], session_pb2.ProgressEntry())],
        ),
        metadata=[("idempotency-key", "rest-key-2")],
    )
    assert json_format.MessageToDict(again) == one.json()
    totals = faces.http.get(f"{SESSIONS}/{session_id}").json()["session"]["progressEntries"]
    assert totals == [{"objectType": "GROUP", "changeInfo": [{"changeType": "UPDATE", "successful": "1"}]}]
    # the same open again with its key: the first answer, not OPENED_SESSION_EXISTS
    assert _open(faces, container, **{"Idempotency-Key": "rest-key-1"}) == first


def test_proto_field_names_and_enum_numbers_are_accepted_as_the_json_mapping_says(faces: Faces) -> None:
    answer = faces.http.post(
        f"{SESSIONS}:open", json={"subject_container_id": _container(), "agent_id": "agent-1", "session_type": 4}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["response"]["openedSession"]["sessionType"] == "LDAP_SYNC"


def test_a_session_id_with_a_slash_is_one_percent_encoded_segment(faces: Faces) -> None:
    answer = faces.http.get(f"{SESSIONS}/a%2Fb")
    assert answer.status_code == 404
    assert "'a/b'" in answer.json()["message"]
