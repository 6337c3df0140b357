"""Rows written with a command's own events: read-your-writes without a
second transaction, and without waiting for anything.

A command's changed sessions become their read-model rows (built by the
projector's own ``SessionFold.row``, from the aggregate the command just
changed) and are upserted in the events' transaction into the tables the
registry names in that same transaction (the live one, and the one being
built, if any: see projection.registry). Rows only move forward (an upsert
applies over an older version only), so the projector passes over the
events a row already holds, and the two may run in any order. The projector
stays the source of truth for what no command wrote: its tracking position,
parked events and rebuilds are unchanged.

If a row cannot be built, the command still commits without it (the
projector parks the event with the same error, where an operator sees it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sessions.domain.session import Session
from sessions.projection.fold import SessionFold
from sessions.projection.registry import Registry
from sessions.projection.row_tables import rows_named, rows_on, write_rows
from sessions.projection.rows import NAME, SessionRow, SessionRows

log = logging.getLogger("sessions.write_through")


class Tables:
    """The read model's tables as a write finds them: named by the registry
    inside the write's transaction. On PostgreSQL the server reads the
    registry and writes the rows, in one statement sent with the events'
    insert (row_tables.write_rows); on SQLite, where a write holds the
    whole database, the tables named are each opened once."""

    def __init__(self, registry: Registry, open_table: Callable[[str], SessionRows]):
        self.registry = registry
        self._open = open_table
        self._opened: dict[str, SessionRows] = {}

    def write(self, cursor: Any, rows: Sequence[SessionRow]) -> None:
        if self.registry.postgres:
            write_rows(cursor, rows)
            return
        for name in self.registry.current(cursor, NAME).tables:
            table = self._opened.get(name) or self._opened.setdefault(name, self._open(name))
            table.upsert_in(cursor, rows)


class RowWrite:
    """One command's rows (or a group's), written into the current tables."""

    def __init__(self, tables: Tables, rows: Sequence[SessionRow]):
        self.tables = tables
        self.rows = rows
        self.order = rows[0].session_id

    def write(self, cursor: Any) -> None:
        self.tables.write(cursor, self.rows)

    def merged_with(self, other: Any) -> RowWrite | None:
        """Several commands' rows as one write, when group commit puts them
        in one transaction; a session in both keeps its newer row."""
        if not isinstance(other, RowWrite):
            return None
        latest = {r.session_id: r for r in self.rows}
        for row in other.rows:
            mine = latest.get(row.session_id)
            if mine is None or mine.version < row.version:
                latest[row.session_id] = row
        return RowWrite(self.tables, sorted(latest.values(), key=lambda r: r.session_id))


class WriteThrough:
    """The application's ``with_events`` hook (store.base): built with the
    application (``SessionsApplication(settings, with_events=WriteThrough)``),
    on its store; the read model's tables are created if new."""

    def __init__(self, app: Any):
        self.fold = SessionFold(app.mapper)
        registry = Registry.of(app)
        rows_on(app, registry.get(NAME).live_table)  # (created if new)
        self.tables = Tables(registry, lambda table: rows_named(app, table))

    def rows_for(self, aggregates: Iterable[Any]) -> RowWrite | None:
        sessions = [a for a in aggregates if isinstance(a, Session)]
        if not sessions:
            return None
        try:
            rows = sorted((self.fold.row(s) for s in sessions), key=lambda r: r.session_id)
        except Exception:  # the projector will park it and say why
            log.exception("write-through: cannot build the rows of %s", [s.id for s in sessions])
            return None
        return RowWrite(self.tables, rows)
