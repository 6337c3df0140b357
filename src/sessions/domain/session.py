"""The synchronization session: one stream per session.

Public methods are commands: they check the rules and then trigger an event.
Methods decorated with ``@event`` are the fold: their bodies run both when the
event happens and whenever it is replayed, so state changes live only there.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from eventsourcing.domain import event

from sessions.domain.access import ActingFor, require_acting_for
from sessions.domain.base import Aggregate
from sessions.domain.enums import SessionStatus, SessionType, SyncMode
from sessions.domain.errors import InvalidArgument, StateConflict
from sessions.domain.policy import Policy
from sessions.domain.progress import ProgressEntry, add_report, check_report

MAX_FAIL_REASON = 256
EXPIRY_REASON = "session expired: no heartbeat, progress or close before expires_at"
# Who records what time decides (stalls, expiries), in the events' principal.
SYSTEM_PRINCIPAL = "system:deadline"


def past_expiry(status: SessionStatus, expires_at: datetime, now: datetime) -> bool:
    """Whether a session is still active (OPENED or PENDING) at or past its
    expires_at: due to expire, and shown as EXPIRED already."""
    return status.is_active and now >= expires_at


def visible_status(status: SessionStatus, expires_at: datetime, now: datetime) -> SessionStatus:
    """The status a reader must see at ``now``: never OPENED or PENDING past
    expires_at, even before the expiry event has been recorded."""
    return SessionStatus.EXPIRED if past_expiry(status, expires_at, now) else status


class Session(Aggregate):
    TOPIC = "sessions.Session"

    class Event(Aggregate.Event):
        TOPIC = "sessions.Session.Event"

    class Created(Event, Aggregate.Created):
        TOPIC = "sessions.Session.Created"

    @event("SessionOpened", topic="sessions.SessionOpened")
    def __init__(
        self,
        id: str,  # noqa: A002 - the library passes the aggregate id by this name
        subject_container_id: str,
        agent_id: str,
        session_type: SessionType,
        sync_mode: SyncMode,
        expires_at: datetime,
        principal: str,
        idempotency_key: str,
        timestamp: datetime,
    ):
        self.subject_container_id = subject_container_id
        self.agent_id = agent_id
        self.session_type = session_type
        self.sync_mode = sync_mode
        self.status = SessionStatus.OPENED
        self.created_at = timestamp
        self.expires_at = expires_at
        self.last_seen_at = timestamp
        self.closed_at: datetime | None = None
        self.fail_reason = ""
        self.progress: tuple[ProgressEntry, ...] = ()

    # --- commands -----------------------------------------------------------

    def require_owner(self, acting_for: ActingFor, action: str) -> None:
        """Only the agent a session was opened for may act on it."""
        require_acting_for(self.agent_id, acting_for, f"{action} session {self.id}")

    def report_progress(
        self,
        entries: Sequence[ProgressEntry],
        *,
        now: datetime,
        policy: Policy,
        principal: str,
        idempotency_key: str = "",
    ) -> None:
        check_report(entries)
        self._require_active(now, "report progress to")
        add_report(self.progress, entries)  # refuses overflow before anything is recorded
        self._progress_reported(
            entries=tuple(entries),
            expires_at=self._extended_expiry(now, policy),
            principal=principal,
            idempotency_key=idempotency_key,
            timestamp=now,
        )

    def heartbeat(
        self, *, now: datetime, policy: Policy, principal: str, idempotency_key: str = ""
    ) -> None:
        self._require_active(now, "send a heartbeat to")
        self._heartbeat_received(
            expires_at=self._extended_expiry(now, policy),
            principal=principal,
            idempotency_key=idempotency_key,
            timestamp=now,
        )

    def close(
        self,
        *,
        failed: bool,
        fail_reason: str,
        now: datetime,
        principal: str,
        idempotency_key: str = "",
    ) -> bool:
        """Close the session; return False when it was already closed the same
        way, with the same reason (an idempotent repeat that records nothing).

        A reason goes only with a failed close (a completed one has none to
        keep: refused rather than dropped); a failed close may give none. A
        repeated failed close with another reason is refused: the answer
        would otherwise say OK while the first reason stays."""
        if len(fail_reason) > MAX_FAIL_REASON:
            raise InvalidArgument(
                "fail_reason", f"must be at most {MAX_FAIL_REASON} characters"
            )
        if fail_reason and not failed:
            raise InvalidArgument("fail_reason", "must be empty unless failed is true")
        wanted = SessionStatus.FAILED if failed else SessionStatus.COMPLETED
        if self.status == wanted:
            if fail_reason != self.fail_reason:
                raise StateConflict(
                    f"session {self.id} already FAILED with reason {self.fail_reason!r}; "
                    "a close cannot change it"
                )
            return False
        self._require_active(now, "close")
        if failed:
            self._failed(
                closed_at=now,
                fail_reason=fail_reason,
                principal=principal,
                idempotency_key=idempotency_key,
                timestamp=now,
            )
        else:
            self._completed(
                closed_at=now,
                principal=principal,
                idempotency_key=idempotency_key,
                timestamp=now,
            )
        return True

    def is_due_to_expire(self, now: datetime) -> bool:
        return past_expiry(self.status, self.expires_at, now)

    def is_due_to_stall(self, now: datetime, policy: Policy) -> bool:
        return (
            self.status == SessionStatus.OPENED
            and now >= self.last_seen_at + policy.heartbeat_grace
            and not self.is_due_to_expire(now)
        )

    def expire(self, *, now: datetime, principal: str) -> bool:
        """Record the expiry if it is due; return whether it was recorded."""
        if not self.is_due_to_expire(now):
            return False
        self._expired(
            closed_at=self.expires_at,
            fail_reason=EXPIRY_REASON,
            principal=principal,
            idempotency_key="",
            timestamp=now,
        )
        return True

    def stall(self, *, now: datetime, policy: Policy, principal: str) -> bool:
        """Record that the agent went quiet, if it did; return whether recorded."""
        if not self.is_due_to_stall(now, policy):
            return False
        self._stalled(principal=principal, idempotency_key="", timestamp=now)
        return True

    def status_at(self, now: datetime) -> SessionStatus:
        return visible_status(self.status, self.expires_at, now)

    # --- rules ----------------------------------------------------------------

    def _require_active(self, now: datetime, action: str) -> None:
        if self.status.is_final:
            raise StateConflict(
                f"cannot {action} session {self.id}: it is {self.status.name}"
            )
        if self.is_due_to_expire(now):
            raise StateConflict(
                f"cannot {action} session {self.id}: it expired at "
                f"{self.expires_at.isoformat()}"
            )

    def _extended_expiry(self, now: datetime, policy: Policy) -> datetime:
        # expires_at moves forward only.
        return max(self.expires_at, now + policy.session_ttl)

    # --- the fold ---------------------------------------------------------------

    @event("ProgressReported", topic="sessions.ProgressReported")
    def _progress_reported(
        self,
        entries: tuple[ProgressEntry, ...],
        expires_at: datetime,
        principal: str,
        idempotency_key: str,
        timestamp: datetime,
    ) -> None:
        self.progress = add_report(self.progress, entries)
        self._seen(expires_at, timestamp)

    @event("HeartbeatReceived", topic="sessions.HeartbeatReceived")
    def _heartbeat_received(
        self, expires_at: datetime, principal: str, idempotency_key: str, timestamp: datetime
    ) -> None:
        self._seen(expires_at, timestamp)

    @event("SessionStalled", topic="sessions.SessionStalled")
    def _stalled(self, principal: str, idempotency_key: str, timestamp: datetime) -> None:
        self.status = SessionStatus.PENDING

    @event("SessionCompleted", topic="sessions.SessionCompleted")
    def _completed(
        self, closed_at: datetime, principal: str, idempotency_key: str, timestamp: datetime
    ) -> None:
        self.status = SessionStatus.COMPLETED
        self.closed_at = closed_at

    @event("SessionFailed", topic="sessions.SessionFailed")
    def _failed(
        self,
        closed_at: datetime,
        fail_reason: str,
        principal: str,
        idempotency_key: str,
        timestamp: datetime,
    ) -> None:
        self.status = SessionStatus.FAILED
        self.closed_at = closed_at
        self.fail_reason = fail_reason

    @event("SessionExpired", topic="sessions.SessionExpired")
    def _expired(
        self,
        closed_at: datetime,
        fail_reason: str,
        principal: str,
        idempotency_key: str,
        timestamp: datetime,
    ) -> None:
        self.status = SessionStatus.EXPIRED
        self.closed_at = closed_at
        self.fail_reason = fail_reason

    def _seen(self, expires_at: datetime, at: datetime) -> None:
        self.expires_at = expires_at
        self.last_seen_at = at
        self.status = SessionStatus.OPENED
