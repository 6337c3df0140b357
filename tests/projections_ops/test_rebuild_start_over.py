"""A build of another version left registered (a rebuild of an older or
newer build of the service, stopped) is started over: the new build is
registered before the old one's table is dropped, so that no write ever
meets a registry naming a table that is gone (projection.rebuild)."""

from __future__ import annotations

from sessions.projection.rebuild import rebuild
from sessions.projection.registry import Registry
from sessions.projection.row_tables import rows_on
from sessions.projection.rows import NAME
from sessions.projection.schema import version as code_version
from sessions.projection.write_through import WriteThrough
from tests.projection.projection_support import Workload


def _exists(app, table: str) -> bool:  # type: ignore[no-untyped-def]
    with app.factory.datastore.transaction(commit=False) as cursor:
        if app.settings.backend == "postgresql":
            cursor.execute("SELECT to_regclass(%s) IS NOT NULL AS found", (table,))
            return bool(cursor.fetchone()["found"])
        cursor.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
        return bool(cursor.fetchone()[0])


def test_a_build_of_another_version_is_started_over_and_its_table_dropped(  # type: ignore[no-untyped-def]
    store_url: str, apps, monkeypatch
) -> None:
    app = apps(store_url)
    app.with_events = WriteThrough(app)
    workload = Workload(app)
    ids = [workload.open(f"c-{k}") for k in range(3)]
    registry = Registry.of(app)
    other_version = code_version(NAME) + 1
    stale = rows_on(app, registry.next_build_table(NAME, other_version))
    registry.start_build(NAME, stale.table, other_version)
    workload.report(ids[0])  # written into the stale build too
    assert stale.row_version(ids[0]) == app.get_session(ids[0]).version

    # A write just before the new build is registered (the registry still
    # names the stale build's table): it must find that table there.
    real_start_build = Registry.start_build
    written_before: list[str] = []

    def start_build(self, name, table, version):  # type: ignore[no-untyped-def]
        workload.report(ids[2])
        written_before.append(ids[2])
        real_start_build(self, name, table, version)

    monkeypatch.setattr(Registry, "start_build", start_build)
    result = rebuild(app)
    monkeypatch.undo()
    assert written_before == [ids[2]]

    assert result.table != stale.table and result.version == code_version(NAME)
    assert not _exists(app, stale.table)
    registration = registry.get(NAME)
    assert (registration.live_table, registration.building_table) == (result.table, None)
    workload.report(ids[1])  # writes go on, into the new live table
    live = rows_on(app, result.table)
    for session_id in ids:
        assert live.row_version(session_id) == app.get_session(session_id).version
