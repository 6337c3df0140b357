"""Compare the read model with a fresh fold of the event log.

Each row is compared with the stream folded afresh up to the row's own
version, so the check holds while the live projector keeps folding; a row
older than the read model's position, a missing row, or a row without
events are differences too.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import StoredEvent

from sessions.projection.rows import SessionRows
from sessions.store.records import stream_records
from sessions.wire import session_bytes

OPENED_TOPIC = "sessions.SessionOpened"


def session_ids(app: Any, up_to: int | None = None, batch: int = 1000) -> Iterator[str]:
    """Every session id in the log (to position ``up_to``), in opening order."""
    position = 0
    while True:
        found = app.recorder.select_notifications(
            start=position, limit=batch, stop=up_to, topics=[OPENED_TOPIC], inclusive_of_start=False
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


def differences(
    app: Any, view: SessionRows, sample: int | None = None, seed: int | None = None
) -> Iterator[Difference]:
    position = view.position()
    ids = list(session_ids(app, up_to=position))
    if sample is not None and sample < len(ids):
        ids = random.Random(seed).sample(ids, sample)
    for session_id in ids:
        problem = _check(app, view, session_id, position)
        if problem:
            yield Difference(session_id, problem)
    if sample is None:
        known = set(ids)
        for session_id in view.session_ids():
            if session_id not in known and not stream_records(app.recorder, session_id):
                yield Difference(session_id, "row without events in the log")


def _check(app: Any, view: SessionRows, session_id: str, position: int) -> str | None:
    records = stream_records(app.recorder, session_id)
    folded_by_position = sum(1 for r in records if r.position <= position)
    version = view.row_version(session_id)
    if version is None:
        return "no row in the read model"
    if version < folded_by_position:
        return f"row at version {version}, but the read model's position covers version {folded_by_position}"
    session: Any = None
    for record in records[:version]:
        stored = StoredEvent(session_id, record.version, record.topic, record.state)
        session = app.mapper.to_domain_event(stored).mutate(session)
    row = view.get(session_id)
    if row is None or session is None or row.session != session_bytes(session):
        return "row differs from a fresh fold of its events"
    return None
