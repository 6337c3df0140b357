"""Every role against every method, allowed and refused, on both backends
(README "Security")."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sessions.api.protos import (
    audit_pb2,
    audit_pb2_grpc,
    operation_service_pb2,
    operation_service_pb2_grpc,
    service_pb2,
    service_pb2_grpc,
    session_pb2,
)
from tests.access.conftest import SecuredServer, bearer

OK = None
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
AD_SYNC = 1

METHODS = [
    "OpenSession",
    "ReportSessionProgress",
    "Heartbeat",
    "CloseSession",
    "GetSession",
    "ListSessions",
    "Operation.Get",
    "Operation.Cancel",
    "Audit.StreamHistory",
    "Audit.GetSessionAt",
    "Health.Check",
    "Reflection",
]
WRITES, READS = METHODS[:4], METHODS[4:6]
OPEN = ["Health.Check", "Reflection"]
AUDIT = ["Audit.StreamHistory", "Audit.GetSessionAt"]


def _row(writes, reads, op_get, op_cancel, audit):  # type: ignore[no-untyped-def]
    row = {m: writes for m in WRITES} | {m: reads for m in READS}
    row |= {"Operation.Get": op_get, "Operation.Cancel": op_cancel}
    row |= {m: audit for m in AUDIT} | {m: OK for m in OPEN}
    return row


EXPECTED: dict[str, dict[str, grpc.StatusCode | None]] = {
    "admin": _row(OK, OK, OK, OK, OK),
    "agent_owner": _row(OK, OK, OK, OK, DENIED),
    "agent_other": _row(DENIED, OK, OK, OK, DENIED),
    "reader": _row(DENIED, OK, OK, DENIED, DENIED),
    "auditor": _row(DENIED, OK, OK, DENIED, OK),
    "none": _row(UNAUTH, UNAUTH, UNAUTH, UNAUTH, UNAUTH),
    "unknown": _row(UNAUTH, UNAUTH, UNAUTH, UNAUTH, UNAUTH),
    "revoked": _row(UNAUTH, UNAUTH, UNAUTH, UNAUTH, UNAUTH),
}
CASES = [(role, method, code) for role, row in EXPECTED.items() for method, code in row.items()]


def _open_for_agent_1(secured: SecuredServer) -> tuple[str, str]:
    """A fresh session of agent-1 (opened by the admin); (session id, operation id)."""
    stub = service_pb2_grpc.SynchronizationSessionServiceStub(secured.channel)
    operation = stub.OpenSession(
        service_pb2.OpenSessionRequest(
            subject_container_id=f"c-{uuid.uuid4().hex[:12]}", agent_id="agent-1", session_type=AD_SYNC
        ),
        metadata=bearer(secured.tokens.admin),
        timeout=10,
    )
    opened = service_pb2.OpenSessionResponse()
    assert operation.response.Unpack(opened)
    return opened.opened_session.session_id, operation.id


def _call(secured: SecuredServer, method: str, metadata: list[tuple[str, str]]) -> None:
    channel = secured.channel
    sessions = service_pb2_grpc.SynchronizationSessionServiceStub(channel)
    operations = operation_service_pb2_grpc.OperationServiceStub(channel)
    audit = audit_pb2_grpc.AuditServiceStub(channel)
    kw = {"metadata": metadata, "timeout": 10}
    needs_session = method not in ("OpenSession", "ListSessions", *OPEN)
    session_id, operation_id = _open_for_agent_1(secured) if needs_session else ("", "")
    calls: dict[str, Callable[[], object]] = {
        "OpenSession": lambda: sessions.OpenSession(
            service_pb2.OpenSessionRequest(
                subject_container_id=f"c-{uuid.uuid4().hex[:12]}", agent_id="agent-1", session_type=AD_SYNC
            ),
            **kw,
        ),
        "ReportSessionProgress": lambda: sessions.ReportSessionProgress(
            service_pb2.ReportSessionProgressRequest(
                session_id=session_id,
                progress_entries=[
                    session_pb2.ProgressEntry(
                        object_type=1, change_info=[session_pb2.ChangeInfo(change_type=1, successful=3)]
                    )
                ],
            ),
            **kw,
        ),
        "Heartbeat": lambda: sessions.Heartbeat(service_pb2.HeartbeatRequest(session_id=session_id), **kw),
        "CloseSession": lambda: sessions.CloseSession(
            service_pb2.CloseSessionRequest(session_id=session_id), **kw
        ),
        "GetSession": lambda: sessions.GetSession(service_pb2.GetSessionRequest(session_id=session_id), **kw),
        "ListSessions": lambda: sessions.ListSessions(
            service_pb2.ListSessionsRequest(subject_container_id="c-any"), **kw
        ),
        "Operation.Get": lambda: operations.Get(
            operation_service_pb2.GetOperationRequest(operation_id=operation_id), **kw
        ),
        "Operation.Cancel": lambda: operations.Cancel(
            operation_service_pb2.CancelOperationRequest(operation_id=operation_id), **kw
        ),
        "Audit.StreamHistory": lambda: list(
            audit.StreamHistory(audit_pb2.StreamHistoryRequest(session_id=session_id), **kw)
        ),
        "Audit.GetSessionAt": lambda: audit.GetSessionAt(
            audit_pb2.GetSessionAtRequest(session_id=session_id, version=1), **kw
        ),
        "Health.Check": lambda: health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), **kw),
        "Reflection": lambda: list(
            reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), **kw
            )
        ),
    }
    calls[method]()


@pytest.mark.parametrize(("role", "method", "expected"), CASES, ids=[f"{r}-{m}" for r, m, _ in CASES])
def test_role_against_method(secured: SecuredServer, role: str, method: str, expected) -> None:  # type: ignore[no-untyped-def]
    metadata = bearer(secured.tokens.for_role(role))
    if expected is None:
        _call(secured, method, metadata)
        return
    with pytest.raises(grpc.RpcError) as refused:
        _call(secured, method, metadata)
    assert refused.value.code() == expected, refused.value.details()
