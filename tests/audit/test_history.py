"""History and as-of reads against a session driven through the API, on SQLite
and PostgreSQL: the state after each event equals what GetSession returned at
that moment, recorded during the test (issue 5)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import grpc
import pytest
from google.protobuf.json_format import MessageToDict

from sessions.api.protos import audit_pb2, audit_pb2_grpc, service_pb2, session_pb2
from sessions.audit.chain_check import check_session
from sessions.audit.history import session_history
from sessions.domain.errors import NotFound
from sessions.domain.policy import Policy
from sessions.domain.session import EXPIRY_REASON
from sessions.store.clock import ManualClock
from sessions.wire import timestamp
from tests.api.test_lifecycle import get, open_session
from tests.audit.audit_support import (
    T0,
    Driven,
    build_store,
    drive,
    run_cli,
    run_cli_many,
)

EVENT_TYPES = [
    "SessionOpened",
    "ProgressReported",
    "ProgressReported",
    "HeartbeatReceived",
    "SessionStalled",
    "HeartbeatReceived",
    "SessionCompleted",
]


@pytest.fixture
def driven(quiet_server):  # type: ignore[no-untyped-def]
    clock = ManualClock(T0)
    server = quiet_server(clock=clock)
    return server, drive(server, clock)


def audit_stub(server) -> audit_pb2_grpc.AuditServiceStub:  # type: ignore[no-untyped-def]
    return audit_pb2_grpc.AuditServiceStub(server.channel)


def at_version(stub, session_id: str, version: int) -> audit_pb2.GetSessionAtResponse:  # type: ignore[no-untyped-def]
    return stub.GetSessionAt(audit_pb2.GetSessionAtRequest(session_id=session_id, version=version))


def as_of(stub, session_id: str, moment: datetime) -> audit_pb2.GetSessionAtResponse:  # type: ignore[no-untyped-def]
    return stub.GetSessionAt(audit_pb2.GetSessionAtRequest(session_id=session_id, as_of=timestamp(moment)))


def as_dict(message) -> dict:  # type: ignore[no-untyped-def, type-arg]
    return MessageToDict(message, preserving_proto_field_name=True)


# --- the projection function -------------------------------------------------------------


def test_history_is_every_event_with_what_get_session_showed(driven) -> None:  # type: ignore[no-untyped-def]
    server, d = driven
    app = server.server.app
    entries = list(session_history(app, d.session_id))

    assert [e.event_type for e in entries] == EVENT_TYPES == [s.event_type for s in d.steps]
    assert [e.version for e in entries] == list(range(1, len(EVENT_TYPES) + 1))
    for e, s in zip(entries, d.steps, strict=True):
        assert e.state == s.shown, (e.version, e.event_type)
        assert e.recorded_at == s.at, e.version
        assert e.principal == s.principal, e.version
        assert e.idempotency_key == s.idempotency_key, e.version

    # Positions are the events' places in the whole log.
    positions = [e.position for e in entries]
    assert positions == sorted(set(positions))
    for e in entries:
        (n,) = app.recorder.select_notifications(start=e.position, limit=1)
        assert (n.id, n.originator_id, n.originator_version) == (e.position, d.session_id, e.version)

    # Links are the stored ones, and the stream verifies.
    assert [e.link for e in entries] == [ev.link for ev in app.events.get(d.session_id)]
    assert check_session(app, d.session_id) is None

    # "What changed": each event's own fields, canonical.
    changes = [e.changes for e in entries]
    assert changes[0]["subject_container_id"] == "container-h"
    assert changes[0]["session_type"] == "AD_SYNC" and changes[0]["sync_mode"] == "FULL_SYNC"
    assert changes[1] == {
        "entries": [{"object_type": "USER", "changes": [["CREATE", 5, 1]]}],
        "expires_at": (d.steps[1].at + timedelta(minutes=10)).isoformat(),
    }
    assert changes[2]["entries"] == [
        {"object_type": "GROUP", "changes": [["UPDATE", 2, 0]]},
        {"object_type": "USER", "changes": [["DELETE", 1, 1], ["CREATE", 2, 0]]},
    ]
    assert changes[4] == {}
    assert changes[6] == {"closed_at": d.steps[6].at.isoformat()}

    # Streams that are not sessions have no history.
    for stream in ("ses-unknown", "schedule:AD_SYNC:container-h"):
        with pytest.raises(NotFound):
            next(session_history(app, stream))




# --- the audit gRPC service --------------------------------------------------------------


def check_stream_history(server, d: Driven) -> None:  # type: ignore[no-untyped-def]
    stub = audit_stub(server)
    pages = list(stub.StreamHistory(audit_pb2.StreamHistoryRequest(session_id=d.session_id)))
    streamed = [entry for page in pages for entry in page.entries]
    local = list(session_history(server.server.app, d.session_id))

    assert len(streamed) == len(local) == len(d.steps)
    for wire, e, s in zip(streamed, local, d.steps, strict=True):
        assert wire.version == e.version
        assert wire.position == e.position
        assert wire.recorded_at == timestamp(s.at)
        assert wire.event_type == s.event_type
        assert wire.principal == s.principal
        assert wire.idempotency_key == s.idempotency_key
        assert wire.link == e.link
        assert wire.state == s.shown
        assert json.loads(wire.changes_json) == e.changes


def check_get_session_at(server, d: Driven) -> None:  # type: ignore[no-untyped-def]
    stub = audit_stub(server)

    for version, s in enumerate(d.steps, 1):
        answer = at_version(stub, d.session_id, version)
        assert (answer.version, answer.session) == (version, s.shown), s.event_type

    assert len(d.seen) > len(d.steps)  # moments between calls too
    for seen in d.seen:
        answer = as_of(stub, d.session_id, seen.at)
        assert answer.session == seen.shown, seen.at
        assert answer.version == d.version_at(seen.at)
        # Up to just before the next event, the same session is shown.
        moment = seen.at + timedelta(microseconds=999_999)
        later = as_of(stub, d.session_id, moment)
        assert later.version == d.version_at(moment)
        if later.version == answer.version:
            assert later.session == seen.shown


def check_errors(server, d: Driven) -> None:  # type: ignore[no-untyped-def]
    stub = audit_stub(server)

    def code(request: audit_pb2.GetSessionAtRequest) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as failed:
            stub.GetSessionAt(request)
        return failed.value.code()

    not_found = grpc.StatusCode.NOT_FOUND
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    before = timestamp(T0 - timedelta(microseconds=1))
    assert code(audit_pb2.GetSessionAtRequest(session_id="ses-unknown", version=1)) == not_found
    assert code(audit_pb2.GetSessionAtRequest(session_id="ses-unknown", as_of=timestamp(T0))) == not_found
    assert code(audit_pb2.GetSessionAtRequest(session_id=d.session_id, as_of=before)) == not_found
    assert code(audit_pb2.GetSessionAtRequest(session_id=d.session_id, version=len(d.steps) + 1)) == not_found
    schedule = "schedule:AD_SYNC:container-h"  # a stream, but not a session
    assert code(audit_pb2.GetSessionAtRequest(session_id=schedule, version=1)) == not_found
    assert code(audit_pb2.GetSessionAtRequest(session_id=schedule, as_of=timestamp(T0))) == not_found
    assert code(audit_pb2.GetSessionAtRequest(session_id=d.session_id)) == invalid  # no point
    assert code(audit_pb2.GetSessionAtRequest(session_id=d.session_id, version=0)) == invalid
    assert code(audit_pb2.GetSessionAtRequest(session_id=d.session_id, version=-1)) == invalid
    assert code(audit_pb2.GetSessionAtRequest(version=1)) == invalid  # no session id

    with pytest.raises(grpc.RpcError) as missing:
        list(stub.StreamHistory(audit_pb2.StreamHistoryRequest(session_id="ses-unknown")))
    assert missing.value.code() == not_found
    with pytest.raises(grpc.RpcError) as empty:
        list(stub.StreamHistory(audit_pb2.StreamHistoryRequest()))
    assert empty.value.code() == invalid


def test_audit_service_shows_what_get_session_showed(driven) -> None:  # type: ignore[no-untyped-def]
    """StreamHistory and GetSessionAt over the same channel; one driven
    session serves the three checks (each drive starts a server)."""
    server, d = driven
    check_stream_history(server, d)
    check_get_session_at(server, d)
    check_errors(server, d)


def test_as_of_shows_read_time_expiry(quiet_server) -> None:  # type: ignore[no-untyped-def]
    """Past expires_at with no expiry event recorded, GetSession shows the
    session EXPIRED; as-of that moment shows exactly that, too."""
    clock = ManualClock(T0)
    server = quiet_server(clock=clock, policy=Policy.from_seconds(session_ttl=60, heartbeat_grace=20))
    stub = server.sessions
    audit = audit_stub(server)
    _, opened = open_session(stub, "container-x")
    sid = opened.opened_session.session_id

    clock.advance(59.5)
    before_expiry = clock(), get(stub, sid)
    assert before_expiry[1].status == session_pb2.OPENED  # no stall recorded: the worker is off
    clock.advance(1)
    after_expiry = clock(), get(stub, sid)
    assert after_expiry[1].status == session_pb2.EXPIRED
    assert after_expiry[1].closed_at == after_expiry[1].expires_at
    assert after_expiry[1].fail_reason == EXPIRY_REASON
    assert [e.event_type for e in session_history(server.server.app, sid)] == ["SessionOpened"]

    for moment, shown in (before_expiry, after_expiry):
        answer = as_of(audit, sid, moment)
        assert (answer.version, answer.session) == (1, shown)
    # The version read is the stored state, without read-time expiry.
    assert at_version(audit, sid, 1).session == opened.opened_session

    # A heartbeat now is refused, and that records the expiry.
    clock.advance(5)
    with pytest.raises(grpc.RpcError) as refused:
        stub.Heartbeat(service_pb2.HeartbeatRequest(session_id=sid))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert server.server.projector.wait_for(server.server.app.recorder.max_notification_id(), 5)
    recorded = get(stub, sid)
    history = list(session_history(server.server.app, sid))
    assert [(e.event_type, e.principal) for e in history] == [
        ("SessionOpened", "anonymous"),
        ("SessionExpired", "system:deadline"),
    ]
    assert history[1].state == recorded == after_expiry[1]  # read-time showed what was recorded later
    assert as_of(audit, sid, after_expiry[0]).session == after_expiry[1]
    assert as_of(audit, sid, clock()) == audit_pb2.GetSessionAtResponse(session=recorded, version=2)


# --- the CLI -----------------------------------------------------------------------------


def test_history_cli(driven, store_url) -> None:  # type: ignore[no-untyped-def]
    server, d = driven
    local = list(session_history(server.server.app, d.session_id))
    middle = d.seen[len(d.seen) // 2]
    quiet_moment = d.seen[1]  # between the open and the first report
    assert d.version_at(quiet_moment.at) == 1 and quiet_moment.at > d.steps[0].at

    sid, store = d.session_id, ["--store", store_url]
    results = run_cli_many(
        [
            ["history", sid, *store, "--json"],
            ["history", sid, *store, "--at-version", "3"],
            ["history", sid, *store, "--as-of", middle.at.isoformat(), "--json"],
            ["history", sid, *store, "--as-of", quiet_moment.at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")],
            ["history", sid, *store],
            # failures: 1 when there is nothing to show, 2 for bad usage
            ["history", "ses-unknown", *store, "--json"],
            ["history", "ses-unknown", *store, "--at-version", "1"],
            ["history", "ses-unknown", *store, "--as-of", T0.isoformat()],
            ["history", sid, *store, "--as-of", (T0 - timedelta(seconds=1)).isoformat()],
            ["history", sid, *store, "--at-version", str(len(d.steps) + 1)],
            ["history", sid, *store, "--as-of", "garbage"],
        ]
    )
    lines, version_3, as_of_middle, as_of_z, table, *failures, garbage = results
    for result in (lines, version_3, as_of_middle, as_of_z, table):
        assert result.returncode == 0, (result.args, result.stderr)

    rows = [json.loads(line) for line in lines.stdout.splitlines()]
    assert len(rows) == len(d.steps)
    for row, e, s in zip(rows, local, d.steps, strict=True):
        assert row["version"] == e.version
        assert row["position"] == e.position
        assert row["event_type"] == s.event_type
        assert row["principal"] == s.principal
        assert row["idempotency_key"] == s.idempotency_key
        assert datetime.fromisoformat(row["recorded_at"]) == s.at
        assert row["link"] == e.link
        assert row["changes"] == e.changes
        assert row["state"] == as_dict(s.shown)

    assert json.loads(version_3.stdout) == {"version": 3, "session": as_dict(d.steps[2].shown)}
    assert json.loads(as_of_middle.stdout) == {
        "version": d.version_at(middle.at),
        "session": as_dict(middle.shown),
    }
    assert json.loads(as_of_z.stdout) == {"version": 1, "session": as_dict(quiet_moment.shown)}
    for event_type in set(EVENT_TYPES):
        assert event_type in table.stdout
    assert "COMPLETED" in table.stdout and "PENDING" in table.stdout
    # Not a terminal: one tab-separated line per event, every cell whole.
    title, header, *table_rows = table.stdout.splitlines()
    assert title == f"# session {sid}" and header.split("\t")[0] == "ver"
    cells = [line.split("\t") for line in table_rows]
    assert all(len(row) == 8 for row in cells), cells
    assert [row[3] for row in cells] == [s.event_type for s in d.steps]
    assert [row[4] for row in cells] == [s.principal for s in d.steps]
    assert [row[5] for row in cells] == [s.idempotency_key for s in d.steps]

    for result in failures:
        assert result.returncode == 1, (result.args, result.stdout, result.stderr)
        assert result.stdout == ""
        assert any(why in result.stderr for why in ("not found", "no version", "did not exist"))
    assert garbage.returncode == 2, (garbage.stdout, garbage.stderr)
    assert "garbage" in garbage.stderr


def test_history_cli_refuses_version_zero(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite://{tmp_path}/s.db"
    built = build_store(url)
    built.app.close()
    result = run_cli("history", built.closed, "--store", url, "--at-version", "0")
    assert result.returncode == 2, (result.stdout, result.stderr)


def test_stream_history_changes_keep_int64_counts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sessions.api.audit import AuditService

    built = build_store(f"sqlite://{tmp_path}/s.db")
    try:
        request = audit_pb2.StreamHistoryRequest(session_id=built.closed)
        pages = list(AuditService(built.app).StreamHistory(request, context=None))
        streamed = [entry for page in pages for entry in page.entries]
        local = list(session_history(built.app, built.closed))
    finally:
        built.app.close()
    report = local[2].changes["entries"]  # the report with a count of 2**63 - 1
    assert 2**63 - 1 in [c[1] for e in report for c in e["changes"]]
    assert json.loads(streamed[2].changes_json) == local[2].changes
