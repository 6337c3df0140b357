"""Which projector folds a read model: one owner, any number of hot standbys.

Any number of `sessions project` processes (and `sessions serve` with its
projector) may run against one read model on PostgreSQL; exactly one folds
at a time. What makes that true is the database, never a process noticing
something in time:

- **Ownership is a session-level advisory lock**
  (``pg_advisory_lock(KEY_CLASS, key(name))``) held by a connection of the
  projector's own, outside the pool. PostgreSQL lets one session hold it,
  and releases it when that session ends, and only then: the process exits
  or is killed, its connection is cut or terminated (``pg_terminate_backend``),
  or the server stops hearing from it (below). The standbys wait for it in
  ``pg_advisory_lock`` (a lock not granted, in ``pg_locks``): the server
  grants it to one of them the moment the owner's session ends.
- **A silent owner is ended by the server within 2 s** (network loss, a
  host gone). Without help the server would wait for the system's TCP
  keepalives (2 h): the lock connection sets the server's side of its
  socket (``SILENCE``, per session): a keepalive probe after 1 s of
  silence, failure 1 s later without an answer, and ``tcp_user_timeout``
  2 s for data never acknowledged. Linux then fails the socket at most
  ``SILENCE_BOUND`` (2 s) after the last packet from the owner's host
  (which answers probes while it is reachable, whatever its process does),
  the backend exits, and the lock goes to a waiting standby: a takeover
  within 2 s of the cut plus a few ms (tests/scaleout/test_network_loss.py
  measures it). That holds for a direct connection: behind a TCP proxy
  (PgBouncer, a cloud SQL proxy) the server's socket is the proxy's, so its
  keepalives watch the proxy, not the owner's host, and a cut-off owner
  keeps the lock as long as the proxy keeps its server connection (the
  fence below still holds). Each batch's transaction sets the same for itself, since a
  takeover waits for the batch holding the generation row (below): idle,
  in the middle of a message or of a pipeline, a cut-off batch is ended
  as fast. The client's side has the same keepalives and user timeout, so
  the owner's check (every ``interval``) notices about as soon, and a
  waiting standby notices a dead server. A paused owner (SIGSTOP) keeps
  the lock: its host answers. (``idle_session_timeout``, a lease the owner
  renews by its checks, would end that one too, but also an owner busy
  catching up or stalled for a moment.) Timing is never what is correct:
  the lock is released only when the server ends that backend, and a
  former owner that has not noticed cannot commit (the fence below).
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
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.postgres import PostgresDatastore

log = logging.getLogger("sessions.projection.ownership")

KEY_CLASS = 0x5E55  # the first half of every projector lock's key: "sessions"
DEFAULT_INTERVAL = 0.5  # how often the owner checks its lock connection
BATCH_IDLE_TIMEOUT = "5s"  # a batch's transaction left idle this long is ended by the server
# The server's side of the lock connection and of each batch's transaction:
# a socket silent for 1 s gets one keepalive probe, and fails 1 s later
# without an answer; data unacknowledged for 2 s fails it too (Linux:
# TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT; whole
# seconds for the first three, 1 s the least). So the server ends a silent
# owner's backend 2 s after the last packet from its host at most.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT, USER_TIMEOUT_MS = 1, 1, 1, 2000
SILENCE = {
    "tcp_keepalives_idle": str(KEEPALIVE_IDLE),
    "tcp_keepalives_interval": str(KEEPALIVE_INTERVAL),
    "tcp_keepalives_count": str(KEEPALIVE_COUNT),
    "tcp_user_timeout": str(USER_TIMEOUT_MS),
}
# What SILENCE adds up to, in seconds: idle + interval x count, or the user timeout.
SILENCE_BOUND = max(KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT, USER_TIMEOUT_MS / 1000)
# The client's side of the lock connection (libpq), the same: an owner
# checking its connection, or a standby waiting, notices a dead one.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": KEEPALIVE_IDLE,
    "keepalives_interval": KEEPALIVE_INTERVAL,
    "keepalives_count": KEEPALIVE_COUNT,
    "tcp_user_timeout": USER_TIMEOUT_MS,
}


class NotOwner(Exception):
    """A batch of a projector that no longer owns its read model.
    ``generation``: the one the batch ran under (None: not the owner)."""

    def __init__(self, message: str, generation: int | None = None):
        super().__init__(message)
        self.generation = generation


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

    def lost(self, generation: int | None) -> None:
        pass


class PostgresOwnership:
    def __init__(self, app: Any, name: str, *, interval: float = DEFAULT_INTERVAL):
        self.app = app
        self.name = name
        self.key = lock_key(name)
        self.interval = interval
        # (generation, since) while this process owns the read model: one
        # attribute, so that a batch reads whether it owns and under which
        # generation at once (assigned whole: atomic for readers).
        self._owned: tuple[int, datetime] | None = None
        self._state = threading.Lock()  # taking, losing: one at a time
        self.host = socket.gethostname()
        self._conn: Any = None  # the lock connection: the ownership thread's alone once started
        self._stopped = threading.Event()
        self._wake = threading.Event()  # lost() or stop(): the ownership thread looks at once
        self._thread: threading.Thread | None = None
        self._on_taken: Callable[[], None] = lambda: None
        create_tables(app)

    @property
    def held(self) -> bool:
        return self._owned is not None

    @property
    def generation(self) -> int | None:
        owned = self._owned
        return owned[0] if owned else None

    @property
    def since(self) -> datetime | None:
        owned = self._owned
        return owned[1] if owned else None

    # --- the lock connection --------------------------------------------------------

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            conn = self.app.settings.connect_postgres(
                autocommit=True, application_name=f"sessions projector {self.host[:30]} {os.getpid()}", **KEEPALIVES
            )
            with conn.transaction():
                # The server's side (SILENCE), and no timeout on the
                # standby's wait (a URL's options may set one for the pool).
                set_silence(conn, local=False, also={"statement_timeout": "0", "lock_timeout": "0"})
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

    def _lose(self, error: Exception) -> None:
        with self._state:
            if self._owned is not None:
                log.warning("projector: lost ownership of %s (%s)", self.name, error)
            self._owned = None
        self._drop_connection()

    # --- taking and keeping -------------------------------------------------------------

    def try_take(self) -> bool:
        """One attempt: True if this process owns the read model now. Once
        started, the ownership thread waits for the lock and takes it the
        moment it is free: this only says whether it has."""
        if self._thread is not None:
            return self.held
        if self.held:
            return True
        try:
            return self._take(self._connection(), wait=False)
        except Exception as e:  # noqa: BLE001 - the store is away: not the owner
            self._lose(e)
            return False

    def _take(self, conn: Any, *, wait: bool) -> bool:
        if wait:  # returns when this session holds the lock: the owner's session has ended
            conn.execute("SELECT pg_advisory_lock(%s, %s)", (KEY_CLASS, self.key))
        elif not conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (KEY_CLASS, self.key)).fetchone()[0]:
            return False
        if self._stopped.is_set():
            return False  # (stopping: the thread's end closes the connection, releasing the lock)
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
        with self._state:
            self._owned = (int(row[0]), row[1])
        log.info("projector: owns %s (generation %d)", self.name, self.generation)
        return True

    def lost(self, generation: int | None) -> None:
        """A batch run under ``generation`` (NotOwner's) found another
        owner's generation: stop folding, release the lock if this
        connection still holds it, and stand by. Unless ownership changed
        since that batch read it (the ownership thread took it, a new
        generation, after the batch found this process not the owner):
        then the batch's news is old, and nothing is dropped. Correct
        either way (the fence refuses every batch of a stale generation);
        this spares a needless takeover."""
        with self._state:
            if self.generation != generation:
                return
            if self._owned is not None:
                log.warning("projector: another process took over %s; standing by", self.name)
            self._owned = None
        if self._thread is None:
            self._drop_connection()
        else:
            self._wake.set()  # (the ownership thread drops its connection, and waits again)

    def start(self, on_taken: Callable[[], None]) -> None:
        """Wait for the lock (a standby) or check the connection every
        ``interval`` (the owner), on a thread of its own that alone uses
        the lock connection from now on; ``on_taken`` runs each time
        ownership is taken."""
        self._on_taken = on_taken
        self._thread = threading.Thread(target=self._run, name="projector-ownership", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stopped.is_set():
                try:
                    if self.held:
                        self._keep()
                    else:
                        self._stand_by()
                except Exception as e:  # noqa: BLE001 - the store is away, or stop() cancelled the wait
                    if self._stopped.is_set():
                        break
                    self._lose(e)
                    self._stopped.wait(self.interval)  # (then connects again)
        finally:
            self._owned = None
            self._drop_connection()  # (releases the lock; a standby takes over)

    def _stand_by(self) -> None:
        conn = self._connection()
        if self._take(conn, wait=False):
            self._on_taken()
            return
        if self._stopped.is_set():
            return  # stopping (maybe why _take said no, holding the lock): no wait
        log.info("projector: %s is owned by another process; standing by", self.name)
        if self._take(conn, wait=True):
            self._on_taken()

    def _keep(self) -> None:
        """The owner: the connection is still there (the lock with it)
        every ``interval``; a failure here is how this process learns that
        the server ended its session (SILENCE), or that the network went."""
        self._wake.wait(self.interval)
        self._wake.clear()
        if self._stopped.is_set():
            return
        if not self.held:  # lost(): another generation is the read model's
            self._drop_connection()
            return
        if self._conn is None or self._conn.closed:
            raise ConnectionError("the lock connection is closed")
        self._conn.execute("SELECT 1")

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        thread = self._thread
        if thread is None:
            self._owned = None
            self._drop_connection()  # (releases the lock; the standbys take over)
            return
        deadline = time.monotonic() + 5
        while thread.is_alive() and time.monotonic() < deadline:
            # A standby waits in pg_advisory_lock: cancel the wait (again,
            # if it came before the wait began).
            conn = self._conn
            if conn is not None:
                try:
                    conn.cancel_safe(timeout=1)
                except Exception:  # noqa: BLE001 - closed meanwhile, or the server is away
                    log.debug("projector: cancelling the wait for the lock failed", exc_info=True)
            thread.join(0.2)
        self._owned = None

    # --- the fence ----------------------------------------------------------------------

    def check(self, cursor: Any) -> None:
        """First in each batch's transaction: NotOwner unless this
        projector's generation is still the read model's."""
        set_silence(cursor, local=True, also={"idle_in_transaction_session_timeout": BATCH_IDLE_TIMEOUT})
        cursor.execute("SELECT generation FROM projector_generations WHERE name = %s FOR SHARE", (self.name,))
        rows = cursor.fetchall()
        current = rows[0]["generation"] if rows else None
        owned = self._owned
        mine = owned[0] if owned else None
        if mine is None or current != mine:
            raise NotOwner(f"{self.name} is owned by generation {current}, this projector's is {mine}", mine)


def set_silence(cursor: Any, *, local: bool, also: dict[str, str]) -> None:
    """SILENCE and ``also`` on the server's side of this connection (for
    this transaction only if ``local``), in one statement."""
    settings = {**SILENCE, **also}
    cursor.execute(
        "SELECT set_config(name, value, %s) FROM unnest(%s::text[], %s::text[]) AS s(name, value)",
        (local, list(settings), list(settings.values())),
    )


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


def projectors(app: Any, name: str, *, create: bool = True) -> list[ProjectorInfo] | None:
    """The projectors of ``name`` whose connections are alive, the owner
    first; None on SQLite (one projector per file, not recorded).
    ``create=False``: the caller created the tables once (create_tables),
    and a read takes no schema lock (which waits for any holder)."""
    if not isinstance(app.factory.datastore, PostgresDatastore):
        return None
    if create:
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
