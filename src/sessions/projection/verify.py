"""Compare the read model with a fresh fold of the event log."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sessions.api.convert import session_bytes
from sessions.projection.snapshots import SessionSnapshots
from sessions.store.application import SessionsApplication

OPENED_TOPIC = "sessions.SessionOpened"


def session_ids(app: SessionsApplication, batch: int = 1000) -> Iterator[str]:
    """Every session id in the log, in the order the sessions were opened."""
    position = 0
    while True:
        found = app.recorder.select_notifications(
            start=position, limit=batch, topics=[OPENED_TOPIC], inclusive_of_start=False
        )
        if not found:
            return
        for notification in found:
            yield str(notification.originator_id)
        position = found[-1].id


@dataclass(frozen=True)
class Difference:
    session_id: str
    problem: str


def differences(app: SessionsApplication, view: SessionSnapshots) -> Iterator[Difference]:
    """Each session whose row is missing or differs from a fresh fold of its
    events (the read model must be at the head of the log for a fair check)."""
    for session_id in session_ids(app):
        expected = session_bytes(app.get_session(session_id))
        row = view.get(session_id)
        if row is None:
            yield Difference(session_id, "no row in the read model")
        elif row.session != expected:
            yield Difference(session_id, "row differs from a fresh fold of its events")
