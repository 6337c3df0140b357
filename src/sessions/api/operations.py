"""Operations: how a mutating call's result is packed for the wire."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import any_pb2, empty_pb2
from google.protobuf.message import Message

from sessions.api.convert import session_message, timestamp
from sessions.api.protos import operation_pb2, service_pb2
from sessions.store.application import Changed, Opened, Render, Result

DESCRIPTIONS = {
    "OpenSession": "Open synchronization session",
    "ReportSessionProgress": "Report synchronization session progress",
    "Heartbeat": "Synchronization session heartbeat",
    "CloseSession": "Close synchronization session",
}

METADATA = {
    "OpenSession": service_pb2.OpenSessionMetadata,
    "ReportSessionProgress": service_pb2.ReportSessionProgressMetadata,
    "Heartbeat": service_pb2.HeartbeatMetadata,
    "CloseSession": service_pb2.CloseSessionMetadata,
}


def _any(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def response_for(method: str, result: Result) -> Message:
    if isinstance(result, Opened):
        response = service_pb2.OpenSessionResponse(result=result.result.value)
        if result.session is not None:
            response.opened_session.CopyFrom(session_message(result.session))
        elif result.next_session_at is not None:
            response.next_session_at.CopyFrom(timestamp(result.next_session_at))
        return response
    assert isinstance(result, Changed)
    if method == "Heartbeat":
        return empty_pb2.Empty()
    return session_message(result.session)


def renderer(method: str, principal: str) -> Render:
    """The store calls this to produce the answer it records with the events."""

    def render(operation_id: str, now: datetime, result: Result) -> bytes:
        session = getattr(result, "session", None)
        moment = timestamp(now)
        operation = operation_pb2.Operation(
            id=operation_id,
            description=DESCRIPTIONS[method],
            created_at=moment,
            created_by=principal,
            modified_at=moment,
            done=True,
            metadata=_any(METADATA[method](session_id=session.id if session else "")),
            response=_any(response_for(method, result)),
        )
        return operation.SerializeToString(deterministic=True)

    return render
