"""Poison events: an event of a session's stream that the fold cannot apply
is parked with its error, the stream's later events wait behind it (parked
too), every other stream goes on; status shows the parked events; once the
stored event is repaired, retry-parked applies them all and the read model
verifies."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from eventsourcing.persistence import StoredEvent

from sessions.projection.parked import RetryResult, retry_parked
from sessions.projection.projector import Projector
from sessions.projection.row_tables import open_rows
from sessions.projection.rows import SessionRows
from sessions.projection.status import read_model_status
from sessions.projection.verify import differences
from sessions.store.application import SessionsApplication
from sessions.wire import session_bytes
from tests.projection.projection_support import POLICY, PRINCIPAL, Workload, head

from .ops_support import described, sessions_command, sql

WAITS = "waits for an earlier parked event of its stream"


def _unparseable(state: bytes) -> bytes:
    return state[: len(state) // 2]  # cut in the middle: not JSON any more


def _fields_missing(state: bytes) -> bytes:
    decoded = json.loads(state)
    del decoded["entries"]
    return json.dumps(decoded).encode()


def next_events(store_url: str, apps, workload: Workload, session_id: str) -> list[StoredEvent]:  # type: ignore[no-untyped-def]
    """The session's next two events, as the application would store them
    (a progress report, then a heartbeat), made but not saved."""
    maker: SessionsApplication = apps(store_url)
    session = maker.get_session(session_id)
    session.report_progress(
        workload._entries(session_id), now=workload.clock.advance(seconds=1), policy=POLICY, principal=PRINCIPAL
    )
    session.heartbeat(now=workload.clock.advance(seconds=1), policy=POLICY, principal=PRINCIPAL)
    return [maker.mapper.to_stored_event(e) for e in session.collect_events()]


@dataclass
class Poisoned:
    app: SessionsApplication
    workload: Workload
    view: SessionRows
    projector: Projector
    session_id: str  # the poisoned session
    version: int  # its version before the poison
    good: list[StoredEvent]  # what its next two events should have been
    poison_at: int  # the poison's position; the next event of the stream follows it
    others: list[str]  # sessions written after the poison


def poisoned_store(store_url: str, apps, spoil: Callable[[bytes], bytes]) -> Poisoned:  # type: ignore[no-untyped-def]
    """A caught-up read model; then, in the log, a spoiled progress report of
    one session followed by a good heartbeat of it, then writes to every
    other session and a new one; then the projector catches up."""
    app = apps(store_url)
    workload = Workload(app)
    workload.run(150, containers=4)
    view = open_rows(app)
    projector = Projector(app, view, batch_size=40)
    projector.catch_up()

    poisoned, *others = workload.open_ids
    version = app.get_session(poisoned).version
    good = next_events(store_url, apps, workload, poisoned)
    assert [e.originator_version for e in good] == [version + 1, version + 2]
    assert good[0].topic == "sessions.ProgressReported"
    app.recorder.insert_events(
        [StoredEvent(poisoned, version + 1, good[0].topic, spoil(good[0].state)), good[1]]
    )
    poison_at = head(app) - 1
    for session_id in others:
        workload.report(session_id)
    others.append(workload.open("container-after-the-poison"))
    projector.catch_up()
    return Poisoned(app, workload, view, projector, poisoned, version, good, poison_at, others)


SPOILS = pytest.mark.parametrize("spoil", [_unparseable, _fields_missing], ids=["unparseable-json", "fields-missing"])


@SPOILS
def test_poison_event_is_parked_and_every_other_stream_goes_on(
    store_url, apps, caplog, spoil: Callable[[bytes], bytes]
) -> None:  # type: ignore[no-untyped-def]
    with caplog.at_level(logging.ERROR, logger="sessions.projection.projector"):
        p = poisoned_store(store_url, apps, spoil)
    app, view = p.app, p.view
    assert p.projector.position == view.position() == head(app)

    parked = view.parked()
    assert [(e.position, e.stream, e.version, e.topic) for e in parked] == [
        (p.poison_at, p.session_id, p.version + 1, p.good[0].topic),
        (p.poison_at + 1, p.session_id, p.version + 2, p.good[1].topic),
    ]
    assert parked[0].error and parked[0].error != WAITS
    assert parked[1].error == WAITS
    assert any(f"parked event {p.poison_at} " in r.getMessage() for r in caplog.records)
    # The poisoned session stays where it was; every other one went on.
    assert view.row_version(p.session_id) == p.version
    for session_id in p.others:
        assert view.row_version(session_id) == app.get_session(session_id).version
        assert view.get(session_id).session == session_bytes(app.get_session(session_id))  # type: ignore[union-attr]

    status = read_model_status(app)
    assert status.live.parked == 2 and status.state == "live"
    assert "retry-parked" in status.advice
    shown = sessions_command("projections", "status", "--json", "--store", store_url)
    assert shown.returncode == 0, described(shown)
    assert json.loads(shown.stdout)["live"]["parked"] == 2

    # Retried before any fix: both still parked, the row unchanged.
    assert retry_parked(app, view) == RetryResult(applied=0, still_parked=2)
    assert [e.position for e in view.parked()] == [p.poison_at, p.poison_at + 1]
    assert view.row_version(p.session_id) == p.version


def test_retry_parked_applies_the_repaired_stored_event(store_url, apps) -> None:  # type: ignore[no-untyped-def]
    p = poisoned_store(store_url, apps, _unparseable)
    app, view = p.app, p.view
    assert len(view.parked()) == 2
    sql(
        app,
        f"UPDATE {app.recorder.events_table_name} SET state = ? WHERE originator_id = ? AND originator_version = ?",
        (p.good[0].state, p.session_id, p.version + 1),
    )
    assert app.get_session(p.session_id).version == p.version + 2  # the log is whole again
    retried = sessions_command("projections", "retry-parked", "--store", store_url)
    assert retried.returncode == 0, described(retried)
    assert "applied 2 parked events; 0 still parked" in retried.stdout
    assert view.parked() == [] and read_model_status(app).live.parked == 0
    assert view.row_version(p.session_id) == p.version + 2
    assert view.get(p.session_id).session == session_bytes(app.get_session(p.session_id))  # type: ignore[union-attr]
    assert list(differences(app, view)) == []

    # The projector goes on from the retried row.
    p.workload.report(p.session_id)
    p.projector.catch_up()
    assert view.row_version(p.session_id) == p.version + 3
    assert list(differences(app, view)) == []


# --- poisons the projector does not park (bugs) ----------------------------------------------
# These are faults of the fold's logic, not of a backend: they run on SQLite only.


def _caught_up_with_a_spoiled_event(store_url: str, apps, topic: str | None, spoil: Callable[[dict], dict]):  # type: ignore[no-untyped-def]
    """A caught-up read model, then in the log: one session's next event
    (a heartbeat; ``topic`` instead of its own if given) with its decoded
    state passed through ``spoil``, then a report of another session."""
    app = apps(store_url)
    workload = Workload(app)
    workload.run(60, containers=2)
    view = open_rows(app)
    projector = Projector(app, view)
    projector.catch_up()
    poisoned, other = workload.open_ids[:2]
    maker: SessionsApplication = apps(store_url)
    session = maker.get_session(poisoned)
    session.heartbeat(now=workload.clock.advance(seconds=1), policy=POLICY, principal=PRINCIPAL)
    (event,) = [maker.mapper.to_stored_event(e) for e in session.collect_events()]
    state = json.dumps(spoil(json.loads(event.state))).encode()
    app.recorder.insert_events([StoredEvent(poisoned, event.originator_version, topic or event.topic, state)])
    poison_at = head(app)
    workload.report(other)
    return app, view, projector, poisoned, other, poison_at


def test_an_event_of_unknown_topic_in_a_session_stream_is_parked(sqlite_url, apps) -> None:  # type: ignore[no-untyped-def]
    app, view, projector, poisoned, other, poison_at = _caught_up_with_a_spoiled_event(
        sqlite_url, apps, "sessions.SessionRenamed", lambda state: state
    )
    projector.catch_up()
    assert view.position() == head(app)
    assert view.row_version(other) == app.get_session(other).version
    assert [(e.position, e.stream) for e in view.parked()] == [(poison_at, poisoned)]
    assert read_model_status(app).live.parked == 1


def test_an_event_whose_row_cannot_be_built_is_parked(sqlite_url, apps) -> None:  # type: ignore[no-untyped-def]
    def bad_expiry(state: dict) -> dict:
        return {**state, "expires_at": "not a time"}

    app, view, projector, poisoned, other, poison_at = _caught_up_with_a_spoiled_event(
        sqlite_url, apps, None, bad_expiry
    )
    projector.catch_up()
    assert view.position() == head(app)
    assert view.row_version(other) == app.get_session(other).version
    assert [(e.position, e.stream) for e in view.parked()] == [(poison_at, poisoned)]


def test_status_answers_while_a_poison_event_waits_to_be_folded(sqlite_url, apps) -> None:  # type: ignore[no-untyped-def]
    def no_timestamp(state: dict) -> dict:
        return {k: v for k, v in state.items() if k != "timestamp"}

    app, view, projector, poisoned, other, poison_at = _caught_up_with_a_spoiled_event(
        sqlite_url, apps, None, no_timestamp
    )
    status = read_model_status(app)
    assert status.live.position == poison_at - 1
    assert status.live.lag_events == head(app) - status.live.position
    assert status.live.lag_seconds is None  # the next event's time cannot be read
    projector.catch_up()
    assert read_model_status(app).live.parked == 1
