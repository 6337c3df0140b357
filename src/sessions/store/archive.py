"""Event log archives: the whole log, in order, in one compressed file.

Format ``sessions.events`` version 1: gzip-compressed JSON Lines, UTF-8.

    {"format": "sessions.events", "format_version": 1, "application": "sessions",
     "exported_at": "<RFC 3339>", "head": <last position at export>}
    {"position": 1, "stream": "<originator id>", "version": 1,
     "topic": "sessions.ScheduleStarted", "state": "<the stored event's JSON state>"}
    ... one line per event, in position order ...
    {"end": true, "events": <count>, "sha256": "<hex of all event lines>"}

``state`` is the event exactly as stored (it holds the event's audit chain
``link``, see domain/chain.py), so an archive re-checks with the same rules
as a live store. The trailer's digest is sha256 over the event lines' bytes
(each with its newline); a truncated or edited archive is refused on import.
Positions are the source store's; a store that imports them numbers its
events afresh, in the same order.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eventsourcing.persistence import Notification, StoredEvent

FORMAT = "sessions.events"
FORMAT_VERSION = 1
BATCH = 2000

Progress = Callable[[int], None]


class ArchiveError(Exception):
    pass


@dataclass(frozen=True)
class ArchiveHeader:
    head: int
    exported_at: str


def export_events(app: Any, out: Path, on_progress: Progress | None = None) -> int:
    """Write the whole log to ``out``; return the number of events."""
    head = app.recorder.max_notification_id() or 0
    digest = hashlib.sha256()
    count = 0
    with gzip.open(out, "wb") as f:
        header = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "application": app.name,
            "exported_at": datetime.now(UTC).isoformat(),
            "head": head,
        }
        f.write(_line(header))
        position = 0
        while position < head:
            batch = app.recorder.select_notifications(
                start=position, limit=BATCH, stop=head, inclusive_of_start=False
            )
            if not batch:
                break
            for n in batch:
                line = _line({
                    "position": n.id,
                    "stream": str(n.originator_id),
                    "version": n.originator_version,
                    "topic": n.topic,
                    "state": bytes(n.state).decode("utf-8"),
                })
                digest.update(line)
                f.write(line)
                count += 1
            position = batch[-1].id
            if on_progress:
                on_progress(position)
        f.write(_line({"end": True, "events": count, "sha256": digest.hexdigest()}))
    return count


def read_header(path: Path) -> ArchiveHeader:
    with gzip.open(path, "rb") as f:
        return _header(f.readline())


def read_events(path: Path) -> Iterator[Notification]:
    """Every event of the archive in order, as notifications; the trailer is
    checked at the end (ArchiveError if the archive is truncated or edited)."""
    digest = hashlib.sha256()
    count = 0
    with gzip.open(path, "rb") as f:
        _header(f.readline())
        for line in f:
            record = json.loads(line)
            if record.get("end"):
                if record["events"] != count or record["sha256"] != digest.hexdigest():
                    raise ArchiveError(f"{path}: the archive does not match its trailer (edited?)")
                return
            digest.update(line)
            count += 1
            yield Notification(
                id=record["position"],
                originator_id=record["stream"],
                originator_version=record["version"],
                topic=record["topic"],
                state=record["state"].encode("utf-8"),
            )
    raise ArchiveError(f"{path}: the archive ends without its trailer (truncated?)")


def import_events(app: Any, path: Path, on_progress: Progress | None = None) -> int:
    """Load an archive into an empty store; return the number of events."""
    if app.recorder.max_notification_id():
        raise ArchiveError("the target store is not empty; import only into an empty store")
    for _ in read_events(path):  # a spoiled archive is refused before anything is written
        pass
    batch: list[StoredEvent] = []
    count = position = 0
    for n in read_events(path):
        batch.append(StoredEvent(n.originator_id, n.originator_version, n.topic, n.state))
        position = n.id
        if len(batch) >= BATCH:
            count += _insert(app, batch, position, on_progress)
    if batch:
        count += _insert(app, batch, position, on_progress)
    return count


def _insert(app: Any, batch: list[StoredEvent], position: int, on_progress: Progress | None) -> int:
    app.recorder.insert_events(batch)
    n = len(batch)
    batch.clear()
    if on_progress:
        on_progress(position)
    return n


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def _header(line: bytes) -> ArchiveHeader:
    try:
        header = json.loads(line)
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ArchiveError("not a sessions event archive")
    if header.get("format_version") != FORMAT_VERSION:
        raise ArchiveError(f"unsupported archive format version {header.get('format_version')}")
    return ArchiveHeader(head=header["head"], exported_at=header["exported_at"])
