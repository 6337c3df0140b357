"""Rows written with a command's own events: read-your-writes without a
second transaction, and without waiting for anything.

A command's changed sessions become their read-model rows (built by the
projector's own ``SessionFold.row``, from the aggregate the command just
changed) and are upserted in the events' transaction into the tables the
registry names in that same transaction (the live one, and the one being
built, if any: see projection.registry). Rows only move forward (an upsert
applies over an older version only), so when the projector folds the same
events later it changes nothing, and the two may run in any order. The
projector stays the source of truth for what no command wrote: its tracking
position, parked events and rebuilds are unchanged.

If a row cannot be built, the command still commits without it (the
projector parks the event with the same error, where an operator sees it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sessions.domain.session import Session
from sessions.projection.fold import SessionFold
from sessions.projection.registry import Registry
from sessions.projection.snapshots import NAME, SessionSnapshots, SnapshotRow

log = logging.getLogger("sessions.write_through")


class Tables:
    """The read model's tables as a write finds them: named by the registry
    inside the write's transaction, each opened once."""

    def __init__(self, registry: Registry, open_table: Callable[[str], SessionSnapshots]):
        self.registry = registry
        self._open = open_table
        self._opened: dict[str, SessionSnapshots] = {}

    def current(self, cursor: Any) -> list[SessionSnapshots]:
        names = self.registry.current(cursor, NAME).tables
        return [self._opened.get(n) or self._opened.setdefault(n, self._open(n)) for n in names]


class SessionRows:
    """One command's rows (or a group's), written into the current tables."""

    def __init__(self, tables: Tables, rows: Sequence[SnapshotRow]):
        self.tables = tables
        self.rows = rows
        self.order = rows[0].session_id
        self.session_ids = {r.session_id for r in rows}
        self.written_to: tuple[str, ...] = ()  # the tables, once written
        self.parts: list[SessionRows] = [self]  # the commands' own, when merged

    def write(self, cursor: Any) -> None:
        views = self.tables.current(cursor)
        for view in views:
            view.upsert_in(cursor, self.rows)
        for part in self.parts:
            part.written_to = tuple(v.table for v in views)

    def merged_with(self, other: Any) -> SessionRows | None:
        """Several commands' rows as one write, when group commit puts them
        in one transaction; a session in both keeps its newer row."""
        if not isinstance(other, SessionRows):
            return None
        latest = {r.session_id: r for r in self.rows}
        for row in other.rows:
            mine = latest.get(row.session_id)
            if mine is None or mine.version < row.version:
                latest[row.session_id] = row
        merged = SessionRows(self.tables, sorted(latest.values(), key=lambda r: r.session_id))
        merged.parts = [*self.parts, *other.parts]
        return merged


class WriteThrough:
    """The application's ``write_through`` hook (see store.application)."""

    def __init__(self, fold: SessionFold, tables: Tables, committed: Callable[[SessionRows, int], None]):
        self.fold = fold
        self.tables = tables
        self._committed = committed
        self._saving = threading.local()

    def rows_for(self, aggregates: Iterable[Any]) -> SessionRows | None:
        rows = self._rows_for(aggregates)
        self._saving.rows = rows  # (this thread's save)
        return rows

    def _rows_for(self, aggregates: Iterable[Any]) -> SessionRows | None:
        sessions = [a for a in aggregates if isinstance(a, Session)]
        if not sessions:
            return None
        try:
            rows = sorted((self.fold.row(s) for s in sessions), key=lambda r: r.session_id)
        except Exception:  # the projector will park it and say why
            log.exception("write-through: cannot build the rows of %s", [s.id for s in sessions])
            return None
        return SessionRows(self.tables, rows)

    def committed(self, position: int) -> None:
        rows, self._saving.rows = getattr(self._saving, "rows", None), None
        if rows is not None:
            self._committed(rows, position)
