"""`sessions projections verify`: exit 0 on a read model equal to a fresh
fold of the log; exit 1 naming each session whose row was edited, deleted,
or has no events; --sample N checks N sessions (the same N for a seed)."""

from __future__ import annotations

import pytest

from sessions.api.protos import session_pb2
from sessions.projection.projector import Projector
from sessions.projection.row_tables import open_rows
from tests.projection.projection_support import Workload

from .ops_support import described, differs_lines, rows_of, sessions_command, sql


@pytest.fixture
def verified_store(store_url, apps):  # type: ignore[no-untyped-def]
    """(url, app, table): a store with a caught-up read model."""
    app = apps(store_url)
    Workload(app).run(150, containers=5)
    view = open_rows(app)
    Projector(app, view).catch_up()
    return store_url, app, view.table


def verify(url: str, *args: str):  # type: ignore[no-untyped-def]
    return sessions_command("projections", "verify", "--store", url, *args)


def test_verify_passes_then_names_edited_deleted_and_orphan_rows(verified_store) -> None:  # type: ignore[no-untyped-def]
    url, app, table = verified_store
    rows = rows_of(app, table)
    assert len(rows) > 10
    clean = verify(url)
    assert clean.returncode == 0, described(clean)
    assert "identical: every session" in clean.stdout and differs_lines(clean.stdout) == []

    # One field of one stored session changed: same version, other bytes.
    edited = sorted(rows)[3]
    message = session_pb2.SynchronizationSession.FromString(rows[edited][1])
    message.agent_id = "someone-else"
    sql(app, f"UPDATE {table} SET session = ? WHERE session_id = ?", (message.SerializeToString(), edited))
    found = verify(url)
    assert found.returncode == 1, described(found)
    assert differs_lines(found.stdout) == [edited], described(found)
    assert f"DIFFERS {edited}: row differs from a fresh fold" in found.stdout

    # Repaired; now one row deleted, and one row whose session has no events.
    sql(app, f"UPDATE {table} SET session = ? WHERE session_id = ?", (rows[edited][1], edited))
    deleted = sorted(rows)[-2]
    sql(app, f"DELETE FROM {table} WHERE session_id = ?", (deleted,))
    columns = (
        "subject_container_id, session_type, status, sync_mode, agent_id, created_at, expires_at, "
        "closed_at, last_seen_at, version, state, session"
    )
    sql(
        app,
        f"INSERT INTO {table} (session_id, {columns}) SELECT ?, {columns} FROM {table} WHERE session_id = ?",
        ("ses-ghost", edited),
    )
    found = verify(url)
    assert found.returncode == 1, described(found)
    assert sorted(differs_lines(found.stdout)) == sorted([deleted, "ses-ghost"]), described(found)
    assert f"DIFFERS {deleted}: no row in the read model" in found.stdout
    assert "DIFFERS ses-ghost: row without events in the log" in found.stdout


def test_verify_sample_checks_that_many_sessions(verified_store) -> None:  # type: ignore[no-untyped-def]
    url, app, table = verified_store
    sampled = verify(url, "--sample", "3")
    assert sampled.returncode == 0, described(sampled)
    assert "identical: 3 sampled sessions" in sampled.stdout

    # Every row broken: a sample names exactly as many sessions as it checks,
    # the same ones for the same seed; the full check names them all.
    sql(app, f"UPDATE {table} SET session = ?", (b"\x00not a session",))
    first = verify(url, "--sample", "3", "--seed", "5")
    again = verify(url, "--sample", "3", "--seed", "5")
    assert first.returncode == again.returncode == 1, described(first)
    named = differs_lines(first.stdout)
    assert len(named) == len(set(named)) == 3, described(first)
    assert differs_lines(again.stdout) == named
