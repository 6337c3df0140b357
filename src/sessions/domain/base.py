"""Building blocks shared by the aggregates: string ids, and events that
always say who caused them, when, under which idempotency key, and that chain
to the previous event of their stream (see chain.py)."""

from __future__ import annotations

from copy import deepcopy
from datetime import datetime
from enum import Enum
from typing import Any

from eventsourcing.domain import (
    BaseAggregate,
    CanInitAggregate,
    CanMutateAggregate,
    CanSnapshotAggregate,
    MetaDomainEvent,
)
from eventsourcing.utils import get_topic, register_topic

from sessions.domain.chain import GENESIS, link_for

# Values an aggregate copy may share with its original: they never change.
# (An aggregate's state holds only these, tuples of frozen dataclasses
# included; tests/domain/test_aggregate_copy.py keeps it so.)
IMMUTABLE = (str, int, float, type(None), datetime, Enum, tuple, frozenset, bytes)


class RecordedEvent(CanMutateAggregate[str], metaclass=MetaDomainEvent):
    """Base of every stored event.

    ``timestamp`` is the time the event was recorded, taken from the caller's
    clock (the domain never reads the clock itself); ``principal`` is who
    caused it; ``idempotency_key`` is the request's key, or ""; ``link``
    chains the event to its stream's previous one (tamper evidence).
    """

    originator_id: str
    originator_version: int
    timestamp: datetime
    principal: str
    idempotency_key: str
    link: str

    def mutate(self, aggregate: Any) -> Any:
        aggregate = super().mutate(aggregate)
        aggregate.chain_link = self.link
        return aggregate


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
    """An aggregate with a string id whose events are RecordedEvents, each
    linked to the one before it when it is created."""

    chain_link: str = GENESIS

    class Event(RecordedEvent):
        pass

    class Created(Event, CreationEvent):
        pass

    Snapshot = SnapshotOfState

    @classmethod
    def _create(cls, event_class: Any, *, id: Any = None, **kwargs: Any) -> Any:  # noqa: A002
        fields = {**kwargs, "originator_topic": get_topic(cls)}
        link = link_for(GENESIS, id, cls.INITIAL_VERSION, get_topic(event_class), fields)
        return super()._create(event_class, id=id, link=link, **kwargs)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        """The copy a command gets of a cached aggregate: a new attribute dict
        that shares the immutable values, instead of the generic walk down
        every tuple and datetime (a good part of a command's time: 4.0 us
        against 81.8 us for a full session, bench/README.md, "one codec")."""
        copy = object.__new__(type(self))
        memo[id(self)] = copy
        copy.__dict__.update(
            (name, value if isinstance(value, IMMUTABLE) else deepcopy(value, memo))
            for name, value in self.__dict__.items()
        )
        return copy

    def trigger_event(self, event_class: Any, **kwargs: Any) -> None:
        version = self.version + 1
        link = link_for(self.chain_link, self.id, version, get_topic(event_class), kwargs)
        super().trigger_event(event_class, link=link, **kwargs)
