"""Where each read model stands: version, position against the head of the
log, lag, state, parked events, and which projector folds it."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sessions.projection.ownership import ProjectorInfo, projectors
from sessions.projection.registry import Registry
from sessions.projection.row_tables import rows_on
from sessions.projection.rows import NAME
from sessions.projection.schema import version as code_version

BEHIND_EVENTS = 1000  # lag beyond which a live model is reported "behind"


@dataclass(frozen=True)
class BuildStatus:
    table: str
    version: int
    position: int
    lag_events: int
    lag_seconds: float | None  # None: the next event's time cannot be read
    parked: int


@dataclass(frozen=True)
class ReadModelStatus:
    name: str
    code_version: int
    head: int
    state: str  # live, rebuilding, behind
    live: BuildStatus
    building: BuildStatus | None
    advice: str
    # The projectors whose connections are alive, the owner first (None on
    # SQLite: one projector per file, not recorded).
    projectors: list[ProjectorInfo] | None = None

    def as_json(self) -> str:
        return json.dumps(asdict(self))


def read_model_status(app: Any) -> ReadModelStatus:
    registry = Registry.of(app)
    registration = registry.get(NAME)
    head = app.recorder.max_notification_id() or 0
    live = _build_status(app, registry, registration.live_table, registration.live_version, head)
    building = (
        _build_status(app, registry, registration.building_table, registration.building_version or 0, head)
        if registration.building_table
        else None
    )
    wanted = code_version(NAME)
    advice = ""
    if building is not None:
        state = "rebuilding"
    elif registration.live_version != wanted or live.lag_events > BEHIND_EVENTS:
        state = "behind"
    else:
        state = "live"
    if registration.live_version != wanted and building is None:
        advice = (
            f"version {registration.live_version} serves, this build folds version {wanted}: "
            "run `sessions projections rebuild`"
        )
    elif live.parked:
        advice = "events are parked: see the log, fix, then `sessions projections retry-parked`"
    return ReadModelStatus(NAME, wanted, head, state, live, building, advice, projectors(app, NAME))


def _build_status(app: Any, registry: Registry, table: str, version: int, head: int) -> BuildStatus:
    view = rows_on(app, table)
    position = view.position()
    return BuildStatus(
        table=table,
        version=version,
        position=position,
        lag_events=max(head - position, 0),
        lag_seconds=lag_seconds(app, position),
        parked=view.parked_count(),
    )


def lag_seconds(app: Any, position: int) -> float | None:
    """How long the oldest event not yet folded has waited."""
    pending = app.recorder.select_notifications(start=position, limit=1, inclusive_of_start=False)
    if not pending:
        return 0.0
    try:
        recorded: datetime = app.mapper.to_domain_event(pending[0]).timestamp
        return max(time.time() - recorded.timestamp(), 0.0)
    except Exception:  # noqa: BLE001 - a poison event: the lag is unknown
        return None
