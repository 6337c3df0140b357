"""Event log archives: export a SQLite store, import it into an empty
PostgreSQL store, rebuild and verify there, and serve the same sessions;
refusals (a non-empty store, a truncated or edited archive); and a read
model rebuilt from an archive in another store equals a live rebuild."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from sessions.audit.archive import BATCH
from sessions.projection.projector import Projector
from sessions.projection.rebuild import rebuild
from sessions.projection.row_tables import open_rows
from tests.projection.projection_support import Workload, head

from .ops_support import described, live_table, sessions_command, sessions_of, stored_events


def export(url: str, out: Path) -> int:
    """`sessions events export`; returns how many events it says it wrote."""
    exported = sessions_command("events", "export", "--out", str(out), "--store", url)
    assert exported.returncode == 0, described(exported)
    said = re.search(rf"^exported (\d+) events to {re.escape(str(out))}$", exported.stdout, re.M)
    assert said, described(exported)
    return int(said[1])


def archive_lines(path: Path) -> list[bytes]:
    return gzip.decompress(path.read_bytes()).splitlines(keepends=True)


def write_archive(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(gzip.compress(b"".join(lines)))
    return path


@pytest.mark.postgres
def test_export_sqlite_import_postgresql_rebuild_verify_serve_the_same(postgres_url, apps, tmp_path) -> None:  # type: ignore[no-untyped-def]
    source_url = f"sqlite://{tmp_path}/source.db"
    source = apps(source_url)
    workload = Workload(source)
    workload.bulk(sessions=40, rounds=10)
    workload.run(300, containers=6)
    Projector(source, open_rows(source), batch_size=2000).catch_up()
    archive = tmp_path / "log.jsonl.gz"
    assert export(source_url, archive) == head(source)
    lines = archive_lines(archive)
    assert json.loads(lines[0])["format"] == "sessions.events"
    assert json.loads(lines[-1]) | {"sha256": ""} == {"end": True, "events": head(source), "sha256": ""}

    imported = sessions_command("events", "import", str(archive), "--store", postgres_url)
    assert imported.returncode == 0, described(imported)
    assert f"imported {head(source)} events" in imported.stdout
    target = apps(postgres_url)
    assert stored_events(target) == stored_events(source)

    for command in (
        ("projections", "rebuild", "--store", postgres_url),
        ("projections", "verify", "--store", postgres_url),
        ("audit", "verify", "--all", "--store", postgres_url),
    ):
        done = sessions_command(*command)
        assert done.returncode == 0, f"{command}: {described(done)}"
    served_there = sessions_of(target, live_table(target))
    served_here = sessions_of(source, live_table(source))
    assert set(served_here) == set(workload.expected)
    assert served_there == served_here

    # A store that holds events refuses an import, and stays as it was.
    again = sessions_command("events", "import", str(archive), "--store", postgres_url)
    assert again.returncode == 1, described(again)
    assert "not empty" in again.stderr
    assert stored_events(target) == stored_events(source)


def _truncated(lines: list[bytes]) -> list[bytes]:
    return lines[: len(lines) * 2 // 3]  # no trailer, a third of the events gone


def _edited(lines: list[bytes]) -> list[bytes]:
    middle = len(lines) // 2
    record = json.loads(lines[middle])
    state = record["state"]
    record["state"] = state.replace('"principal":"', '"principal":"x', 1)
    assert record["state"] != state
    return [*lines[:middle], json.dumps(record, separators=(",", ":")).encode() + b"\n", *lines[middle + 1 :]]


def _spoiled_archive(tmp_path: Path, apps, sessions: int, spoil) -> Path:  # type: ignore[no-untyped-def]
    """An exported log of about ``sessions`` * 32 events, spoiled."""
    source_url = f"sqlite://{tmp_path}/source.db"
    source = apps(source_url)
    Workload(source).bulk(sessions=sessions, rounds=30)
    archive = tmp_path / "log.jsonl.gz"
    export(source_url, archive)
    return write_archive(tmp_path / "spoiled.jsonl.gz", spoil(archive_lines(archive)))


@pytest.mark.parametrize("spoil", [_truncated, _edited], ids=["truncated", "edited"])
def test_a_truncated_or_edited_archive_is_refused(store_url, apps, tmp_path, spoil) -> None:  # type: ignore[no-untyped-def]
    spoiled = _spoiled_archive(tmp_path, apps, 6, spoil)
    assert len(archive_lines(spoiled)) < BATCH
    refused = sessions_command("events", "import", str(spoiled), "--store", store_url)
    assert refused.returncode == 1, described(refused)
    assert "the archive" in refused.stderr and ("truncated" in refused.stderr or "edited" in refused.stderr)
    assert head(apps(store_url)) == 0


def test_a_truncated_archive_longer_than_a_batch_leaves_the_store_empty(store_url, apps, tmp_path) -> None:  # type: ignore[no-untyped-def]
    spoiled = _spoiled_archive(tmp_path, apps, 100, _truncated)
    assert len(archive_lines(spoiled)) > BATCH
    refused = sessions_command("events", "import", str(spoiled), "--store", store_url)
    assert refused.returncode == 1, described(refused)
    assert head(apps(store_url)) == 0


def test_rebuild_from_an_archive_in_another_store_equals_a_live_rebuild(
    store_url, other_backend_url, apps, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    source = apps(store_url)
    workload = Workload(source)
    workload.bulk(sessions=30, rounds=10)
    workload.run(300, containers=5)
    archive = tmp_path / "log.jsonl.gz"
    export(store_url, archive)
    source_events = stored_events(source)

    offline = sessions_command(
        "projections", "rebuild", "--from-archive", str(archive), "--store", other_backend_url, "--batch-size", "300"
    )
    assert offline.returncode == 0, described(offline)
    assert f"folded {len(source_events)} events" in offline.stdout
    result = rebuild(source)
    assert result.events == len(source_events)

    other = apps(other_backend_url)
    from_archive = sessions_of(other, live_table(other))
    from_log = sessions_of(source, result.table)
    assert set(from_log) == set(workload.expected)
    assert from_archive == from_log
    # The other store's log was not touched; the source store is as it was.
    assert head(other) == 0
    assert stored_events(source) == source_events
