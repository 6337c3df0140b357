"""Which tables serve each read model, and which build is in progress.

One row per read model in ``read_models``: the live table and its version,
and the table being rebuilt, if any. Taking over is one UPDATE of that row,
so every reader switches from one complete table to another, never to a
half-built one. Servers also say which table they read in
``read_model_readers``, so that a rebuild drops old tables only once nobody
reads them.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from eventsourcing.postgres import PostgresDatastore

from sessions.projection.schema import version as code_version

READERS_STALE_AFTER = 15.0  # seconds without a reader's heartbeat: gone


@dataclass(frozen=True)
class Registration:
    name: str
    live_table: str
    live_version: int
    building_table: str | None
    building_version: int | None
    builds: int
    generation: int  # moves when rows change outside a projector (retry-parked)


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

    def _execute(self, sql: str, params: tuple[Any, ...] = (), *, write: bool = False) -> list[tuple[Any, ...]]:
        sql = sql.replace("?", self.mark)
        if self.postgres:
            with self.datastore.transaction(commit=write) as curs:
                curs.execute(sql, params)
                rows = curs.fetchall() if curs.description else []
                return [tuple(r.values()) for r in rows]
        with self.datastore.transaction(commit=write) as c:
            c.execute(sql, params)
            return [tuple(r) for r in c.fetchall()]

    def _create(self) -> None:
        self._execute(
            "CREATE TABLE IF NOT EXISTS read_models ("
            " name TEXT PRIMARY KEY, live_table TEXT NOT NULL, live_version INTEGER NOT NULL,"
            " building_table TEXT, building_version INTEGER, builds INTEGER NOT NULL DEFAULT 0,"
            " generation INTEGER NOT NULL DEFAULT 0)",
            write=True,
        )
        self._execute(
            "CREATE TABLE IF NOT EXISTS read_model_readers ("
            " reader_id TEXT PRIMARY KEY, name TEXT NOT NULL, table_name TEXT NOT NULL,"
            " seen_at BIGINT NOT NULL)",
            write=True,
        )

    # --- registrations ------------------------------------------------------------

    def get(self, name: str) -> Registration:
        """The read model's registration, created on first use for the version
        this build folds (a fresh store starts at the current version)."""
        rows = self._execute(
            "SELECT name, live_table, live_version, building_table, building_version, builds, "
            "generation FROM read_models WHERE name = ?",
            (name,),
        )
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

    def start_build(self, name: str, version: int) -> str:
        """Reserve a new table for a build of ``version``; return its name."""
        registration = self.get(name)
        builds = registration.builds + 1
        table = f"{name}_v{version}_b{builds}"
        self._execute(
            "UPDATE read_models SET building_table = ?, building_version = ?, builds = ? "
            "WHERE name = ?",
            (table, version, builds, name),
            write=True,
        )
        return table

    def take_over(self, name: str, table: str, version: int) -> None:
        """Make ``table`` the live one, atomically."""
        self._execute(
            "UPDATE read_models SET live_table = ?, live_version = ?, building_table = NULL, "
            "building_version = NULL WHERE name = ?",
            (table, version, name),
            write=True,
        )

    def touch(self, name: str) -> None:
        """Tell readers that rows changed outside the projector."""
        self._execute(
            "UPDATE read_models SET generation = generation + 1 WHERE name = ?", (name,), write=True
        )

    # --- readers ------------------------------------------------------------------

    def reading(self, reader_id: str, name: str, table: str) -> None:
        self._execute(
            "INSERT INTO read_model_readers (reader_id, name, table_name, seen_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (reader_id) DO UPDATE SET name = excluded.name, "
            "table_name = excluded.table_name, seen_at = excluded.seen_at",
            (reader_id, name, table, int(time.time())),
            write=True,
        )

    def gone(self, reader_id: str) -> None:
        self._execute("DELETE FROM read_model_readers WHERE reader_id = ?", (reader_id,), write=True)

    def readers_of(self, table: str) -> list[str]:
        since = int(time.time() - READERS_STALE_AFTER)
        rows = self._execute(
            "SELECT reader_id FROM read_model_readers WHERE table_name = ? AND seen_at >= ?",
            (table, since),
        )
        return [r[0] for r in rows]


CACHING = "-caching"  # the end of the id of a reader that caches rows


def new_reader_id(caching: bool = False) -> str:
    return f"reader-{uuid.uuid4().hex[:12]}{CACHING if caching else ''}"


def caches_rows(reader_id: str) -> bool:
    return reader_id.endswith(CACHING)
