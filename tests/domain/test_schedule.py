"""The SyncSchedule aggregate (OpenSession's rules) and the Policy that tunes it."""

from __future__ import annotations

from copy import deepcopy
from datetime import timedelta

import pytest
from domain_support import POLICY, T0, at, state

from sessions.domain.enums import OpenResult, SessionStatus, SessionType, SyncMode
from sessions.domain.policy import Policy
from sessions.domain.schedule import Opened, StaleState, SyncSchedule, schedule_id
from sessions.domain.session import EXPIRY_REASON, SYSTEM_PRINCIPAL, Session

INTERVAL = POLICY.sync_interval
PERIOD = POLICY.full_sync_period
MICRO = timedelta(microseconds=1)


def fresh(now=T0) -> SyncSchedule:
    return SyncSchedule.start("container-1", SessionType.AD_SYNC, now=now, principal="agent:a")


def started(schedule: SyncSchedule, session_id: str, mode: SyncMode, now) -> None:
    schedule.session_started(
        session_id=session_id,
        sync_mode=mode,
        principal="agent:a",
        idempotency_key="",
        timestamp=now,
    )


def ended(schedule: SyncSchedule, session_id: str, outcome: SessionStatus, ended_at) -> None:
    schedule.session_ended(
        session_id=session_id,
        outcome=outcome,
        ended_at=ended_at,
        final_link="00" * 32,
        principal="agent:a",
        idempotency_key="",
        timestamp=ended_at,
    )


def open_(schedule: SyncSchedule, now, running: Session | None = None, policy=POLICY, sid="ses-new") -> Opened:
    return schedule.open_session(
        running, session_id=sid, agent_id="agent-a", now=now, policy=policy, principal="agent:a"
    )


def decide(schedule: SyncSchedule, now, running: Session | None = None, policy=POLICY) -> Opened:
    """What the schedule would answer at ``now``, leaving it as it is."""
    return open_(deepcopy(schedule), now, deepcopy(running), policy)


def run(schedule: SyncSchedule, session_id: str, outcome: SessionStatus, start, end) -> SyncMode:
    """Open a session as the schedule decides it, and end it."""
    opened = open_(schedule, start, sid=session_id)
    assert opened.result is OpenResult.SUCCESS, opened
    assert opened.session is not None
    ended(schedule, session_id, outcome, end)
    return opened.session.sync_mode


def mode_at(schedule: SyncSchedule, now) -> SyncMode | None:
    opened = decide(schedule, now)
    assert opened.result is OpenResult.SUCCESS, opened
    assert opened.session is not None
    return opened.session.sync_mode


# --- ids and start ---------------------------------------------------------------


def test_schedule_id_is_per_container_and_type():
    a = schedule_id("container-1", SessionType.AD_SYNC)
    assert a == schedule_id("container-1", SessionType.AD_SYNC)
    assert a != schedule_id("container-1", SessionType.LDAP_SYNC)
    assert a != schedule_id("container-2", SessionType.AD_SYNC)
    # container ids containing the separator do not collide with other types
    assert schedule_id("x:AD_SYNC", SessionType.LDAP_SYNC) != schedule_id("x", SessionType.AD_SYNC)


def test_start_names_the_stream_and_records_who_started_it():
    s = SyncSchedule.start(
        "container-9", SessionType.AD_PASSWORD_HASH, now=at(3), principal="agent:z",
        idempotency_key="k",
    )
    assert s.id == schedule_id("container-9", SessionType.AD_PASSWORD_HASH)
    assert s.subject_container_id == "container-9"
    assert s.session_type is SessionType.AD_PASSWORD_HASH
    assert s.active_session_id is None
    assert s.last_ended_at is None
    [e] = s.collect_events()
    assert (e.principal, e.idempotency_key, e.timestamp) == ("agent:z", "k", at(3))


# --- open_session ------------------------------------------------------------------


