"""GET /openapi.json: generated from the descriptors, and fuzzed against the
running server with schemathesis (fixed seed, bounded examples): no request
gets a 5xx, every 4xx is a valid JSON google.rpc.Status, and every answer
conforms to the document's own schemas."""

from __future__ import annotations

from typing import Any

import schemathesis
from google.protobuf import json_format
from google.rpc import status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance

from sessions.rest.routes import routes
from tests.rest.conftest import SESSIONS, Faces

EXAMPLES = 200  # per backend, over all eight operations: a few seconds


def _document(faces: Faces) -> dict[str, Any]:
    answer = faces.http.get("/openapi.json")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    document: dict[str, Any] = answer.json()
    return document


def test_the_document_describes_every_route_from_the_descriptors(faces: Faces) -> None:
    document = _document(faces)
    assert document["openapi"] == "3.1.0"
    described = {(verb.upper(), path) for path, item in document["paths"].items() for verb in item}
    assert described == {(r.http_method, r.template) for r in routes()}
    schemas = document["components"]["schemas"]
    session = schemas["yandex.cloud.organizationmanager.v1.idp.SynchronizationSession"]["properties"]
    assert session["createdAt"] == {"type": "string", "format": "date-time"}
    assert session["status"]["enum"][1:] == ["OPENED", "PENDING", "COMPLETED", "FAILED", "EXPIRED"]
    entry = "#/components/schemas/yandex.cloud.organizationmanager.v1.idp.ProgressEntry"
    assert session["progressEntries"]["items"] == {"$ref": entry}
    assert schemas["google.rpc.Status"]["properties"]["details"]["items"]["required"] == ["@type"]
    # the validation options become constraints
    open_body = document["paths"][f"{SESSIONS}:open"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert open_body["required"] == ["subjectContainerId", "agentId", "sessionType"]
    assert open_body["properties"]["agentId"] == {"type": "string", "minLength": 1, "maxLength": 50}
    assert open_body["additionalProperties"] is False
    listing = {p["name"]: p for p in document["paths"][SESSIONS]["get"]["parameters"]}
    assert listing["pageSize"]["schema"]["maximum"] == 1000 and listing["pageSize"]["in"] == "query"
    assert listing["subjectContainerId"]["required"] is True
    report = document["paths"][f"{SESSIONS}/{{session_id}}:reportProgress"]["post"]
    body = report["requestBody"]["content"]["application/json"]["schema"]
    assert "sessionId" not in body["properties"]  # bound by the path
    entries = body["properties"]["progressEntries"]
    assert (entries["minItems"], entries["maxItems"]) == (1, 3)
    assert "Idempotency-Key" in {p["name"] for p in report["parameters"]}
    assert "ReportSessionProgressMetadata" in report["description"]
    # open server: the token is optional
    assert document["security"] == [{"bearer": []}, {}]


def _valid_status(document: Any) -> status_pb2.Status:
    status = json_format.ParseDict(document, status_pb2.Status())  # unknown fields or @types would raise
    assert status.code != 0 and status.message
    return status


def test_fuzzed_requests_never_get_a_5xx_and_every_4xx_is_a_status(faces: Faces) -> None:
    schema = schemathesis.openapi.from_dict(_document(faces))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(routes())
    modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    strategy = st.one_of([op.as_strategy(generation_mode=mode) for op in operations for mode in modes])
    base_url = str(faces.http.base_url).rstrip("/")
    seen: dict[int, int] = {}

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,  # a fixed seed: the same requests every run
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url)
        seen[response.status_code // 100] = seen.get(response.status_code // 100, 0) + 1
        assert response.status_code < 500, (case.method, case.formatted_path, response.text)
        if response.status_code >= 400:
            _valid_status(response.json())
        case.validate_response(
            response, checks=[not_a_server_error, content_type_conformance, response_schema_conformance]
        )

    fuzz()
    assert seen.get(2, 0) > 0 and seen.get(4, 0) > 0, seen  # both answers and refusals were exercised
