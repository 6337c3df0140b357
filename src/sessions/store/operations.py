"""Durable answers of mutating calls.

Every mutating call stores its answer (an opaque payload, in practice the
serialized Operation) in a stream named by the operation id, in the same
atomic write as the events it caused. OperationService.Get reads it back,
also after a restart. A call with an idempotency key gets an operation id
derived from (principal, key), so a retry finds the first answer, and two
concurrent first tries collide in the store, which lets exactly one win.
"""

from __future__ import annotations

from datetime import datetime

from eventsourcing.domain import event

from sessions.domain.base import Aggregate
from sessions.domain.ids import OPERATION_PREFIX, derived_id, new_id


def operation_id_for(principal: str, idempotency_key: str) -> str:
    if idempotency_key:
        return derived_id(OPERATION_PREFIX, "idempotency", principal, idempotency_key)
    return new_id(OPERATION_PREFIX)


class OperationRecord(Aggregate):
    TOPIC = "sessions.OperationRecord"

    class Event(Aggregate.Event):
        TOPIC = "sessions.OperationRecord.Event"

    class Created(Event, Aggregate.Created):
        TOPIC = "sessions.OperationRecord.Created"

    @event("OperationRecorded", topic="sessions.OperationRecorded")
    def __init__(
        self,
        id: str,  # noqa: A002
        method: str,
        session_id: str,
        payload: bytes,
        principal: str,
        idempotency_key: str,
        timestamp: datetime,
    ):
        self.method = method
        self.session_id = session_id
        self.payload = payload
