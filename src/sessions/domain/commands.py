"""The commands: what a caller asks the service to change, one small value
each. A handler (store.application) reads the aggregates a command names,
lets them decide, and saves what they recorded, in one unit of work.

``method`` names the call a command comes from: its operation record (and
the answer an idempotency key replays) is filed under it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from sessions.domain.enums import SessionType
from sessions.domain.progress import ProgressEntry


@dataclass(frozen=True)
class OpenSession:
    method: ClassVar[str] = "OpenSession"

    subject_container_id: str
    agent_id: str
    session_type: SessionType


@dataclass(frozen=True)
class ReportProgress:
    method: ClassVar[str] = "ReportSessionProgress"

    session_id: str
    entries: tuple[ProgressEntry, ...]


@dataclass(frozen=True)
class Heartbeat:
    method: ClassVar[str] = "Heartbeat"

    session_id: str


@dataclass(frozen=True)
class CloseSession:
    method: ClassVar[str] = "CloseSession"

    session_id: str
    failed: bool = False
    fail_reason: str = ""


Command = OpenSession | ReportProgress | Heartbeat | CloseSession
