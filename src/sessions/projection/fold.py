"""Folding session events into snapshot rows.

The fold is the aggregate's own: each event's ``mutate`` runs the same method
body that ran when the event happened, so the read model cannot drift from
the write side. A row stores the aggregate's state at its version; the next
batch resumes from it instead of replaying the stream.

Events are read and states written through the store's mapper, that is
through the one codec (store/codec.py), as the store itself does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

from eventsourcing.persistence import Mapper, Notification, StoredEvent

from sessions.domain.base import SnapshotOfState
from sessions.domain.schedule import SyncSchedule
from sessions.domain.session import Session
from sessions.projection.rows import SessionRow
from sessions.store.codec import codec_of, event_of
from sessions.store.operations import OperationRecord
from sessions.wire import micros, session_bytes


def session_event_topics() -> frozenset[str]:
    return frozenset(
        getattr(value, "TOPIC")  # noqa: B009 - checked just below
        for value in vars(Session).values()
        if isinstance(value, type)
        and issubclass(value, Session.Event)
        and value not in (Session.Event, Session.Created)
    )


SESSION_TOPICS = session_event_topics()


def _topics_of(aggregate: Any) -> set[str]:
    topics = {getattr(value, "TOPIC", None) for value in vars(aggregate).values() if isinstance(value, type)}
    return {t for t in topics if t is not None and t != aggregate.TOPIC}


# Events the fold knows it can pass by: the other streams' own topics. Any
# other topic is read, so that an event the fold does not know is parked.
SKIPPED_TOPICS = frozenset(_topics_of(SyncSchedule) | _topics_of(OperationRecord))


class SessionFold:
    def __init__(self, mapper: Mapper[Any]):
        self.mapper = mapper
        self._codec = codec_of(mapper)

    def decode(self, notification: Notification) -> Any:
        """The domain event of a stored session event: what the mapper gives,
        read through the codec without the mapper's generic steps (a fold's
        reading is most of a rebuild's time)."""
        n = notification
        return event_of(n.topic, n.originator_id, n.originator_version, self._codec.decode(n.state))

    def resume(self, session_id: str, version: int, state: bytes) -> Session:
        stored = StoredEvent(session_id, version, SnapshotOfState.TOPIC, state)
        event: Any = self.mapper.to_domain_event(stored)
        return cast(Session, event.mutate(None))

    def apply(
        self, sessions: dict[str, Session], notifications: Iterable[Notification]
    ) -> tuple[set[str], list[tuple[Notification, str]]]:
        """Apply the session events among ``notifications`` to ``sessions``
        (in place). Return the ids that changed, and the events that could
        not be applied with their errors (poison events, to be parked); once
        one of a stream's events fails, the stream's later events wait too.
        Events a row already holds (version not newer) are skipped."""
        changed: set[str] = set()
        failed: list[tuple[Notification, str]] = []
        blocked: set[str] = set()
        skipped = SKIPPED_TOPICS
        decode = self.decode
        for notification in notifications:
            if notification.topic in skipped:
                continue
            stream = str(notification.originator_id)
            if stream in blocked:
                failed.append((notification, "waits for an earlier parked event of its stream"))
                continue
            try:
                event = decode(notification)
                current = sessions.get(stream)
                if current is not None and event.originator_version <= current.version:
                    continue
                sessions[stream] = event.mutate(current)
            except Exception as e:  # noqa: BLE001 - any failure parks the event
                blocked.add(stream)
                failed.append((notification, f"{type(e).__name__}: {e}"))
                continue
            changed.add(stream)
        return changed, failed

    def row(self, session: Session) -> SessionRow:
        return SessionRow(
            session_id=session.id,
            subject_container_id=session.subject_container_id,
            session_type=session.session_type.value,
            status=session.status.value,
            sync_mode=session.sync_mode.value,
            agent_id=session.agent_id,
            created_at=micros(session.created_at),
            expires_at=micros(session.expires_at),
            closed_at=micros(session.closed_at) if session.closed_at else None,
            last_seen_at=micros(session.last_seen_at),
            version=session.version,
            state=self.mapper.to_stored_event(SnapshotOfState.take(session)).state,
            session=session_bytes(session),
        )



def session_ids_in(notifications: Sequence[Notification]) -> set[str]:
    return {str(n.originator_id) for n in notifications if n.topic in SESSION_TOPICS}
