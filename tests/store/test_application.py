"""SessionsApplication: the command handlers over a real (in-memory or file)
SQLite event store, with time driven by a ManualClock."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from store_support import (
    POLICY,
    T0,
    USERS_CREATED,
    Render,
    answer,
    event_names,
    events,
    state,
)

from sessions.domain.commands import CloseSession, Heartbeat, OpenSession, ReportProgress
from sessions.domain.enums import (
    ChangeType,
    OpenResult,
    RelatedObjectType,
    SessionStatus,
    SessionType,
    SyncMode,
)
from sessions.domain.errors import InvalidArgument, NotFound, StateConflict
from sessions.domain.progress import INT64_MAX, ChangeCount, ProgressEntry
from sessions.domain.schedule import SyncSchedule, schedule_id
from sessions.domain.session import EXPIRY_REASON, Session
from sessions.store.application import (
    SYSTEM_PRINCIPAL,
    Caller,
    Opened,
    Outcome,
    SessionsApplication,
)
from sessions.store.clock import ManualClock
from sessions.store.urls import parse_store_url

AD = SessionType.AD_SYNC
CONTAINER = "container-1"
AGENT = Caller("agent:a")
TTL = POLICY.session_ttl
INTERVAL = POLICY.sync_interval


def open_(app, render, caller: Caller = AGENT, container=CONTAINER, session_type=AD) -> Outcome:
    return app.execute(OpenSession(container, "agent-a", session_type), caller, render)


def opened(app, render, caller: Caller = AGENT, **kw) -> str:
    """Open a session that must succeed; its id."""
    body = answer(open_(app, render, caller, **kw).payload)
    assert body["result"] == "SUCCESS", body
    return body["session_id"]


def close(app, render, sid, caller: Caller = AGENT, failed=False, reason="") -> Outcome:
    return app.execute(CloseSession(sid, failed, reason), caller, render)


def notifications(app: SessionsApplication) -> int:
    return app.recorder.max_notification_id() or 0


def schedule_of(app: SessionsApplication, session_type=AD, container=CONTAINER) -> SyncSchedule:
    return app.repository.get(schedule_id(container, session_type))


# --- the happy path ---------------------------------------------------------------


def test_open_report_heartbeat_close(app, clock, render):
    first = open_(app, render, Caller("agent:a", "k-open"))
    body = answer(first.payload)
    assert body["result"] == "SUCCESS"
    assert body["sync_mode"] == "FULL_SYNC"
    assert body["status"] == "OPENED"
    assert body["expires_at"] == (T0 + TTL).isoformat()
    assert body["operation_id"] == first.operation_id
    sid = body["session_id"]
    assert sid.startswith("ses") and len(sid) == 20
    assert first.replayed is False
    assert first.position == notifications(app)

    clock.advance(30)
    rep = app.execute(ReportProgress(sid, USERS_CREATED), Caller("agent:a", "k-rep"), render)
    assert answer(rep.payload)["version"] == 2
    clock.advance(30)
    hb = app.execute(Heartbeat(sid), Caller("agent:a", "k-hb"), render)
    assert answer(hb.payload)["expires_at"] == (T0 + timedelta(seconds=60) + TTL).isoformat()
    clock.advance(30)
    done = close(app, render, sid, Caller("agent:a", "k-close"))
    assert answer(done.payload)["status"] == "COMPLETED"
    assert done.position == notifications(app)

    s = app.get_session(sid)
    assert s.status is SessionStatus.COMPLETED
    assert s.created_at == T0
    assert s.closed_at == T0 + timedelta(seconds=90)
    assert s.expires_at == T0 + timedelta(seconds=60) + TTL  # the close did not move it
    assert s.progress == USERS_CREATED
    assert s.fail_reason == ""
    assert event_names(app, sid) == [
        "SessionOpened", "ProgressReported", "HeartbeatReceived", "SessionCompleted",
    ]
    assert [(e.principal, e.idempotency_key) for e in events(app, sid)] == [
        ("agent:a", "k-open"), ("agent:a", "k-rep"), ("agent:a", "k-hb"), ("agent:a", "k-close"),
    ]
    assert [e.timestamp for e in events(app, sid)] == [
        T0 + timedelta(seconds=n) for n in (0, 30, 60, 90)
    ]
    assert event_names(app, schedule_id(CONTAINER, AD)) == [
        "ScheduleStarted", "SessionStarted", "SessionEnded",
    ]
    # Every answer stays readable by its operation id.
    for outcome in (first, rep, hb, done):
        assert app.get_operation_payload(outcome.operation_id) == outcome.payload
    assert len({o.operation_id for o in (first, rep, hb, done)}) == 4


def test_the_answer_of_each_call_is_what_get_session_returns_right_after(app, clock, render):
    sid = opened(app, render)
    calls = [
        lambda: app.execute(ReportProgress(sid, USERS_CREATED), AGENT, render),
        lambda: app.execute(Heartbeat(sid), AGENT, render),
        lambda: app.execute(
            ReportProgress(sid, [ProgressEntry(RelatedObjectType.GROUP, (ChangeCount(ChangeType.DELETE, 1, 2),))]),
            AGENT,
            render,
        ),
        lambda: close(app, render, sid, failed=True, reason="ldap down"),
    ]
    assert render.calls[-1].session_state == state(app.get_session(sid))
    for call in calls:
        clock.advance(seconds=7, microseconds=123)
        outcome = call()
        shown = render.last_for(outcome.operation_id).session_state
        assert shown == state(app.get_session(sid)), "field for field, to the microsecond"
    assert app.get_session(sid).fail_reason == "ldap down"


def test_every_outcome_position_is_the_last_notification(app, clock, render):
    sid = opened(app, render)
    before = notifications(app)
    outcome = app.execute(Heartbeat(sid), AGENT, render)
    assert notifications(app) == before + 2  # the heartbeat and the operation record
    assert outcome.position == notifications(app)


# --- OPENED_SESSION_EXISTS and TOO_EARLY are stored answers ----------------------------


def test_opened_session_exists_is_answered_and_stored(app, clock, render):
    sid = opened(app, render)
    clock.advance(5)
    before = notifications(app)
    second = app.execute(OpenSession(CONTAINER, "agent-b", AD), Caller("agent:b"), render)
    body = answer(second.payload)
    assert body["result"] == "OPENED_SESSION_EXISTS"
    assert body["session_id"] == sid
    assert body["status"] == "OPENED"
    assert app.get_operation_payload(second.operation_id) == second.payload
    # Only the answer was written: no session, no schedule change.
    assert notifications(app) == before + 1
    assert event_names(app, sid) == ["SessionOpened"]
    assert event_names(app, schedule_id(CONTAINER, AD)) == ["ScheduleStarted", "SessionStarted"]


def test_too_early_is_answered_with_the_next_time_and_stored(app, clock, render):
    sid = opened(app, render)
    clock.advance(40)
    close(app, render, sid)
    closed_at = T0 + timedelta(seconds=40)
    clock.advance(INTERVAL.total_seconds() - 1)
    before = notifications(app)
    early = open_(app, render)
    body = answer(early.payload)
    assert body["result"] == "TOO_EARLY"
    assert body["next_session_at"] == (closed_at + INTERVAL).isoformat()
    assert body["session_id"] is None
    assert app.get_operation_payload(early.operation_id) == early.payload
    assert notifications(app) == before + 1
    clock.advance(1)
    assert answer(open_(app, render).payload)["result"] == "SUCCESS"


def test_sessions_of_other_containers_and_types_do_not_block(app, render):
    a = opened(app, render)
    b = opened(app, render, container="container-2")
    c = opened(app, render, session_type=SessionType.LDAP_SYNC)
    assert len({a, b, c}) == 3


def test_delta_follows_a_completed_full_sync(app, clock, render):
    first = opened(app, render)
    clock.advance(60)
    close(app, render, first)
    clock.advance(INTERVAL.total_seconds())
    body = answer(open_(app, render).payload)
    assert (body["result"], body["sync_mode"]) == ("SUCCESS", "DELTA")


# --- idempotency ---------------------------------------------------------------------


def _keyed_calls(app, render, sid):
    caller = Caller("agent:a", "the-key")
    return {
        "open": lambda: app.execute(OpenSession("container-x", "agent-a", AD), caller, render),
        "report": lambda: app.execute(ReportProgress(sid, USERS_CREATED), caller, render),
        "heartbeat": lambda: app.execute(Heartbeat(sid), caller, render),
        "close": lambda: app.execute(CloseSession(sid, False, ""), caller, render),
    }


@pytest.mark.parametrize("command", ["open", "report", "heartbeat", "close"])
def test_a_keyed_retry_returns_the_first_answer_and_appends_nothing(app, clock, render, command):
    sid = opened(app, render)
    call = _keyed_calls(app, render, sid)[command]
    clock.advance(10)
    first = call()
    written = notifications(app)
    clock.advance(10)
    for _ in range(3):
        again = call()
        assert again.operation_id == first.operation_id
        assert again.payload == first.payload
        assert again.replayed is True
        assert again.position == 0
    # (A retry may be decided again, but its write collides with the first
    # call's operation record and nothing of it is kept.)
    assert notifications(app) == written
    assert app.get_operation_payload(first.operation_id) == first.payload


def test_a_keyed_retry_of_a_report_after_the_close_still_gets_the_report_answer(app, clock, render):
    sid = opened(app, render)
    clock.advance(10)
    report = app.execute(ReportProgress(sid, USERS_CREATED), Caller("agent:a", "rep-1"), render)
    clock.advance(10)
    close(app, render, sid)
    written = notifications(app)
    # A fresh report is refused now ...
    with pytest.raises(StateConflict):
        app.execute(ReportProgress(sid, USERS_CREATED), Caller("agent:a", "rep-2"), render)
    # ... but the retry of the first one is answered as the first time.
    retry = app.execute(ReportProgress(sid, USERS_CREATED), Caller("agent:a", "rep-1"), render)
    assert retry.payload == report.payload
    assert answer(retry.payload)["status"] == "OPENED"
    assert notifications(app) == written
    assert app.get_session(sid).progress == USERS_CREATED  # counted once


def test_a_keyed_retry_of_a_heartbeat_after_expiry_is_still_answered(app, clock, render):
    sid = opened(app, render)
    hb = app.execute(Heartbeat(sid), Caller("agent:a", "hb-1"), render)
    clock.advance((TTL + timedelta(hours=1)).total_seconds())
    retry = app.execute(Heartbeat(sid), Caller("agent:a", "hb-1"), render)
    assert retry.payload == hb.payload
    assert retry.replayed


def test_a_keyed_retry_of_open_does_not_open_another_session(app, clock, render):
    caller = Caller("agent:a", "open-key")
    first = open_(app, render, caller)
    sid = answer(first.payload)["session_id"]
    clock.advance(30)
    close(app, render, sid)
    clock.advance(INTERVAL.total_seconds() + 1)  # a new session would be allowed now
    written = notifications(app)
    retry = open_(app, render, caller)
    assert retry.payload == first.payload
    assert answer(retry.payload)["session_id"] == sid
    assert notifications(app) == written
    assert schedule_of(app).active_session_id is None


def test_the_same_key_from_another_principal_is_another_operation(app, clock, render):
    sid = opened(app, render)
    a = app.execute(Heartbeat(sid), Caller("agent:a", "shared-key"), render)
    clock.advance(1)
    b = app.execute(Heartbeat(sid), Caller("agent:b", "shared-key"), render)
    assert a.operation_id != b.operation_id
    assert b.replayed is False
    assert b.payload != a.payload
    assert event_names(app, sid).count("HeartbeatReceived") == 2
    assert [e.principal for e in events(app, sid)][-2:] == ["agent:a", "agent:b"]


def test_calls_without_a_key_are_each_applied(app, clock, render):
    sid = opened(app, render)
    ids = set()
    for _ in range(3):
        clock.advance(1)
        outcome = app.execute(Heartbeat(sid), AGENT, render)
        assert outcome.replayed is False
        ids.add(outcome.operation_id)
    assert len(ids) == 3
    assert event_names(app, sid).count("HeartbeatReceived") == 3


def test_concurrent_first_tries_with_one_key_apply_once(tmp_path, render):
    clock = ManualClock(T0)
    app = SessionsApplication(parse_store_url(f"sqlite://{tmp_path}/k.db"), policy=POLICY, clock=clock)
    try:
        sid = opened(app, render)
        barrier = threading.Barrier(8)
        outcomes: list[Outcome] = []
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                barrier.wait()
                outcomes.append(app.execute(Heartbeat(sid), Caller("agent:a", "same"), render))
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert errors == []
        assert len(outcomes) == 8
        assert len({o.operation_id for o in outcomes}) == 1
        assert len({o.payload for o in outcomes}) == 1
        assert event_names(app, sid).count("HeartbeatReceived") == 1
    finally:
        app.close()


# --- unknown ids ---------------------------------------------------------------------


@pytest.mark.parametrize("command", ["report", "heartbeat", "close"])
def test_commands_on_an_unknown_session_are_not_found(app, render, command):
    opened(app, render)
    written = notifications(app)
    missing = "sesdoesnotexist00000"
    with pytest.raises(NotFound):
        if command == "report":
            app.execute(ReportProgress(missing, USERS_CREATED), Caller("agent:a", "k"), render)
        elif command == "heartbeat":
            app.execute(Heartbeat(missing), Caller("agent:a", "k"), render)
        else:
            close(app, render, missing, Caller("agent:a", "k"))
    assert notifications(app) == written


def test_reads_of_unknown_ids_are_not_found(app, render):
    outcome = open_(app, render)
    sid = answer(outcome.payload)["session_id"]
    with pytest.raises(NotFound):
        app.get_session("sesdoesnotexist00000")
    with pytest.raises(NotFound):
        app.get_operation_payload("opndoesnotexist00000")
    # An id of the other kind is not found either.
    with pytest.raises(NotFound):
        app.get_operation_payload(sid)
    with pytest.raises(NotFound):
        app.get_session(outcome.operation_id)
    with pytest.raises(NotFound):
        app.get_session(schedule_id(CONTAINER, AD))


# --- refusals leave no trace -------------------------------------------------------------


def test_an_invalid_report_writes_nothing(app, clock, render):
    sid = opened(app, render)
    written = notifications(app)
    bad = [ProgressEntry(RelatedObjectType.USER, (ChangeCount(ChangeType.CREATE, -1, 0),))]
    with pytest.raises(InvalidArgument) as err:
        app.execute(ReportProgress(sid, bad), Caller("agent:a", "bad"), render)
    assert err.value.field == "progress_entries[0].change_info[0].successful"
    assert notifications(app) == written
    # The key was not used up by the refusal: a corrected retry is applied.
    ok = app.execute(ReportProgress(sid, USERS_CREATED), Caller("agent:a", "bad"), render)
    assert ok.replayed is False
    assert app.get_session(sid).progress == USERS_CREATED


def test_an_overflowing_report_writes_nothing(app, render):
    sid = opened(app, render)
    full = [ProgressEntry(RelatedObjectType.USER, (ChangeCount(ChangeType.CREATE, INT64_MAX, 0),))]
    app.execute(ReportProgress(sid, full), AGENT, render)
    written = notifications(app)
    with pytest.raises(InvalidArgument):
        app.execute(ReportProgress(sid, USERS_CREATED), AGENT, render)
    assert notifications(app) == written
    assert app.get_session(sid).progress == tuple(full)


def test_repeating_a_close_answers_with_the_session_as_it_is(app, clock, render):
    sid = opened(app, render)
    clock.advance(5)
    first = close(app, render, sid, failed=True, reason="boom")
    clock.advance(5)
    written = notifications(app)
    again = close(app, render, sid, failed=True, reason="boom")
    assert again.operation_id != first.operation_id
    assert answer(again.payload)["status"] == "FAILED"
    assert answer(again.payload)["version"] == answer(first.payload)["version"]
    assert notifications(app) == written + 1  # only the answer
    assert event_names(app, sid).count("SessionFailed") == 1
    with pytest.raises(StateConflict):
        close(app, render, sid, failed=False)
    assert app.get_session(sid).closed_at == T0 + timedelta(seconds=5)


# --- expiry --------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["report", "heartbeat", "complete", "fail"])
def test_a_call_after_expires_at_records_the_expiry_and_is_refused(app, clock, render, command):
    sid = opened(app, render)
    clock.advance(100)
    app.execute(Heartbeat(sid), AGENT, render)
    expires_at = T0 + timedelta(seconds=100) + TTL
    clock.advance((TTL + timedelta(seconds=30)).total_seconds())
    with pytest.raises(StateConflict):
        if command == "report":
            app.execute(ReportProgress(sid, USERS_CREATED), AGENT, render)
        elif command == "heartbeat":
            app.execute(Heartbeat(sid), AGENT, render)
        else:
            close(app, render, sid, failed=command == "fail", reason="late" if command == "fail" else "")
    assert event_names(app, sid) == ["SessionOpened", "HeartbeatReceived", "SessionExpired"]
    expiry = events(app, sid)[-1]
    assert expiry.closed_at == expires_at
    assert expiry.timestamp == clock()
    assert expiry.principal == SYSTEM_PRINCIPAL
    s = app.get_session(sid)
    assert s.status is SessionStatus.EXPIRED
    assert s.closed_at == expires_at
    assert s.fail_reason == EXPIRY_REASON
    schedule = schedule_of(app)
    assert schedule.active_session_id is None
    assert schedule.last_outcome is SessionStatus.EXPIRED
    assert schedule.last_ended_at == expires_at


def test_a_call_at_exactly_expires_at_is_refused(app, clock, render):
    sid = opened(app, render)
    clock.advance(TTL.total_seconds())
    with pytest.raises(StateConflict):
        app.execute(Heartbeat(sid), AGENT, render)
    assert app.get_session(sid).status is SessionStatus.EXPIRED


def test_after_expiry_the_next_open_is_a_full_sync(app, clock, render):
    full = opened(app, render)
    clock.advance(60)
    close(app, render, full)
    clock.advance(INTERVAL.total_seconds())
    delta = answer(open_(app, render).payload)
    assert delta["sync_mode"] == "DELTA"
    expires_at = clock() + TTL
    # The agent vanishes; nobody records the expiry until the next open.
    clock.advance((TTL + INTERVAL).total_seconds())
    nxt = answer(open_(app, render).payload)
    assert nxt["result"] == "SUCCESS"
    assert nxt["sync_mode"] == "FULL_SYNC"
    assert nxt["session_id"] not in (full, delta["session_id"])
    assert event_names(app, delta["session_id"])[-1] == "SessionExpired"
    assert app.get_session(delta["session_id"]).closed_at == expires_at
    assert schedule_of(app).active_session_id == nxt["session_id"]


def test_an_open_within_the_interval_after_an_expiry_is_too_early_and_records_it(app, clock, render):
    sid = opened(app, render)
    expires_at = T0 + TTL
    clock.advance((TTL + INTERVAL / 2).total_seconds())
    body = answer(open_(app, render).payload)
    assert body["result"] == "TOO_EARLY"
    assert body["next_session_at"] == (expires_at + INTERVAL).isoformat()
    assert event_names(app, sid)[-1] == "SessionExpired"
    assert app.get_session(sid).status is SessionStatus.EXPIRED
    clock.advance((INTERVAL / 2).total_seconds())
    body = answer(open_(app, render).payload)
    assert (body["result"], body["sync_mode"]) == ("SUCCESS", "FULL_SYNC")


def test_an_open_never_names_an_expired_session_as_the_open_one(app, clock, render):
    sid = opened(app, render)
    clock.advance(TTL.total_seconds())
    body = answer(open_(app, render).payload)
    assert body["result"] != "OPENED_SESSION_EXISTS"
    assert body["session_id"] != sid


def test_expire_session_records_only_a_due_expiry_and_only_once(app, clock, render):
    sid = opened(app, render)
    clock.advance(TTL.total_seconds() - 1)
    assert app.expire_session(sid) == 0
    assert event_names(app, sid) == ["SessionOpened"]
    clock.advance(1)
    assert app.expire_session(sid) > 0
    assert app.expire_session(sid) == 0
    assert event_names(app, sid) == ["SessionOpened", "SessionExpired"]
    assert event_names(app, schedule_id(CONTAINER, AD))[-1] == "SessionEnded"


def test_closed_sessions_are_not_expired(app, clock, render):
    sid = opened(app, render)
    close(app, render, sid)
    clock.advance((3 * TTL).total_seconds())
    assert app.expire_session(sid) == 0
    assert app.get_session(sid).status is SessionStatus.COMPLETED


# --- concurrency ------------------------------------------------------------------


def _open_concurrently(apps: list[SessionsApplication], render: Render) -> list[dict[str, Any]]:
    barrier = threading.Barrier(len(apps))
    results: list[Any] = [None] * len(apps)

    def worker(i: int) -> None:
        try:
            barrier.wait()
            results[i] = apps[i].execute(OpenSession(CONTAINER, f"agent-{i}", AD), Caller(f"agent:{i}"), render)
        except BaseException as e:  # noqa: BLE001 - asserted below
            results[i] = e

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(apps))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    errors = [r for r in results if not isinstance(r, Outcome)]
    assert errors == []
    return [answer(r.payload) | {"_outcome": r} for r in results]


def _assert_exactly_one_success(bodies: list[dict[str, Any]], app: SessionsApplication) -> None:
    results = sorted(b["result"] for b in bodies)
    assert results == ["OPENED_SESSION_EXISTS"] * (len(bodies) - 1) + ["SUCCESS"]
    named = {b["session_id"] for b in bodies}
    assert len(named) == 1
    [sid] = named
    assert event_names(app, sid) == ["SessionOpened"]
    assert event_names(app, schedule_id(CONTAINER, AD)) == ["ScheduleStarted", "SessionStarted"]
    assert schedule_of(app).active_session_id == sid
    # The winner wrote 4 events (schedule x2, session, answer); each loser its answer.
    assert (app.recorder.max_notification_id() or 0) == 4 + len(bodies) - 1
    for b in bodies:
        outcome = b["_outcome"]
        assert app.get_operation_payload(outcome.operation_id) == outcome.payload


def test_sixteen_concurrent_opens_yield_exactly_one_success(tmp_path, render):
    clock = ManualClock(T0)
    app = SessionsApplication(parse_store_url(f"sqlite://{tmp_path}/s.db"), policy=POLICY, clock=clock)
    try:
        bodies = _open_concurrently([app] * 16, render)
        _assert_exactly_one_success(bodies, app)
    finally:
        app.close()


def test_concurrent_opens_from_separate_applications_yield_exactly_one_success(tmp_path, render):
    # Like separate API processes sharing one database file.
    clock = ManualClock(T0)
    url = f"sqlite://{tmp_path}/s.db"
    apps = [SessionsApplication(parse_store_url(url), policy=POLICY, clock=clock) for _ in range(6)]
    try:
        bodies = _open_concurrently(apps, render)
        _assert_exactly_one_success(bodies, apps[0])
    finally:
        for a in apps:
            a.close()


def _with_interleaving(monkeypatch, app: SessionsApplication, action) -> None:
    """Run ``action`` right after ``app`` has read the schedule stream, as
    another process would if it wrote between this call's two reads."""
    real_get = app.repository.get
    fired: list[bool] = []

    def get(aggregate_id, *args, **kwargs):
        aggregate = real_get(aggregate_id, *args, **kwargs)
        if aggregate_id == schedule_id(CONTAINER, AD) and not fired:
            fired.append(True)
            action()
        return aggregate

    monkeypatch.setattr(app.repository, "get", get)


