"""SessionFold.row writes its two encodings: the state to resume from (through
the store's codec) is the same bytes as the library's own transcoder
writes, and the served session (wire.session_bytes, set in place) the same
bytes as the message built field by field from the aggregate, for every
kind of state. (tests/store/test_codec.py checks the codec on values out of
the ordinary.)"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eventsourcing.persistence import Mapper

from sessions.api.protos import session_pb2
from sessions.domain.base import SnapshotOfState
from sessions.domain.enums import ChangeType, RelatedObjectType, SessionType, SyncMode
from sessions.domain.progress import INT64_MAX, ChangeCount, ProgressEntry
from sessions.domain.session import Session
from sessions.projection.fold import SessionFold
from sessions.store.application import SessionsApplication
from sessions.store.urls import parse_store_url
from sessions.wire import session_bytes, timestamp
from tests.projection.projection_support import POLICY
from tests.store.codec_support import library_transcoder

T0 = datetime(2026, 3, 1, 12, 0, 0, 125000, tzinfo=UTC)
PRINCIPAL = "agent:rows"
# Everything JSON must escape or may leave as it is, in the one free-text field.
AWKWARD = 'say "no" \\ twice\nthen\ttab \x01\x1f é 日本 😀 \u2028 </script>'


@pytest.fixture(scope="module")
def mapper() -> Iterator[Mapper[Any]]:
    app = SessionsApplication(parse_store_url("memory://"), policy=POLICY)
    yield app.mapper
    app.close()


@pytest.fixture(scope="module")
def library() -> Mapper[Any]:
    """The library's own mapper and JSON transcoder, with the store's
    transcodings: the reference the codec must equal."""
    return Mapper(library_transcoder())


def opened(number: int, now: datetime = T0, **fields: Any) -> Session:
    values: dict[str, Any] = {
        "id": f"ses{number:017d}",
        "subject_container_id": f"container-{number}",
        "agent_id": "agent-1",
        "session_type": SessionType.AD_SYNC,
        "sync_mode": SyncMode.FULL_SYNC,
        "expires_at": now + POLICY.session_ttl,
        "principal": PRINCIPAL,
        "idempotency_key": "",
        "timestamp": now,
    }
    return Session(**{**values, **fields})


def random_report(rng: random.Random) -> list[ProgressEntry]:
    return [
        ProgressEntry(
            object_type,
            tuple(
                ChangeCount(change_type, rng.randint(0, 10**6), rng.randint(0, 50))
                for change_type in rng.sample(list(ChangeType), rng.randint(1, 6))
            ),
        )
        for object_type in rng.sample(list(RelatedObjectType), rng.randint(1, 3))
    ]


def sessions() -> list[Session]:
    """Sessions in every status, with and without progress, closed or not."""
    rng = random.Random(11)
    made = []
    made.append(opened(1))  # no progress, nothing else set
    made.append(opened(2, agent_id="", subject_container_id=AWKWARD, sync_mode=SyncMode.DELTA))
    for number in range(3, 13):  # reports and heartbeats, some closed
        session = opened(number, session_type=list(SessionType)[number % 4])
        now = T0
        for _ in range(rng.randint(1, 12)):
            now += timedelta(seconds=rng.randint(1, 90), microseconds=rng.randint(0, 999_999))
            if rng.random() < 0.3:
                session.heartbeat(now=now, policy=POLICY, principal=PRINCIPAL)
            else:
                session.report_progress(random_report(rng), now=now, policy=POLICY, principal=PRINCIPAL)
        if number % 3 == 0:
            failed = number % 2 == 0
            session.close(failed=failed, fail_reason=AWKWARD if failed else "", now=now, principal=PRINCIPAL)
        made.append(session)
    stalled = opened(13)
    assert stalled.stall(now=T0 + POLICY.heartbeat_grace, policy=POLICY, principal=PRINCIPAL)
    made.append(stalled)
    expired = opened(14)
    expired.report_progress(random_report(rng), now=T0, policy=POLICY, principal=PRINCIPAL)
    assert expired.expire(now=T0 + POLICY.session_ttl, principal=PRINCIPAL)
    made.append(expired)
    full = opened(15)
    full.report_progress(
        [ProgressEntry(t, tuple(ChangeCount(c, INT64_MAX, INT64_MAX) for c in ChangeType)) for t in RelatedObjectType],
        now=T0,
        policy=POLICY,
        principal=PRINCIPAL,
    )
    made.append(full)
    epoch = opened(16, now=datetime(1970, 1, 1, tzinfo=UTC))  # zero timestamps
    made.append(epoch)
    return made


SESSIONS = sessions()


def built_field_by_field(session: Session) -> bytes:
    """The served session as nested constructors build it: the reference
    for the in-place way wire.session_message sets it."""
    message = session_pb2.SynchronizationSession(
        session_id=session.id,
        agent_id=session.agent_id,
        created_at=timestamp(session.created_at),
        expires_at=timestamp(session.expires_at),
        sync_mode=session.sync_mode.value,
        status=session.status.value,
        fail_reason=session.fail_reason,
        session_type=session.session_type.value,
        progress_entries=[
            session_pb2.ProgressEntry(
                object_type=entry.object_type.value,
                change_info=[
                    session_pb2.ChangeInfo(change_type=c.change_type.value, successful=c.successful, failed=c.failed)
                    for c in entry.changes
                ],
            )
            for entry in session.progress
        ],
    )
    if session.closed_at is not None:
        message.closed_at.CopyFrom(timestamp(session.closed_at))
    return message.SerializeToString(deterministic=True)


@pytest.mark.parametrize("session", SESSIONS, ids=lambda s: s.id)
def test_a_row_holds_the_same_bytes_as_the_library_and_convert_make(
    session: Session, mapper: Mapper[Any], library: Mapper[Any]
) -> None:
    fold = SessionFold(mapper)
    row = fold.row(session)
    assert row.session == session_bytes(session) == built_field_by_field(session)
    snapshot = SnapshotOfState.take(session)  # (row.state is one taken a moment earlier)
    assert mapper.to_stored_event(snapshot).state == library.to_stored_event(snapshot).state
    assert json.loads(row.state)["state"] == json.loads(library.to_stored_event(snapshot).state)["state"]
    # ... and the state resumes as the session it was taken of.
    resumed = fold.resume(session.id, row.version, row.state)
    expected = {k: v for k, v in vars(session).items() if k != "_pending_events"}
    got = {k: v for k, v in vars(resumed).items() if k != "_pending_events"}
    assert {**got, "progress": tuple(got["progress"])} == expected


@pytest.mark.parametrize("session", SESSIONS[2:], ids=lambda s: s.id)
def test_a_resumed_session_writes_the_same_row_again(
    session: Session, mapper: Mapper[Any], library: Mapper[Any]
) -> None:
    # (its progress comes back from JSON as a list, not a tuple)
    fold = SessionFold(mapper)
    row = fold.row(session)
    resumed = fold.resume(session.id, row.version, row.state)
    again = fold.row(resumed)
    assert (again.session, again.version) == (row.session, row.version)
    snapshot = SnapshotOfState.take(resumed)
    assert mapper.to_stored_event(snapshot).state == library.to_stored_event(snapshot).state


def test_decoded_progress_is_made_of_the_domain_types(mapper: Mapper[Any], library: Mapper[Any]) -> None:
    from eventsourcing.persistence import Notification

    rng = random.Random(3)
    session = opened(99)
    for k in range(5):
        session.report_progress(random_report(rng), now=T0 + timedelta(seconds=k), policy=POLICY, principal=PRINCIPAL)
    fold = SessionFold(mapper)
    for position, event in enumerate(session.collect_events(), start=1):
        stored = mapper.to_stored_event(event)
        notification = Notification(
            id=position,
            originator_id=stored.originator_id,
            originator_version=stored.originator_version,
            topic=stored.topic,
            state=stored.state,
        )
        ours, theirs = fold.decode(notification), library.to_domain_event(notification)
        assert type(ours) is type(theirs) and vars(ours) == vars(theirs)
        for mine, its in zip(getattr(ours, "entries", ()), getattr(theirs, "entries", ()), strict=True):
            assert type(mine) is type(its) is ProgressEntry
            assert type(mine.changes) is type(its.changes) is tuple
            expected = [ChangeCount] * len(mine.changes)
            assert [type(c) for c in mine.changes] == [type(c) for c in its.changes] == expected
