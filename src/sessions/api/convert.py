"""Translation between protobuf messages and domain values. No rules here:
the domain decides, this module only maps names and numbers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from google.protobuf.timestamp_pb2 import Timestamp

from sessions.api.protos import session_pb2
from sessions.domain import enums
from sessions.domain.enums import SessionStatus, SessionType
from sessions.domain.progress import ChangeCount, ProgressEntry
from sessions.domain.session import EXPIRY_REASON, Session, visible_status

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def micros(moment: datetime) -> int:
    """Microseconds since the epoch: exact, unlike float seconds."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def timestamp(moment: datetime) -> Timestamp:
    us = micros(moment)
    return Timestamp(seconds=us // 1_000_000, nanos=(us % 1_000_000) * 1000)


def session_message(
    session: Session, at: datetime | None = None
) -> session_pb2.SynchronizationSession:
    """The SynchronizationSession that GetSession serves for this state (at
    time ``at``, if given: read-time expiry applies then)."""
    message = session_pb2.SynchronizationSession(
        session_id=session.id,
        agent_id=session.agent_id,
        created_at=timestamp(session.created_at),
        expires_at=timestamp(session.expires_at),
        sync_mode=session.sync_mode.value,
        status=session.status.value,
        fail_reason=session.fail_reason,
        session_type=session.session_type.value,
        progress_entries=[
            session_pb2.ProgressEntry(
                object_type=entry.object_type.value,
                change_info=[
                    session_pb2.ChangeInfo(
                        change_type=c.change_type.value, successful=c.successful, failed=c.failed
                    )
                    for c in entry.changes
                ],
            )
            for entry in session.progress
        ],
    )
    if session.closed_at is not None:
        message.closed_at.CopyFrom(timestamp(session.closed_at))
    if at is not None and session.status_at(at) != session.status:
        show_expired(message)
    return message


def served_session(session: bytes, status: int, expires_at: int, now: datetime) -> session_pb2.SynchronizationSession:
    """A stored session as readers see it at ``now``: read-time expiry
    applied (the expiry event may not be recorded yet, but a session past its
    expires_at is never shown open)."""
    message = session_pb2.SynchronizationSession.FromString(session)
    expires = EPOCH + timedelta(microseconds=expires_at)
    if visible_status(SessionStatus(status), expires, now).value != status:
        show_expired(message)
    return message


def shown_as_stored(status: int, expires_at: int, now: datetime) -> bool:
    """Whether a stored session is shown exactly as stored at ``now`` (it is,
    unless read-time expiry applies)."""
    return status not in _ACTIVE or micros(now) < expires_at


_ACTIVE = frozenset({SessionStatus.OPENED.value, SessionStatus.PENDING.value})


def field_bytes(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field: how a message embeds a serialized
    sub-message, so stored bytes can be sent without parsing them."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def show_expired(message: session_pb2.SynchronizationSession) -> None:
    """Show a session past its expires_at as the expiry event will record it."""
    message.status = SessionStatus.EXPIRED.value
    message.closed_at.CopyFrom(message.expires_at)
    message.fail_reason = EXPIRY_REASON


def session_bytes(session: Session) -> bytes:
    return session_message(session).SerializeToString(deterministic=True)


def progress_entries(messages: list[session_pb2.ProgressEntry]) -> list[ProgressEntry]:
    """Map reported entries to the domain. Unknown or UNSPECIFIED enum numbers
    become None, which the domain's checks refuse with the field's path."""
    return [
        ProgressEntry(
            object_type=_enum_or_none(enums.RelatedObjectType, m.object_type),  # type: ignore[arg-type]
            changes=tuple(
                ChangeCount(
                    change_type=_enum_or_none(enums.ChangeType, c.change_type),  # type: ignore[arg-type]
                    successful=c.successful,
                    failed=c.failed,
                )
                for c in m.change_info
            ),
        )
        for m in messages
    ]


def session_type(number: int) -> SessionType | None:
    return _enum_or_none(SessionType, number)


def _enum_or_none(enum_type, number: int):  # type: ignore[no-untyped-def]
    try:
        return enum_type(number)
    except ValueError:
        return None
