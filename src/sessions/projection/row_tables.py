"""The session rows on each backend, and where they are opened: SQLite
and PostgreSQL versions of ``rows.SessionRows`` (each also one of the
library's tracking recorders), and ``rows_on`` / ``rows_named`` /
``live_rows`` / ``open_rows``, on the application's own datastore.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import IntegrityError, OperationalError
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from psycopg.sql import SQL, Identifier, Literal

from sessions.projection.registry import Registry, live_view
from sessions.projection.rows import COLUMNS, NAME, SessionRow, SessionRows
from sessions.projection.schema import create_statements


class SQLiteSessionRows(SQLiteTrackingRecorder, SessionRows):
    def __init__(self, datastore: Any, *, table: str, **kwargs: Any):
        self._prepare(table)
        super().__init__(datastore, **kwargs)

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            *create_statements(NAME, "sqlite", self.table),
        ]

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(sql, params)
            return [tuple(r) for r in c.fetchall()]

    def _write(self) -> Any:
        return self.datastore.transaction(commit=True)

    def exists(self) -> bool:
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN (?, ?)",
                (self.table, self.parked_table),
            )
            return int(c.fetchone()[0]) == 2

    def drop(self) -> None:
        with self.datastore.transaction(commit=True) as c:
            for table in (self.parked_table, self.table):
                c.execute(f"DROP TABLE IF EXISTS {table}")
            c.execute("DELETE FROM tracking WHERE application_name = ?", (self.tracking_name,))


# The PostgreSQL types of rows.COLUMNS (projections/session_snapshots/postgresql.sql;
# tests/projection/test_write_through.py compares them with a created table).
COLUMN_TYPES = (
    "text", "text", "smallint", "smallint", "smallint", "text",
    "bigint", "bigint", "bigint", "bigint", "integer", "bytea", "bytea",
)
assert len(COLUMN_TYPES) == len(COLUMNS)


class PostgresSessionRows(PostgresTrackingRecorder, SessionRows):
    mark = "%s"
    BULK = 200  # rows from which a projector's batch is written with COPY

    def __init__(self, datastore: Any, *, table: str, **kwargs: Any):
        self._prepare(table)
        super().__init__(datastore, **kwargs)
        updates = ",".join(f"{c}=excluded.{c}" for c in COLUMNS[1:])
        self._upsert_arrays = (
            f"INSERT INTO {table} ({','.join(COLUMNS)}) "
            f"SELECT * FROM unnest({','.join(f'%s::{t}[]' for t in COLUMN_TYPES)}) AS r({','.join(COLUMNS)}) "
            f"ORDER BY session_id "
            f"ON CONFLICT (session_id) DO UPDATE SET {updates} WHERE {table}.version < excluded.version"
        )
        for statement in create_statements(NAME, "postgresql", self.table):
            self.sql_create_statements.append(SQL(statement))  # type: ignore[arg-type]

    def _in(self, values: Sequence[Any]) -> tuple[str, list[Any]]:
        # One array parameter: the statement is the same whatever the length.
        return "= ANY(?)", [list(values)]

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._sql(sql), params, prepare=True)
            return [tuple(r.values()) for r in curs.fetchall()]

    def _write(self) -> Any:
        return self.datastore.transaction(commit=True)

    def _upsert_statement(self, cursor: Any, rows: Sequence[SessionRow]) -> None:
        # (a projector's batch; a command's rows on PostgreSQL go through
        # write_rows below)
        if len(rows) == 1:
            cursor.execute(self._sql(self._upsert), rows[0].values(), prepare=True)
            return
        # One statement for any number of rows (a group commit's, a
        # projector batch's): one array per column, not one INSERT per row.
        columns = list(zip(*(r.values() for r in rows), strict=True))
        cursor.execute(self._upsert_arrays, [list(c) for c in columns], prepare=True)

    def _upsert_rows(self, cursor: Any, rows: Sequence[SessionRow]) -> None:
        if len(rows) < self.BULK:
            self._upsert_statement(cursor, rows)
            return
        # Large projector batches (catching up, rebuilding): COPY into a temporary table, then one INSERT ... ON
        # CONFLICT from it.
        cursor.execute(
            SQL("CREATE TEMPORARY TABLE IF NOT EXISTS snapshot_batch (LIKE {table}) ON COMMIT DELETE ROWS").format(
                table=Identifier(self.table)
            )
        )
        with cursor.copy(
            SQL("COPY snapshot_batch ({columns}) FROM STDIN").format(
                columns=SQL(",").join(Identifier(c) for c in COLUMNS)
            )
        ) as copy:
            for row in rows:
                copy.write_row(row.values())
        cursor.execute(
            SQL(
                "INSERT INTO {table} ({columns}) SELECT {columns} FROM snapshot_batch "
                "ORDER BY session_id "
                "ON CONFLICT (session_id) DO UPDATE SET {updates} WHERE {table}.version < excluded.version"
            ).format(
                table=Identifier(self.table),
                columns=SQL(",").join(Identifier(c) for c in COLUMNS),
                updates=SQL(",").join(
                    SQL("{c}=excluded.{c}").format(c=Identifier(c)) for c in COLUMNS[1:]
                ),
            )
        )

    def drop(self) -> None:
        with self.datastore.transaction(commit=True) as curs:
            for table in (self.parked_table, self.table):
                curs.execute(SQL("DROP TABLE IF EXISTS {0}").format(Identifier(table)))
            curs.execute(
                SQL("DELETE FROM {0} WHERE application_name = %s").format(
                    Identifier(self.tracking_table_name)
                ),
                (self.tracking_name,),
            )


def rows_on(app: Any, table: str) -> SessionRows:
    """The read model in ``table``, on the application's own datastore (one
    pool, and for in-memory SQLite the only way to see the same database);
    its tables are created if they are not there."""
    recorder = rows_named(app, table)
    if isinstance(recorder, SQLiteSessionRows) and recorder.exists():
        return recorder
    with app.schema_lock():
        _create(recorder)
    return recorder


def rows_named(app: Any, table: str) -> SessionRows:
    """The read model in ``table``, which exists (nothing is created: this
    may run inside another transaction)."""
    datastore = app.factory.datastore
    if app.settings.backend == "postgresql":
        return PostgresSessionRows(
            datastore, table=table, tracking_table_name=f"{app.name}_tracking"
        )
    return SQLiteSessionRows(datastore, table=table)


def live_rows(app: Any) -> SessionRows:
    """Reads of the live read model, through the view the registry keeps on
    the live table (see projection.registry)."""
    return rows_named(app, live_view(NAME))


def _create(recorder: Any, attempts: int = 20) -> None:
    """Create the tables. SQLite refuses a schema change at once (no busy
    wait) while another connection writes; such a refusal is retried. Two
    processes creating the same tables at once on SQLite (there is no
    schema lock there) collide on the library's migration record: the
    other one made them, which is checked."""
    for attempt in range(attempts):
        try:
            recorder.create_table()
            if isinstance(recorder, PostgresSessionRows):
                _create_write_rows(recorder.datastore, recorder.table)
            return
        except IntegrityError:
            if isinstance(recorder, SQLiteSessionRows) and recorder.exists():
                return
            raise
        except OperationalError as e:
            if "locked" not in str(e) or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def open_rows(app: Any) -> SessionRows:
    """The live read model, as the registry names it."""
    return rows_on(app, Registry.of(app).get(NAME).live_table)


# --- a command's rows on PostgreSQL: one statement, decided by the server ------------
#
# A command's rows go into the tables the registry names inside the command's
# own transaction (projection.registry). On PostgreSQL that read and the
# upserts are one function, called in the same message as the events'
# insert: the server decides where the rows go, and the process never
# works or waits with the events table locked (see store.recorders).

WRITE_ROWS_FUNCTION = f"{NAME}_write_rows"


def _write_rows_function(known: Sequence[str]) -> str:
    """The function's definition. Each table it may write into is named by
    the registry row it reads; for the ``known`` tables (those current when
    it was made) the upsert is a static statement, whose plan the server
    keeps for the session, and for any other (after a takeover, until the
    function is made again) a dynamic one, planned at each call. Which runs
    is decided by the name the registry gives, so either is correct."""
    columns = ",".join(COLUMNS)
    updates = ",".join(f"{c}=excluded.{c}" for c in COLUMNS[1:])
    arguments = ",".join(f"c{k} {t}[]" for k, t in enumerate(COLUMN_TYPES))
    using = ",".join(f"c{k}" for k in range(len(COLUMNS)))

    def upsert(table: str, values: str) -> str:
        return (
            f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({values}) AS r({columns}) ORDER BY session_id "
            f"ON CONFLICT (session_id) DO UPDATE SET {updates} WHERE {table}.version < excluded.version"
        )

    dynamic = upsert("%1$I", ",".join(f"${k + 1}" for k in range(len(COLUMNS))))

    def into(table: str) -> str:
        branches = "".join(
            f"{'IF' if k == 0 else 'ELSIF'} {table} = {Literal(name).as_string(None)} "
            f"THEN {upsert(Identifier(name).as_string(None), using)};\n    "
            for k, name in enumerate(known)
        )
        otherwise = f"EXECUTE format('{dynamic}', {table}) USING {using};"
        return f"{branches}ELSE {otherwise}\n    END IF;" if known else otherwise

    return (
        f"CREATE OR REPLACE FUNCTION {WRITE_ROWS_FUNCTION}({arguments}) RETURNS void LANGUAGE plpgsql AS $body$\n"
        "DECLARE model record;\n"
        "BEGIN\n"
        f"  SELECT live_table, building_table INTO model FROM read_models WHERE name = '{NAME}' FOR SHARE;\n"
        f"  IF NOT FOUND THEN RAISE EXCEPTION 'the read model {NAME} is not registered'; END IF;\n"
        f"  {into('model.live_table')}\n"
        "  IF model.building_table IS NOT NULL THEN\n"
        f"    {into('model.building_table')}\n"
        "  END IF;\n"
        "END $body$"
    )


_WRITE_ROWS_CALL = (
    f"SELECT {WRITE_ROWS_FUNCTION}({','.join(f'%s::{t}[]' for t in COLUMN_TYPES)})"
).encode()


def _create_write_rows(datastore: Any, table: str) -> None:
    """(PostgreSQL; under the schema lock, since two processes replacing one
    function at once collide) Create the function that writes a command's
    rows, or bring it up to date, knowing the tables the registry names and
    ``table`` (being created): replaced only if its text differs, so that
    the sessions using it keep their plans."""
    with datastore.transaction(commit=True) as cursor:
        cursor.execute(
            f"SELECT live_table, building_table FROM read_models WHERE name = '{NAME}'"
            if _registry_exists(cursor)
            else "SELECT NULL WHERE false"
        )
        named = [name for row in cursor.fetchall() for name in row.values() if name]
        definition = _write_rows_function(list(dict.fromkeys([*named, table])))
        cursor.execute(
            "SELECT prosrc FROM pg_proc WHERE proname = %s AND pronamespace = current_schema()::regnamespace",
            (WRITE_ROWS_FUNCTION,),
        )
        if [r["prosrc"] for r in cursor.fetchall()] != [definition.split("$body$")[1]]:
            cursor.execute(definition)


def _registry_exists(cursor: Any) -> bool:
    cursor.execute("SELECT to_regclass('read_models') IS NOT NULL AS found")
    return bool(cursor.fetchone()["found"])


def write_rows(cursor: Any, rows: Sequence[SessionRow]) -> None:
    """(PostgreSQL) The call that writes ``rows`` into the current tables,
    executed on ``cursor`` (a command's: rendered into its message)."""
    columns = zip(*(r.values() for r in rows), strict=True)
    cursor.execute(_WRITE_ROWS_CALL, [list(c) for c in columns])
