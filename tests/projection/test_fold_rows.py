"""SessionFold.row writes its two encodings its own shorter way: the state to
resume from is the same bytes as the library mapper's, and the served
session (convert.session_bytes, set in place) the same bytes as the message
built field by field from the aggregate, for every kind of state."""

from __future__ import annotations

import enum
import math
import random
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eventsourcing.persistence import JSONTranscoder, Mapper, TranscodingNotRegisteredError

from sessions.api.convert import session_bytes, timestamp
from sessions.api.protos import session_pb2
from sessions.domain.base import SnapshotOfState
from sessions.domain.enums import ChangeType, RelatedObjectType, SessionType, SyncMode
from sessions.domain.progress import INT64_MAX, ChangeCount, ProgressEntry
from sessions.domain.session import Session
from sessions.projection.fold import SessionFold
from sessions.store.application import SessionsApplication
from sessions.store.urls import parse_store_url
from tests.projection.projection_support import POLICY

T0 = datetime(2026, 3, 1, 12, 0, 0, 125000, tzinfo=UTC)
PRINCIPAL = "agent:rows"
# Everything JSON must escape or may leave as it is, in the one free-text field.
AWKWARD = 'say "no" \\ twice\nthen\ttab \x01\x1f é 日本 😀 \u2028 </script>'


@pytest.fixture(scope="module")
def mapper() -> Iterator[Mapper[Any]]:
    app = SessionsApplication(parse_store_url("memory://"), policy=POLICY)
    yield app.mapper
    app.close()


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
    for the in-place way convert.session_message sets it."""
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
def test_a_row_holds_the_same_bytes_as_the_library_and_convert_make(session: Session, mapper: Mapper[Any]) -> None:
    fold = SessionFold(mapper)
    row = fold.row(session)
    assert row.session == session_bytes(session) == built_field_by_field(session)
    snapshot = SnapshotOfState.take(session)
    assert fold._stored_state(snapshot) == mapper.to_stored_event(snapshot).state
    # ... and the state resumes as the session it was taken of.
    resumed = fold.resume(session.id, row.version, row.state)
    expected = {k: v for k, v in vars(session).items() if k != "_pending_events"}
    got = {k: v for k, v in vars(resumed).items() if k != "_pending_events"}
    assert {**got, "progress": tuple(got["progress"])} == expected


@pytest.mark.parametrize("session", SESSIONS[2:], ids=lambda s: s.id)
def test_a_resumed_session_writes_the_same_row_again(session: Session, mapper: Mapper[Any]) -> None:
    # (its progress comes back from JSON as a list, not a tuple)
    fold = SessionFold(mapper)
    row = fold.row(session)
    resumed = fold.resume(session.id, row.version, row.state)
    again = fold.row(resumed)
    assert (again.session, again.version) == (row.session, row.version)
    snapshot = SnapshotOfState.take(resumed)
    assert fold._stored_state(snapshot) == mapper.to_stored_event(snapshot).state


class Level(enum.IntEnum):  # an int: JSON writes it as one, never as a tagged value
    LOW = 1


class Name(str):
    pass


ODD_STATES: list[dict[str, Any]] = [
    {"ratio": 0.1, "big": 10**30, "neg": -5, "yes": True, "no": False, "none": None},
    {"nan": math.nan},
    {"inf": -math.inf},
    {"level": Level.LOW, "name": Name("x"), "nested": {"when": T0, "types": [SessionType.AD_SYNC]}},
    {"keys": {1: "a", None: "b", 2.5: "c", False: "d"}},
    {"bytes": b"\x00\xff", "entries": [ProgressEntry(RelatedObjectType.USER, ((ChangeType.CREATE, 1, 2),))]},
    {"bool count": [ProgressEntry(RelatedObjectType.USER, (ChangeCount(ChangeType.CREATE, True, 0),))]},
    {"deep": [[{"x": [T0, {"y": SyncMode.DELTA}]}]], "empty": {}, "tuple": (1, (2, 3))},
]


@pytest.mark.parametrize("state", ODD_STATES)
def test_values_out_of_the_ordinary_are_written_as_the_library_writes_them(
    state: dict[str, Any], mapper: Mapper[Any]
) -> None:
    snapshot = SnapshotOfState(originator_id="x", originator_version=1, timestamp=T0, topic="t", state=state)  # type: ignore[call-arg]
    try:
        expected = mapper.to_stored_event(snapshot).state
    except Exception as e:  # noqa: BLE001 - then ours must fail the same way
        with pytest.raises(type(e)):
            SessionFold(mapper)._stored_state(snapshot)
        return
    assert SessionFold(mapper)._stored_state(snapshot) == expected


def test_a_type_the_transcoder_does_not_know_fails_as_in_the_library(mapper: Mapper[Any]) -> None:
    snapshot = SnapshotOfState(originator_id="x", originator_version=1, timestamp=T0, topic="t", state={"s": {1}})  # type: ignore[call-arg]
    with pytest.raises(TranscodingNotRegisteredError):
        SessionFold(mapper)._stored_state(snapshot)


def test_a_compressed_store_is_left_to_the_mapper(mapper: Mapper[Any]) -> None:
    class Zlib:
        def compress(self, data: bytes) -> bytes:
            return zlib.compress(data)

        def decompress(self, data: bytes) -> bytes:
            return zlib.decompress(data)

    transcoder: JSONTranscoder = mapper.transcoder  # type: ignore[assignment]
    compressed = Mapper(transcoder, compressor=Zlib())  # type: ignore[arg-type]
    fold = SessionFold(compressed)
    session = SESSIONS[5]
    snapshot = SnapshotOfState.take(session)
    assert fold._stored_state(snapshot) == compressed.to_stored_event(snapshot).state
    row = fold.row(session)
    resumed = fold.resume(session.id, row.version, row.state)
    assert fold.row(resumed).session == row.session == session_bytes(session)


def test_decoded_progress_is_made_of_the_domain_types(mapper: Mapper[Any]) -> None:
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
        ours, theirs = fold.decode(notification), mapper.to_domain_event(notification)
        assert type(ours) is type(theirs) and vars(ours) == vars(theirs)
        for mine, library in zip(getattr(ours, "entries", ()), getattr(theirs, "entries", ()), strict=True):
            assert type(mine) is type(library) is ProgressEntry
            assert type(mine.changes) is type(library.changes) is tuple
            kinds = [type(c) for c in mine.changes]
            assert kinds == [type(c) for c in library.changes] == [ChangeCount] * len(mine.changes)
