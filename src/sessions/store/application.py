"""The command handlers: the only door to the event store.

Each command (sessions.domain.commands) is handled in one unit of work
(store.unit_of_work): get the aggregates it names, let them decide (the
domain's methods), save what they recorded with the call's answer in one
atomic write. A call is traced from here down to the store in
store.unit_of_work and store.base; the rows read-your-writes needs are
written with the events by the hook the application is built with
(``with_events``; see store.base).

Handlers decide on cached aggregates (store.aggregate_cache) and rely on the
collision of their save to notice another process's writes. What a
collision cannot catch is read fresh: a refusal is confirmed on fresh state
before it is returned (store.unit_of_work), OpenSession (whose answers may
write nothing to what it read) reads fresh, and so do queries and the
deadline worker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from eventsourcing.persistence import IntegrityError

from sessions.domain.access import require_acting_for
from sessions.domain.commands import CloseSession, Command, Heartbeat, OpenSession, ReportProgress
from sessions.domain.errors import DomainError
from sessions.domain.ids import SESSION_PREFIX, new_id
from sessions.domain.schedule import Opened, SyncSchedule, schedule_id
from sessions.domain.session import SYSTEM_PRINCIPAL, Session
from sessions.store.base import StoreApplication, WithEvents
from sessions.store.operations import OperationRecord
from sessions.store.unit_of_work import (
    Caller,
    ConcurrencyConflict,
    Handler,
    Outcome,
    Render,
    UnitOfWork,
    run,
)


@dataclass(frozen=True)
class Changed:
    """The session after a report, heartbeat or close."""

    session: Session


Result = Opened | Changed


class SessionsApplication(StoreApplication):
    name = "sessions"  # fixed: table names derive from it (the library names a class by itself)
    # Told the method of each answer given from a stored record (metrics).
    on_replay: Callable[[str], None] | None = None

    def execute(self, command: Command, caller: Caller, render: Render) -> Outcome:
        """Handle ``command`` for ``caller``; ``render`` makes the answer
        that is stored with the events (and returned)."""
        outcome = self._handle(command, caller, render)
        if outcome.replayed and self.on_replay is not None:
            self.on_replay(command.method)
        return outcome

    def _handle(self, command: Command, caller: Caller, render: Render) -> Outcome:
        if isinstance(command, OpenSession):
            require_acting_for(command.agent_id, caller.acting_for, "open a session")
            stream = schedule_id(command.subject_container_id, command.session_type)
            with self.stream_lock(stream):
                # Read fresh: an answer of OPENED_SESSION_EXISTS or TOO_EARLY
                # writes nothing to the streams it read, so no collision
                # would show them stale.
                return run(self, self._open, command, caller, render, session_id="", fresh=True)
        handlers: dict[type, Handler] = {
            ReportProgress: self._report_progress,
            Heartbeat: self._heartbeat,
            CloseSession: self._close,
        }
        handler = handlers[type(command)]
        with self.stream_lock(command.session_id):
            return run(self, handler, command, caller, render, session_id=command.session_id)

    # --- handlers: get -> decide -> (the unit of work saves) ----------------------

    def _open(self, uow: UnitOfWork, command: OpenSession) -> Opened:
        schedule = uow.get_or_none(
            SyncSchedule, schedule_id(command.subject_container_id, command.session_type)
        ) or uow.add(
            SyncSchedule.start(
                command.subject_container_id,
                command.session_type,
                now=uow.now,
                principal=uow.caller.principal,
            )
        )
        running = (
            uow.get(Session, schedule.active_session_id)
            if schedule.active_session_id is not None
            else None
        )
        opened = schedule.open_session(
            running,
            session_id=new_id(SESSION_PREFIX),
            agent_id=command.agent_id,
            now=uow.now,
            policy=self.policy,
            principal=uow.caller.principal,
            idempotency_key=uow.caller.idempotency_key,
        )
        if opened.session is not None:
            uow.add(opened.session)
        return opened

    def _report_progress(self, uow: UnitOfWork, command: ReportProgress) -> Changed:
        session = self._active(uow, command.session_id, "report progress to")
        session.report_progress(
            command.entries,
            now=uow.now,
            policy=self.policy,
            principal=uow.caller.principal,
            idempotency_key=uow.caller.idempotency_key,
        )
        return Changed(session)

    def _heartbeat(self, uow: UnitOfWork, command: Heartbeat) -> Changed:
        session = self._active(uow, command.session_id, "send a heartbeat to")
        session.heartbeat(
            now=uow.now,
            policy=self.policy,
            principal=uow.caller.principal,
            idempotency_key=uow.caller.idempotency_key,
        )
        return Changed(session)

    def _close(self, uow: UnitOfWork, command: CloseSession) -> Changed:
        session = self._active(uow, command.session_id, "close")
        closed = session.close(
            failed=command.failed,
            fail_reason=command.fail_reason,
            now=uow.now,
            principal=uow.caller.principal,
            idempotency_key=uow.caller.idempotency_key,
        )
        if closed:  # (not the same close again: that answers with the session as it is)
            schedule = uow.get(SyncSchedule, _schedule_of(session))
            schedule.end(
                session,
                now=uow.now,
                principal=uow.caller.principal,
                idempotency_key=uow.caller.idempotency_key,
            )
        return Changed(session)

    def _active(self, uow: UnitOfWork, session_id: str, action: str) -> Session:
        """A session the caller may act on; if it is past its expiry, that is
        recorded first (so the refusal that follows is backed by an event)."""
        session = uow.get(Session, session_id)
        session.require_owner(uow.caller.acting_for, action)
        if session.is_due_to_expire(uow.now):
            self.expire_session(session_id)
            session = uow.get(Session, session_id)
        return session

    # --- what time decides (the deadline worker) ---------------------------------

    def expire_session(self, session_id: str) -> int:
        """Record the expiry of a session that is due. Return the position of
        the events written, or 0 when there was nothing to do (not due, or
        another writer got there first: a lost race is not an error)."""
        with self.stream_lock(session_id), self.fresh_reads():
            try:
                session = self.get(Session, session_id)
                schedule = self.get(SyncSchedule, _schedule_of(session))
                if not schedule.expire(session, now=self.clock()):
                    return 0
                return self.commit(session, schedule)
            except IntegrityError:
                return 0

    def stall_session(self, session_id: str) -> int:
        """Record that a session's agent went quiet, if it did (see expire_session)."""
        with self.stream_lock(session_id), self.fresh_reads():
            try:
                session = self.get(Session, session_id)
                if not session.stall(now=self.clock(), policy=self.policy, principal=SYSTEM_PRINCIPAL):
                    return 0
                return self.commit(session)
            except IntegrityError:
                return 0

    # --- queries ----------------------------------------------------------------

    def get_session(self, session_id: str, version: int | None = None) -> Session:
        with self.fresh_reads():
            return self.get(Session, session_id, version)

    def get_operation_payload(self, operation_id: str) -> bytes:
        return self.get(OperationRecord, operation_id).payload


def _schedule_of(session: Session) -> str:
    return schedule_id(session.subject_container_id, session.session_type)


__all__ = [
    "Caller",
    "Changed",
    "ConcurrencyConflict",
    "DomainError",
    "Opened",
    "Outcome",
    "Render",
    "Result",
    "SessionsApplication",
    "WithEvents",
]

