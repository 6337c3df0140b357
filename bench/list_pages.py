"""ListSessions page time: a 10-session container against a 1,000,000-session
container, per backend. Prints figures, ratios and EXPLAIN; asserts nothing.

The read model's table is filled directly in bulk, in SQL (generating a
million sessions through the domain would take hours): realistic columns
(status mostly COMPLETED, ~3 % FAILED, ~2 % EXPIRED, the newest four
OPENED; four session types; seven agents; a session a minute, every tenth
pair sharing its created_at so ties are broken by session_id) and one
placeholder serialized session of realistic size for every row. Another
N/2 sessions spread over 1,000 other containers share the table, and three
10-session containers, each all matching one of the filters below, are what
the big container is compared with.

Timed, p50 and p95 over --fetches fetches each (the cases taking turns), at
--page-size rows a page (both containers fill the page: the same work):

- the read-model query alone (``ReadModel.list_page``), and
- ``ListSessions`` through a real gRPC server in this process (parse the
  filter, check the page token, query, build the next token, serialize),

for the first page and for a deep page (a token pointing at the middle of the
big container), unfiltered and with ``status = "FAILED"`` and
``status = "EXPIRED"`` (a read-time-expiry filter: three merged branches).
Then the ratios big / small, and the EXPLAIN of the deep-page queries.

Usage:
    .venv/bin/python bench/list_pages.py [--sessions N] [--backends sqlite,postgresql]

PostgreSQL: a database named sessions_bench_<random> is created on the server
of --postgres (default $SESSIONS_BENCH_POSTGRES or
postgresql://postgres@127.0.0.1:5432/test) and dropped at the end; the table
is ANALYZEd after the bulk load (autovacuum would do it). SQLite runs on a
file in a temporary folder and is not ANALYZEd (as in production).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime

import grpc
import psycopg
from psycopg.sql import SQL, Identifier

from sessions.api import filters
from sessions.api.listing import encode_token
from sessions.api.protos import service_pb2, service_pb2_grpc, session_pb2
from sessions.projection.listing import Cursor, PageQuery, page_sql
from sessions.projection.row_tables import open_rows
from sessions.server import SessionsServer

BIG = "c-big"
OTHER_CONTAINERS = 1000
# label -> (filter, the 10-session container it is compared in, the stored
# status of all its sessions or None for the usual mix). Each small container
# matches its filter with all 10 sessions, so both sides return full pages.
FILTERS = {
    "unfiltered": ("", "c-small", None),
    "FAILED": ('status = "FAILED"', "c-small-failed", 4),
    "EXPIRED": ('status = "EXPIRED"', "c-small-expired", 5),
}
T0 = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z, microseconds
NOW = T0 + 10**15  # far after every row; the four OPENED rows expire later still


# --- stores -------------------------------------------------------------------------------


from projector_and_writes import cpu_model, store  # noqa: E402  (one way to make a throwaway store)


def placeholder_session() -> bytes:
    """A serialized SynchronizationSession of the usual size (a closed full
    sync with three progress entries), served for every row."""
    message = session_pb2.SynchronizationSession(
        session_id="ses" + "a" * 17,
        agent_id="agent-0",
        sync_mode=session_pb2.FULL_SYNC,
        status=session_pb2.COMPLETED,
        session_type=1,
        progress_entries=[
            session_pb2.ProgressEntry(
                object_type=t,
                change_info=[session_pb2.ChangeInfo(change_type=c, successful=1000 * c, failed=c) for c in (1, 2, 3)],
            )
            for t in (1, 2, 3)
        ],
    )
    message.created_at.FromMicroseconds(T0)
    message.expires_at.FromMicroseconds(T0 + 600_000_000)
    message.closed_at.FromMicroseconds(T0 + 300_000_000)
    return message.SerializeToString()


def fill_sql(
    backend: str, table: str, container: str, start: int, count: int, spread: bool, only: int | None = None
) -> str:
    """INSERT ... SELECT generating ``count`` rows numbered from ``start``:
    in ``container``, or (``spread``) over OTHER_CONTAINERS containers. The
    placeholder session is the one parameter (``:session`` / ``%(session)s``)."""
    end = start + count - 1
    if backend == "sqlite":
        def mod(a: str, b: int) -> str:
            return f"(({a}) % {b})"

        numbers = f"WITH RECURSIVE n(i) AS (SELECT {start} UNION ALL SELECT i + 1 FROM n WHERE i < {end}) "
        source = "FROM n"
        session_id = f"printf('ses%017x', {mod('i * 2654435761', 2**36)})"
        sync_mode = f"1 + ({mod('i', 5)} = 0)"
        blob = ":session"
    else:
        def mod(a: str, b: int) -> str:
            return f"mod({a}, {b})"

        numbers = ""
        source = f"FROM generate_series({start}::bigint, {end}::bigint) AS i"
        session_id = f"'ses' || lpad(to_hex({mod('i * 2654435761', 2**36)}), 17, '0')"
        sync_mode = f"1 + ({mod('i', 5)} = 0)::int"
        blob = "%(session)s"
    owner = f"'c-' || {mod('i', OTHER_CONTAINERS)}" if spread else f"'{container}'"
    # The last four rows of a range are OPENED (and expire after NOW).
    opened = f"i > {end - 4}" if only is None else "1 = 0"
    status = (
        f"CASE WHEN {opened} THEN 1 WHEN {mod('i * 7919', 100)} < 3 THEN 4 "
        f"WHEN {mod('i * 7919', 100)} < 5 THEN 5 ELSE 3 END"
        if only is None
        else str(only)
    )
    created = f"({T0} + (i - {mod('i', 10)} / 9) * 60000000)"  # every tenth ties with the ninth
    expires = f"CASE WHEN {opened} THEN {NOW + 600_000_000} ELSE {created} + 600000000 END"
    closed = f"CASE WHEN {opened} THEN NULL ELSE {created} + 300000000 END"
    return (
        f"{numbers}INSERT INTO {table} (session_id, subject_container_id, session_type, status, "
        "sync_mode, agent_id, created_at, expires_at, closed_at, last_seen_at, version, state, session) "
        f"SELECT {session_id}, {owner}, 1 + {mod('i * 31', 4)}, {status}, {sync_mode}, "
        f"'agent-' || {mod('i', 7)}, {created}, {expires}, {closed}, {created}, 7, {blob}, {blob} {source}"
    )


def load(server: SessionsServer, url: str, backend: str, sessions: int) -> float:
    """Fill the table (untimed for the pages; returned for the record)."""
    view = open_rows(server.read_model.app)  # the live table itself (the view reads it)
    params = {"session": placeholder_session()}
    started = time.perf_counter()
    with view.datastore.transaction(commit=True) as c:  # type: ignore[attr-defined]
        for n, (_, container, only) in enumerate(FILTERS.values()):
            c.execute(fill_sql(backend, view.table, container, 1 + 10 * n, 10, False, only), params)
        c.execute(fill_sql(backend, view.table, "", 100, sessions // 2, True), params)
        c.execute(fill_sql(backend, view.table, BIG, 10_000_000, sessions, False), params)
    if backend == "postgresql":
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SQL("VACUUM ANALYZE {}").format(Identifier(view.table)))
    return time.perf_counter() - started


# --- measuring ----------------------------------------------------------------------------


def timed(calls: dict[str, Callable[[], object]], fetches: int, warmup: int = 10) -> dict[str, dict[str, float]]:
    """p50/p95 of each call, the calls taking turns round by round so that
    background load on the machine weighs on all of them alike."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(fetches):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - started)
    out = {}
    for name, values in samples.items():
        values.sort()
        out[name] = {"p50": statistics.median(values), "p95": values[int(0.95 * (len(values) - 1))]}
    return out