def test_an_open_racing_a_close_does_not_name_the_closed_session(tmp_path, monkeypatch, render):
    url = f"sqlite://{tmp_path}/s.db"
    clock = ManualClock(T0)
    app = SessionsApplication(parse_store_url(url), policy=POLICY, clock=clock)
    other = SessionsApplication(parse_store_url(url), policy=POLICY, clock=clock)
    try:
        sid = opened(app, render)
        clock.advance(30)
        _with_interleaving(monkeypatch, app, lambda: close(other, render, sid))
        body = answer(open_(app, render).payload)
        assert app.get_session(sid).status is SessionStatus.COMPLETED
        # The session closed just now: the only right answer is TOO_EARLY.
        assert (body["result"], body["session_id"]) == ("TOO_EARLY", None)
    finally:
        app.close()
        other.close()


def test_an_open_racing_an_expiry_does_not_name_the_expired_session(tmp_path, monkeypatch, render):
    url = f"sqlite://{tmp_path}/s.db"
    clock = ManualClock(T0)
    app = SessionsApplication(parse_store_url(url), policy=POLICY, clock=clock)
    other = SessionsApplication(parse_store_url(url), policy=POLICY, clock=clock)
    try:
        sid = opened(app, render)
        clock.advance((TTL + INTERVAL).total_seconds())
        _with_interleaving(monkeypatch, app, lambda: other.expire_session(sid))
        body = answer(open_(app, render).payload)
        assert app.get_session(sid).status is SessionStatus.EXPIRED
        assert body["result"] == "SUCCESS"
        assert body["session_id"] != sid
        assert body["sync_mode"] == "FULL_SYNC"
    finally:
        app.close()
        other.close()


