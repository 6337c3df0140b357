"""Translation between protobuf messages and domain values. No rules here:
the domain decides, this module only maps names and numbers.

The session's message and its bytes are built in ``sessions.wire`` (shared
with the projection and the audit); the names servicers use from there are
imported here so that the API translates through one module."""

from __future__ import annotations

from datetime import datetime, timedelta

from sessions.api.protos import session_pb2
from sessions.domain import enums
from sessions.domain.enums import ACTIVE_STATUS_NUMBERS, SessionStatus, SessionType
from sessions.domain.progress import ChangeCount, ProgressEntry
from sessions.domain.session import visible_status
from sessions.wire import (
    EPOCH,
    field_bytes,
    micros,
    session_message,
    set_timestamp,
    show_expired,
    timestamp,
)

__all__ = [
    "EPOCH",
    "field_bytes",
    "micros",
    "progress_entries",
    "served_session",
    "session_message",
    "session_type",
    "set_timestamp",
    "shown_as_stored",
    "timestamp",
]


def served_session(
    session: bytes, status: int, expires_at: int, now: datetime
) -> session_pb2.SynchronizationSession:
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
    unless read-time expiry applies: ``visible_status`` on stored numbers)."""
    return status not in ACTIVE_STATUS_NUMBERS or micros(now) < expires_at


def progress_entries(messages: list[session_pb2.ProgressEntry]) -> list[ProgressEntry]:
    """Map reported entries to the domain. Unknown or UNSPECIFIED enum numbers
    become None, which the domain's checks refuse with the field's path."""
    return [
        ProgressEntry(
            object_type=_enum_or_none(enums.RelatedObjectType, m.object_type),
            changes=tuple(
                ChangeCount(
                    change_type=_enum_or_none(enums.ChangeType, c.change_type),
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


def _enum_or_none(enum_type, number: int):
    try:
        return enum_type(number)
    except ValueError:
        return None
