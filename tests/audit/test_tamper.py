"""Tamper evidence on SQLite and PostgreSQL: an untouched store verifies; an
edited payload, an event deleted from the middle of a stream, and events cut
off the end of an ended session are each caught by `sessions audit verify`,
in both its --all and single-session forms, with exit code 1 (issue 5)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sessions.audit.chain_check import check_all, check_session
from sessions.domain.chain import GENESIS, canonical_bytes, next_link
from sessions.store.codec import codec_of
from sessions.store.records import stream_records
from tests.audit.audit_support import (
    Built,
    EventsTable,
    build_store,
    run_cli,
    run_cli_many,
)

INTACT = "intact: every chain verifies"
EVERY_EVENT_TYPE = {
    "SessionOpened",
    "ProgressReported",
    "HeartbeatReceived",
    "SessionStalled",
    "SessionCompleted",
    "SessionFailed",
    "SessionExpired",
    "ScheduleStarted",
    "SessionStarted",
    "SessionEnded",
    "OperationRecorded",
}


@pytest.fixture
def built(store_url: str) -> Iterator[Built]:
    store = build_store(store_url)
    try:
        yield store
    finally:
        store.app.close()


def all_streams(built: Built) -> list[str]:
    notifications = built.app.recorder.select_notifications(start=1, limit=100_000)
    return list(dict.fromkeys(str(n.originator_id) for n in notifications))


def verify(store_url: str, *session_ids: str) -> tuple[Any, list[Any]]:
    """`audit verify --all`, and `audit verify SID` for each id, all at once."""
    store = ["--store", store_url]
    everything, *single = run_cli_many(
        [["audit", "verify", "--all", *store], *(["audit", "verify", sid, *store] for sid in session_ids)]
    )
    return everything, single


def broken_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("BROKEN ")]


# --- untouched ---------------------------------------------------------------------------


def test_untouched_store_verifies(built: Built, store_url: str) -> None:
    assert list(check_all(built.app)) == []
    for sid in built.sessions:
        assert check_session(built.app, sid) is None, sid
    everything, single = verify(store_url, built.closed)
    for result in (everything, *single):
        assert result.returncode == 0, (result.args, result.stdout, result.stderr)
        assert INTACT in result.stdout
        assert broken_lines(result.stdout) == []


# --- the three kinds of tampering, each alone --------------------------------------------


def edit_counts(table: EventsTable, stream: str, version: int) -> None:
    """Add one to a reported count, keeping the row valid JSON the app can read."""
    assert table.topic(stream, version) == "sessions.ProgressReported"
    state = json.loads(table.state(stream, version))
    change = state["entries"][0]["_data_"]["changes"][0]  # ["CREATE", successful, failed]
    change[1] += 1
    table.set_state(stream, version, json.dumps(state, separators=(",", ":")).encode())


TAMPERS: dict[str, tuple[Callable[[EventsTable, str], None], int, str]] = {
    # name: (what is done to the closed session's stream, first bad version, problem)
    "edit a payload": (lambda t, sid: edit_counts(t, sid, 2), 2, "contents do not match"),
    "delete from the middle": (lambda t, sid: t.delete(sid, 3), 3, "version 3 is missing"),
    "cut the last event": (lambda t, sid: t.delete(sid, 5), 5, "after version 4 were removed"),
    "cut the last two events": (lambda t, sid: t.delete(sid, 5, 4), 4, "after version 3 were removed"),
}


@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_tampering_is_detected(built: Built, store_url: str, tamper: str) -> None:
    change, bad_version, problem = TAMPERS[tamper]
    table = EventsTable(store_url)
    before = table.versions(built.closed)
    assert before == [1, 2, 3, 4, 5]
    change(table, built.closed)

    found = list(check_all(built.app))
    assert [(b.stream, b.version) for b in found] == [(built.closed, bad_version)]
    assert problem in found[0].problem
    single = check_session(built.app, built.closed)
    assert single is not None and (single.stream, single.version) == (built.closed, bad_version)
    # Another session of the same store still verifies on its own.
    assert check_session(built.app, built.failed) is None

    if tamper == "cut the last two events":
        return  # the same path as cutting one; the command is run for the three kinds above
    everything, (alone,) = verify(store_url, built.closed)
    line = f"BROKEN {built.closed}: first bad version {bad_version}"
    for result in (everything, alone):
        assert result.returncode == 1, (result.args, result.stdout, result.stderr)
        assert INTACT not in result.stdout
        assert [b.split(":")[0] for b in broken_lines(result.stdout)] == [f"BROKEN {built.closed}"]
        assert line in result.stdout
        assert problem in result.stdout


def test_an_edited_payload_still_loads(built: Built, store_url: str) -> None:
    """The edit of the tamper test is one the application itself cannot see:
    the row still decodes and the session folds, with the forged count."""
    edit_counts(EventsTable(store_url), built.closed, 2)
    session = built.app.get_session(built.closed, version=2)
    assert session.progress[0].changes[0].successful == 4


# --- several at once: exactly the tampered streams are reported ---------------------------


def test_check_all_reports_exactly_the_tampered_streams(built: Built, store_url: str) -> None:
    table = EventsTable(store_url)
    edit_counts(table, built.closed, 2)  # an ended session, edited
    table.delete(built.failed, 2)  # an ended session, a hole in the middle
    table.delete(built.expired, 2)  # an ended session, its end (the expiry) cut off
    # An open session, edited: the stall's principal rewritten.
    stall = json.loads(table.state(built.stalled, 3))
    assert stall["principal"] == "system:deadline"
    stall["principal"] = "anonymous"
    table.set_state(built.stalled, 3, json.dumps(stall).encode())
    # An operation record: its stored answer replaced.
    record = json.loads(table.state(built.operation, 1))
    record["payload"]["_data_"] = "AAAA"
    table.set_state(built.operation, 1, json.dumps(record).encode())
    # A stream cut at its start.
    table.delete(built.running, 1)

    expected = {
        (built.closed, 2),
        (built.failed, 2),
        (built.expired, 2),
        (built.stalled, 3),
        (built.operation, 1),
        (built.running, 1),
    }
    found = list(check_all(built.app))
    assert {(b.stream, b.version) for b in found} == expected
    assert len(found) == len(expected)  # each stream once
    for sid in built.sessions:
        single = check_session(built.app, sid)
        assert single is not None and (single.stream, single.version) in expected, sid
    assert len(all_streams(built)) > len(expected) + 4  # schedules and other records: untouched

    everything, _ = verify(store_url)
    assert everything.returncode == 1
    reported = {line.split(":")[0].removeprefix("BROKEN ") for line in broken_lines(everything.stdout)}
    assert reported == {stream for stream, _ in expected}


def test_a_whole_ended_session_removed_is_detected(built: Built, store_url: str) -> None:
    EventsTable(store_url).delete(built.failed, 1, 2, 3)
    found = list(check_all(built.app))
    assert [(b.stream, b.version, b.problem) for b in found] == [
        (built.failed, 1, "the whole stream was removed")
    ]
    with pytest.raises(LookupError):  # `audit verify SID` says "not found", exit 1
        check_session(built.app, built.failed)


# --- the links: recomputed from the stored rows, they equal the domain's ------------------


def outside_link(previous: str, stream: str, version: int, topic: str, state: bytes) -> str:
    """The encoding as documented in sessions/domain/chain.py, written again
    from the documentation alone, as an outside tool would."""

    def untag(value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {"_type_", "_data_"}:
                return untag(value["_data_"])
            return {k: untag(v) for k, v in value.items()}
        if isinstance(value, list):
            return [untag(v) for v in value]
        return value

    data = untag(json.loads(state))
    data.pop("link")
    document = {"stream": stream, "version": version, "type": topic, "data": data}
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(bytes.fromhex(previous) + canonical.encode("utf-8")).hexdigest()


def test_links_recomputed_from_rows_equal_the_domains(built: Built) -> None:
    streams = all_streams(built)
    recomputed: dict[tuple[str, int], str] = {}
    for stream in streams:
        previous = outside_previous = GENESIS
        for record in stream_records(built.app.recorder, stream):
            data = codec_of(built.app.mapper).canonical(record.state)
            stored_link = data.pop("link")
            link = next_link(previous, canonical_bytes(stream, record.version, record.topic, data))
            assert link == stored_link, (stream, record.version, record.topic)
            outside = outside_link(outside_previous, stream, record.version, record.topic, record.state)
            assert outside == link, (stream, record.version, record.topic)
            recomputed[(stream, record.version)] = link
            previous = outside_previous = link

    # Every event the domain created, and no other, is stored with its link.
    domain = {key: link for key, (_, link) in built.domain_links.items()}
    assert recomputed == domain
    assert {name for name, _ in built.domain_links.values()} == EVERY_EVENT_TYPE
    # The seals: each ended session's last link is in its schedule's SessionEnded.
    for sid in (built.closed, built.failed, built.expired):
        last = max(v for s, v in recomputed if s == sid)
        ended = [
            codec_of(built.app.mapper).canonical(r.state)
            for stream in streams
            if stream.startswith("schedule:")
            for r in stream_records(built.app.recorder, stream)
            if r.topic == "sessions.SessionEnded"
        ]
        assert any(e["session_id"] == sid and e["final_link"] == recomputed[(sid, last)] for e in ended), sid


def test_cutting_a_seal_with_the_end_it_seals_is_caught_by_an_anchor(
    built: Built, store_url: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    # Nothing inside the store vouches for the newest end of a stream, so
    # the operator keeps an anchor (every stream's head) outside it.
    anchor = tmp_path / "anchor.json"
    made = run_cli("audit", "anchor", "--out", str(anchor), "--store", store_url)
    assert made.returncode == 0, made.stderr
    table = EventsTable(store_url)
    schedule = "schedule:AD_SYNC:container-b"
    assert table.topic(schedule, 3) == "sessions.SessionEnded"  # the seal of `failed`
    table.delete(built.failed, 3)
    table.delete(schedule, 3)
    # Without the anchor the cut is consistent with itself...
    assert not {b.stream for b in check_all(built.app)} & {built.failed, schedule}
    # ...with it, both cut streams are named.
    checked = run_cli("audit", "verify", "--all", "--anchor", str(anchor), "--store", store_url)
    assert checked.returncode == 1, checked.stdout
    assert built.failed in checked.stdout and schedule in checked.stdout