def test_a_fresh_schedule_opens_a_full_sync_session_and_records_it():
    s = fresh()
    s.collect_events()
    opened = open_(s, at(2), sid="ses-1")
    assert opened.result is OpenResult.SUCCESS
    session = opened.session
    assert session is not None
    assert (session.id, session.agent_id, session.subject_container_id) == ("ses-1", "agent-a", "container-1")
    assert (session.session_type, session.sync_mode) == (SessionType.AD_SYNC, SyncMode.FULL_SYNC)
    assert session.created_at == at(2)
    assert session.expires_at == at(2) + POLICY.session_ttl
    assert s.active_session_id == "ses-1"
    assert [type(e).__name__ for e in s.collect_events()] == ["SessionStarted"]


def running_session(s: SyncSchedule, now=T0) -> Session:
    opened = open_(s, now, sid="ses-1")
    assert opened.session is not None
    return opened.session


def test_a_running_session_blocks_a_second_one_until_it_expires():
    s = fresh()
    running = running_session(s)
    s.collect_events()
    for now in (T0, at(1), T0 + POLICY.session_ttl - MICRO):
        opened = open_(s, now, running)
        assert opened == Opened(OpenResult.OPENED_SESSION_EXISTS, session=running)
    assert s.collect_events() == [] and running.collect_events()[1:] == []


def test_a_running_session_past_its_expiry_is_expired_and_ended_first():
    s = fresh()
    running = running_session(s)
    running.collect_events()
    now = T0 + POLICY.session_ttl + INTERVAL
    opened = open_(s, now, running, sid="ses-2")
    assert running.status is SessionStatus.EXPIRED
    assert running.fail_reason == EXPIRY_REASON
    [expired] = running.collect_events()
    assert expired.principal == SYSTEM_PRINCIPAL
    assert s.last_ended_at == running.expires_at
    # ended at expires_at: the interval counts from there
    assert opened.result is OpenResult.SUCCESS
    assert opened.session is not None and opened.session.id == "ses-2"
    assert s.active_session_id == "ses-2"


def test_a_running_session_that_expired_inside_the_interval_answers_too_early():
    s = fresh()
    running = running_session(s)
    now = T0 + POLICY.session_ttl + INTERVAL - MICRO
    opened = open_(s, now, running)
    assert running.status is SessionStatus.EXPIRED
    assert opened == Opened(OpenResult.TOO_EARLY, next_session_at=T0 + POLICY.session_ttl + INTERVAL)


def test_a_schedule_naming_an_ended_session_was_read_stale():
    s = fresh()
    running = running_session(s)
    running.close(failed=False, fail_reason="", now=at(1), principal="agent:a")
    with pytest.raises(StaleState):
        open_(s, at(2), running)


def test_the_running_session_must_be_given():
    s = fresh()
    running_session(s)
    with pytest.raises(ValueError):
        open_(s, at(1), None)


@pytest.mark.parametrize(
    "outcome", [SessionStatus.COMPLETED, SessionStatus.FAILED, SessionStatus.EXPIRED]
)
def test_too_early_until_the_interval_after_the_last_end(outcome):
    s = fresh()
    started(s, "ses-1", SyncMode.FULL_SYNC, T0)
    ended(s, "ses-1", outcome, at(100))
    assert s.active_session_id is None
    for now in (at(100), at(100) + INTERVAL - MICRO):
        assert decide(s, now) == Opened(OpenResult.TOO_EARLY, next_session_at=at(100) + INTERVAL)
    assert decide(s, at(100) + INTERVAL).result is OpenResult.SUCCESS


def test_too_early_counts_from_the_end_not_the_start():
    s = fresh()
    started(s, "ses-1", SyncMode.FULL_SYNC, T0)
    ended(s, "ses-1", SessionStatus.COMPLETED, T0 + timedelta(hours=2))
    decision = decide(s, T0 + timedelta(hours=2, seconds=1))
    assert decision.result is OpenResult.TOO_EARLY
    assert decision.next_session_at == T0 + timedelta(hours=2) + INTERVAL


