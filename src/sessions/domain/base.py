"""Building blocks shared by the aggregates: string ids, and events that
always say who caused them, when, and under which idempotency key."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from eventsourcing.utils import register_topic
from eventsourcing.domain import (
    BaseAggregate,
    CanInitAggregate,
    CanMutateAggregate,
    CanSnapshotAggregate,
    MetaDomainEvent,
)


class RecordedEvent(CanMutateAggregate[str], metaclass=MetaDomainEvent):
    """Base of every stored event.

    ``timestamp`` is the time the event was recorded, taken from the caller's
    clock (the domain never reads the clock itself); ``principal`` is who
    caused it; ``idempotency_key`` is the request's key, or "".
    """

    originator_id: str
    originator_version: int
    timestamp: datetime
    principal: str
    idempotency_key: str


class CreationEvent(RecordedEvent, CanInitAggregate[str]):
    originator_topic: str


class SnapshotOfState(CanSnapshotAggregate[str], metaclass=MetaDomainEvent):
    """A whole aggregate state at one version, used by the projection to
    resume folding where it left off without replaying a stream."""

    TOPIC = "sessions.Snapshot"

    originator_id: str
    originator_version: int
    timestamp: datetime
    topic: str
    state: dict[str, Any]

    @classmethod
    def take(cls, aggregate: Any) -> SnapshotOfState:
        snapshot = super().take(aggregate)
        for private in ("_id", "_version", "_pending_events"):
            snapshot.state.pop(private, None)
        return snapshot


register_topic(SnapshotOfState.TOPIC, SnapshotOfState)


class Aggregate(BaseAggregate[str]):
    """An aggregate with a string id whose events are RecordedEvents."""

    class Event(RecordedEvent):
        pass

    class Created(Event, CreationEvent):
        pass

    Snapshot = SnapshotOfState
