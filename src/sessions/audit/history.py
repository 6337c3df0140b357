"""A session's history: every event in order with the state after it, and
the session as GetSession showed it at a given time or version.

Reads go straight to the event store. The fold is the aggregate's own (each
event's ``mutate``); as-of reads use the library's versioned repository get.

The history is read in one pass over the stream's rows, and is meant to stay
fast for long sessions (10 000 events in well under a second). Per event,
the row's JSON is parsed once by the store's codec, which gives both its
domain values for the fold and its canonical form, the event's "changes"
(the stored JSON without the store's type tags, see domain/chain.py). The
state after each event is one message updated in place
(wire.SessionMessages) rather than built anew.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from eventsourcing.persistence import Mapper

from sessions.domain.errors import NotFound
from sessions.domain.session import Session
from sessions.store.application import SessionsApplication
from sessions.store.codec import codec_of, event_of
from sessions.store.records import StoredRecord, stream_records
from sessions.wire import SessionMessages, session_message, session_pb2

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


class HistoryStep(NamedTuple):
    """One event of a history as history_steps gives it."""

    record: StoredRecord  # the stored row (version, position, topic)
    event: Any  # the domain event (timestamp, principal, idempotency_key, link)
    changes: dict[str, Any]  # the event's own fields, in canonical form
    # The session after the event. One message, updated in place at the next
    # step: copy it to keep it.
    state: session_pb2.SynchronizationSession


def history_steps(app: SessionsApplication, session_id: str) -> Iterator[HistoryStep]:
    """The events of a session in order, each with the state after it: what
    session_history and the audit service are made of."""
    records = stream_records(app.recorder, session_id)
    if not records or not records[0].topic.startswith("sessions.SessionOpened"):
        raise NotFound(f"session {session_id!r} not found")
    decode = _decoder(app.mapper)
    messages = SessionMessages()
    update = messages.update
    session: Any = None
    for record in records:
        event, changes = decode(session_id, record)
        session = event.mutate(session)
        yield HistoryStep(record, event, changes, update(session))


def session_history(app: SessionsApplication, session_id: str) -> Iterator[HistoryEntry]:
    new_state = session_pb2.SynchronizationSession
    for record, event, changes, state in history_steps(app, session_id):
        kept = new_state()
        kept.CopyFrom(state)
        yield HistoryEntry(
            version=record.version,
            position=record.position,
            recorded_at=event.timestamp,
            event_type=record.topic.removeprefix("sessions."),
            principal=event.principal,
            idempotency_key=event.idempotency_key,
            link=event.link,
            changes=changes,
            state=kept,
        )


def session_at_version(app: SessionsApplication, session_id: str, version: int) -> Session:
    session = app.get_session(session_id, version=version)
    if session.version != version:
        raise NotFound(f"session {session_id!r} has no version {version} (latest: {session.version})")
    return session


def session_as_of(
    app: SessionsApplication, session_id: str, moment: datetime
) -> tuple[Session, session_pb2.SynchronizationSession]:
    """The session as GetSession would have shown it at ``moment``: the events
    recorded by then, and read-time expiry applied at that moment."""
    events: list[Any] = list(app.events.get(session_id))
    if not events:
        raise NotFound(f"session {session_id!r} not found")
    recorded = [e for e in events if e.timestamp <= moment]
    if not recorded:
        raise NotFound(f"session {session_id!r} did not exist at {moment.isoformat()}")
    session = app.get_session(session_id, version=recorded[-1].originator_version)
    return session, session_message(session, at=moment)


# --- decoding --------------------------------------------------------------------------

Changes = dict[str, Any]
Decode = Callable[[str, StoredRecord], tuple[Any, Changes]]


def _decoder(mapper: Mapper[Any]) -> Decode:
    """A function from a stored row to its domain event and "changes"."""
    codec = codec_of(mapper)

    def decode(session_id: str, record: StoredRecord) -> tuple[Any, Changes]:
        values, canonical = codec.decode_with_canonical(record.state)
        event = event_of(record.topic, session_id, record.version, values)
        return event, {k: v for k, v in canonical.items() if k not in COMMON_FIELDS}

    return decode
