"""The eventsourcing Application: the only door to the event store.

Each command loads the aggregates it needs, lets them decide, and saves all
new events together with the call's operation record in one atomic write.
A write that loses an optimistic-concurrency race is retried against fresh
state a bounded number of times, then refused as a conflict.

Commands decide on cached aggregates (store.aggregate_cache) and rely on
the collision of their save to notice another process's writes. What a
collision cannot catch is read fresh: a refusal is confirmed on fresh state
before it is returned, OpenSession (whose answers may write nothing to what
it read) reads fresh, and so do queries and the deadline worker.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError, JSONTranscoder, Transcoder
from eventsourcing.utils import Environment, EnvType

from sessions.domain.access import require_acting_for
from sessions.domain.base import Aggregate
from sessions.domain.enums import OpenResult, SessionType
from sessions.domain.errors import DomainError, InvalidArgument, NotFound
from sessions.domain.ids import SESSION_PREFIX, new_id
from sessions.domain.policy import Policy
from sessions.domain.progress import ProgressEntry
from sessions.domain.schedule import SyncSchedule, schedule_id
from sessions.domain.session import Session
from sessions.store.aggregate_cache import CachedAggregates
from sessions.store.clock import Clock, SharedClock, system_clock
from sessions.store.codec import SessionsTranscoder, register_domain_transcodings
from sessions.store.health import OUTAGE_ERRORS, StoreHealth
from sessions.store.operations import OperationRecord, operation_id_for
from sessions.store.recorders import InTransaction
from sessions.store.urls import StoreSettings, pin_settings

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 12
SCHEMA_LOCK_KEY = 0x5E5510  # pg_advisory_lock key held while creating tables
LOCK_STRIPES = 256
SYSTEM_PRINCIPAL = "system:deadline"


class ConcurrencyConflict(Exception):
    """Optimistic-concurrency retries were exhausted (ABORTED)."""


class _StaleRead(Exception):
    """Streams read one after another disagree (another process wrote in
    between); the command is retried against fresh state."""


@dataclass(frozen=True)
class Caller:
    principal: str
    idempotency_key: str = ""
    # Agent ids the caller may act for; None: not limited (admin, or no credentials).
    acting_for: frozenset[str] | None = None


@dataclass(frozen=True)
class Opened:
    """What OpenSession decided; ``session`` is the new or the running one."""

    result: OpenResult
    session: Session | None = None
    next_session_at: datetime | None = None


@dataclass(frozen=True)
class Changed:
    """The session after a report, heartbeat or close."""

    session: Session


Result = Opened | Changed
# Turns a result into the stored answer: (operation id, now, result) -> bytes.
Render = Callable[[str, datetime, Result], bytes]


@dataclass(frozen=True)
class Outcome:
    operation_id: str
    payload: bytes
    # Notification id of the last event written; 0 for a replayed answer.
    position: int
    replayed: bool


class SameTransaction(Protocol):
    """Writes that commit with a save's events: the read side's rows, so that
    a command's own changes are readable the moment it answers."""

    def prepare(self, aggregates: Sequence[Aggregate]) -> InTransaction | None:
        """What to write for these (changed) aggregates; None: nothing."""

    def committed(self, written: InTransaction, position: int) -> None:
        """Called once the save that carried ``written`` has committed, with
        the position of its last event."""