def test_no_interval_means_never_too_early():
    policy = Policy(sync_interval=timedelta(0))
    s = fresh()
    started(s, "ses-1", SyncMode.FULL_SYNC, T0)
    ended(s, "ses-1", SessionStatus.COMPLETED, at(5))
    assert decide(s, at(5), policy=policy).result is OpenResult.SUCCESS


def test_delta_after_a_completed_full_sync_within_the_period():
    s = fresh()
    assert run(s, "ses-1", SessionStatus.COMPLETED, T0, at(60)) is SyncMode.FULL_SYNC
    assert s.last_full_sync_completed_at == at(60)
    assert mode_at(s, at(60) + INTERVAL) is SyncMode.DELTA
    assert mode_at(s, at(60) + PERIOD - MICRO) is SyncMode.DELTA


def test_deltas_keep_following_while_the_full_sync_is_recent():
    s = fresh()
    run(s, "ses-1", SessionStatus.COMPLETED, T0, at(60))
    t = at(60)
    for n in range(2, 6):
        start = t + INTERVAL
        t = start + timedelta(minutes=5)
        assert run(s, f"ses-{n}", SessionStatus.COMPLETED, start, t) is SyncMode.DELTA
    # completed deltas do not refresh the full-sync clock
    assert s.last_full_sync_completed_at == at(60)


def test_full_sync_again_once_the_period_has_passed():
    s = fresh()
    run(s, "ses-1", SessionStatus.COMPLETED, T0, at(60))
    # a delta in between does not count as a full sync
    assert run(s, "ses-2", SessionStatus.COMPLETED, at(200), at(300)) is SyncMode.DELTA
    # "older than the full-sync period" (the exact boundary is left open by the spec)
    assert mode_at(s, at(60) + PERIOD + MICRO) is SyncMode.FULL_SYNC
    assert mode_at(s, at(60) + PERIOD + timedelta(days=3)) is SyncMode.FULL_SYNC


def test_the_new_full_sync_restarts_the_period():
    s = fresh()
    run(s, "ses-1", SessionStatus.COMPLETED, T0, at(60))
    second_end = at(60) + PERIOD + timedelta(minutes=30)
    mode = run(s, "ses-2", SessionStatus.COMPLETED, at(60) + PERIOD, second_end)
    assert mode is SyncMode.FULL_SYNC
    assert mode_at(s, second_end + INTERVAL) is SyncMode.DELTA


@pytest.mark.parametrize("outcome", [SessionStatus.FAILED, SessionStatus.EXPIRED])
@pytest.mark.parametrize("previous_mode", [SyncMode.FULL_SYNC, SyncMode.DELTA])
def test_full_sync_after_a_failed_or_expired_previous_session(outcome, previous_mode):
    s = fresh()
    run(s, "ses-1", SessionStatus.COMPLETED, T0, at(60))  # a recent full sync exists
    if previous_mode is SyncMode.DELTA:
        assert run(s, "ses-2", outcome, at(200), at(300)) is SyncMode.DELTA
    else:
        # the previous session itself was a full sync that did not complete
        started(s, "ses-2", SyncMode.FULL_SYNC, at(200))
        ended(s, "ses-2", outcome, at(300))
    assert s.last_outcome is outcome
    assert mode_at(s, at(300) + INTERVAL) is SyncMode.FULL_SYNC


def test_a_completed_full_sync_after_a_failure_allows_deltas_again():
    s = fresh()
    run(s, "ses-1", SessionStatus.COMPLETED, T0, at(60))
    run(s, "ses-2", SessionStatus.FAILED, at(200), at(300))
    assert run(s, "ses-3", SessionStatus.COMPLETED, at(400), at(500)) is SyncMode.FULL_SYNC
    assert s.last_full_sync_completed_at == at(500)
    assert mode_at(s, at(500) + INTERVAL) is SyncMode.DELTA


