"""A session's history: every event in order with the state after it, and
the session as GetSession showed it at a given time or version.

Reads go straight to the event store. The fold is the aggregate's own (each
event's ``mutate``); as-of reads use the library's versioned repository get.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.persistence import Notification

from sessions.api.convert import session_message
from sessions.api.protos import session_pb2
from sessions.domain.chain import canonical_value
from sessions.domain.errors import NotFound
from sessions.domain.session import Session
from sessions.projection.fold import SessionFold
from sessions.store.application import SessionsApplication
from sessions.store.records import stream_records

# Fields every event has; "what changed" is the rest.
COMMON_FIELDS = frozenset(
    {"originator_id", "originator_version", "timestamp", "principal", "idempotency_key", "link", "originator_topic"}
)


@dataclass(frozen=True)
class HistoryEntry:
    version: int
    position: int
    recorded_at: datetime
    event_type: str
    principal: str
    idempotency_key: str
    link: str
    changes: dict[str, Any]  # the event's own fields, in canonical form
    state: session_pb2.SynchronizationSession  # the session after the event


def session_history(app: SessionsApplication, session_id: str) -> Iterator[HistoryEntry]:
    records = stream_records(app.recorder, session_id)
    if not records or not records[0].topic.startswith("sessions.SessionOpened"):
        raise NotFound(f"session {session_id!r} not found")
    fold = SessionFold(app.mapper)
    session: Any = None
    for record in records:
        event = fold.decode(
            Notification(
                id=record.position,
                originator_id=session_id,
                originator_version=record.version,
                topic=record.topic,
                state=record.state,
            )
        )
        session = event.mutate(session)
        fields = vars(event)
        yield HistoryEntry(
            version=record.version,
            position=record.position,
            recorded_at=event.timestamp,
            event_type=record.topic.removeprefix("sessions."),
            principal=event.principal,
            idempotency_key=event.idempotency_key,
            link=event.link,
            changes={k: canonical_value(v) for k, v in fields.items() if k not in COMMON_FIELDS},
            state=session_message(session),
        )


def session_at_version(app: SessionsApplication, session_id: str, version: int) -> Session:
    session = app.get_session(session_id, version=version)
    if session.version != version:
        raise NotFound(f"session {session_id!r} has no version {version} (latest: {session.version})")
    return session


def session_as_of(app: SessionsApplication, session_id: str, moment: datetime) -> tuple[Session, session_pb2.SynchronizationSession]:
    """The session as GetSession would have shown it at ``moment``: the events
    recorded by then, and read-time expiry applied at that moment."""
    events = list(app.events.get(session_id))
    if not events:
        raise NotFound(f"session {session_id!r} not found")
    recorded = [e for e in events if e.timestamp <= moment]
    if not recorded:
        raise NotFound(f"session {session_id!r} did not exist at {moment.isoformat()}")
    session = app.get_session(session_id, version=recorded[-1].originator_version)
    return session, session_message(session, at=moment)
