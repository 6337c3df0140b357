"""Aggregates copy themselves by sharing their immutable values (see
``Aggregate.__deepcopy__``): commands get such a copy of each cached
aggregate, so the copy must be as independent of the original as a generic
deep copy would be."""

from __future__ import annotations

import copy
import dataclasses
from datetime import datetime
from enum import Enum
from typing import Any

from domain_support import AGENT, POLICY, at, open_session, state

from sessions.domain.base import IMMUTABLE
from sessions.domain.enums import (
    ChangeType,
    RelatedObjectType,
    SessionStatus,
    SessionType,
)
from sessions.domain.progress import ChangeCount, ProgressEntry
from sessions.domain.schedule import SyncSchedule
from sessions.domain.session import Session
from sessions.store.operations import OperationRecord

REPORT = [
    ProgressEntry(RelatedObjectType.USER, (ChangeCount(ChangeType.CREATE, 3, 1),)),
    ProgressEntry(RelatedObjectType.GROUP, (ChangeCount(ChangeType.UPDATE, 2, 0),)),
]


def busy_session() -> Session:
    session = open_session()
    session.report_progress(REPORT, now=at(1), policy=POLICY, principal=AGENT)
    session.heartbeat(now=at(2), policy=POLICY, principal=AGENT)
    session.close(failed=True, fail_reason="gave up", now=at(3), principal=AGENT)
    return session


def busy_schedule() -> SyncSchedule:
    schedule = SyncSchedule.start("container-1", SessionType.AD_SYNC, now=at(0), principal=AGENT)
    schedule.session_started(
        session_id="ses1", sync_mode=busy_session().sync_mode, principal=AGENT,
        idempotency_key="", timestamp=at(0),
    )
    schedule.session_ended(
        session_id="ses1", outcome=SessionStatus.FAILED, ended_at=at(3),
        final_link=busy_session().chain_link, principal=AGENT, idempotency_key="", timestamp=at(3),
    )
    return schedule


def operation_record() -> OperationRecord:
    return OperationRecord(
        id="op1", method="ReportSessionProgress", session_id="ses1", payload=b"\x08\x01",
        principal=AGENT, idempotency_key="k", timestamp=at(0),
    )


def immutable(value: Any) -> bool:
    """Whether a value can never change, all the way down."""
    if isinstance(value, tuple | frozenset):
        return all(immutable(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        params = getattr(type(value), "__dataclass_params__", None)
        return bool(params and params.frozen) and all(
            immutable(getattr(value, f.name)) for f in dataclasses.fields(value)
        )
    return isinstance(value, str | int | float | bytes | datetime | Enum | type(None))


def test_every_aggregate_state_is_made_of_immutable_values():
    # What the copy shares with the original must never change; a mutable
    # attribute added later would be copied, but one hidden in a tuple would not.
    for aggregate in (busy_session(), busy_schedule(), operation_record()):
        for name, value in state(aggregate).items():
            assert immutable(value), (type(aggregate).__name__, name, value)
            if not isinstance(value, IMMUTABLE):
                raise AssertionError(f"{name} is shared by copies but not listed in IMMUTABLE")


def test_a_copy_equals_a_generic_deep_copy():
    for aggregate in (busy_session(), busy_schedule(), operation_record()):
        aggregate.collect_events()
        fast = copy.deepcopy(aggregate)
        generic = copy.copy(aggregate)
        generic.__dict__ = copy.deepcopy(aggregate.__dict__)
        assert type(fast) is type(aggregate)
        assert state(fast) == state(generic) == state(aggregate)


def test_a_command_on_the_copy_leaves_the_original_as_it_was():
    original = open_session()
    original.report_progress(REPORT, now=at(1), policy=POLICY, principal=AGENT)
    original.collect_events()
    before = state(original)

    command_copy = copy.deepcopy(original)
    command_copy.report_progress(REPORT, now=at(2), policy=POLICY, principal=AGENT)
    command_copy.close(failed=False, fail_reason="", now=at(3), principal=AGENT)

    assert state(original) == before
    assert original.collect_events() == []
    assert [type(e).__name__ for e in command_copy.collect_events()] == [
        "ProgressReported", "SessionCompleted",
    ]
    assert command_copy.progress != original.progress
    assert command_copy.version == original.version + 2


def test_pending_events_are_not_shared():
    original = open_session()
    command_copy = copy.deepcopy(original)
    assert command_copy._pending_events is not original._pending_events  # noqa: SLF001
    assert len(command_copy.collect_events()) == 1  # the copy's own list
    assert len(original.collect_events()) == 1
