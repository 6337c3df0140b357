"""Time-based settings of the domain, with their defaults and checks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Policy:
    """How long sessions live and how often containers may synchronize.

    session_ttl: a session expires this long after its last heartbeat or
        progress report (expires_at = now + session_ttl).
    heartbeat_grace: an OPENED session with no heartbeat or progress for this
        long is PENDING (stalled).
    sync_interval: the least time between the end of one session of a
        container and type and the opening of the next.
    full_sync_period: a DELTA session is allowed only if the last completed
        FULL_SYNC session is younger than this.
    """

    session_ttl: timedelta = timedelta(minutes=10)
    heartbeat_grace: timedelta = timedelta(minutes=2)
    sync_interval: timedelta = timedelta(minutes=1)
    full_sync_period: timedelta = timedelta(days=1)

    def __post_init__(self) -> None:
        for name in ("session_ttl", "heartbeat_grace", "full_sync_period"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        if self.sync_interval < timedelta(0):
            raise ValueError("sync_interval must not be negative")
        if self.heartbeat_grace >= self.session_ttl:
            raise ValueError(
                "heartbeat_grace must be shorter than session_ttl, "
                "or sessions would expire before they could stall"
            )

    @classmethod
    def from_seconds(
        cls,
        *,
        session_ttl: float | None = None,
        heartbeat_grace: float | None = None,
        sync_interval: float | None = None,
        full_sync_period: float | None = None,
    ) -> Policy:
        given = {
            "session_ttl": session_ttl,
            "heartbeat_grace": heartbeat_grace,
            "sync_interval": sync_interval,
            "full_sync_period": full_sync_period,
        }
        return cls(
            **{k: timedelta(seconds=v) for k, v in given.items() if v is not None}
        )

    def describe(self) -> str:
        return ", ".join(
            f"{name}={getattr(self, name).total_seconds():g}s"
            for name in ("session_ttl", "heartbeat_grace", "sync_interval", "full_sync_period")
        )
