"""Shared helpers of the store tests: a render function that keeps what it
was given, readable payloads, and stream inspection.

A plain module (not conftest.py) so that test modules can import it by a
name no other test folder uses."""

from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sessions.domain.enums import ChangeType, RelatedObjectType
from sessions.domain.policy import Policy
from sessions.domain.progress import ChangeCount, ProgressEntry
from sessions.store.application import Opened, SessionsApplication

T0 = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
POLICY = Policy(
    session_ttl=timedelta(minutes=10),
    heartbeat_grace=timedelta(minutes=2),
    sync_interval=timedelta(minutes=1),
    full_sync_period=timedelta(days=1),
)
USERS_CREATED = (
    ProgressEntry(RelatedObjectType.USER, (ChangeCount(ChangeType.CREATE, 3, 1),)),
)


def state(aggregate: Any) -> dict[str, Any]:
    """An aggregate's state without the events still waiting to be saved."""
    return {k: v for k, v in vars(aggregate).items() if k != "_pending_events"}


@dataclass(frozen=True)
class Rendered:
    operation_id: str
    now: datetime
    result: Any
    # The session's state when the answer was rendered (a deep copy).
    session_state: dict[str, Any] | None


class Render:
    """A render function (operation id, now, result) -> bytes that also keeps
    every call, so tests can compare what an answer showed with the store."""

    def __init__(self) -> None:
        self.calls: list[Rendered] = []
        self._lock = threading.Lock()

    def __call__(self, operation_id: str, now: datetime, result: Any) -> bytes:
        session = getattr(result, "session", None)
        snapshot = copy.deepcopy(state(session)) if session is not None else None
        with self._lock:
            self.calls.append(Rendered(operation_id, now, result, snapshot))
        next_at = getattr(result, "next_session_at", None)
        body = {
            "operation_id": operation_id,
            "now": now.isoformat(),
            "kind": type(result).__name__,
            "result": result.result.name if isinstance(result, Opened) else None,
            "session_id": session.id if session is not None else None,
            "status": session.status.name if session is not None else None,
            "sync_mode": session.sync_mode.name if session is not None else None,
            "version": session.version if session is not None else None,
            "expires_at": session.expires_at.isoformat() if session is not None else None,
            "next_session_at": next_at.isoformat() if next_at else None,
        }
        return json.dumps(body, sort_keys=True).encode()

    def last_for(self, operation_id: str) -> Rendered:
        return [c for c in self.calls if c.operation_id == operation_id][-1]


def answer(payload: bytes) -> dict[str, Any]:
    return json.loads(payload)


def event_names(app: SessionsApplication, originator_id: str) -> list[str]:
    return [type(e).__name__ for e in app.repository.event_store.get(originator_id)]


def events(app: SessionsApplication, originator_id: str) -> list[Any]:
    return list(app.repository.event_store.get(originator_id))
