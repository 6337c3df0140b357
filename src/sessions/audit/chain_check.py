"""Re-checking the tamper-evident chains from the stored rows alone.

Three kinds of tampering are caught: an edited event (its link no longer
matches its contents), an event removed from the middle of a stream (a gap
in the versions), and events cut off the end of an ended session (its last
link differs from the final link sealed into its schedule's SessionEnded).
See sessions/domain/chain.py for the encoding.

The newest end of a stream has nothing after it to vouch for it (an open
session's last events, or a schedule's last SessionEnded together with the
events it seals). An *anchor*, the version and link of every stream's head
written to a file kept outside the store, covers that: verifying against
it also catches any stream cut back past the anchored head.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sessions.domain.chain import GENESIS, canonical_bytes, next_link
from sessions.store.codec import codec_of
from sessions.store.records import stream_records

SESSION_ENDED = "sessions.SessionEnded"


@dataclass(frozen=True)
class ChainBreak:
    stream: str
    version: int  # the first version that is missing or wrong
    problem: str


class StreamCheck:
    """Checks one stream's records, fed in version order."""

    def __init__(self, stream: str, canonical: Callable[[bytes], Any]):
        self.stream = stream
        self.canonical = canonical  # stored state -> canonical fields
        self.link = GENESIS
        self.version = 0
        self.broken: ChainBreak | None = None
        self.anchored: tuple[int, str] | None = None  # (version, link) to meet

    def anchor(self, version: int, link: str) -> None:
        self.anchored = (version, link)

    def finish(self) -> ChainBreak | None:
        if not self.broken and self.anchored:
            version, link = self.anchored
            if self.version < version:
                self.broken = ChainBreak(
                    self.stream,
                    self.version + 1,
                    f"events after version {self.version} were removed "
                    f"(the anchor holds version {version})",
                )
        return self.broken

    def feed(self, topic: str, version: int, state: bytes) -> dict[str, Any] | None:
        """Check the next record; return its decoded fields (None once broken)."""
        if self.broken:
            return None
        expected = self.version + 1
        if version != expected:
            self.broken = ChainBreak(self.stream, expected, f"version {expected} is missing")
            return None
        data = self.canonical(state)
        link = data.pop("link", None)
        if link != next_link(self.link, canonical_bytes(self.stream, version, topic, data)):
            self.broken = ChainBreak(self.stream, version, "contents do not match the chain link")
            return None
        self.link, self.version = link, version
        if self.anchored and self.anchored[0] == version and self.anchored[1] != link:
            self.broken = ChainBreak(self.stream, version, "differs from the anchored head")
            return None
        return data

    def seal(self, final_link: str) -> None:
        if not self.broken and self.link != final_link:
            self.broken = ChainBreak(
                self.stream,
                self.version + 1,
                f"events after version {self.version} were removed (final link does not match)",
            )


def check_session(app: Any, session_id: str) -> ChainBreak | None:
    """Check a session's stream, and its seal if it has ended."""
    records = stream_records(app.recorder, session_id)
    if not records:
        raise LookupError(f"session {session_id!r} not found")
    canonical = canonical_reader(app)
    check = StreamCheck(session_id, canonical)
    opened = None
    for record in records:
        data = check.feed(record.topic, record.version, record.state)
        if record.version == 1 and data is not None:
            opened = data
    if check.broken or opened is None:
        return check.broken or ChainBreak(session_id, 1, "the opening event is missing")
    schedule_id = f"schedule:{opened['session_type']}:{opened['subject_container_id']}"
    schedule = StreamCheck(schedule_id, canonical)
    for record in stream_records(app.recorder, schedule_id):
        data = schedule.feed(record.topic, record.version, record.state)
        if data is not None and record.topic == SESSION_ENDED and data["session_id"] == session_id:
            check.seal(data["final_link"])
    return check.broken or schedule.broken


def check_all(
    app: Any,
    batch: int = 2000,
    on_progress: Callable[[int], None] | None = None,
    anchor: dict[str, tuple[int, str]] | None = None,
) -> Iterator[ChainBreak]:
    """Check every stream in one pass over the log, then every seal, then
    the anchor's heads, if one is given."""
    canonical = canonical_reader(app)
    streams: dict[str, StreamCheck] = {}
    for stream, (version, link) in (anchor or {}).items():
        streams[stream] = StreamCheck(stream, canonical)
        streams[stream].anchor(version, link)
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
            check = streams.get(stream) or streams.setdefault(stream, StreamCheck(stream, canonical))
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
        if check.finish():
            yield check.broken  # type: ignore[misc]


def canonical_reader(app: Any) -> Callable[[bytes], Any]:
    """Stored state -> its canonical fields (the store's codec, as it reads)."""
    return codec_of(app.mapper).canonical


def heads(app: Any, batch: int = 2000, on_progress: Callable[[int], None] | None = None) -> dict[str, tuple[int, str]]:
    """Every stream's head (version, link): the contents of an anchor."""
    canonical = canonical_reader(app)
    found: dict[str, tuple[int, str]] = {}
    position = 0
    while True:
        notifications = app.recorder.select_notifications(
            start=position, limit=batch, inclusive_of_start=False
        )
        if not notifications:
            return found
        for n in notifications:
            found[str(n.originator_id)] = (n.originator_version, canonical(n.state)["link"])
        position = notifications[-1].id
        if on_progress:
            on_progress(position)
