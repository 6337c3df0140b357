"""Helpers of the listing tests: gRPC calls, paging, and a reference
evaluator of filters over the sessions as GetSession shows them (written
independently of the SQL, so that the two check each other).

A plain module (not conftest.py) so test modules import it by a name no
other test folder uses."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

import grpc

from sessions.api.operations import renderer
from sessions.api.protos import service_pb2, session_pb2, settings_pb2
from sessions.domain.commands import OpenSession
from sessions.domain.enums import SessionType
from sessions.store.application import Caller, Outcome, SessionsApplication

PRINCIPAL = "agent:listing-tests"


def unpack_opened(operation) -> session_pb2.SynchronizationSession:  # type: ignore[no-untyped-def]
    response = service_pb2.OpenSessionResponse()
    assert operation.response.Unpack(response)
    assert response.result == service_pb2.SUCCESS, response
    return response.opened_session


def open_over_grpc(stub, container: str, agent_id: str, session_type: int) -> str:  # type: ignore[no-untyped-def]
    operation = stub.OpenSession(
        service_pb2.OpenSessionRequest(
            subject_container_id=container, agent_id=agent_id, session_type=session_type
        )
    )
    return unpack_opened(operation).session_id


def open_in_app(
    app: SessionsApplication, container: str, agent_id: str, session_type: SessionType
) -> Outcome:
    return app.execute(
        OpenSession(container, agent_id, session_type), Caller(PRINCIPAL), renderer("OpenSession", PRINCIPAL)
    )


def list_page(
    stub,
    container: str,
    *,
    filter: str = "",
    page_size: int = 0,
    page_token: str = "",  # noqa: A002
) -> service_pb2.ListSessionsResponse:
    return stub.ListSessions(
        service_pb2.ListSessionsRequest(
            subject_container_id=container, filter=filter, page_size=page_size, page_token=page_token
        )
    )


def list_all(
    stub,
    container: str,
    *,
    filter: str = "",
    page_size: int = 0,
    between: Callable[[], None] | None = None,  # noqa: A002
) -> tuple[list[session_pb2.SynchronizationSession], int]:
    """Every page in order; returns the sessions and the number of pages."""
    sessions: list[session_pb2.SynchronizationSession] = []
    token, pages = "", 0
    while True:
        page = list_page(stub, container, filter=filter, page_size=page_size, page_token=token)
        pages += 1
        sessions += page.sessions
        token = page.next_page_token
        if not token:
            return sessions, pages
        assert len(page.sessions) == (page_size or 100)
        if between is not None:
            between()


def bad_request(call: Callable[[], object]) -> tuple[str, str]:
    """Run a call that must be refused with INVALID_ARGUMENT; return the
    violated field and its description from the BadRequest details."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    try:
        call()
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (e.code(), e.details())
        status = rpc_status.from_call(e)  # type: ignore[arg-type]
        assert status is not None
        for detail in status.details:
            request = error_details_pb2.BadRequest()
            if detail.Unpack(request):
                violation = request.field_violations[0]
                return violation.field, violation.description
        raise AssertionError(f"no BadRequest in {status}") from None
    raise AssertionError("the call was not refused")


def order_key(session: session_pb2.SynchronizationSession) -> tuple[int, str]:
    return session.created_at.ToNanoseconds(), session.session_id


# --- reference evaluator --------------------------------------------------------------

_TERM = re.compile(r'\s*(\w+)\s*(!=|<=|>=|=|<|>|IN)\s*(\([^)]*\)|"[^"]*")\s*(?:AND|$)')


def _nanos(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    whole = moment.replace(microsecond=0)
    fraction = re.search(r"\.(\d+)", text)
    nanos = int(fraction.group(1).ljust(9, "0")) if fraction else 0
    return int((whole - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 10**9 + nanos


def _field(session: session_pb2.SynchronizationSession, field: str) -> object:
    if field == "status":
        return session_pb2.SessionStatus.Name(session.status)
    if field == "session_type":
        return settings_pb2.SessionType.Name(session.session_type)
    if field == "sync_mode":
        return session_pb2.SyncMode.Name(session.sync_mode)
    if field == "agent_id":
        return session.agent_id
    if field == "closed_at" and not session.HasField("closed_at"):
        return None
    return getattr(session, field).ToNanoseconds()


def matches(session: session_pb2.SynchronizationSession, text: str) -> bool:
    """Evaluate a simple filter (plain values without quotes or escapes
    inside) on a session as shown."""
    terms = _TERM.findall(text)
    assert len(terms) == text.count(" AND ") + 1, f"the reference cannot read {text!r}"
    for field, op, raw in terms:
        values = re.findall(r'"([^"]*)"', raw)
        actual = _field(session, field)
        if field.endswith("_at"):
            wanted: list[object] = [_nanos(v) for v in values]
        else:
            wanted = list(values)
        if op == "IN":
            ok = actual in wanted
        elif op == "=":
            ok = actual == wanted[0]
        elif op == "!=":
            ok = actual != wanted[0]
        elif actual is None:
            ok = False
        else:
            ok = {
                "<": actual < wanted[0],  # type: ignore[operator]
                "<=": actual <= wanted[0],  # type: ignore[operator]
                ">": actual > wanted[0],  # type: ignore[operator]
                ">=": actual >= wanted[0],  # type: ignore[operator]
            }[op]
        if not ok:
            return False
    return True