# A schedule read before a concurrent close or expiry must not make an open
# answer with the ended session; the two deterministic tests above pin it down.
def test_concurrent_opens_after_an_expiry_yield_one_success_and_one_expiry(tmp_path, render):
    clock = ManualClock(T0)
    app = SessionsApplication(parse_store_url(f"sqlite://{tmp_path}/s.db"), policy=POLICY, clock=clock)
    try:
        stale = opened(app, render)
        clock.advance((TTL + INTERVAL).total_seconds())
        written = notifications(app)
        bodies = _open_concurrently([app] * 12, render)
        results = sorted(b["result"] for b in bodies)
        assert results == ["OPENED_SESSION_EXISTS"] * 11 + ["SUCCESS"]
        [fresh] = {b["session_id"] for b in bodies}
        assert fresh != stale
        assert event_names(app, stale) == ["SessionOpened", "SessionExpired"]
        schedule_events = event_names(app, schedule_id(CONTAINER, AD))
        assert schedule_events[-2:] == ["SessionEnded", "SessionStarted"]
        # expiry + end + start + new session + 12 answers
        assert notifications(app) == written + 4 + 12
        assert app.get_session(fresh).sync_mode is SyncMode.FULL_SYNC
    finally:
        app.close()


def test_concurrent_reports_on_an_expired_session_record_one_expiry(tmp_path, render):
    clock = ManualClock(T0)
    app = SessionsApplication(parse_store_url(f"sqlite://{tmp_path}/s.db"), policy=POLICY, clock=clock)
    try:
        sid = opened(app, render)
        clock.advance(TTL.total_seconds() + 1)
        barrier = threading.Barrier(8)
        errors: list[BaseException] = []

        def worker() -> None:
            barrier.wait()
            try:
                app.execute(ReportProgress(sid, USERS_CREATED), AGENT, render)
            except BaseException as e:  # noqa: BLE001 - asserted below
                errors.append(e)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert len(errors) == 8
        assert all(isinstance(e, StateConflict) for e in errors), errors
        assert event_names(app, sid) == ["SessionOpened", "SessionExpired"]
        assert app.get_session(sid).progress == ()
    finally:
        app.close()


