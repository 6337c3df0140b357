"""Which tables serve each read model, and which build is in progress: the
one place where the read side's consistency is decided.

One row per read model in ``read_models``: the live table and its version,
and the table being rebuilt, if any. Every process follows that row through
the database, never through a copy of it in memory:

- **Reads** go through a view (``<name>_live``) that selects from the live
  table. A takeover redefines the view in the transaction that changes the
  row, so every read, in every process, sees the live table of the moment,
  with nothing to notice or poll.
- **Writes** of rows (a command's, with its events; a projector's batch)
  read the row with ``FOR SHARE`` inside their own transaction and write
  into the tables it names: the live one, and the one being built. A
  registration or a takeover updates the row, which waits for the writes
  that read it and is waited for by those that come after: each write lands
  in the tables that are current when it commits.
- **A build** is registered before it folds: from then on every write also
  writes its rows into the new table, so once the build has folded the log
  up to the head as it was at registration, it holds every write, folded or
  written, and may take over.

On SQLite one writer at a time holds the database, which gives the same
order without ``FOR SHARE``.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import OperationalError
from eventsourcing.postgres import PostgresDatastore

from sessions.projection.schema import version as code_version

log = logging.getLogger("sessions.projection.registry")


@dataclass(frozen=True)
class Registration:
    name: str
    live_table: str
    live_version: int
    building_table: str | None
    building_version: int | None
    builds: int

    @property
    def tables(self) -> tuple[str, ...]:
        """The tables that writes must keep current."""
        return (self.live_table, self.building_table) if self.building_table else (self.live_table,)


class Superseded(Exception):
    """A write meant for a table that is no longer live nor being built."""

    def __init__(self, table: str, registration: Registration):
        super().__init__(f"{table} is no longer current; {registration.live_table} is live")
        self.table = table
        self.registration = registration


_SELECT = "SELECT name, live_table, live_version, building_table, building_version, builds FROM read_models"

# Longest a takeover waits at a time for the readers of the read view (its
# replacement queues the readers that come after): see Registry._change.
VIEW_WAIT = 0.2  # s


def _lock_not_available(error: BaseException) -> bool:
    return getattr(error.__cause__, "sqlstate", None) == "55P03"  # (the library's error, from psycopg's)


def live_view(name: str) -> str:
    """The view every read of the read model ``name`` goes through."""
    return f"{name}_live"


class Registry:
    def __init__(self, datastore: Any):
        self.datastore = datastore
        self.postgres = isinstance(datastore, PostgresDatastore)
        self.mark = "%s" if self.postgres else "?"

    @classmethod
    def of(cls, app: Any) -> Registry:
        """The registry in the application's store (tables created on first use)."""
        registry = cls(app.factory.datastore)
        with app.schema_lock():
            registry._create()
        return registry

    # --- plumbing ---------------------------------------------------------------

    def _sql(self, sql: str) -> str:
        return sql.replace("?", self.mark)

    def _execute(self, sql: str, params: tuple[Any, ...] = (), *, write: bool = False) -> list[tuple[Any, ...]]:
        with self.datastore.transaction(commit=write) as cursor:
            return self._run(cursor, sql, params)

    def _run(self, cursor: Any, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        cursor.execute(self._sql(sql), params)
        if not sql.startswith("SELECT"):
            return []
        if self.postgres:
            return [tuple(r.values()) for r in cursor.fetchall()]
        return [tuple(r) for r in cursor.fetchall()]

    def _create(self) -> None:
        self._execute(
            "CREATE TABLE IF NOT EXISTS read_models ("
            " name TEXT PRIMARY KEY, live_table TEXT NOT NULL, live_version INTEGER NOT NULL,"
            " building_table TEXT, building_version INTEGER, builds INTEGER NOT NULL DEFAULT 0,"
            " generation INTEGER NOT NULL DEFAULT 0)",
            write=True,
        )

    # --- registrations ------------------------------------------------------------

    def get(self, name: str) -> Registration:
        """The read model's registration, created on first use for the version
        this build folds (a fresh store starts at the current version)."""
        rows = self._execute(f"{_SELECT} WHERE name = ?", (name,))
        if not rows:
            version = code_version(name)
            self._execute(
                "INSERT INTO read_models (name, live_table, live_version) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO NOTHING",
                (name, f"{name}_v{version}", version),
                write=True,
            )
            return self.get(name)
        return Registration(*rows[0])

    def current(self, cursor: Any, name: str) -> Registration:
        """The registration, read inside a write's own transaction: a
        registration or takeover waits for that transaction, or it reads the
        registration as they left it. (A command's write on PostgreSQL reads
        it in the server: row_tables.write_rows.)"""
        lock = " FOR SHARE" if self.postgres else ""
        return Registration(*self._run(cursor, f"{_SELECT} WHERE name = ?{lock}", (name,))[0])

    def check(self, cursor: Any, name: str, table: str) -> None:
        """Inside a projector's batch: raise Superseded unless ``table`` is
        still live or being built."""
        # (SQLite: the write lock first, so that the batch's writes after this
        # read wait for other writers rather than fail on a stale snapshot)
        registration = self.current(cursor, name) if self.postgres else self._lock(cursor, name)
        if table not in registration.tables:
            raise Superseded(table, registration)

    def define_view(self, name: str) -> None:
        """(Re)define the read view on the live table, as the registry names
        it (at start: a store from before the view, or a fresh one)."""
        with self.datastore.transaction(commit=True) as cursor:
            registration = self._lock(cursor, name)
            self._define(cursor, name, registration.live_table)

    def next_build_table(self, name: str, version: int) -> str:
        """The name of the table for the next build of ``version``."""
        return f"{name}_v{version}_b{self.get(name).builds + 1}"

    def start_build(self, name: str, table: str, version: int) -> None:
        """Register ``table`` (which exists) as the build in progress: every
        write that commits from now on writes its rows into it too."""
        self._change(
            name,
            "UPDATE read_models SET building_table = ?, building_version = ?, builds = builds + 1 "
            "WHERE name = ?",
            (table, version, name),
        )

    def take_over(self, name: str, table: str, version: int) -> None:
        """Make ``table`` the live one, for writes and reads in one transaction."""
        self._change(
            name,
            "UPDATE read_models SET live_table = ?, live_version = ?, building_table = NULL, "
            "building_version = NULL WHERE name = ?",
            (table, version, name),
            view_on=table,
        )

    def _change(self, name: str, update: str, params: tuple[Any, ...], view_on: str | None = None) -> None:
        """Update the registration (and the read view, if ``view_on``) in one
        transaction that waits for the writes that read it.

        On PostgreSQL the view is replaced first, before the registration is
        locked: replacing it waits for every transaction that has read it
        (a long ListSessions, an operator's open transaction), and a write
        that finds the registration locked waits while holding the events
        table's lock, so that every write would wait for that reader too.
        Readers of the view queue behind the replacement while it waits, so
        it waits at most VIEW_WAIT at a time and tries again in a new
        transaction. (The order of the change is the transaction's: the wait
        only bounds how long readers queue, and a reader that never ends
        delays the takeover, not the writes.)"""
        for attempt in itertools.count(1):
            try:
                with self.datastore.transaction(commit=True) as cursor:
                    if view_on is not None and self.postgres:
                        cursor.execute("SELECT set_config('lock_timeout', %s, true)", (f"{VIEW_WAIT * 1000:.0f}ms",))
                        self._define(cursor, name, view_on)
                        cursor.execute("SELECT set_config('lock_timeout', '0', true)")
                    self._lock(cursor, name)
                    self._run(cursor, update, params)
                    if view_on is not None and not self.postgres:
                        self._define(cursor, name, view_on)
                return
            except OperationalError as e:
                if not _lock_not_available(e):
                    raise
                log.info("registry: the read view of %s is in use; replacing it again (attempt %d)", name, attempt)
                time.sleep(min(VIEW_WAIT * attempt, 2.0))

    def _lock(self, cursor: Any, name: str) -> Registration:
        """Read the registration for an update of it (on SQLite, the write
        lock is taken first, by a write that changes nothing)."""
        if self.postgres:
            rows = self._run(cursor, f"{_SELECT} WHERE name = ? FOR UPDATE", (name,))
        else:
            self._run(cursor, "UPDATE read_models SET builds = builds WHERE name = ?", (name,))
            rows = self._run(cursor, f"{_SELECT} WHERE name = ?", (name,))
        return Registration(*rows[0])

    def _define(self, cursor: Any, name: str, table: str) -> None:
        view = live_view(name)
        self._run(cursor, f"DROP VIEW IF EXISTS {view}")
        self._run(cursor, f"CREATE VIEW {view} AS SELECT * FROM {table}")
