"""Translation between protobuf messages and domain values. No rules here:
the domain decides, this module only maps names and numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from sessions.api.protos import session_pb2
from sessions.domain import enums
from sessions.domain.enums import SessionStatus, SessionType
from sessions.domain.progress import ChangeCount, ProgressEntry
from sessions.domain.session import EXPIRY_REASON, Session, visible_status

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
    time ``at``, if given: read-time expiry applies then). Fields are set in
    place, not built as messages and copied in: every write and every
    projected row makes one."""
    message = session_pb2.SynchronizationSession(
        session_id=session.id,
        agent_id=session.agent_id,
        sync_mode=session.sync_mode._value_,
        status=session.status._value_,
        fail_reason=session.fail_reason,
        session_type=session.session_type._value_,
    )
    set_timestamp(message.created_at, session.created_at)
    set_timestamp(message.expires_at, session.expires_at)
    if session.closed_at is not None:
        set_timestamp(message.closed_at, session.closed_at)
    add_entry = message.progress_entries.add
    for entry in session.progress:
        _add_changes(add_entry(object_type=entry.object_type._value_), entry)
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


class SessionMessages:
    """``session_message(session)`` for each successive state of one
    session, at a fraction of the cost: for reads that show a session after
    each of its events (the history).

    One message is kept and updated in place: a field is set again only when
    the attribute it shows is another object than at the previous call. The
    attributes are immutable values (strings, enum members, datetimes,
    tuples of frozen progress entries) that the fold replaces and never
    edits, so after a heartbeat only expires_at is set again, and after a
    report only the progress entries it touched are written again.
    ``update`` returns that one message: copy it to keep it. It equals
    ``session_message(session)`` (tests/audit check it after every event of
    long sessions, serialized byte for byte).
    """

    def __init__(self) -> None:
        self.message = session_pb2.SynchronizationSession()
        self._head: tuple[object, ...] = ()
        self._expires_at: object = None
        self._closed_at: object = None
        self._modes: tuple[object, ...] = ()
        self._progress: tuple[ProgressEntry, ...] = ()
        self._tail: tuple[object, ...] = ()

    def update(self, session: Session) -> session_pb2.SynchronizationSession:
        message = self.message
        head = self._head
        if (
            not head
            or head[0] is not session.id
            or head[1] is not session.agent_id
            or head[2] is not session.created_at
        ):
            self._head = (session.id, session.agent_id, session.created_at)
            message.session_id = session.id
            message.agent_id = session.agent_id
            set_timestamp(message.created_at, session.created_at)
        if session.expires_at is not self._expires_at:
            self._expires_at = session.expires_at
            set_timestamp(message.expires_at, session.expires_at)
        if session.closed_at is not self._closed_at:
            self._closed_at = closed_at = session.closed_at
            if closed_at is None:
                message.ClearField("closed_at")
            else:
                set_timestamp(message.closed_at, closed_at)
        modes = self._modes
        if not modes or modes[0] is not session.sync_mode or modes[1] is not session.status:
            self._modes = (session.sync_mode, session.status)
            message.sync_mode = session.sync_mode._value_
            message.status = session.status._value_
        progress = session.progress
        if progress is not self._progress:
            _update_entries(message.progress_entries, self._progress, progress)
            self._progress = progress
        tail = self._tail
        if (
            not tail
            or tail[0] is not session.fail_reason
            or tail[1] is not session.session_type
        ):
            self._tail = (session.fail_reason, session.session_type)
            message.fail_reason = session.fail_reason
            message.session_type = session.session_type._value_
        return message


def set_timestamp(message: Timestamp, moment: datetime) -> None:
    """Make ``message`` equal ``timestamp(moment)``, in place (a sub-message
    field so set is present, as one assigned from timestamp() is)."""
    us = micros(moment)
    message.seconds = us // 1_000_000
    message.nanos = us % 1_000_000 * 1000


def _update_entries(
    messages: Any, previous: tuple[ProgressEntry, ...], progress: tuple[ProgressEntry, ...]
) -> None:
    """Make the repeated progress_entries show ``progress``, given that they
    show ``previous``: only the entries that changed are written again,
    unless the object types moved (then all are)."""
    if len(previous) == len(progress):
        for i, entry in enumerate(progress):
            before = previous[i]
            if entry is before:
                continue
            if entry.object_type is not before.object_type:
                break
            message = messages[i]
            del message.change_info[:]
            _add_changes(message, entry)
        else:
            return
    del messages[:]
    for entry in progress:
        _add_changes(messages.add(object_type=entry.object_type._value_), entry)


def _add_changes(message: session_pb2.ProgressEntry, entry: ProgressEntry) -> None:
    add = message.change_info.add
    for change_type, successful, failed in entry.changes:
        add(change_type=change_type._value_, successful=successful, failed=failed)
