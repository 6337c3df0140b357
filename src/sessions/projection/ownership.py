"""Which projector folds a read model: one owner, any number of hot standbys.

Any number of `sessions project` processes (and `sessions serve` with its
projector) may run against one read model on PostgreSQL; exactly one folds
at a time. What makes that true is the database, never a process noticing
something in time:

- **Ownership is a session-level advisory lock**
  (``pg_try_advisory_lock(KEY_CLASS, key(name))``) held by a connection of
  the projector's own, outside the pool. PostgreSQL lets one session hold it,
  and releases it when that session ends: the process exits or is killed,
  its connection is cut or terminated (``pg_terminate_backend``), or the
  server stops hearing from it (TCP keepalives on that connection). The
  others try to take it every ``interval`` (0.5 s): hot standbys.
- **A former owner can never commit a batch after a standby took over**
  (a fencing token). Taking ownership increments ``projector_generations``
  for the read model, after the lock is held; every batch reads that row
  ``FOR SHARE`` first in its own transaction and writes nothing unless the
  generation is the one its projector took. The increment waits for the
  batches that read the row before it (row lock), and the batches after it
  read the new value: so a batch of the former owner either commits before
  the new owner reads its starting position, or writes nothing. A former
  owner paused in the middle of a batch's transaction (SIGSTOP) holds that
  row lock; the transaction sets ``idle_in_transaction_session_timeout``, so
  the server ends it after ``BATCH_IDLE_TIMEOUT`` and the takeover goes on.
- **Nothing can be folded twice anyway**: the tracking row (the library's
  single-row tracking) only moves forward, in the batch's transaction, and
  rows only move to a newer version.

Writers never wait on any of it: commands write their rows with their
events and never read the generation row.

``sessions projections status`` names the owner and the standbys from
``projectors`` (one row per projector process, written when it connects)
joined with what the database keeps true by itself: ``pg_stat_activity``
(the row's connection is alive) and ``pg_locks`` (which of them holds the
lock). A row whose connection is gone is never shown, and is deleted by the
next projector that connects.

On SQLite one process holds the file: the rule is one projector per store
file (the default ``sessions serve`` has it in process); ``SoleOwnership``
always owns.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.postgres import PostgresDatastore

log = logging.getLogger("sessions.projection.ownership")

KEY_CLASS = 0x5E55  # the first half of every projector lock's key: "sessions"
DEFAULT_INTERVAL = 0.5  # how often a standby tries to take over
BATCH_IDLE_TIMEOUT = "5s"  # a batch's transaction left idle this long is ended by the server
# The lock connection's keepalives: a server that stops hearing from an
# owner (network loss) ends its session, and releases the lock, in ~8 s.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 1, "keepalives_count": 3}


class NotOwner(Exception):
    """A batch of a projector that no longer owns its read model."""


def lock_key(name: str) -> int:
    """The second half of the read model's lock key (a positive int4)."""
    return zlib.crc32(f"sessions.projector:{name}".encode()) & 0x7FFFFFFF


@dataclass(frozen=True)
class ProjectorInfo:
    host: str
    pid: int
    role: str  # owner, standby
    connected_at: str
    owner_since: str | None


class SoleOwnership:
    """SQLite (one process holds the file), or a projector that folds on its
    own (a rebuild's): always the owner."""

    held = True
    generation = 0

    def try_take(self) -> bool:
        return True

    def start(self, on_taken: Callable[[], None]) -> None:
        pass

    def stop(self) -> None:
        pass

    def check(self, cursor: Any) -> None:
        pass

    def lost(self) -> None:
        pass