# --- what is stored comes back exactly -----------------------------------------------------


def _busy_session(app: SessionsApplication, clock: ManualClock, render: Render) -> str:
    caller = Caller("agent:ü", "kéy-1")
    sid = answer(open_(app, render, caller).payload)["session_id"]
    clock.advance(seconds=1, microseconds=1)
    app.execute(
        ReportProgress(
            sid,
            [
                ProgressEntry(
                    RelatedObjectType.MEMBERSHIP,
                    (
                        ChangeCount(ChangeType.PASSWORD_HASH_UPDATE, INT64_MAX - 5, 0),
                        ChangeCount(ChangeType.ACTIVATE, 0, 7),
                    ),
                ),
                ProgressEntry(RelatedObjectType.USER, (ChangeCount(ChangeType.DEACTIVATE, 2, 3),)),
            ],
        ),
        Caller("agent:ü", "kéy-2"),
        render,
    )
    clock.advance(seconds=2, microseconds=999_998)
    app.execute(
        ReportProgress(
            sid, [ProgressEntry(RelatedObjectType.MEMBERSHIP, (ChangeCount(ChangeType.PASSWORD_HASH_UPDATE, 5, 1),))]
        ),
        AGENT,
        render,
    )
    clock.advance(seconds=3, microseconds=7)
    app.execute(Heartbeat(sid), AGENT, render)
    return sid


