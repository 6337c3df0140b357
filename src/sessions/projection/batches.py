"""Fold -> save: one batch of the log into the session rows of one table.

A batch is one transaction holding the changed rows, any parked events and
the new tracking position, so each event is applied exactly once. An event
the fold cannot apply, or whose row the store refuses, is parked with its
error, and the batch goes on without it (its stream's later events wait).

Commands write their sessions' rows with their events
(projection.write_through), in this process or another: a session whose
row already holds its stream's last event in the batch is passed over.
Recently folded sessions stay in memory (``cache_size``), so the next batch
need not read their state back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from eventsourcing.persistence import (
    InterfaceError,
    Notification,
    OperationalError,
    PersistenceError,
    Tracking,
)

from sessions.domain.session import Session
from sessions.projection.fold import SESSION_TOPICS, SessionFold, session_ids_in
from sessions.projection.registry import Superseded
from sessions.projection.rows import ParkedEvent, SessionRow, SessionRows
from sessions.store.health import StoreUnavailable

log = logging.getLogger("sessions.projection.projector")

# Runs first in a batch's transaction; raises to refuse the whole batch.
Check = Callable[[Any], None]


class FoldAndSave:
    def __init__(self, table: SessionRows, fold: SessionFold, cache_size: int, check: Check | None = None):
        self.table = table
        self.fold = fold
        self.cache_size = cache_size
        self.check = check
        self._cache: dict[str, Session] = {}  # insertion order = recency
        # Streams with parked events: their rows may change outside this
        # projector (retry-parked), so they are always read back.
        self._parked_streams: set[str] = {event.stream for event in table.parked()}

    def forget(self) -> None:
        """Drop the folded sessions kept in memory (after a failure)."""
        self._cache.clear()

    def save(self, notifications: list[Notification], reached: int) -> int:
        """Fold these notifications into the table and move its position to
        ``reached``, in one transaction; return how many were folded."""
        notifications = self._pass_over_written(notifications)
        sessions = self._resumed(session_ids_in(notifications))
        try:
            rows, parked = self._fold(sessions, notifications)
            parked = self._write(rows, parked, sessions, notifications, Tracking(self.table.tracking_name, reached))
            self._parked_streams.update(event.stream for event in parked)
            for event in parked:
                log.error(
                    "projector: parked event %d (%s v%d, %s): %s",
                    event.position, event.stream, event.version, event.topic, event.error,
                )
        except BaseException:
            self._cache.clear()  # folded objects may hold changes that were not committed
            raise
        self._remember(sessions)
        return len(notifications)

    def _pass_over_written(self, notifications: list[Notification]) -> list[Notification]:
        """Leave out the events of sessions whose rows already hold them (the
        row's version is at least its stream's last one in this batch);
        their cached states are dropped (the row is newer)."""
        latest: dict[str, int] = {}
        for n in notifications:
            if n.topic in SESSION_TOPICS:
                latest[str(n.originator_id)] = n.originator_version
        candidates = [sid for sid in latest if sid not in self._parked_streams]
        if not candidates:
            return notifications
        versions = self.table.row_versions(candidates)
        done = {sid for sid in candidates if versions.get(sid, 0) >= latest[sid]}
        if not done:
            return notifications
        for sid in done:
            self._cache.pop(sid, None)
        return [n for n in notifications if str(n.originator_id) not in done]

    def _resumed(self, ids: set[str]) -> dict[str, Session]:
        """The sessions to fold into: cached, or resumed from their rows."""
        sessions: dict[str, Session] = {}
        missing = []
        for sid in ids:
            cached = None if sid in self._parked_streams else self._cache.pop(sid, None)
            if cached is None:
                missing.append(sid)
            else:
                sessions[sid] = cached
        if missing:
            for sid, (version, state) in self.table.resume_points(missing).items():
                sessions[sid] = self.fold.resume(sid, version, state)
        return sessions

    def _fold(
        self, sessions: dict[str, Session], notifications: list[Notification]
    ) -> tuple[list[SessionRow], list[ParkedEvent]]:
        """The changed sessions' rows, and the events to park."""
        changed, failures = self.fold.apply(sessions, notifications)
        rows = []
        for sid in sorted(changed):
            try:
                rows.append(self.fold.row(sessions[sid]))
            except Exception as e:  # noqa: BLE001 - park the stream, go on
                failed = {n.id for n, _ in failures}
                failures += [
                    (n, f"cannot build the row: {type(e).__name__}: {e}")
                    for n in notifications
                    if str(n.originator_id) == sid and n.id not in failed
                ]
                del sessions[sid]
        return rows, [parked_event(n, error) for n, error in failures]

    def _write(
        self,
        rows: list[SessionRow],
        parked: list[ParkedEvent],
        sessions: dict[str, Session],
        notifications: list[Notification],
        tracking: Tracking,
    ) -> list[ParkedEvent]:
        """Save the batch; return the events parked."""
        try:
            self.table.save(rows, tracking, parked, check=self.check)
            return parked
        except (OperationalError, InterfaceError, StoreUnavailable, Superseded):
            raise  # the store is down or busy (tried again), or moved on
        except (PersistenceError, ValueError, OverflowError) as e:
            # A row the store refuses (a poison event): the batch again, each
            # row on its own, and the events of a refused row parked instead
            # of retried forever.
            log.warning(
                "projector: batch up to %d refused (%s); writing its rows one by one", tracking.notification_id, e
            )
        already = {event.position for event in parked}

        def refused(row: SessionRow, error: str) -> list[ParkedEvent]:
            sessions.pop(row.session_id, None)
            return [
                parked_event(n, error)
                for n in notifications
                if str(n.originator_id) == row.session_id and n.id not in already
            ]

        return list(self.table.save(rows, tracking, parked, refused=refused, check=self.check))

    def _remember(self, sessions: dict[str, Session]) -> None:
        """Keep recently folded sessions (this projector is the only one
        folding into its table; writers' rows are passed over, above)."""
        self._cache.update((sid, s) for sid, s in sessions.items() if sid not in self._parked_streams)
        while len(self._cache) > self.cache_size:
            del self._cache[next(iter(self._cache))]


def parked_event(n: Notification, error: str) -> ParkedEvent:
    error = error.replace("\0", "\\0")  # (the error is stored as text)
    return ParkedEvent(n.id, str(n.originator_id), n.originator_version, n.topic, bytes(n.state), error)
