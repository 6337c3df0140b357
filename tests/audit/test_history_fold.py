"""The history's fast paths give what the plain ones gave, over long sessions
of every kind of event (issue 5: 10 000 events in well under a second):

- wire.SessionMessages, one message updated in place after each event,
  equals wire.session_message of the aggregate after every event;
- the history's single-pass decoding gives the events the mapper gives, and
  as "changes" the canonical values of their own fields;
- StreamHistory's entries, built in place, equal HistoryEntry messages built
  field by field from session_history, changes_json as json.dumps wrote it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eventsourcing.persistence import StoredEvent

from sessions import wire
from sessions.api.audit import AuditService
from sessions.api.protos import audit_pb2
from sessions.audit import history
from sessions.audit.history import COMMON_FIELDS, history_steps, session_history
from sessions.domain.chain import canonical_value
from sessions.domain.enums import (
    ChangeType,
    RelatedObjectType,
    SessionStatus,
    SessionType,
    SyncMode,
)
from sessions.domain.errors import InvalidArgument
from sessions.domain.policy import Policy
from sessions.domain.progress import INT64_MAX, ChangeCount, ProgressEntry
from sessions.domain.session import Session
from sessions.store.application import SessionsApplication
from sessions.store.records import stream_records
from sessions.store.urls import parse_store_url
from tests.audit.audit_support import FAIL_REASON

POLICY = Policy()
T0 = datetime(2026, 5, 1, 8, 30, 0, 123456, tzinfo=UTC)
ENDS = ["completed", "failed", "expired", "open"]


def long_session(seed: int, end: str, events: int = 300) -> Session:
    """A session driven by its own commands through ``events`` or so events:
    reports of 1 to 3 entries in any order (object types appearing late, zero
    and very large counts, refused overflows), heartbeats, stalls and the
    heartbeats that reopen them, then the given end."""
    rng = random.Random(seed)
    now = T0
    session = Session(
        id=f"ses-long-{seed}-{end}",
        subject_container_id="container-ü",
        agent_id="agent-ü",
        session_type=SessionType.LDAP_SYNC,
        sync_mode=SyncMode.DELTA if seed % 2 else SyncMode.FULL_SYNC,
        expires_at=now + POLICY.session_ttl,
        principal="token:ü",
        idempotency_key="open-1",
        timestamp=now,
    )
    object_types = [RelatedObjectType.MEMBERSHIP]  # the others appear later, in front of it
    while session.version < events:
        now += timedelta(seconds=rng.randint(0, 30), microseconds=rng.randint(0, 999_999))
        roll = rng.random()
        if roll < 0.03 and session.status == SessionStatus.OPENED:
            now = session.last_seen_at + POLICY.heartbeat_grace + timedelta(microseconds=rng.randint(1, 999))
            assert session.stall(now=now, policy=POLICY, principal="system:deadline")
        elif roll < 0.35:
            session.heartbeat(now=now, policy=POLICY, principal="anonymous", idempotency_key=rng.choice(["", "beat"]))
        else:
            if len(object_types) < 3 and rng.random() < 0.02:
                object_types.append([t for t in RelatedObjectType if t not in object_types][0])
            try:
                session.report_progress(
                    random_report(rng, object_types),
                    now=now,
                    policy=POLICY,
                    principal="token:ü",
                    idempotency_key=f"report-{session.version}",
                )
            except InvalidArgument as refused:  # a counter would pass int64
                assert "int64" in str(refused)
    now += timedelta(seconds=1)
    if end == "completed":
        assert session.close(failed=False, fail_reason="", now=now, principal="token:ü")
    elif end == "failed":
        assert session.close(failed=True, fail_reason=FAIL_REASON, now=now, principal="token:ü")
    elif end == "expired":
        assert session.expire(now=session.expires_at + timedelta(seconds=1), principal="system:deadline")
    return session


def random_report(rng: random.Random, object_types: list[RelatedObjectType]) -> list[ProgressEntry]:
    entries = []
    for _ in range(rng.randint(1, 3)):  # an object type may come twice in a report
        change_types = rng.sample(list(ChangeType), rng.randint(1, 6))
        entries.append(
            ProgressEntry(
                rng.choice(object_types),
                tuple(ChangeCount(c, random_count(rng), random_count(rng)) for c in change_types),
            )
        )
    return entries


def random_count(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.3:
        return 0
    if roll < 0.35:
        return rng.randint(INT64_MAX // 4, INT64_MAX // 2)  # near the limit: overflows get refused
    return rng.randint(1, 2**40)


def replayed(events: Any) -> Iterator[Session]:
    """The aggregate after each event, folded again from the first."""
    session: Any = None
    for event in events:
        session = event.mutate(session)
        yield session


# --- the state after each event -----------------------------------------------------------


@pytest.mark.parametrize("end", ENDS)
def test_incremental_messages_equal_session_message(end: str) -> None:
    built = long_session(seed=ENDS.index(end), end=end, events=400)
    events = built.collect_events()
    seen: set[str] = set()
    messages = wire.SessionMessages()
    for version, session in enumerate(replayed(events), 1):
        seen.add(type(events[version - 1]).__name__)
        message = messages.update(session)
        assert message == wire.session_message(session), version
        assert message.SerializeToString(deterministic=True) == wire.session_bytes(session), version
    assert session.version == len(events) >= 400
    assert {"SessionOpened", "ProgressReported", "HeartbeatReceived", "SessionStalled"} <= seen
    assert {e.object_type for e in session.progress} == set(RelatedObjectType)
    assert any(c.successful > 2**60 for e in session.progress for c in e.changes)
    expected_status = {
        "completed": SessionStatus.COMPLETED,
        "failed": SessionStatus.FAILED,
        "expired": SessionStatus.EXPIRED,
    }.get(end)
    assert session.status == expected_status or (end == "open" and session.status.is_active)


def test_incremental_messages_follow_any_order_of_states() -> None:
    """The message follows whatever states it is given, out of order or of
    another session: it assumes nothing beyond "the same object, the same
    value"."""
    states = []
    session: Any = None
    for event in long_session(seed=8, end="expired", events=60).collect_events():
        session = event.mutate(session)
        states.append(_copy(session))  # each state an object of its own, sharing the values
    other = list(replayed(long_session(seed=7, end="failed", events=60).collect_events()))[-1]
    messages = wire.SessionMessages()
    for session in [*random.Random(1).sample(states, len(states)), other, *states]:
        assert messages.update(session) == wire.session_message(session)


