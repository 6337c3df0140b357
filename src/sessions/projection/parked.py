"""Retrying parked events: after a fix (new code, repaired data), apply each
stream's parked events in order onto its row; those that still fail stay
parked with their new error."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import Notification

from sessions.projection.fold import SessionFold
from sessions.projection.rows import ParkedEvent, SessionRows
from sessions.store.records import stream_records


@dataclass(frozen=True)
class RetryResult:
    applied: int
    still_parked: int


def retry_parked(app: Any, view: SessionRows) -> RetryResult:
    fold = SessionFold(app.mapper)
    by_stream: dict[str, list[ParkedEvent]] = defaultdict(list)
    for event in view.parked():
        by_stream[event.stream].append(event)
    rows, applied, still = [], [], []
    resume = view.resume_points(by_stream)
    for stream, events in by_stream.items():
        sessions = {}
        if stream in resume:
            version, state = resume[stream]
            sessions[stream] = fold.resume(stream, version, state)
        # What the log holds now (it may have been repaired since parking).
        stored = {r.version: r for r in stream_records(app.recorder, stream)}
        events = [
            ParkedEvent(e.position, stream, e.version, stored[e.version].topic, stored[e.version].state, e.error)
            if e.version in stored
            else e
            for e in events
        ]
        notifications = [
            Notification(
                id=e.position, originator_id=e.stream, originator_version=e.version, topic=e.topic, state=e.state
            )
            for e in events
        ]
        changed, failures = fold.apply(sessions, notifications)
        failed_positions = {n.id: error for n, error in failures}
        for event in events:
            if event.position in failed_positions:
                error = failed_positions[event.position]
                still.append(ParkedEvent(event.position, stream, event.version, event.topic, event.state, error))
            else:
                applied.append(event.position)
        if changed:
            try:
                rows.append(fold.row(sessions[stream]))
            except Exception as e:  # noqa: BLE001 - the stream stays parked
                applied = [p for p in applied if p not in {ev.position for ev in events}]
                still += [
                    ParkedEvent(ev.position, stream, ev.version, ev.topic, ev.state, f"cannot build the row: {e}")
                    for ev in events
                    if ev.position not in failed_positions
                ]
    view.unpark(rows, applied, still)
    return RetryResult(len(applied), len(still))
