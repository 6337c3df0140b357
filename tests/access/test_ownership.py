"""What the matrix does not show: agent scope in detail, what a refusal leaves
behind (nothing), the principal that events record, and the refusal log."""

from __future__ import annotations

import logging
import uuid

import grpc
import pytest

from sessions.api.protos import (
    audit_pb2,
    audit_pb2_grpc,
    operation_service_pb2,
    operation_service_pb2_grpc,
    service_pb2,
    service_pb2_grpc,
    session_pb2,
)
from tests.access.conftest import UNKNOWN_TOKEN, SecuredServer, bearer

AD_SYNC = 1


def _container() -> str:
    return f"c-{uuid.uuid4().hex[:12]}"


def _open(secured: SecuredServer, token: str, agent_id: str, container: str | None = None, key: str = ""):  # type: ignore[no-untyped-def]
    stub = service_pb2_grpc.SynchronizationSessionServiceStub(secured.channel)
    metadata = bearer(token) + ([("idempotency-key", key)] if key else [])
    operation = stub.OpenSession(
        service_pb2.OpenSessionRequest(
            subject_container_id=container or _container(), agent_id=agent_id, session_type=AD_SYNC
        ),
        metadata=metadata,
        timeout=10,
    )
    opened = service_pb2.OpenSessionResponse()
    assert operation.response.Unpack(opened)
    return operation, opened.opened_session


def _history(secured: SecuredServer, session_id: str) -> list[audit_pb2.HistoryEntry]:
    stub = audit_pb2_grpc.AuditServiceStub(secured.channel)
    pages = stub.StreamHistory(
        audit_pb2.StreamHistoryRequest(session_id=session_id),
        metadata=bearer(secured.tokens.auditor),
        timeout=10,
    )
    return [entry for page in pages for entry in page.entries]


