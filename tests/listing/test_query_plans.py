"""The page queries walk an index in page order on both backends: no full
scan, no sort of the container's rows (EXPLAIN over 20,000 rows)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sessions.api import filters
from sessions.projection.listing import Cursor, PageQuery, page_sql
from sessions.projection.row_tables import open_rows
from sessions.store.application import SessionsApplication
from sessions.store.urls import parse_store_url

ROWS = 20_000
NOW = 1_800_000_000_000_000


def fill_sql(backend: str, table: str) -> str:
    """20,000 rows in container c-big (mostly COMPLETED, 2 % FAILED, 1 %
    EXPIRED), and as many spread over 1,000 other containers."""
    if backend == "sqlite":
        numbers = f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {2 * ROWS})"
        text = "printf('ses%017d', i)"
        container = "CASE WHEN i % 2 = 0 THEN 'c-big' ELSE 'c-' || (i % 1000) END"
        source = "FROM n"
    else:
        numbers = ""
        text = "'ses' || lpad(i::text, 17, '0')"
        container = "CASE WHEN i % 2 = 0 THEN 'c-big' ELSE 'c-' || (i % 1000) END"
        source = f"FROM generate_series(1::bigint, {2 * ROWS}) AS i"
    status = "CASE WHEN i % 100 < 2 THEN 4 WHEN i % 100 = 2 THEN 5 ELSE 3 END"
    return (
        f"{numbers} INSERT INTO {table} (session_id, subject_container_id, session_type, status, "
        "sync_mode, agent_id, created_at, expires_at, closed_at, last_seen_at, version, state, session) "
        f"SELECT {text}, {container}, 1 + i % 4, {status}, 1, 'agent', i * 1000000, "
        f"i * 1000000 + 600000000, i * 1000000 + 60000000, i * 1000000, 1, x'00', x'00' {source}"
    ).replace("x'00'", "x'00'" if backend == "sqlite" else "'\\x00'::bytea")


@pytest.fixture
def view(store_url: str):  # type: ignore[no-untyped-def]
    settings = parse_store_url(store_url)
    app = SessionsApplication(settings)
    snapshots = open_rows(app)
    with snapshots.datastore.transaction(commit=True) as c:  # type: ignore[attr-defined]
        c.execute(fill_sql(settings.backend, snapshots.table))
        if settings.backend == "postgresql":  # as autovacuum would; SQLite runs without statistics
            c.execute(f"ANALYZE {snapshots.table}")
    yield settings.backend, snapshots
    app.close()


QUERIES = {
    "first page": ("", None, 1),
    "deep page": ("", Cursor(ROWS * 1_000_000, "ses00000000000020000"), 1),
    "status = FAILED": ('status = "FAILED"', Cursor(ROWS * 1_000_000, "ses00000000000020000"), 1),
    "status = EXPIRED (3 branches)": ('status = "EXPIRED"', Cursor(ROWS * 1_000_000, "ses00000000000020000"), 3),
    "created_at range": ('created_at < "2026-01-01T00:00:00Z" AND agent_id = "agent"', None, 1),
}


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes += _plan_nodes(child)
    return nodes


@pytest.mark.parametrize("name", list(QUERIES))
def test_a_page_is_an_ordered_index_walk(view, name: str) -> None:  # type: ignore[no-untyped-def]
    backend, snapshots = view
    text, after, branches = QUERIES[name]
    query = PageQuery("c-big", filters.parse(text).conditions, NOW, after, 101)
    table = snapshots.table
    if backend == "sqlite":
        built = page_sql(query, table, "?")
        assert built is not None
        sql, params = built
        with snapshots.datastore.transaction(commit=False) as c:
            c.execute("EXPLAIN QUERY PLAN " + sql, params)
            details = [row[3] for row in c.fetchall()]
        searches = [d for d in details if d.startswith("SEARCH")]
        assert len(searches) == branches, details
        index = f"{table}_by_container_status" if text.startswith("status") else f"{table}_by_container"
        for search in searches:
            assert f"INDEX {index} (subject_container_id=?" in search, details
        assert not any(d.startswith("SCAN " + table) for d in details), details
        if branches == 1:  # the index gives the order: nothing is sorted
            assert not any("TEMP B-TREE" in d for d in details), details
    else:
        from psycopg.sql import SQL, Identifier

        built = page_sql(query, "{table}", "%s")
        assert built is not None
        sql, params = built
        with snapshots.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SQL("EXPLAIN (FORMAT JSON) " + sql).format(table=Identifier(table)), params)
            plan = curs.fetchone()["QUERY PLAN"]
        plan = plan if isinstance(plan, list) else json.loads(plan)
        nodes = _plan_nodes(plan[0]["Plan"])
        kinds = [n["Node Type"] for n in nodes]
        assert "Seq Scan" not in kinds, kinds
        index = f"{table}_by_container_status" if text.startswith("status") else f"{table}_by_container"
        if branches == 1:  # one ordered index walk under the LIMIT: nothing sorted
            scans = [n for n in nodes if n["Node Type"] in ("Index Scan", "Index Only Scan")]
            assert len(scans) == 1 and scans[0]["Index Name"] == index, kinds
            assert not {"Sort", "Bitmap Heap Scan"} & set(kinds), kinds
        else:  # one LIMIT-ed branch per stored status, merged
            (append,) = [n for n in nodes if n["Node Type"] in ("Append", "Merge Append")]
            assert [b["Node Type"] for b in append["Plans"]] == ["Limit"] * branches, kinds
            assert index in {n.get("Index Name") for n in nodes}, kinds