@pytest.mark.parametrize("outcome", [SessionStatus.FAILED, SessionStatus.EXPIRED])
def test_a_full_sync_that_did_not_complete_is_not_a_completed_full_sync(outcome):
    s = fresh()
    assert run(s, "ses-1", outcome, T0, at(60)) is SyncMode.FULL_SYNC
    assert s.last_full_sync_completed_at is None
    assert mode_at(s, at(60) + INTERVAL) is SyncMode.FULL_SYNC


def test_a_completed_delta_without_any_full_sync_still_leads_to_a_full_sync():
    s = fresh()
    started(s, "ses-1", SyncMode.DELTA, T0)
    ended(s, "ses-1", SessionStatus.COMPLETED, at(60))
    assert s.last_full_sync_completed_at is None
    assert mode_at(s, at(60) + INTERVAL) is SyncMode.FULL_SYNC


def test_the_schedule_replays_to_an_equal_state():
    s = fresh()
    run(s, "ses-1", SessionStatus.COMPLETED, T0, at(60))
    run(s, "ses-2", SessionStatus.EXPIRED, at(200), at(800))
    started(s, "ses-3", SyncMode.FULL_SYNC, at(900))
    events = s.collect_events()
    assert [type(e).__name__ for e in events] == [
        "ScheduleStarted",
        "SessionStarted", "SessionEnded",
        "SessionStarted", "SessionEnded",
        "SessionStarted",
    ]
    replayed = None
    for e in events:
        replayed = e.mutate(replayed)
    assert state(replayed) == state(s)
    assert replayed.active_session_id == s.active_session_id == "ses-3"
    ended(s, "ses-3", SessionStatus.COMPLETED, at(950))
    ended(replayed, "ses-3", SessionStatus.COMPLETED, at(950))
    assert decide(replayed, at(2000)) == decide(s, at(2000))


# --- policy ----------------------------------------------------------------------


def test_default_policy_is_valid_and_sensible():
    p = Policy()
    assert p.session_ttl > p.heartbeat_grace > timedelta(0)
    assert p.sync_interval >= timedelta(0)
    assert p.full_sync_period > timedelta(0)


@pytest.mark.parametrize("name", ["session_ttl", "heartbeat_grace", "full_sync_period"])
@pytest.mark.parametrize("value", [timedelta(0), timedelta(seconds=-1)])
def test_non_positive_durations_are_refused(name, value):
    with pytest.raises(ValueError, match=name):
        Policy(**{name: value})


def test_a_negative_interval_is_refused_but_zero_is_allowed():
    with pytest.raises(ValueError, match="sync_interval"):
        Policy(sync_interval=timedelta(seconds=-1))
    assert Policy(sync_interval=timedelta(0)).sync_interval == timedelta(0)


@pytest.mark.parametrize("grace", [timedelta(minutes=5), timedelta(minutes=6)])
def test_grace_must_be_shorter_than_ttl(grace):
    with pytest.raises(ValueError, match="heartbeat_grace"):
        Policy(session_ttl=timedelta(minutes=5), heartbeat_grace=grace)
    shorter = timedelta(minutes=5) - timedelta(microseconds=1)
    ok = Policy(session_ttl=timedelta(minutes=5), heartbeat_grace=shorter)
    assert ok.heartbeat_grace == shorter


def test_from_seconds_keeps_defaults_for_what_is_not_given():
    p = Policy.from_seconds(session_ttl=30, heartbeat_grace=5.5)
    assert p.session_ttl == timedelta(seconds=30)
    assert p.heartbeat_grace == timedelta(seconds=5.5)
    assert p.sync_interval == Policy().sync_interval
    assert p.full_sync_period == Policy().full_sync_period
    with pytest.raises(ValueError):
        Policy.from_seconds(session_ttl=5, heartbeat_grace=5)


def test_describe_names_every_setting_in_seconds():
    text = Policy.from_seconds(session_ttl=600, heartbeat_grace=120, sync_interval=0,
                               full_sync_period=86400).describe()
    assert text == (
        "session_ttl=600s, heartbeat_grace=120s, sync_interval=0s, full_sync_period=86400s"
    )
