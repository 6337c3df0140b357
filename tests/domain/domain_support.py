"""Shared helpers of the domain tests: a fixed start time, a policy with
round numbers, and a factory for freshly opened sessions.

A plain module (not conftest.py) so that test modules can import it by a
name no other test folder uses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sessions.domain.enums import SessionType, SyncMode
from sessions.domain.policy import Policy
from sessions.domain.session import Session

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
TTL = timedelta(minutes=10)
GRACE = timedelta(minutes=2)
POLICY = Policy(
    session_ttl=TTL,
    heartbeat_grace=GRACE,
    sync_interval=timedelta(minutes=1),
    full_sync_period=timedelta(days=1),
)
AGENT = "agent:alpha"


def at(seconds: float) -> datetime:
    """The instant ``seconds`` after T0."""
    return T0 + timedelta(seconds=seconds)


def open_session(
    *,
    now: datetime = T0,
    session_id: str = "ses00000000000000001",
    sync_mode: SyncMode = SyncMode.FULL_SYNC,
    principal: str = AGENT,
    idempotency_key: str = "open-1",
) -> Session:
    return Session(
        id=session_id,
        subject_container_id="container-1",
        agent_id="agent-1",
        session_type=SessionType.AD_SYNC,
        sync_mode=sync_mode,
        expires_at=now + POLICY.session_ttl,
        principal=principal,
        idempotency_key=idempotency_key,
        timestamp=now,
    )


def state(aggregate: Any) -> dict[str, Any]:
    """An aggregate's state without the events still waiting to be saved."""
    return {k: v for k, v in vars(aggregate).items() if k != "_pending_events"}

