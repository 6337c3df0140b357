"""The synchronization schedule of one (subject container, session type).

It is the consistency boundary of OpenSession: at most one active session,
no new session too soon after the last one ended, and the choice between a
full and a delta synchronization. Opening saves this stream and the new
session's stream in one atomic write, so two agents opening at once cannot
both succeed: the loser's write conflicts and is retried against the
winner's state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from eventsourcing.domain import event

from sessions.domain.base import Aggregate
from sessions.domain.enums import OpenResult, SessionStatus, SessionType, SyncMode
from sessions.domain.policy import Policy


def schedule_id(subject_container_id: str, session_type: SessionType) -> str:
    # The type name has no ":" so the container id may contain anything.
    return f"schedule:{session_type.name}:{subject_container_id}"


@dataclass(frozen=True)
class OpenDecision:
    result: OpenResult
    open_session_id: str | None = None
    next_session_at: datetime | None = None
    sync_mode: SyncMode | None = None


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

    def decide_open(self, now: datetime, policy: Policy) -> OpenDecision:
        """Decide an OpenSession call. The caller must first end an active
        session that is due to expire (``session_ended``)."""
        if self.active_session_id is not None:
            return OpenDecision(
                OpenResult.OPENED_SESSION_EXISTS, open_session_id=self.active_session_id
            )
        if self.last_ended_at is not None:
            next_at = self.last_ended_at + policy.sync_interval
            if now < next_at:
                return OpenDecision(OpenResult.TOO_EARLY, next_session_at=next_at)
        return OpenDecision(OpenResult.SUCCESS, sync_mode=self._next_sync_mode(now, policy))

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
