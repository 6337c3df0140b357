"""The synchronization schedule of one (subject container, session type).

It is the consistency boundary of OpenSession, and holds its whole rule
(``open_session``): at most one active session (one past its expiry is
ended first), no new session too soon after the last one ended, and the
choice between a full and a delta synchronization. Opening saves this
stream and the new session's stream in one atomic write, so two agents
opening at once cannot both succeed: the loser's write conflicts and is
retried against the winner's state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from eventsourcing.domain import event

from sessions.domain.base import Aggregate
from sessions.domain.enums import OpenResult, SessionStatus, SessionType, SyncMode
from sessions.domain.policy import Policy
from sessions.domain.session import SYSTEM_PRINCIPAL, Session


def schedule_id(subject_container_id: str, session_type: SessionType) -> str:
    # The type name has no ":" so the container id may contain anything.
    return f"schedule:{session_type.name}:{subject_container_id}"


@dataclass(frozen=True)
class Opened:
    """What OpenSession decided; ``session`` is the new or the running one."""

    result: OpenResult
    session: Session | None = None
    next_session_at: datetime | None = None


class StaleState(Exception):
    """The schedule names as active a session that has ended: the two were
    read at different moments (another writer ended it in between). Not a
    refusal: the command is decided again on fresh state."""


class SyncSchedule(Aggregate):
    TOPIC = "sessions.SyncSchedule"

    class Event(Aggregate.Event):
        TOPIC = "sessions.SyncSchedule.Event"

    class Created(Event, Aggregate.Created):
        TOPIC = "sessions.SyncSchedule.Created"

    @event("ScheduleStarted", topic="sessions.ScheduleStarted")
    def __init__(
        self,
        id: str,  # noqa: A002
        subject_container_id: str,
        session_type: SessionType,
        principal: str,
        idempotency_key: str,
        timestamp: datetime,
    ):
        self.subject_container_id = subject_container_id
        self.session_type = session_type
        self.active_session_id: str | None = None
        self.last_ended_at: datetime | None = None
        self.last_outcome: SessionStatus | None = None
        self.last_full_sync_completed_at: datetime | None = None
        self.active_sync_mode: SyncMode | None = None

    @classmethod
    def start(
        cls,
        subject_container_id: str,
        session_type: SessionType,
        *,
        now: datetime,
        principal: str,
        idempotency_key: str = "",
    ) -> SyncSchedule:
        return cls(
            id=schedule_id(subject_container_id, session_type),
            subject_container_id=subject_container_id,
            session_type=session_type,
            principal=principal,
            idempotency_key=idempotency_key,
            timestamp=now,
        )

    def open_session(
        self,
        running: Session | None,
        *,
        session_id: str,
        agent_id: str,
        now: datetime,
        policy: Policy,
        principal: str,
        idempotency_key: str = "",
    ) -> Opened:
        """OpenSession. ``running`` is the session this schedule names as
        active (``active_session_id``), loaded by the caller, or None when
        there is none; ``session_id`` names the session to open, if one is.

        A running session past its expiry is expired and ended first (both
        streams change: save both). Then: OPENED_SESSION_EXISTS with the
        running session, TOO_EARLY with the time from which a new one may
        open, or SUCCESS with the new session (FULL_SYNC or DELTA)."""
        if self.active_session_id is not None:
            if running is None or running.id != self.active_session_id:
                raise ValueError(f"open_session needs the running session {self.active_session_id}")
            if running.status.is_final:
                raise StaleState(f"session {running.id} ended after its schedule was read")
            if not self.expire(running, now=now):
                return Opened(OpenResult.OPENED_SESSION_EXISTS, session=running)
        if self.last_ended_at is not None:
            next_at = self.last_ended_at + policy.sync_interval
            if now < next_at:
                return Opened(OpenResult.TOO_EARLY, next_session_at=next_at)
        sync_mode = self._next_sync_mode(now, policy)
        session = Session(
            id=session_id,
            subject_container_id=self.subject_container_id,
            agent_id=agent_id,
            session_type=self.session_type,
            sync_mode=sync_mode,
            expires_at=now + policy.session_ttl,
            principal=principal,
            idempotency_key=idempotency_key,
            timestamp=now,
        )
        self.session_started(
            session_id=session.id,
            sync_mode=sync_mode,
            principal=principal,
            idempotency_key=idempotency_key,
            timestamp=now,
        )
        return Opened(OpenResult.SUCCESS, session=session)

    def expire(self, session: Session, *, now: datetime) -> bool:
        """Record the expiry of ``session`` (one of this schedule's) and its
        end here, if it is due; return whether they were recorded."""
        if not session.expire(now=now, principal=SYSTEM_PRINCIPAL):
            return False
        self.end(session, now=now, principal=SYSTEM_PRINCIPAL)
        return True

    def end(self, session: Session, *, now: datetime, principal: str, idempotency_key: str = "") -> None:
        """Record that ``session``, just closed or expired, has ended."""
        assert session.closed_at is not None, "end() follows a close or an expiry"
        self.session_ended(
            session_id=session.id,
            outcome=session.status,
            ended_at=session.closed_at,
            final_link=session.chain_link,
            principal=principal,
            idempotency_key=idempotency_key,
            timestamp=now,
        )

    def _next_sync_mode(self, now: datetime, policy: Policy) -> SyncMode:
        if self.last_full_sync_completed_at is None:
            return SyncMode.FULL_SYNC
        if now - self.last_full_sync_completed_at >= policy.full_sync_period:
            return SyncMode.FULL_SYNC
        if self.last_outcome in (SessionStatus.FAILED, SessionStatus.EXPIRED):
            return SyncMode.FULL_SYNC
        return SyncMode.DELTA

    @event("SessionStarted", topic="sessions.SessionStarted")
    def session_started(
        self,
        session_id: str,
        sync_mode: SyncMode,
        principal: str,
        idempotency_key: str,
        timestamp: datetime,
    ) -> None:
        self.active_session_id = session_id
        self.active_sync_mode = sync_mode

    # ``final_link`` is the ended session's last chain link: it seals the
    # session's stream, so that removing its last events is detected.
    @event("SessionEnded", topic="sessions.SessionEnded")
    def session_ended(
        self,
        session_id: str,
        outcome: SessionStatus,
        ended_at: datetime,
        final_link: str,
        principal: str,
        idempotency_key: str,
        timestamp: datetime,
    ) -> None:
        if session_id == self.active_session_id:
            if outcome == SessionStatus.COMPLETED and self.active_sync_mode == SyncMode.FULL_SYNC:
                self.last_full_sync_completed_at = ended_at
            self.active_session_id = None
            self.active_sync_mode = None
        self.last_ended_at = ended_at
        self.last_outcome = outcome
