"""Re-checking the tamper-evident chains from the stored rows alone.

Three kinds of tampering are caught: an edited event (its link no longer
matches its contents), an event removed from the middle of a stream (a gap
in the versions), and events cut off the end of an ended session (its last
link differs from the final link sealed into its schedule's SessionEnded).
See sessions/domain/chain.py for the encoding.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sessions.domain.chain import GENESIS, canonical_bytes, next_link, unwrap_stored
from sessions.store.records import StoredRecord, stream_records

SESSION_OPENED = "sessions.SessionOpened"
SESSION_ENDED = "sessions.SessionEnded"


@dataclass(frozen=True)
class ChainBreak:
    stream: str
    version: int  # the first version that is missing or wrong
    problem: str


class StreamCheck:
    """Checks one stream's records, fed in version order."""

    def __init__(self, stream: str):
        self.stream = stream
        self.link = GENESIS
        self.version = 0
        self.broken: ChainBreak | None = None

    def feed(self, topic: str, version: int, state: bytes) -> dict[str, Any] | None:
        """Check the next record; return its decoded fields (None once broken)."""
        if self.broken:
            return None
        expected = self.version + 1
        if version != expected:
            self.broken = ChainBreak(self.stream, expected, f"version {expected} is missing")
            return None
        data = unwrap_stored(json.loads(state))
        link = data.pop("link", None)
        if link != next_link(self.link, canonical_bytes(self.stream, version, topic, data)):
            self.broken = ChainBreak(self.stream, version, "contents do not match the chain link")
            return None
        self.link, self.version = link, version
        return data

    def seal(self, final_link: str) -> None:
        if not self.broken and self.link != final_link:
            self.broken = ChainBreak(
                self.stream,
                self.version + 1,
                f"events after version {self.version} were removed (final link does not match)",
            )


def check_records(records: Iterable[StoredRecord]) -> ChainBreak | None:
    check: StreamCheck | None = None
    for record in records:
        check = check or StreamCheck(record.stream)
        check.feed(record.topic, record.version, record.state)
    return check.broken if check else None


def check_session(app: Any, session_id: str) -> ChainBreak | None:
    """Check a session's stream, and its seal if it has ended."""
    records = stream_records(app.recorder, session_id)
    if not records:
        raise LookupError(f"session {session_id!r} not found")
    check = StreamCheck(session_id)
    opened = None
    for record in records:
        data = check.feed(record.topic, record.version, record.state)
        if record.version == 1 and data is not None:
            opened = data
    if check.broken or opened is None:
        return check.broken or ChainBreak(session_id, 1, "the opening event is missing")
    schedule_id = f"schedule:{opened['session_type']}:{opened['subject_container_id']}"
    schedule = StreamCheck(schedule_id)
    for record in stream_records(app.recorder, schedule_id):
        data = schedule.feed(record.topic, record.version, record.state)
        if data is not None and record.topic == SESSION_ENDED and data["session_id"] == session_id:
            check.seal(data["final_link"])
    return check.broken or schedule.broken


def check_all(
    app: Any, batch: int = 2000, on_progress: Callable[[int], None] | None = None
) -> Iterator[ChainBreak]:
    """Check every stream in one pass over the log, then every seal."""
    streams: dict[str, StreamCheck] = {}
    seals: dict[str, str] = {}
    position = 0
    while True:
        notifications = app.recorder.select_notifications(
            start=position, limit=batch, inclusive_of_start=False
        )
        if not notifications:
            break
        for n in notifications:
            stream = str(n.originator_id)
            check = streams.get(stream) or streams.setdefault(stream, StreamCheck(stream))
            data = check.feed(n.topic, n.originator_version, n.state)
            if data is not None and n.topic == SESSION_ENDED:
                seals[data["session_id"]] = data["final_link"]
        position = notifications[-1].id
        if on_progress:
            on_progress(position)
    for session_id, final_link in seals.items():
        if session_id in streams:
            streams[session_id].seal(final_link)
        else:
            yield ChainBreak(session_id, 1, "the whole stream was removed")
    for check in streams.values():
        if check.broken:
            yield check.broken
