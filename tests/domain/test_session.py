"""The Session aggregate: its transitions, its refusals, and its events.

Time is always passed in explicitly; nothing here reads a clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from domain_support import AGENT, GRACE, POLICY, T0, TTL, at, open_session, state

from sessions.domain.enums import (
    ChangeType,
    RelatedObjectType,
    SessionStatus,
    SessionType,
    SyncMode,
)
from sessions.domain.errors import InvalidArgument, StateConflict
from sessions.domain.progress import ChangeCount, ProgressEntry
from sessions.domain.session import (
    EXPIRY_REASON,
    MAX_FAIL_REASON,
    Session,
    visible_status,
)

USERS_CREATED = (
    ProgressEntry(RelatedObjectType.USER, (ChangeCount(ChangeType.CREATE, 3, 1),)),
)
MICRO = timedelta(microseconds=1)


def report(session: Session, now, entries=USERS_CREATED, **kw) -> None:
    kw.setdefault("principal", AGENT)
    session.report_progress(entries, now=now, policy=POLICY, **kw)


def heartbeat(session: Session, now, **kw) -> None:
    kw.setdefault("principal", AGENT)
    session.heartbeat(now=now, policy=POLICY, **kw)


def close(session: Session, now, *, failed=False, fail_reason="", **kw) -> bool:
    kw.setdefault("principal", AGENT)
    return session.close(failed=failed, fail_reason=fail_reason, now=now, **kw)


def completed(now: datetime | None = None) -> Session:
    now = now or at(60)
    s = open_session()
    assert close(s, now)
    return s


def failed(now: datetime | None = None) -> Session:
    now = now or at(60)
    s = open_session()
    assert close(s, now, failed=True, fail_reason="ldap unreachable")
    return s


def expired() -> Session:
    s = open_session()
    assert s.expire(now=T0 + TTL, principal="system:deadline")
    return s


FINAL = {
    SessionStatus.COMPLETED: completed,
    SessionStatus.FAILED: failed,
    SessionStatus.EXPIRED: expired,
}


def pending(s: Session | None = None) -> Session:
    s = s or open_session()
    assert s.stall(now=T0 + GRACE, policy=POLICY, principal="system:deadline")
    assert s.status is SessionStatus.PENDING
    return s


# --- open ------------------------------------------------------------------------


def test_open_starts_opened_with_expiry_one_ttl_ahead():
    s = open_session()
    assert s.id == "ses00000000000000001"
    assert s.status is SessionStatus.OPENED
    assert s.subject_container_id == "container-1"
    assert s.agent_id == "agent-1"
    assert s.session_type is SessionType.AD_SYNC
    assert s.sync_mode is SyncMode.FULL_SYNC
    assert s.created_at == T0
    assert s.expires_at == T0 + TTL
    assert s.last_seen_at == T0
    assert s.closed_at is None
    assert s.fail_reason == ""
    assert s.progress == ()
    assert s.version == 1


def test_open_records_session_opened_with_everything_the_spec_lists():
    s = open_session(principal="agent:beta", idempotency_key="key-open")
    [e] = s.collect_events()
    assert type(e).__name__ == "SessionOpened"
    assert e.originator_id == s.id
    assert e.subject_container_id == "container-1"
    assert e.agent_id == "agent-1"
    assert e.session_type is SessionType.AD_SYNC
    assert e.sync_mode is SyncMode.FULL_SYNC
    assert e.expires_at == T0 + TTL
    assert e.timestamp == T0  # created_at is the event's time
    assert e.principal == "agent:beta"
    assert e.idempotency_key == "key-open"


# --- heartbeat and progress move expires_at forward ----------------------------------


def test_heartbeat_moves_expiry_to_now_plus_ttl():
    s = open_session()
    heartbeat(s, at(30))
    assert s.expires_at == at(30) + TTL
    assert s.last_seen_at == at(30)
    assert s.status is SessionStatus.OPENED
    [_, e] = s.collect_events()
    assert type(e).__name__ == "HeartbeatReceived"
    assert e.expires_at == at(30) + TTL


def test_progress_moves_expiry_to_now_plus_ttl_and_folds_counts():
    s = open_session()
    report(s, at(45))
    assert s.expires_at == at(45) + TTL
    assert s.last_seen_at == at(45)
    assert s.progress == USERS_CREATED
    [_, e] = s.collect_events()
    assert type(e).__name__ == "ProgressReported"
    assert e.expires_at == at(45) + TTL
    assert tuple(e.entries) == USERS_CREATED


def test_expiry_keeps_moving_with_each_signal():
    s = open_session()
    for seconds in (100, 400, 550, 1000):  # each before the previous expiry
        heartbeat(s, at(seconds))
        assert s.expires_at == at(seconds) + TTL
    report(s, at(1500))
    assert s.expires_at == at(1500) + TTL
    # The session outlived its first TTL several times over.
    assert s.expires_at > T0 + 2 * TTL


@pytest.mark.parametrize("signal", ["heartbeat", "progress"])
def test_expiry_never_moves_backward_on_an_earlier_now(signal):
    s = open_session()
    heartbeat(s, at(300))
    expiry = s.expires_at
    # A request whose time lies before the last one (e.g. a skewed replica).
    if signal == "heartbeat":
        heartbeat(s, at(100))
    else:
        report(s, at(100))
    assert s.expires_at == expiry
    assert s.collect_events()[-1].expires_at == expiry


@pytest.mark.parametrize("outcome", [False, True])
def test_close_does_not_move_expiry(outcome):
    s = open_session()
    heartbeat(s, at(200))
    close(s, at(201), failed=outcome, fail_reason="x" if outcome else "")
    assert s.expires_at == at(200) + TTL


# --- stall ---------------------------------------------------------------------


def test_no_stall_before_the_heartbeat_grace():
    s = open_session()
    assert not s.is_due_to_stall(T0 + GRACE - MICRO, POLICY)
    assert s.stall(now=T0 + GRACE - MICRO, policy=POLICY, principal="system") is False
    assert s.status is SessionStatus.OPENED
    assert len(s.collect_events()) == 1


def test_stall_at_the_grace_makes_the_session_pending():
    s = open_session()
    assert s.stall(now=T0 + GRACE, policy=POLICY, principal="system:deadline") is True
    assert s.status is SessionStatus.PENDING
    assert s.status_at(T0 + GRACE) is SessionStatus.PENDING
    [_, e] = s.collect_events()
    assert type(e).__name__ == "SessionStalled"
    assert e.timestamp == T0 + GRACE
    assert e.principal == "system:deadline"
    assert e.idempotency_key == ""


def test_stall_grace_counts_from_the_last_signal():
    s = open_session()
    heartbeat(s, at(90))
    assert s.stall(now=at(90) + GRACE - MICRO, policy=POLICY, principal="sys") is False
    assert s.stall(now=at(90) + GRACE, policy=POLICY, principal="sys") is True


def test_a_pending_session_does_not_stall_again():
    s = pending()
    s.collect_events()
    assert s.stall(now=T0 + GRACE + timedelta(seconds=30), policy=POLICY, principal="s") is False
    assert s.collect_events() == []


def test_a_session_due_to_expire_does_not_stall():
    s = open_session()
    assert not s.is_due_to_stall(T0 + TTL, POLICY)
    assert s.stall(now=T0 + TTL, policy=POLICY, principal="s") is False
    assert s.status is SessionStatus.OPENED


@pytest.mark.parametrize("status", list(FINAL))
def test_a_closed_session_does_not_stall(status):
    s = FINAL[status]()
    s.collect_events()
    assert s.stall(now=at(60) + GRACE, policy=POLICY, principal="s") is False
    assert s.status is status
    assert s.collect_events() == []


def test_heartbeat_brings_a_pending_session_back_to_opened():
    s = pending()
    heartbeat(s, T0 + GRACE + timedelta(seconds=1))
    assert s.status is SessionStatus.OPENED
    assert s.expires_at == T0 + GRACE + timedelta(seconds=1) + TTL


def test_progress_brings_a_pending_session_back_to_opened():
    s = pending()
    report(s, T0 + GRACE + timedelta(seconds=1))
    assert s.status is SessionStatus.OPENED
    assert s.progress == USERS_CREATED
    assert s.expires_at == T0 + GRACE + timedelta(seconds=1) + TTL


def test_a_session_can_stall_again_after_coming_back():
    s = pending()
    heartbeat(s, at(200))
    assert s.stall(now=at(200) + GRACE, policy=POLICY, principal="s") is True
    assert s.status is SessionStatus.PENDING


def test_a_pending_session_is_still_active_and_may_be_closed():
    s = pending()
    assert close(s, T0 + GRACE + MICRO) is True
    assert s.status is SessionStatus.COMPLETED


# --- close ---------------------------------------------------------------------


def test_complete_sets_closed_at_and_no_fail_reason():
    s = open_session()
    heartbeat(s, at(10))
    assert close(s, at(20), principal="agent:c", idempotency_key="close-1") is True
    assert s.status is SessionStatus.COMPLETED
    assert s.closed_at == at(20)
    assert s.fail_reason == ""
    e = s.collect_events()[-1]
    assert type(e).__name__ == "SessionCompleted"
    assert e.closed_at == at(20)
    assert (e.principal, e.idempotency_key, e.timestamp) == ("agent:c", "close-1", at(20))


def test_a_reason_given_with_a_successful_close_is_refused():
    # fail_reason is set only by SessionFailed (or an expiry): one given with
    # a successful close would be dropped, so the close is refused instead.
    s = open_session()
    with pytest.raises(InvalidArgument) as refused:
        close(s, at(20), failed=False, fail_reason="should be ignored")
    assert refused.value.field == "fail_reason"
    assert s.status is SessionStatus.OPENED
    assert close(s, at(20), failed=False, fail_reason="")
    assert s.fail_reason == ""


def test_a_failed_close_needs_no_reason_and_a_repeat_cannot_change_it():
    s = open_session()
    assert close(s, at(20), failed=True, fail_reason="")
    assert (s.status, s.fail_reason) == (SessionStatus.FAILED, "")
    assert close(s, at(21), failed=True, fail_reason="") is False
    with pytest.raises(StateConflict):
        close(s, at(22), failed=True, fail_reason="later")
    assert s.fail_reason == ""


def test_fail_sets_closed_at_and_the_reason():
    s = open_session()
    assert close(s, at(20), failed=True, fail_reason="LDAP bind failed") is True
    assert s.status is SessionStatus.FAILED
    assert s.closed_at == at(20)
    assert s.fail_reason == "LDAP bind failed"
    e = s.collect_events()[-1]
    assert type(e).__name__ == "SessionFailed"
    assert (e.closed_at, e.fail_reason) == (at(20), "LDAP bind failed")


def test_fail_reason_of_exactly_the_limit_is_accepted():
    s = open_session()
    reason = "r" * MAX_FAIL_REASON
    assert MAX_FAIL_REASON == 256
    assert close(s, at(1), failed=True, fail_reason=reason)
    assert s.fail_reason == reason


@pytest.mark.parametrize("failed_flag", [True, False])
def test_fail_reason_over_the_limit_is_invalid_and_records_nothing(failed_flag):
    s = open_session()
    s.collect_events()
    before = state(s)
    with pytest.raises(InvalidArgument) as err:
        close(s, at(1), failed=failed_flag, fail_reason="r" * 257)
    assert err.value.field == "fail_reason"
    assert s.collect_events() == []
    assert state(s) == before


@pytest.mark.parametrize("failed_flag", [False, True])
def test_repeating_a_close_with_the_same_outcome_records_nothing(failed_flag):
    s = open_session()
    assert close(s, at(20), failed=failed_flag, fail_reason="boom" if failed_flag else "")
    s.collect_events()
    before = state(s)
    again = close(
        s, at(30), failed=failed_flag, fail_reason="boom" if failed_flag else "",
        idempotency_key="retry",
    )
    assert again is False
    assert s.collect_events() == []
    assert state(s) == before
    assert s.closed_at == at(20)


def test_repeating_a_close_is_idempotent_even_after_expires_at():
    s = completed(at(20))
    s.collect_events()
    assert close(s, T0 + TTL + timedelta(hours=1)) is False
    assert s.collect_events() == []
    assert s.status is SessionStatus.COMPLETED


@pytest.mark.parametrize(
    ("first", "second"),
    [(SessionStatus.COMPLETED, True), (SessionStatus.FAILED, False)],
)
def test_a_close_with_the_other_outcome_is_a_conflict(first, second):
    s = FINAL[first]()
    s.collect_events()
    before = state(s)
    with pytest.raises(StateConflict):
        close(s, at(61), failed=second, fail_reason="late" if second else "")
    assert s.collect_events() == []
    assert state(s) == before


@pytest.mark.parametrize("failed_flag", [False, True])
def test_closing_an_expired_session_is_a_conflict(failed_flag):
    s = expired()
    s.collect_events()
    with pytest.raises(StateConflict):
        close(s, T0 + TTL + MICRO, failed=failed_flag, fail_reason="x" if failed_flag else "")
    assert s.collect_events() == []
    assert s.status is SessionStatus.EXPIRED


# --- final states refuse everything else ------------------------------------------


@pytest.mark.parametrize("status", list(FINAL))
@pytest.mark.parametrize("action", ["heartbeat", "progress"])
def test_final_sessions_refuse_signals(status, action):
    s = FINAL[status]()
    s.collect_events()
    before = state(s)
    now = at(61)  # still before the original expires_at for COMPLETED/FAILED
    with pytest.raises(StateConflict):
        if action == "heartbeat":
            heartbeat(s, now)
        else:
            report(s, now)
    assert s.collect_events() == []
    assert state(s) == before
    assert s.status is status


# --- nothing is accepted at or after expires_at ----------------------------------


@pytest.mark.parametrize("late", [timedelta(0), timedelta(microseconds=1), timedelta(days=3)])
@pytest.mark.parametrize("action", ["heartbeat", "progress", "complete", "fail"])
@pytest.mark.parametrize("make", [open_session, pending], ids=["opened", "pending"])
def test_actions_at_or_after_expires_at_are_conflicts(make, action, late):
    s = make()
    s.collect_events()
    before = state(s)
    now = s.expires_at + late
    with pytest.raises(StateConflict):
        if action == "heartbeat":
            heartbeat(s, now)
        elif action == "progress":
            report(s, now)
        else:
            close(s, now, failed=action == "fail", fail_reason="late" if action == "fail" else "")
    assert s.collect_events() == []
    assert state(s) == before


def test_actions_just_before_expires_at_are_accepted():
    s = open_session()
    heartbeat(s, s.expires_at - MICRO)
    assert s.expires_at == T0 + TTL - MICRO + TTL


# --- expiry --------------------------------------------------------------------


def test_expire_before_expires_at_records_nothing():
    s = open_session()
    s.collect_events()
    assert not s.is_due_to_expire(T0 + TTL - MICRO)
    assert s.expire(now=T0 + TTL - MICRO, principal="system") is False
    assert s.status is SessionStatus.OPENED
    assert s.collect_events() == []


@pytest.mark.parametrize("make", [open_session, pending], ids=["opened", "pending"])
def test_expire_closes_at_expires_at_with_a_reason(make):
    s = make()
    heartbeat_at = T0 + GRACE + timedelta(seconds=5)
    heartbeat(s, heartbeat_at)
    deadline = heartbeat_at + TTL
    late = deadline + timedelta(minutes=7)  # the deadline process runs late
    assert s.expire(now=late, principal="system:deadline") is True
    assert s.status is SessionStatus.EXPIRED
    assert s.closed_at == deadline  # not the time the expiry was noticed
    assert s.expires_at == deadline
    assert s.fail_reason == EXPIRY_REASON
    assert s.fail_reason
    e = s.collect_events()[-1]
    assert type(e).__name__ == "SessionExpired"
    assert e.closed_at == deadline
    assert e.timestamp == late  # recorded when it happened
    assert e.principal == "system:deadline"
    assert e.idempotency_key == ""


def test_expire_happens_once():
    s = expired()
    s.collect_events()
    assert s.expire(now=T0 + 2 * TTL, principal="system") is False
    assert s.collect_events() == []


@pytest.mark.parametrize("status", [SessionStatus.COMPLETED, SessionStatus.FAILED])
def test_closed_sessions_do_not_expire(status):
    s = FINAL[status]()
    s.collect_events()
    assert s.expire(now=T0 + 5 * TTL, principal="system") is False
    assert s.status is status
    assert s.collect_events() == []


# --- status_at -------------------------------------------------------------------


@pytest.mark.parametrize("make", [open_session, pending], ids=["opened", "pending"])
def test_status_at_is_never_active_from_expires_at_on(make):
    s = make()
    active = s.status
    assert active.is_active
    assert s.status_at(s.expires_at - MICRO) is active
    for offset in (timedelta(0), MICRO, timedelta(seconds=1), timedelta(days=365)):
        assert s.status_at(s.expires_at + offset) is SessionStatus.EXPIRED
    # status_at is a view: it records nothing and changes nothing.
    assert s.status is active


@pytest.mark.parametrize("status", list(FINAL))
def test_status_at_of_a_closed_session_is_its_final_status(status):
    s = FINAL[status]()
    for now in (at(61), s.expires_at, s.expires_at + timedelta(days=1)):
        assert s.status_at(now) is status


@pytest.mark.parametrize("status", list(SessionStatus))
def test_visible_status_hides_active_states_from_expires_at_on(status):
    deadline = T0 + TTL
    assert visible_status(status, deadline, deadline - MICRO) is status
    for now in (deadline, deadline + timedelta(days=1)):
        shown = visible_status(status, deadline, now)
        assert shown is (SessionStatus.EXPIRED if status.is_active else status)


# --- the audit trail -------------------------------------------------------------


def lifecycle(final: str) -> tuple[Session, list]:
    """A session through every kind of event; the events, as recorded."""
    s = open_session(principal="agent:a", idempotency_key="k-open")
    report(s, at(10), principal="agent:a", idempotency_key="k-rep-1")
    heartbeat(s, at(20), principal="agent:a", idempotency_key="k-hb-1")
    assert s.stall(now=at(20) + GRACE, policy=POLICY, principal="system:deadline")
    report(
        s,
        at(200),
        entries=(
            ProgressEntry(RelatedObjectType.GROUP, (ChangeCount(ChangeType.UPDATE, 7, 0),)),
            ProgressEntry(RelatedObjectType.USER, (ChangeCount(ChangeType.CREATE, 1, 1),)),
        ),
        principal="agent:a",
        idempotency_key="k-rep-2",
    )
    if final == "complete":
        close(s, at(300), principal="agent:a", idempotency_key="k-close")
    elif final == "fail":
        close(s, at(300), failed=True, fail_reason="disk full", principal="agent:a",
              idempotency_key="k-close")
    else:
        assert s.expire(now=at(200) + TTL + timedelta(seconds=9), principal="system:deadline")
    return s, s.collect_events()


@pytest.mark.parametrize("final", ["complete", "fail", "expire"])
def test_every_event_says_who_when_and_under_which_key(final):
    _, events = lifecycle(final)
    last_at = at(300) if final != "expire" else at(200) + TTL + timedelta(seconds=9)
    expected = [
        ("SessionOpened", "agent:a", "k-open", T0),
        ("ProgressReported", "agent:a", "k-rep-1", at(10)),
        ("HeartbeatReceived", "agent:a", "k-hb-1", at(20)),
        ("SessionStalled", "system:deadline", "", at(20) + GRACE),
        ("ProgressReported", "agent:a", "k-rep-2", at(200)),
        {
            "complete": ("SessionCompleted", "agent:a", "k-close", last_at),
            "fail": ("SessionFailed", "agent:a", "k-close", last_at),
            "expire": ("SessionExpired", "system:deadline", "", last_at),
        }[final],
    ]
    assert [
        (type(e).__name__, e.principal, e.idempotency_key, e.timestamp) for e in events
    ] == expected
    assert [e.originator_version for e in events] == list(range(1, 7))


@pytest.mark.parametrize("final", ["complete", "fail", "expire"])
def test_replaying_the_events_yields_an_equal_session(final):
    original, events = lifecycle(final)
    replayed = events[0].mutate(None)
    for e in events[1:]:
        replayed = e.mutate(replayed)
    assert replayed is not None
    assert state(replayed) == state(original)
    assert replayed == original  # the library's equality: type and whole state


def test_replaying_each_prefix_yields_the_state_at_that_point():
    s = open_session()
    snapshots = [state(s)]
    report(s, at(10))
    snapshots.append(state(s))
    heartbeat(s, at(20))
    snapshots.append(state(s))
    s.stall(now=at(20) + GRACE, policy=POLICY, principal="sys")
    snapshots.append(state(s))
    close(s, at(400), failed=True, fail_reason="why")
    snapshots.append(state(s))
    events = s.collect_events()
    assert len(events) == len(snapshots)
    agg = None
    for event, expected in zip(events, snapshots, strict=True):
        agg = event.mutate(agg)
        assert state(agg) == expected
