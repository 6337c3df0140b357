"""The application's infrastructure: what the command handlers
(store.application) stand on, kept out of their way.

- the store's settings, as the URL decided them (store.urls), and the
  schema lock that serializes table creation across processes;
- one clock (the database's, on PostgreSQL: store.clock);
- a lock per stream (striped), so that commands on one stream take turns
  inside a process and only other processes' writes can collide;
- typed loads (``get``) through the optimistic aggregate cache
  (store.aggregate_cache), and ``save``, which returns the position at which
  the save committed;
- rows written with the events: an optional ``WithEvents`` hook given when
  the application is built (the read model's rows: projection.write_through),
  passed to the recorder with the events as the library's own extension
  point does it (``_record`` sets what the recorder's ``_insert_events``
  writes in the events' transaction; see store.recorders).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol, TypeVar

from eventsourcing.application import AggregateNotFoundError, ProcessingEvent
from eventsourcing.persistence import JSONTranscoder, Recording, Transcoder
from eventsourcing.utils import Environment, EnvType

from sessions.domain.base import Aggregate
from sessions.domain.errors import NotFound
from sessions.domain.policy import Policy
from sessions.store.aggregate_cache import CachedAggregates
from sessions.store.clock import Clock, SharedClock, system_clock
from sessions.store.codec import SessionsTranscoder, register_domain_transcodings
from sessions.store.health import StoreHealth
from sessions.store.recorders import InTransaction
from sessions.store.urls import StoreSettings, pin_settings

log = logging.getLogger("sessions.store.application")

SCHEMA_LOCK_KEY = 0x5E5510  # pg_advisory_lock key held while creating tables
LOCK_STRIPES = 256

A = TypeVar("A", bound=Aggregate)


class WithEvents(Protocol):
    """Rows that commit in a save's own transaction: the read side's, so
    that a command's changes are readable the moment it answers."""

    def rows_for(self, aggregates: Iterable[Aggregate]) -> InTransaction | None:
        """What to write for these (changed) aggregates; None: nothing."""


class StoreApplication(CachedAggregates):
    name = "sessions"  # fixed: table names derive from it (so in each subclass too)

    def __init__(
        self,
        settings: StoreSettings,
        *,
        policy: Policy | None = None,
        clock: Clock = system_clock,
        with_events: Callable[[StoreApplication], WithEvents] | None = None,
    ):
        """``with_events``: made with the application (on its store), what
        each save also writes in its transaction (the read model's rows:
        ``projection.write_through.WriteThrough``); None: the events alone."""
        self.settings = settings
        self.policy = policy or Policy()
        self.clock = clock
        self.with_events: WithEvents | None = None
        self._stream_locks = [threading.RLock() for _ in range(LOCK_STRIPES)]
        with self.schema_lock():
            super().__init__(env=settings.env)
        # Said once when the store goes away and once when it is back; the
        # background workers log what an outage makes fail quietly.
        self.store_health: StoreHealth = getattr(self.factory, "health", None) or StoreHealth()
        if settings.backend == "postgresql" and clock is system_clock:
            # Every process on the store decides on the database's time.
            self.clock = SharedClock(self._database_now)
        if with_events is not None:
            self.with_events = with_events(self)

    def _database_now(self) -> datetime:
        with self.factory.datastore.get_connection() as conn:  # type: ignore[attr-defined]
            row = conn.execute("SELECT clock_timestamp() AS now").fetchone()
        return row["now"]

    @contextmanager
    def schema_lock(self) -> Iterator[None]:
        """Serialize table creation across processes: PostgreSQL's CREATE ...
        IF NOT EXISTS races when several servers start on a fresh database."""
        if self.settings.backend != "postgresql":
            yield
            return
        with self.settings.connect_postgres(autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_KEY,))

    def construct_env(self, name: str, env: EnvType | None = None) -> Environment:
        """The library's settings: the process environment, except what the
        store URL decides (see urls.pin_settings): a variable that tries to
        change it is overridden, and named in the log."""
        environment = super().construct_env(name, env)
        for line in pin_settings(environment, self.settings, name, os.environ):
            log.warning("store: %s", line)
        return environment

    def construct_transcoder(self) -> Transcoder:
        transcoder = SessionsTranscoder()  # the one codec (store/codec.py)
        self.register_transcodings(transcoder)
        return transcoder

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_domain_transcodings(transcoder)

    def stream_lock(self, stream_id: str) -> threading.RLock:
        """Commands on one stream take turns inside this process."""
        return self._stream_locks[hash(stream_id) % LOCK_STRIPES]

    # --- loads and saves ----------------------------------------------------------

    def get(self, kind: type[A], aggregate_id: str, version: int | None = None) -> A:
        """The aggregate of this kind, or NotFound."""
        try:
            aggregate = self.load(aggregate_id, version)
        except AggregateNotFoundError:
            raise NotFound(f"{_describe(kind)} {aggregate_id!r} not found") from None
        if not isinstance(aggregate, kind):
            raise NotFound(f"{_describe(kind)} {aggregate_id!r} not found")
        return aggregate

    def get_or_none(self, kind: type[A], aggregate_id: str) -> A | None:
        try:
            return self.get(kind, aggregate_id)
        except NotFound:
            return None

    def commit(self, *aggregates: Aggregate) -> int:
        """Save these aggregates' new events in one atomic write, with what
        ``with_events`` writes for them; return the position (notification
        id) of the last event written."""
        return last_position(self.save_aggregates(aggregates))

    def _record(self, processing_event: ProcessingEvent[str]) -> list[Recording]:
        """The library's hook between a save and its recorder: the rows
        ``with_events`` makes of the saved aggregates go to the recorder
        with the events (``also``), into the same transaction."""
        if self.with_events is not None:
            rows = self.with_events.rows_for(processing_event.aggregates.values())  # type: ignore[arg-type]
            if rows is not None:
                processing_event.saved_kwargs["also"] = [rows]
        return super()._record(processing_event)


def last_position(recordings: Sequence[Any]) -> int:
    return max((r.notification.id or 0 for r in recordings), default=0)


def _describe(kind: type[Any]) -> str:
    return {"Session": "session", "OperationRecord": "operation"}.get(kind.__name__, kind.__name__)