def _code(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value.code()


def test_an_agent_opens_under_each_of_its_agent_ids_and_no_other(secured: SecuredServer) -> None:
    tokens = secured.tokens
    for agent_id in ("agent-1", "agent-3"):
        _, session = _open(secured, tokens.agent_owner, agent_id)
        assert session.agent_id == agent_id
    _, session = _open(secured, tokens.agent_other, "agent-2")
    assert session.agent_id == "agent-2"
    assert _code(lambda: _open(secured, tokens.agent_other, "agent-1")) == grpc.StatusCode.PERMISSION_DENIED
    assert _code(lambda: _open(secured, tokens.agent_owner, "agent-2")) == grpc.StatusCode.PERMISSION_DENIED


def test_a_refused_write_records_nothing_and_ownership_comes_before_state(secured: SecuredServer) -> None:
    tokens = secured.tokens
    stub = service_pb2_grpc.SynchronizationSessionServiceStub(secured.channel)
    _, session = _open(secured, tokens.agent_owner, "agent-1")
    before = _history(secured, session.session_id)
    other = bearer(tokens.agent_other)
    for call in (
        lambda: stub.Heartbeat(service_pb2.HeartbeatRequest(session_id=session.session_id), metadata=other),
        lambda: stub.CloseSession(
            service_pb2.CloseSessionRequest(session_id=session.session_id, failed=True, fail_reason="x"),
            metadata=other,
        ),
    ):
        assert _code(call) == grpc.StatusCode.PERMISSION_DENIED
    assert _history(secured, session.session_id) == before

    stub.CloseSession(
        service_pb2.CloseSessionRequest(session_id=session.session_id), metadata=bearer(tokens.agent_owner)
    )
    # Closed: the owner hears FAILED_PRECONDITION for a heartbeat, another
    # agent still PERMISSION_DENIED (it learns nothing about the state).
    beat = service_pb2.HeartbeatRequest(session_id=session.session_id)
    owner = bearer(tokens.agent_owner)
    assert _code(lambda: stub.Heartbeat(beat, metadata=owner)) == grpc.StatusCode.FAILED_PRECONDITION
    assert _code(lambda: stub.Heartbeat(beat, metadata=other)) == grpc.StatusCode.PERMISSION_DENIED
    missing = service_pb2.HeartbeatRequest(session_id="ses00000000000000000")
    assert _code(lambda: stub.Heartbeat(missing, metadata=other)) == grpc.StatusCode.NOT_FOUND


def test_an_idempotency_key_never_replays_another_callers_answer(secured: SecuredServer) -> None:
    tokens = secured.tokens
    container = _container()
    first, _ = _open(secured, tokens.agent_owner, "agent-1", container, key="same-key")
    # The same key from another credential is another operation: refused, not replayed.
    code = _code(lambda: _open(secured, tokens.agent_other, "agent-1", container, key="same-key"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    again, _ = _open(secured, tokens.agent_owner, "agent-1", container, key="same-key")
    assert again == first


def test_events_and_operations_record_the_credentials_principal(secured: SecuredServer) -> None:
    tokens = secured.tokens
    stub = service_pb2_grpc.SynchronizationSessionServiceStub(secured.channel)
    owner = bearer(tokens.agent_owner)
    opened, session = _open(secured, tokens.agent_owner, "agent-1")
    report = stub.ReportSessionProgress(
        service_pb2.ReportSessionProgressRequest(
            session_id=session.session_id,
            progress_entries=[
                session_pb2.ProgressEntry(
                    object_type=1, change_info=[session_pb2.ChangeInfo(change_type=1, successful=1)]
                )
            ],
        ),
        metadata=owner,
    )
    beat = stub.Heartbeat(service_pb2.HeartbeatRequest(session_id=session.session_id), metadata=owner)
    close = stub.CloseSession(service_pb2.CloseSessionRequest(session_id=session.session_id), metadata=owner)

    history = _history(secured, session.session_id)
    assert [e.event_type for e in history][-1] == "SessionCompleted"
    assert {e.principal for e in history} == {"agent:owner"}
    for operation in (opened, report, beat, close):
        assert operation.created_by == "agent:owner"
        stored = operation_service_pb2_grpc.OperationServiceStub(secured.channel).Get(
            operation_service_pb2.GetOperationRequest(operation_id=operation.id),
            metadata=bearer(tokens.reader),
        )
        assert stored.created_by == "agent:owner"
    everything = b"".join(e.SerializeToString() for e in history)
    assert tokens.agent_owner.encode() not in everything

    _, by_admin = _open(secured, tokens.admin, "agent-2")
    assert {e.principal for e in _history(secured, by_admin.session_id)} == {"admin:ops"}


@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer ", "Bearer garbage", "Basic dXNlcjpwYXNz", UNKNOWN_TOKEN, "token-without-scheme"],
)
def test_malformed_or_unknown_credentials_are_unauthenticated(secured: SecuredServer, authorization: str) -> None:
    stub = service_pb2_grpc.SynchronizationSessionServiceStub(secured.channel)
    metadata = [("authorization", authorization)] if authorization else []
    if authorization == UNKNOWN_TOKEN:
        metadata = bearer(UNKNOWN_TOKEN)
    code = _code(
        lambda: stub.GetSession(service_pb2.GetSessionRequest(session_id="ses1"), metadata=metadata, timeout=10)
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_a_right_id_with_a_wrong_secret_is_unauthenticated(secured: SecuredServer) -> None:
    real = secured.tokens.reader
    forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    stub = service_pb2_grpc.SynchronizationSessionServiceStub(secured.channel)
    code = _code(
        lambda: stub.ListSessions(service_pb2.ListSessionsRequest(subject_container_id="c"), metadata=bearer(forged))
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_refusals_are_logged_with_principal_and_reason_never_the_token(
    secured: SecuredServer, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = secured.tokens
    stub = service_pb2_grpc.SynchronizationSessionServiceStub(secured.channel)
    _, session = _open(secured, tokens.agent_owner, "agent-1")
    with caplog.at_level(logging.INFO):
        for token, call in (
            (
                tokens.reader,
                lambda m: stub.Heartbeat(service_pb2.HeartbeatRequest(session_id=session.session_id), metadata=m),
            ),
            (
                tokens.agent_other,
                lambda m: stub.Heartbeat(service_pb2.HeartbeatRequest(session_id=session.session_id), metadata=m),
            ),
            (
                tokens.revoked,
                lambda m: stub.GetSession(service_pb2.GetSessionRequest(session_id=session.session_id), metadata=m),
            ),
            (
                UNKNOWN_TOKEN,
                lambda m: stub.GetSession(service_pb2.GetSessionRequest(session_id=session.session_id), metadata=m),
            ),
        ):
            with pytest.raises(grpc.RpcError):
                call(bearer(token))
    text = caplog.text
    refusals = [r.getMessage() for r in caplog.records if r.name == "sessions.access"]
    assert any(
        "principal=reader:dash" in m and "PERMISSION_DENIED" in m and "may not call Heartbeat" in m for m in refusals
    )
    assert any("principal=agent:other" in m and "does not act for agent 'agent-1'" in m for m in refusals)
    assert any("UNAUTHENTICATED" in m and "revoked credential 'agent:stolen'" in m for m in refusals)
    assert any("UNAUTHENTICATED" in m and "unknown token" in m for m in refusals)
    for token in (tokens.reader, tokens.agent_other, tokens.revoked, UNKNOWN_TOKEN):
        assert token not in text
        secret = token.split("_", 2)[2]  # sst_<id>_<secret>; the secret may hold "_" itself
        assert secret not in text  # not even the secret part