def _assert_exact_types(s: Session) -> None:
    assert type(s.status) is SessionStatus
    assert type(s.sync_mode) is SyncMode
    assert type(s.session_type) is SessionType
    for dt in (s.created_at, s.expires_at, s.last_seen_at):
        assert dt.utcoffset() == timedelta(0)
    for e in s.progress:
        assert type(e) is ProgressEntry
        assert type(e.object_type) is RelatedObjectType
        assert isinstance(e.changes, tuple)
        for c in e.changes:
            assert type(c) is ChangeCount and type(c.change_type) is ChangeType


def test_state_round_trips_exactly_through_the_store(app, clock, render):
    sid = _busy_session(app, clock, render)
    clock.advance(microseconds=1)
    out = close(app, render, sid, Caller("agent:ü", "kéy-3"), failed=True, reason="ошибка ✗")
    in_memory = render.last_for(out.operation_id).result.session
    reloaded = app.get_session(sid)
    assert state(reloaded) == state(in_memory)
    _assert_exact_types(reloaded)
    assert reloaded.progress[1].changes[1].successful == INT64_MAX  # PASSWORD_HASH_UPDATE is last
    assert reloaded.fail_reason == "ошибка ✗"
    assert reloaded.closed_at == T0 + timedelta(seconds=6, microseconds=1 + 999_998 + 7 + 1)
    # and each stored event comes back as it was recorded
    assert events(app, sid)[0].principal == "agent:ü"
    assert events(app, sid)[0].idempotency_key == "kéy-1"