def middle_cursor(server: SessionsServer, backend: str, filter_text: str) -> Cursor:
    """The row in the middle of the big container's listing (for this filter):
    a deep page starts after it. Found once, by an OFFSET query (slow, untimed)."""
    view = open_rows(server.read_model.app)  # the live table itself (the view reads it)
    conditions = filters.parse(filter_text).conditions
    count_query = PageQuery(BIG, conditions, NOW, None, 10**9)
    postgres = backend == "postgresql"
    built = page_sql(count_query, "{table}" if postgres else view.table, "%s" if postgres else "?")
    assert built is not None
    sql, params = built
    sql = f"SELECT created_at, session_id FROM ({sql}) AS everything"
    if backend == "sqlite":
        with view.datastore.transaction(commit=False) as c:  # type: ignore[attr-defined]
            c.execute(sql, params)
            rows = c.fetchall()
        pairs = [(r[0], r[1]) for r in rows]
    else:
        with view.datastore.get_connection() as conn, conn.cursor() as curs:  # type: ignore[attr-defined]
            curs.execute(SQL(sql).format(table=Identifier(view.table)), params)  # type: ignore[arg-type]
            pairs = [(r["created_at"], r["session_id"]) for r in curs.fetchall()]
    created_at, session_id = pairs[len(pairs) // 2]
    return Cursor(created_at, session_id)


def explain(server: SessionsServer, backend: str, query: PageQuery) -> list[str]:
    view = open_rows(server.read_model.app)  # the live table itself (the view reads it)
    if backend == "sqlite":
        built = page_sql(query, view.table, "?")
        assert built is not None
        sql, params = built
        with view.datastore.transaction(commit=False) as c:  # type: ignore[attr-defined]
            c.execute("EXPLAIN QUERY PLAN " + sql, params)
            return [row[3] for row in c.fetchall()]
    built = page_sql(query, "{table}", "%s")
    assert built is not None
    sql, params = built
    with view.datastore.get_connection() as conn, conn.cursor() as curs:  # type: ignore[attr-defined]
        statement = SQL("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql).format(table=Identifier(view.table))  # type: ignore[arg-type]
        curs.execute(statement, params)
        return [r["QUERY PLAN"] for r in curs.fetchall()]


def bench_backend(backend: str, url: str, args: argparse.Namespace) -> dict[str, object]:
    server = SessionsServer(url, "127.0.0.1:0", run_projector=False, run_deadlines=False)
    port = server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=10)
    stub = service_pb2_grpc.SynchronizationSessionServiceStub(channel)
    out: dict[str, object] = {}
    try:
        out["load_s"] = load(server, url, backend, args.sessions)
        loaded = args.sessions + args.sessions // 2 + 10
        print(f"  {backend}: loaded {loaded:,} rows in {out['load_s']:.1f} s", file=sys.stderr)
        key = server.read_model.page_token_key()
        read_model_list = server.read_model.list_page
        size = args.page_size
        figures: dict[str, dict[str, float]] = {}
        rows: dict[str, int] = {}
        explains: dict[str, list[str]] = {}
        for label, (filter_text, small, _) in FILTERS.items():
            parsed = filters.parse(filter_text)
            deep = middle_cursor(server, backend, filter_text)
            cases = {"small first": (small, None), "big first": (BIG, None), "big deep": (BIG, deep)}
            queries: dict[str, Callable[[], object]] = {}
            calls: dict[str, Callable[[], object]] = {}
            for name, (container, cursor) in cases.items():
                query = PageQuery(container, parsed.conditions, NOW, cursor, size + 1)
                token = encode_token(key, container, parsed.canonical, cursor) if cursor else ""
                request = service_pb2.ListSessionsRequest(
                    subject_container_id=container, page_size=size, filter=filter_text, page_token=token
                )
                rows[f"{label}|{name}"] = len(stub.ListSessions(request).sessions)
                queries[name] = lambda q=query: read_model_list(q)
                calls[name] = lambda r=request: stub.ListSessions(r)
            for layer, group in (("query", queries), ("grpc", calls)):
                for name, figure in timed(group, args.fetches).items():
                    figures[f"{label}|{name}|{layer}"] = figure
            explains[f"{label}, deep page of {BIG}"] = explain(
                server, backend, PageQuery(BIG, parsed.conditions, NOW, deep, size + 1)
            )
        out["rows"] = rows
        out["figures"] = figures
        out["explains"] = explains
    finally:
        channel.close()
        server.stop(grace=1)
    return out




def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sessions", type=int, default=1_000_000, help="sessions in the big container (default 1000000)"
    )
    parser.add_argument("--backends", default="sqlite,postgresql", help="default sqlite,postgresql")
    parser.add_argument("--fetches", type=int, default=200, help="timed fetches per figure (default 200)")
    parser.add_argument(
        "--page-size", type=int, default=10, help="rows a page (default 10: the small container fills it)"
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get("SESSIONS_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    import sqlite3

    print(
        f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; {os.cpu_count()} CPUs, {cpu_model()}; "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}; "
        f"big container {args.sessions:,} sessions, small 10; page size {args.page_size}; "
        f"p50/p95 of {args.fetches} fetches (ms)"
    )
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    results: dict[str, dict[str, object]] = {}
    for backend in backends:
        with store(backend, args.postgres) as url:
            if backend == "postgresql":
                with psycopg.connect(args.postgres) as conn:
                    version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
                print(f"PostgreSQL {version}")
            results[backend] = bench_backend(backend, url, args)

    width = 50
    print()
    print(f"{'':{width}}" + "".join(f"{b:>22}" for b in backends))
    print(
        f"{'bulk load of the table (s, untimed setup)':{width}}"
        + "".join(f"{results[b]['load_s']:>22.1f}" for b in backends)
    )
    names = {
        "small first": "10-session container, first page",
        "big first": f"{args.sessions:,}-session container, first page",
        "big deep": f"{args.sessions:,}-session container, deep page",
    }
    for label, (filter_text, small, _) in FILTERS.items():
        print(f"\n[{filter_text or 'no filter'}]  (10-session container: {small})")
        for name, title in names.items():
            count = "".join(f"{results[b]['rows'][f'{label}|{name}']:>22}" for b in backends)  # type: ignore[index]
            print(f"{title + ': rows':{width}}{count}")
            for layer, what in (("query", "read-model query"), ("grpc", "ListSessions over gRPC")):
                cells = ""
                for b in backends:
                    f = results[b]["figures"][f"{label}|{name}|{layer}"]  # type: ignore[index]
                    cells += f"{f['p50'] * 1000:>12.3f} / {f['p95'] * 1000:<7.3f}"
                print(f"{'  ' + what + ' p50 / p95 (ms)':{width}}{cells}")
        for layer, what in (("query", "query"), ("grpc", "gRPC")):
            for name in ("big first", "big deep"):
                cells = ""
                for b in backends:
                    figures = results[b]["figures"]  # type: ignore[index]
                    ratio = figures[f"{label}|{name}|{layer}"]["p50"] / figures[f"{label}|small first|{layer}"]["p50"]
                    cells += f"{ratio:>21.2f}x"
                print(f"{'ratio ' + what + ' p50, ' + name.replace('big ', '') + ' page: big / small':{width}}{cells}")
    for backend in backends:
        for title, lines in results[backend]["explains"].items():  # type: ignore[union-attr]
            print(f"\nEXPLAIN ({backend}), {title}:")
            for line in lines:
                print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