class PostgresOwnership:
    def __init__(self, app: Any, name: str, *, interval: float = DEFAULT_INTERVAL):
        self.app = app
        self.name = name
        self.key = lock_key(name)
        self.interval = interval
        self.held = False
        self.generation: int | None = None
        self.since: datetime | None = None
        self.host = socket.gethostname()
        self._conn: Any = None
        self._lock = threading.Lock()  # the connection is used by one thread at a time
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_taken: Callable[[], None] = lambda: None
        create_tables(app)

    # --- the lock connection --------------------------------------------------------

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            conn = self.app.settings.connect_postgres(
                autocommit=True, application_name=f"sessions projector {self.host[:30]} {os.getpid()}", **KEEPALIVES
            )
            with conn.transaction():
                # (the rows of projectors whose connections are gone go first)
                conn.execute(
                    "DELETE FROM projectors p WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a"
                    " WHERE a.pid = p.backend_pid AND a.backend_start = p.backend_start)"
                )
                conn.execute(
                    "INSERT INTO projectors (name, backend_pid, backend_start, host, pid)"
                    " SELECT %s, pid, backend_start, %s, %s FROM pg_stat_activity WHERE pid = pg_backend_pid()",
                    (self.name, self.host, os.getpid()),
                )
            self._conn = conn
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - it is gone either way
                log.debug("projector: closing the lock connection failed", exc_info=True)

    # --- taking and keeping -------------------------------------------------------------

    def try_take(self) -> bool:
        """One attempt: True if this process owns the read model now."""
        with self._lock:
            try:
                return self._try_take()
            except Exception as e:  # noqa: BLE001 - the store is away: not the owner
                if self.held:
                    log.warning("projector: lost ownership of %s (%s)", self.name, e)
                self.held = False
                self._drop_connection()
                return False

    def _try_take(self) -> bool:
        conn = self._connection()
        if self.held:
            conn.execute("SELECT 1")  # still connected: still holding the lock
            return True
        taken = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (KEY_CLASS, self.key)).fetchone()[0]
        if not taken:
            return False
        # The fencing token: waits for a former owner's batch in flight
        # (it read the row FOR SHARE), and refuses every later one.
        with conn.transaction():
            row = conn.execute(
                "INSERT INTO projector_generations (name, generation) VALUES (%s, 1)"
                " ON CONFLICT (name) DO UPDATE SET generation = projector_generations.generation + 1"
                " RETURNING generation, clock_timestamp()",
                (self.name,),
            ).fetchone()
            conn.execute("UPDATE projectors SET owner_since = %s WHERE backend_pid = pg_backend_pid()", (row[1],))
        self.generation, self.since = int(row[0]), row[1]
        self.held = True
        log.info("projector: owns %s (generation %d)", self.name, self.generation)
        return True

    def lost(self) -> None:
        """A batch found another owner's generation: stop folding, release
        the lock if this connection still holds it, and stand by."""
        with self._lock:
            if self.held:
                log.warning("projector: another process took over %s; standing by", self.name)
            self.held = False
            self._drop_connection()

    def start(self, on_taken: Callable[[], None]) -> None:
        """Keep trying (a standby) or keep checking (the owner) every
        ``interval``; ``on_taken`` runs each time ownership is taken."""
        self._on_taken = on_taken
        self._thread = threading.Thread(target=self._run, name="projector-ownership", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        announced = False
        while not self._stopped.is_set():
            was_held = self.held
            if self.try_take() and not was_held:
                self._on_taken()
                announced = False
            elif not self.held and not announced:
                log.info("projector: %s is owned by another process; standing by", self.name)
                announced = True
            self._stopped.wait(self.interval)

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            self.held = False
            self._drop_connection()  # (releases the lock; the standbys take over)

    # --- the fence ----------------------------------------------------------------------

    def check(self, cursor: Any) -> None:
        """First in each batch's transaction: NotOwner unless this
        projector's generation is still the read model's."""
        cursor.execute(f"SET LOCAL idle_in_transaction_session_timeout = '{BATCH_IDLE_TIMEOUT}'")
        cursor.execute("SELECT generation FROM projector_generations WHERE name = %s FOR SHARE", (self.name,))
        rows = cursor.fetchall()
        current = rows[0]["generation"] if rows else None
        if not self.held or current != self.generation:
            raise NotOwner(f"{self.name} is owned by generation {current}, this projector's is {self.generation}")


Ownership = SoleOwnership | PostgresOwnership


def ownership_of(app: Any, name: str, interval: float = DEFAULT_INTERVAL) -> Ownership:
    if isinstance(app.factory.datastore, PostgresDatastore):
        return PostgresOwnership(app, name, interval=interval)
    return SoleOwnership()


def create_tables(app: Any) -> None:
    with app.schema_lock(), app.factory.datastore.transaction(commit=True) as cursor:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS projector_generations (name TEXT PRIMARY KEY, generation BIGINT NOT NULL)"
        )
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS projectors (name TEXT NOT NULL, backend_pid INTEGER NOT NULL,"
            " backend_start TIMESTAMPTZ NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,"
            " owner_since TIMESTAMPTZ, PRIMARY KEY (backend_pid, backend_start))"
        )


def projectors(app: Any, name: str) -> list[ProjectorInfo] | None:
    """The projectors of ``name`` whose connections are alive, the owner
    first; None on SQLite (one projector per file, not recorded)."""
    if not isinstance(app.factory.datastore, PostgresDatastore):
        return None
    create_tables(app)
    with app.factory.datastore.transaction(commit=False) as cursor:
        cursor.execute(
            "SELECT p.host, p.pid, p.backend_start, p.owner_since, l.pid IS NOT NULL AS owner"
            " FROM projectors p JOIN pg_stat_activity a"
            "  ON a.pid = p.backend_pid AND a.backend_start = p.backend_start"
            " LEFT JOIN pg_locks l ON l.pid = p.backend_pid AND l.locktype = 'advisory' AND l.granted"
            "  AND l.classid = %s AND l.objid = %s AND l.objsubid = 2"
            "  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " WHERE p.name = %s ORDER BY owner DESC, p.backend_start",
            (KEY_CLASS, lock_key(name), name),
        )
        rows = cursor.fetchall()
    return [
        ProjectorInfo(
            host=r["host"],
            pid=r["pid"],
            role="owner" if r["owner"] else "standby",
            connected_at=_iso(r["backend_start"]),
            owner_since=_iso(r["owner_since"]) if r["owner"] and r["owner_since"] else None,
        )
        for r in rows
    ]


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")