def _copy(session: Session) -> Session:
    clone = object.__new__(Session)
    clone.__dict__.update(vars(session))
    return clone


# --- the history read from a store ----------------------------------------------------------


@pytest.fixture
def app(store_url: str) -> Iterator[SessionsApplication]:
    application = SessionsApplication(parse_store_url(store_url), policy=POLICY)
    try:
        yield application
    finally:
        application.close()


def test_history_of_long_sessions_equals_the_plain_fold(app: SessionsApplication) -> None:
    ids = []
    for seed, end in enumerate(ENDS):
        session = long_session(seed=seed + 10, end=end, events=250)
        app.save(session)
        ids.append(session.id)

    for sid in ids:
        events = list(app.events.get(sid))  # the library's own decoding
        entries = list(session_history(app, sid))
        assert len(entries) == len(events) >= 250
        for entry, event, session in zip(entries, events, replayed(events), strict=True):
            assert entry.state == wire.session_message(session), (sid, entry.version)
            assert entry.changes == {
                k: canonical_value(v) for k, v in vars(event).items() if k not in COMMON_FIELDS
            }, (sid, entry.version)
            assert entry.version == event.originator_version
            assert entry.event_type == type(event).__name__
            assert (entry.recorded_at, entry.principal, entry.idempotency_key, entry.link) == (
                event.timestamp,
                event.principal,
                event.idempotency_key,
                event.link,
            )
        # Entries keep their state: each one a message of its own.
        assert len({id(e.state) for e in entries}) == len(entries)
        assert entries[0].state.status == SessionStatus.OPENED.value

        # The audit service's entries, built in place, equal entries built
        # field by field from the history (as StreamHistory used to).
        pages = list(AuditService(app).StreamHistory(audit_pb2.StreamHistoryRequest(session_id=sid), None))
        streamed = [e for page in pages for e in page.entries]
        assert [len(p.entries) for p in pages[:-1]] == [250] * (len(pages) - 1)
        assert len(streamed) == len(entries)
        for served, entry in zip(streamed, entries, strict=True):
            expected = audit_pb2.HistoryEntry(
                version=entry.version,
                position=entry.position,
                recorded_at=wire.timestamp(entry.recorded_at),
                event_type=entry.event_type,
                principal=entry.principal,
                idempotency_key=entry.idempotency_key,
                changes_json=json.dumps(entry.changes, ensure_ascii=False),
                link=entry.link,
                state=entry.state,
            )
            assert served == expected, (sid, entry.version)
            assert served.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)


def test_history_reads_each_event_as_the_mapper_decodes_it(app: SessionsApplication) -> None:
    """History reads the stored JSON through the codec: each event is the one
    the mapper decodes."""
    session = long_session(seed=3, end="completed", events=80)
    app.save(session)

    plain = history._decoder(app.mapper)
    for record in stream_records(app.recorder, session.id):
        event, _ = plain(session.id, record)
        stored = StoredEvent(session.id, record.version, record.topic, record.state)
        assert vars(event) == vars(app.mapper.to_domain_event(stored))

    steps = list(history_steps(app, session.id))
    assert [s.record.version for s in steps] == list(range(1, session.version + 1))

    # Rows are read as json.loads reads them: whitespace around the JSON is
    # fine, anything else after it is refused.
    record = stream_records(app.recorder, session.id)[1]
    padded = record._replace(state=b" \n" + record.state + b" ")
    assert vars(plain(session.id, padded)[0]) == vars(plain(session.id, record)[0])
    with pytest.raises(json.JSONDecodeError, match="Extra data"):
        plain(session.id, record._replace(state=record.state + b"{}"))