class SessionsApplication(CachedAggregates):
    name = "sessions"  # fixed: table names derive from it

    def __init__(
        self,
        settings: StoreSettings,
        *,
        policy: Policy | None = None,
        clock: Clock = system_clock,
    ):
        self.settings = settings
        self.policy = policy or Policy()
        self.clock = clock
        # Commands on one stream take turns inside this process, so only
        # writers in other processes can conflict (and are retried).
        self._stream_locks = [threading.RLock() for _ in range(LOCK_STRIPES)]
        self.write_through: SameTransaction | None = None
        self.on_replay: Callable[[str], None] | None = None
        with self.schema_lock():
            super().__init__(env=settings.env)
        # Said once when the store goes away and once when it is back; the
        # background workers log what an outage makes fail quietly.
        self.store_health: StoreHealth = getattr(self.factory, "health", None) or StoreHealth()
        if settings.backend == "postgresql" and clock is system_clock:
            # Every process on the store decides on the database's time.
            self.clock = SharedClock(self._database_now)

    def _database_now(self) -> datetime:
        with self.factory.datastore.get_connection() as conn:  # type: ignore[attr-defined]
            row = conn.execute("SELECT clock_timestamp() AS now").fetchone()
        return row["now"]  # type: ignore[no-any-return]

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

    def _stream_lock(self, stream_id: str) -> threading.RLock:
        return self._stream_locks[hash(stream_id) % LOCK_STRIPES]

    def construct_transcoder(self) -> Transcoder:
        transcoder = SessionsTranscoder()  # the one codec (store/codec.py)
        self.register_transcodings(transcoder)
        return transcoder

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_domain_transcodings(transcoder)

    # --- commands ---------------------------------------------------------------

    def open_session(
        self,
        subject_container_id: str,
        agent_id: str,
        session_type: SessionType,
        caller: Caller,
        render: Render,
    ) -> Outcome:
        require_acting_for(agent_id, caller.acting_for, "open a session")

        def decide(now: datetime) -> tuple[list[Aggregate], Result]:
            sid = schedule_id(subject_container_id, session_type)
            schedule = self._get_or_none(SyncSchedule, sid) or SyncSchedule.start(
                subject_container_id, session_type, now=now, principal=caller.principal
            )
            changed: list[Aggregate] = [schedule]
            if schedule.active_session_id is not None:
                running = self._get(Session, schedule.active_session_id)
                if running.status.is_final:
                    raise _StaleRead(f"session {running.id} ended after its schedule was read")
                if not self._end_if_expired(running, schedule, now):
                    return changed, Opened(OpenResult.OPENED_SESSION_EXISTS, session=running)
                changed.append(running)
            decision = schedule.decide_open(now, self.policy)
            if decision.result is OpenResult.TOO_EARLY:
                return changed, Opened(
                    OpenResult.TOO_EARLY, next_session_at=decision.next_session_at
                )
            assert decision.sync_mode is not None
            session = Session(
                id=new_id(SESSION_PREFIX),
                subject_container_id=subject_container_id,
                agent_id=agent_id,
                session_type=session_type,
                sync_mode=decision.sync_mode,
                expires_at=now + self.policy.session_ttl,
                principal=caller.principal,
                idempotency_key=caller.idempotency_key,
                timestamp=now,
            )
            schedule.session_started(
                session_id=session.id,
                sync_mode=decision.sync_mode,
                principal=caller.principal,
                idempotency_key=caller.idempotency_key,
                timestamp=now,
            )
            return [*changed, session], Opened(OpenResult.SUCCESS, session=session)

        stream = schedule_id(subject_container_id, session_type)
        # Read fresh: an answer of OPENED_SESSION_EXISTS or TOO_EARLY writes
        # nothing to the streams it read, so no collision would show them stale.
        return self._execute("OpenSession", "", caller, render, decide, stream, fresh=True)

    def report_progress(
        self, session_id: str, entries: Sequence[ProgressEntry], caller: Caller, render: Render
    ) -> Outcome:
        def decide(now: datetime) -> tuple[list[Aggregate], Result]:
            session = self._get_active(session_id, now, caller, "report progress to")
            session.report_progress(
                entries,
                now=now,
                policy=self.policy,
                principal=caller.principal,
                idempotency_key=caller.idempotency_key,
            )
            return [session], Changed(session)

        return self._execute(
            "ReportSessionProgress", session_id, caller, render, decide, session_id
        )

    def heartbeat(self, session_id: str, caller: Caller, render: Render) -> Outcome:
        def decide(now: datetime) -> tuple[list[Aggregate], Result]:
            session = self._get_active(session_id, now, caller, "send a heartbeat to")
            session.heartbeat(
                now=now,
                policy=self.policy,
                principal=caller.principal,
                idempotency_key=caller.idempotency_key,
            )
            return [session], Changed(session)

        return self._execute("Heartbeat", session_id, caller, render, decide, session_id)

    def close_session(
        self, session_id: str, failed: bool, fail_reason: str, caller: Caller, render: Render
    ) -> Outcome:
        def decide(now: datetime) -> tuple[list[Aggregate], Result]:
            session = self._get_active(session_id, now, caller, "close")
            closed = session.close(
                failed=failed,
                fail_reason=fail_reason,
                now=now,
                principal=caller.principal,
                idempotency_key=caller.idempotency_key,
            )
            if not closed:  # the same close again: answer with the session as it is
                return [], Changed(session)
            schedule = self._get(SyncSchedule, schedule_id(session.subject_container_id, session.session_type))
            schedule.session_ended(
                session_id=session.id,
                outcome=session.status,
                ended_at=now,
                final_link=session.chain_link,
                principal=caller.principal,
                idempotency_key=caller.idempotency_key,
                timestamp=now,
            )
            return [session, schedule], Changed(session)

        return self._execute("CloseSession", session_id, caller, render, decide, session_id)

    def expire_session(self, session_id: str) -> int:
        """Record the expiry of a session that is due. Return the position of
        the events written, or 0 when there was nothing to do (not due, or
        another writer got there first: a lost race is not an error)."""
        with self._stream_lock(session_id), self.fresh_reads():
            try:
                now = self.clock()
                session = self._get(Session, session_id)
                schedule = self._get(
                    SyncSchedule, schedule_id(session.subject_container_id, session.session_type)
                )
                if not self._end_if_expired(session, schedule, now):
                    return 0
                return _last_position(self._save(session, schedule))
            except IntegrityError:
                return 0

    def stall_session(self, session_id: str) -> int:
        """Record that a session's agent went quiet, if it did (see expire_session)."""
        with self._stream_lock(session_id), self.fresh_reads():
            try:
                session = self._get(Session, session_id)
                if not session.stall(now=self.clock(), policy=self.policy, principal=SYSTEM_PRINCIPAL):
                    return 0
                return _last_position(self._save(session))
            except IntegrityError:
                return 0

    # --- queries ----------------------------------------------------------------

    def get_session(self, session_id: str, version: int | None = None) -> Session:
        with self.fresh_reads():
            return self._get(Session, session_id, version)

    def get_operation_payload(self, operation_id: str) -> bytes:
        return self._get(OperationRecord, operation_id).payload

    # --- mechanics --------------------------------------------------------------

    def _execute(
        self,
        method: str,
        session_id: str,
        caller: Caller,
        render: Render,
        decide: Callable[[datetime], tuple[list[Aggregate], Result]],
        stream_id: str,
        *,
        fresh: bool = False,
    ) -> Outcome:
        """``fresh``: decide on state caught up with the store from the first
        attempt (by default, on cached state first)."""
        with self._stream_lock(stream_id):
            outcome = self._execute_locked(method, session_id, caller, render, decide, fresh)
        if outcome.replayed and self.on_replay is not None:
            self.on_replay(method)  # (metrics: answers given from a stored record)
        return outcome

    def _execute_locked(
        self,
        method: str,
        session_id: str,
        caller: Caller,
        render: Render,
        decide: Callable[[datetime], tuple[list[Aggregate], Result]],
        fresh: bool,
    ) -> Outcome:
        operation_id = operation_id_for(caller.principal, caller.idempotency_key)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            # A used key is not looked up first: the call's operation record
            # (version 1 of a stream named after the key) would collide in
            # the save, which then writes nothing. The lookup comes after a
            # collision or a refusal, and answers with the first result.
            now = self.clock()
            try:
                with self.fresh_reads(fresh):
                    changed, result = decide(now)
            except _StaleRead as e:
                log.debug("%s: %s; attempt %d of %d", method, e, attempt, MAX_ATTEMPTS)
                fresh = True
                continue
            except DomainError:
                if caller.idempotency_key and (
                    replay := self._replay(operation_id, method, session_id)
                ) is not None:
                    return replay  # refused now, but done before: the first answer
                if not fresh:  # refused on cached state: confirm on fresh state
                    fresh = True
                    continue
                raise
            payload = render(operation_id, now, result)
            record = OperationRecord(
                id=operation_id,
                method=method,
                session_id=session_id or _session_id_of(result),
                payload=payload,
                principal=caller.principal,
                idempotency_key=caller.idempotency_key,
                timestamp=now,
            )
            try:
                recordings = self._save(*changed, record)
            except IntegrityError:
                # Either another writer got there first (nothing of this call
                # was stored), or this very save committed and its
                # acknowledgement was lost, so that the library wrote it again
                # and collided with itself; or a keyed call was done before.
                # The call's operation record, a stream of its own, says which.
                if (stored := self._replay(operation_id, method, session_id)) is not None:
                    return stored
                log.debug("%s: concurrent write, attempt %d of %d", method, attempt, MAX_ATTEMPTS)
                if fresh:
                    # Jittered backoff, so that racing processes stop colliding.
                    time.sleep(random.uniform(0, 0.002 * attempt))
                fresh = True  # (the first collision may only mean a stale cache)
                continue
            except OUTAGE_ERRORS:
                # The store went away during the save: it may have committed.
                # Look before answering; if the store cannot say, UNAVAILABLE.
                try:
                    stored = self._replay(operation_id, method, session_id)
                except Exception:  # noqa: BLE001 - the outcome stays unknown
                    stored = None
                if stored is not None:
                    return stored
                raise
            # The library caches every saved aggregate; an answer is read again
            # only by a keyed retry, so it gives its place to the sessions.
            self.uncache(record.id)
            return Outcome(operation_id, payload, _last_position(recordings), False)
        raise ConcurrencyConflict(
            f"{method}: gave up after {MAX_ATTEMPTS} conflicting concurrent writes; retry"
        )

    def _replay(self, operation_id: str, method: str, session_id: str) -> Outcome | None:
        """The stored answer of this call's operation, read from the store,
        if it was recorded (by a call with the same key, or by this call
        whose acknowledgement was lost). A key used for another request is
        refused rather than answered with that request's result."""
        with self.fresh_reads():
            previous = self._get_or_none(OperationRecord, operation_id)
        if previous is None:
            return None
        if previous.method != method or (session_id and previous.session_id != session_id):
            raise InvalidArgument(
                "idempotency-key",
                f"was used for {previous.method} on {previous.session_id or 'a new session'}; "
                "use another key for another request",
            )
        return Outcome(operation_id, previous.payload, 0, replayed=True)

    def _save(self, *aggregates: Aggregate) -> list[Any]:
        """Save, with whatever the read side writes in the same transaction."""
        hook = self.write_through
        written = hook.prepare(aggregates) if hook is not None else None
        recordings = self.save_aggregates(aggregates, also=[written] if written is not None else [])
        if hook is not None and written is not None:
            hook.committed(written, _last_position(recordings))
        return recordings

    def _get_active(self, session_id: str, now: datetime, caller: Caller, action: str) -> Session:
        """Load a session the caller may act on; if it is past its expiry,
        record that first (so the refusal that follows is backed by an event)."""
        session = self._get(Session, session_id)
        session.require_owner(caller.acting_for, action)
        if session.is_due_to_expire(now):
            self.expire_session(session_id)
            session = self._get(Session, session_id)
        return session

    def _end_if_expired(self, session: Session, schedule: SyncSchedule, now: datetime) -> bool:
        if not session.expire(now=now, principal=SYSTEM_PRINCIPAL):
            return False
        assert session.closed_at is not None
        schedule.session_ended(
            session_id=session.id,
            outcome=session.status,
            ended_at=session.closed_at,
            final_link=session.chain_link,
            principal=SYSTEM_PRINCIPAL,
            idempotency_key="",
            timestamp=now,
        )
        return True

    def _get(self, kind: type[Any], aggregate_id: str, version: int | None = None) -> Any:
        try:
            aggregate = self.load(aggregate_id, version)
        except AggregateNotFoundError:
            raise NotFound(f"{_describe(kind)} {aggregate_id!r} not found") from None
        if not isinstance(aggregate, kind):
            raise NotFound(f"{_describe(kind)} {aggregate_id!r} not found")
        return aggregate

    def _get_or_none(self, kind: type[Any], aggregate_id: str) -> Any:
        try:
            return self._get(kind, aggregate_id)
        except NotFound:
            return None


def _last_position(recordings: Sequence[Any]) -> int:
    return max(r.notification.id or 0 for r in recordings)


def _describe(kind: type[Any]) -> str:
    names: dict[type[Any], str] = {Session: "session", OperationRecord: "operation"}
    return names.get(kind, kind.__name__)


def _session_id_of(result: Result) -> str:
    session = getattr(result, "session", None)
    return session.id if session is not None else ""


__all__ = [
    "Caller",
    "Changed",
    "ConcurrencyConflict",
    "DomainError",
    "Opened",
    "Outcome",
    "SessionsApplication",
]
