"""Durable answers of mutating calls.

Every mutating call stores its answer (an opaque payload, in practice the
serialized Operation) in a stream named by the operation id, in the same
atomic write as the events it caused. OperationService.Get reads it back,
also after a restart. A call with an idempotency key gets an operation id
derived from (principal, key), so a retry finds the first answer, and two
concurrent first tries collide in the store, which lets exactly one win.

A key names one request: the record keeps a digest of the command (its
method and every value it carries), and a call that reuses the key with
another request is refused rather than answered with the first one's
result. Records written before the digest existed have none; for them the
method and the session are compared, as then.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields, is_dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from eventsourcing.domain import event

from sessions.domain.base import Aggregate
from sessions.domain.ids import OPERATION_PREFIX, derived_id, new_id


def request_digest(command: Any) -> str:
    """What makes two calls under one key the same request: the command's
    method and values, in a canonical JSON form, hashed."""
    canonical = json.dumps([command.method, _plain(command)], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


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
        request: str = "",  # request_digest of the command; "" in older records
    ):
        self.method = method
        self.session_id = session_id
        self.payload = payload
        self.request = request