def test_schedule_round_trips_exactly_through_the_store(app, clock, render):
    sid = opened(app, render)
    clock.advance(seconds=4, microseconds=17)
    close(app, render, sid)
    clock.advance(INTERVAL.total_seconds())
    open_(app, render)
    s = schedule_of(app)
    assert type(s.last_outcome) is SessionStatus
    assert type(s.active_sync_mode) is SyncMode
    assert s.active_sync_mode is SyncMode.DELTA
    assert s.last_full_sync_completed_at == T0 + timedelta(seconds=4, microseconds=17)
    replayed = None
    for e in events(app, s.id):
        replayed = e.mutate(replayed)
    assert state(replayed) == state(s)


def test_earlier_versions_can_be_read_back(app, clock, render):
    sid = _busy_session(app, clock, render)
    v1 = app.get_session(sid, version=1)
    assert v1.version == 1
    assert v1.progress == ()
    assert v1.status is SessionStatus.OPENED
    assert app.get_session(sid, version=2).progress != ()


def test_stored_events_name_enums_rather_than_numbers(app, render):
    sid = opened(app, render)
    [stored] = app.recorder.select_events(sid)
    assert b"FULL_SYNC" in stored.state
    assert b"AD_SYNC" in stored.state
    assert stored.topic == "sessions.SessionOpened"


