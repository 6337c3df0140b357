"""Commands decide on cached aggregates without asking the store first; two
applications on one store (as two API processes would be) must still never
commit a decision made on state the other has moved past.

Each test lets application ``a`` cache a session, changes it through
application ``b``, then acts through ``a``: its cached copy is stale, and what
``a`` records or answers must be what fresh state calls for."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from store_support import POLICY, T0, USERS_CREATED, answer, event_names

from sessions.domain.commands import CloseSession, Heartbeat, OpenSession, ReportProgress
from sessions.domain.enums import ChangeType, RelatedObjectType, SessionStatus, SessionType
from sessions.domain.errors import StateConflict
from sessions.domain.progress import ChangeCount, ProgressEntry
from sessions.store.application import Caller, SessionsApplication
from sessions.store.clock import ManualClock
from sessions.store.urls import parse_store_url

AGENT = Caller("agent:a")
AD = SessionType.AD_SYNC
GROUPS_UPDATED = (ProgressEntry(RelatedObjectType.GROUP, (ChangeCount(ChangeType.UPDATE, 2, 0),)),)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def apps(store_url: str, clock: ManualClock) -> Iterator[tuple[SessionsApplication, SessionsApplication]]:
    a = SessionsApplication(parse_store_url(store_url), policy=POLICY, clock=clock)
    b = SessionsApplication(parse_store_url(store_url), policy=POLICY, clock=clock)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def open_in(app: SessionsApplication, render, container: str = "c1") -> str:
    body = answer(app.execute(OpenSession(container, "agent-a", AD), AGENT, render).payload)
    assert body["result"] == "SUCCESS", body
    return body["session_id"]


def cached_version(app: SessionsApplication, session_id: str) -> int:
    return app.repository.cache.get(session_id).version


def test_a_report_on_a_stale_copy_is_applied_on_top_of_the_other_write(apps, render, clock):
    a, b = apps
    sid = open_in(a, render)
    a.execute(ReportProgress(sid, USERS_CREATED), AGENT, render)  # a caches version 2
    clock.advance(1)
    b.execute(ReportProgress(sid, GROUPS_UPDATED), AGENT, render)  # version 3, unseen by a
    assert cached_version(a, sid) == 2

    clock.advance(1)
    outcome = a.execute(ReportProgress(sid, USERS_CREATED), AGENT, render)

    assert answer(outcome.payload)["version"] == 4
    names = event_names(a, sid)
    assert names == ["SessionOpened"] + ["ProgressReported"] * 3
    fresh = b.get_session(sid)
    totals = {(e.object_type, c.change_type): c.successful for e in fresh.progress for c in e.changes}
    assert totals == {
        (RelatedObjectType.USER, ChangeType.CREATE): 6,
        (RelatedObjectType.GROUP, ChangeType.UPDATE): 2,
    }
    assert cached_version(a, sid) == 4  # caught up, then saved


def test_a_report_after_another_process_closed_the_session_is_refused(apps, render, clock):
    a, b = apps
    sid = open_in(a, render)
    a.execute(Heartbeat(sid), AGENT, render)
    b.execute(CloseSession(sid, False, ""), AGENT, render)

    with pytest.raises(StateConflict):
        a.execute(ReportProgress(sid, USERS_CREATED), AGENT, render)

    assert event_names(a, sid) == ["SessionOpened", "HeartbeatReceived", "SessionCompleted"]
    assert a.get_session(sid).status is SessionStatus.COMPLETED


def test_a_stale_copy_past_its_expiry_is_checked_on_fresh_state_before_a_refusal(apps, render, clock):
    # a's copy says the session is past expires_at; b's heartbeat moved it on.
    a, b = apps
    sid = open_in(a, render)
    a.execute(Heartbeat(sid), AGENT, render)
    clock.advance(POLICY.session_ttl.total_seconds() - 1)
    b.execute(Heartbeat(sid), AGENT, render)
    clock.advance(2)

    outcome = a.execute(ReportProgress(sid, USERS_CREATED), AGENT, render)

    assert answer(outcome.payload)["status"] == "OPENED"
    assert event_names(a, sid) == ["SessionOpened", "HeartbeatReceived", "HeartbeatReceived", "ProgressReported"]


def test_an_open_sees_a_session_another_process_closed(apps, render, clock):
    a, b = apps
    first = open_in(a, render)
    a.execute(Heartbeat(first), AGENT, render)
    clock.advance(1)
    b.execute(CloseSession(first, False, ""), AGENT, render)
    clock.advance(POLICY.sync_interval.total_seconds() + 1)

    body = answer(a.execute(OpenSession("c1", "agent-a", AD), AGENT, render).payload)

    assert body["result"] == "SUCCESS"
    assert body["session_id"] != first


def test_an_open_shows_the_running_session_as_the_store_has_it(apps, render, clock):
    a, b = apps
    sid = open_in(a, render)
    a.execute(Heartbeat(sid), AGENT, render)
    clock.advance(1)
    b.execute(ReportProgress(sid, USERS_CREATED), AGENT, render)

    body = answer(a.execute(OpenSession("c1", "agent-a", AD), AGENT, render).payload)

    assert (body["result"], body["session_id"]) == ("OPENED_SESSION_EXISTS", sid)
    assert body["version"] == 3  # with b's report


def test_the_deadline_worker_reads_fresh_state(apps, render, clock):
    # b records a stall that a has not seen; a's expiry must still land (on a
    # stale copy it would collide with the stall every time, and never land).
    a, b = apps
    sid = open_in(a, render)
    a.execute(Heartbeat(sid), AGENT, render)
    clock.advance(POLICY.heartbeat_grace.total_seconds() + 1)
    assert b.stall_session(sid) > 0
    clock.advance(POLICY.session_ttl.total_seconds())

    assert a.expire_session(sid) > 0

    assert event_names(a, sid) == ["SessionOpened", "HeartbeatReceived", "SessionStalled", "SessionExpired"]


def test_answers_are_not_kept_in_the_aggregate_cache(apps, render):
    a, _ = apps
    sid = open_in(a, render)
    outcome = a.execute(ReportProgress(sid, USERS_CREATED), AGENT, render)
    with pytest.raises(KeyError):
        a.repository.cache.get(outcome.operation_id)
    assert cached_version(a, sid) == 2


def test_two_processes_reporting_to_one_session_lose_and_repeat_nothing(apps, render):
    # Threads in both applications report to the same session at once: each
    # application's cached copy keeps going stale under the other's writes.
    # Every report must land exactly once, in the totals and in the log.
    a, b = apps
    sid = open_in(a, render)
    per_thread, threads_per_app = 15, 2
    start = threading.Barrier(2 * threads_per_app)
    errors: list[BaseException] = []

    def report(app: SessionsApplication) -> None:
        start.wait()
        for _ in range(per_thread):
            try:
                app.execute(ReportProgress(sid, USERS_CREATED), AGENT, render)
            except BaseException as e:  # noqa: BLE001 - asserted below
                errors.append(e)

    workers = [threading.Thread(target=report, args=(app,)) for app in (a, b) for _ in range(threads_per_app)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)

    assert errors == []
    reports = 2 * threads_per_app * per_thread
    assert event_names(a, sid) == ["SessionOpened"] + ["ProgressReported"] * reports
    created = USERS_CREATED[0].changes[0]
    for app in (a, b):
        [entry] = app.get_session(sid).progress
        [change] = entry.changes
        assert (change.successful, change.failed) == (created.successful * reports, created.failed * reports)
