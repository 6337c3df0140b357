"""Rows written with a command's own events: read-your-writes without a
second transaction.

A command's changed sessions become their read-model rows (built by the
projector's own ``SessionFold.row``, from the aggregate the command just
changed) and are upserted in the events' transaction, into the table this
process reads. Rows only move forward (an upsert applies over an older
version only), so when the projector folds the same events later it changes
nothing, and the two may run in any order. The projector stays the source
of truth: its tracking position, parked events and rebuilds are unchanged.

If a row cannot be built, the command still commits without it and its
answer waits for the projector instead, as it would without this.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sessions.domain.session import Session
from sessions.projection.fold import SessionFold
from sessions.projection.snapshots import SessionSnapshots, SnapshotRow

log = logging.getLogger("sessions.write_through")


class SessionRows:
    """One command's rows, and the table they go to."""

    def __init__(self, view: SessionSnapshots, rows: Sequence[SnapshotRow]):
        self.view = view
        self.rows = rows
        self.order = rows[0].session_id
        self.session_ids = {r.session_id for r in rows}

    @property
    def table(self) -> str:
        return self.view.table

    def write(self, cursor: Any) -> None:
        self.view.upsert_in(cursor, self.rows)

    def merged_with(self, other: Any) -> SessionRows | None:
        """Several commands' rows as one write, when group commit puts them
        in one transaction; a session in both keeps its newer row."""
        if not isinstance(other, SessionRows) or other.view is not self.view:
            return None
        latest = {r.session_id: r for r in self.rows}
        for row in other.rows:
            mine = latest.get(row.session_id)
            if mine is None or mine.version < row.version:
                latest[row.session_id] = row
        return SessionRows(self.view, sorted(latest.values(), key=lambda r: r.session_id))


class WriteThrough:
    """The application's ``write_through`` hook (see store.application)."""

    def __init__(self, fold: SessionFold, view: Any, committed: Any):
        self.fold = fold
        self._view = view  # () -> the SessionSnapshots this process reads
        self._committed = committed  # (SessionRows, position) -> None

    def prepare(self, aggregates: Sequence[Any]) -> SessionRows | None:
        sessions = [a for a in aggregates if isinstance(a, Session)]
        if not sessions:
            return None
        try:
            rows = sorted((self.fold.row(s) for s in sessions), key=lambda r: r.session_id)
        except Exception:  # the projector will park it and say why
            log.exception("write-through: cannot build the rows of %s", [s.id for s in sessions])
            return None
        return SessionRows(self._view(), rows)

    def committed(self, written: Any, position: int) -> None:
        self._committed(written, position)