def test_everything_survives_a_restart(tmp_path, render):
    url = f"sqlite://{tmp_path}/store/s.db"
    clock = ManualClock(T0)
    first = SessionsApplication(parse_store_url(url), policy=POLICY, clock=clock)
    try:
        sid = _busy_session(first, clock, render)
        op = first.execute(Heartbeat(sid), Caller("agent:a", "hb-key"), render)
        before = state(first.get_session(sid))
        written = first.recorder.max_notification_id()
    finally:
        first.close()

    second = SessionsApplication(parse_store_url(url), policy=POLICY, clock=clock)
    try:
        after = second.get_session(sid)
        assert state(after) == before
        _assert_exact_types(after)
        assert second.get_operation_payload(op.operation_id) == op.payload
        retry = second.execute(Heartbeat(sid), Caller("agent:a", "hb-key"), render)
        assert retry.replayed and retry.payload == op.payload
        assert second.recorder.max_notification_id() == written
        # the open session still blocks a new one after the restart
        body = answer(open_(second, render).payload)
        assert (body["result"], body["session_id"]) == ("OPENED_SESSION_EXISTS", sid)
    finally:
        second.close()


def test_opened_carries_the_running_session_object(app, render):
    sid = opened(app, render)
    second = open_(app, render)
    result = render.last_for(second.operation_id).result
    assert isinstance(result, Opened)
    assert result.result is OpenResult.OPENED_SESSION_EXISTS
    assert result.session is not None and result.session.id == sid
    assert result.next_session_at is None


def test_a_record_without_a_request_digest_compares_method_and_session(app, clock, render):
    """Operation records written before requests had digests still answer
    a retry, and still refuse a key reused for another method or session."""
    from sessions.store.operations import OperationRecord, operation_id_for

    sid = opened(app, render)
    caller = Caller("agent:a", "old-key")
    old = OperationRecord(
        id=operation_id_for(caller.principal, caller.idempotency_key),
        method="Heartbeat",
        session_id=sid,
        payload=b"first answer",
        principal=caller.principal,
        idempotency_key=caller.idempotency_key,
        timestamp=clock(),
    )
    assert old.request == ""
    app.save(old)
    written = notifications(app)
    retry = app.execute(Heartbeat(sid), caller, render)
    assert retry.replayed and retry.payload == b"first answer"
    with pytest.raises(InvalidArgument):
        app.execute(CloseSession(sid, False, ""), caller, render)
    assert notifications(app) == written
