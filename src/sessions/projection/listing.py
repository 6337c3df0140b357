"""ListSessions queries on the session_snapshots read model, backend-neutral.

A filter arrives here already parsed (``sessions.api.filters``) as a tuple of
``Condition`` values; this module turns a ``PageQuery`` into one SQL text and
its parameters. Column names come only from the fixed mapping below and every
value (container, cursor, filter values, the current time, the limit) is a
bound parameter: nothing a caller sends is ever spliced into the SQL.

Pages are keyset pages in the order of the container index,
``(subject_container_id, created_at DESC, session_id DESC)``: a page starts
strictly after the last row of the previous one, ``(created_at, session_id) <
(cursor)``, a row-value comparison that both SQLite and PostgreSQL use as an
index range. A page therefore reads about ``limit`` index entries however many
sessions the container holds, and since those two columns never change, a
client paging while new sessions arrive sees no row twice and misses none
that existed when it started.

Read-time expiry: a row stored OPENED or PENDING whose ``expires_at`` has
passed is shown EXPIRED, with ``closed_at`` = ``expires_at`` (the expiry event
may not be recorded yet). Filters on ``status`` and ``closed_at`` compare that
shown value, so they take the current time as a parameter too.

When a filter restricts the stored statuses a match can have (``status =
"FAILED"``, ``status IN ("PENDING", "EXPIRED")``), the query walks the
``(subject_container_id, status, created_at DESC, session_id DESC)`` index:
one ordered branch per stored status, merged (``UNION ALL`` of ``LIMIT``-ed
branches), so such a page also costs the same at any container size.
"""

from __future__ import annotations

from dataclasses import dataclass

from sessions.domain.enums import ACTIVE_STATUS_NUMBERS, SessionStatus

# Field names of the filter language -> what they compare.
STATUS = "status"
SESSION_TYPE = "session_type"
SYNC_MODE = "sync_mode"
AGENT_ID = "agent_id"
CREATED_AT = "created_at"
CLOSED_AT = "closed_at"
EXPIRES_AT = "expires_at"

TIME_FIELDS = (CREATED_AT, CLOSED_AT, EXPIRES_AT)
FIELDS = (STATUS, SESSION_TYPE, SYNC_MODE, AGENT_ID, CREATED_AT, CLOSED_AT, EXPIRES_AT)

EQUALITY_OPERATORS = ("=", "!=")
ORDER_OPERATORS = ("<", "<=", ">", ">=")
IN = "IN"

# The only column names that ever reach SQL, each a plain column of the table.
_COLUMNS = {
    SESSION_TYPE: "session_type",
    SYNC_MODE: "sync_mode",
    AGENT_ID: "agent_id",
    CREATED_AT: "created_at",
    EXPIRES_AT: "expires_at",
}

# Stored status numbers (the status column holds SessionStatus values).
EXPIRED = SessionStatus.EXPIRED.value
ALL_STATUSES = frozenset(s.value for s in SessionStatus)
# Statuses shown EXPIRED once expires_at has passed (read-time expiry).
ACTIVE = ACTIVE_STATUS_NUMBERS
# The same test in SQL, on trusted numbers: "stored as running".
ACTIVE_SQL = f"status IN ({', '.join(str(s) for s in ACTIVE)})"

# Which stored statuses can be shown as each status (read-time expiry).
_SHOWN_FROM = {s: {s} for s in ALL_STATUSES} | {EXPIRED: {EXPIRED, *ACTIVE}}

_SELECT = "session, status, expires_at, created_at, session_id"
_ORDER = "ORDER BY created_at DESC, session_id DESC"
_SHOWN_CLOSED_AT = (
    "(CASE WHEN status IN ({active}) AND expires_at <= {p} THEN expires_at ELSE closed_at END)"
)


@dataclass(frozen=True)
class Condition:
    """One ``field op value`` term. ``values`` are enum numbers (status,
    session_type, sync_mode), strings (agent_id) or times in nanoseconds since
    the Unix epoch (the precision RFC 3339 values can carry); one value except
    for ``IN``."""

    field: str
    op: str
    values: tuple[int | str, ...]


@dataclass(frozen=True)
class Cursor:
    """The last row of the previous page, in the page order."""

    created_at: int  # microseconds since the epoch, as stored
    session_id: str


@dataclass(frozen=True)
class PageQuery:
    subject_container_id: str
    conditions: tuple[Condition, ...]
    now: int  # microseconds since the epoch: what "expired" means for this page
    after: Cursor | None
    limit: int


@dataclass(frozen=True)
class ListedRow:
    """What a page needs of a row: the stored session and what read-time
    expiry checks (as in ``rows.ServedRow``), plus its place in the order."""

    session: bytes
    status: int
    expires_at: int
    created_at: int
    session_id: str


def shown_statuses(condition: Condition) -> frozenset[int]:
    """The statuses (as shown to readers) that satisfy a status condition."""
    named = frozenset(int(v) for v in condition.values)
    return ALL_STATUSES - named if condition.op == "!=" else named


def stored_statuses(conditions: tuple[Condition, ...]) -> frozenset[int] | None:
    """The stored statuses a matching row can have, or None when the filter
    says nothing about status (any row may match)."""
    possible: frozenset[int] | None = None
    for condition in conditions:
        if condition.field != STATUS:
            continue
        stored = frozenset(s for shown in shown_statuses(condition) for s in _SHOWN_FROM[shown])
        possible = stored if possible is None else possible & stored
    return possible


def page_sql(query: PageQuery, table: str, placeholder: str) -> tuple[str, list[object]] | None:
    """The SQL of one page (``table`` and ``placeholder`` are the backend's:
    a trusted table name and ``?`` or ``%s``) and its parameters; None when no
    row can match (the filter contradicts itself on status)."""
    p = placeholder
    statuses = stored_statuses(query.conditions)
    if statuses is not None and not statuses:
        return None
    if statuses is None or statuses == ALL_STATUSES:
        where, params = _where(query, p, None)
        sql = f"SELECT {_SELECT} FROM {table} WHERE {where} {_ORDER} LIMIT {p}"
        return sql, [*params, query.limit]
    if len(statuses) == 1:
        where, params = _where(query, p, next(iter(statuses)))
        sql = f"SELECT {_SELECT} FROM {table} WHERE {where} {_ORDER} LIMIT {p}"
        return sql, [*params, query.limit]
    branches: list[str] = []
    params = []
    for n, status in enumerate(sorted(statuses)):
        where, branch_params = _where(query, p, status)
        branches.append(
            f"SELECT {_SELECT} FROM (SELECT {_SELECT} FROM {table} WHERE {where} "
            f"{_ORDER} LIMIT {p}) AS branch{n}"
        )
        params += [*branch_params, query.limit]
    sql = " UNION ALL ".join(branches) + f" {_ORDER} LIMIT {p}"
    return sql, [*params, query.limit]


def _where(query: PageQuery, p: str, stored_status: int | None) -> tuple[str, list[object]]:
    parts = [f"subject_container_id = {p}"]
    params: list[object] = [query.subject_container_id]
    if stored_status is not None:
        parts.append(f"status = {p}")
        params.append(stored_status)
    if query.after is not None:
        parts.append(f"(created_at, session_id) < ({p}, {p})")
        params += [query.after.created_at, query.after.session_id]
    for condition in query.conditions:
        if condition.field == STATUS and stored_status is not None:
            sql, condition_params = _status_given(condition, stored_status, p, query.now)
            if not sql:
                continue
        else:
            sql, condition_params = _condition(condition, p, query.now)
        parts.append(sql)
        params += condition_params
    return " AND ".join(parts), params


def _status_given(c: Condition, stored: int, p: str, now: int) -> tuple[str, list[object]]:
    """A status condition on rows known to have stored status ``stored``
    (a branch): what remains is at most a test of expires_at, which keeps
    the branch a plain walk of the status index."""
    shown = shown_statuses(c)
    if stored not in ACTIVE:
        return ("", []) if stored in shown else ("1 = 0", [])
    while_active, once_expired = stored in shown, EXPIRED in shown
    if while_active and once_expired:
        return "", []
    if while_active:
        return f"expires_at > {p}", [now]
    if once_expired:
        return f"expires_at <= {p}", [now]
    return "1 = 0", []


def _condition(c: Condition, p: str, now: int) -> tuple[str, list[object]]:
    if c.field == STATUS:
        return _shown_status_in(shown_statuses(c), p, now)
    if c.field in TIME_FIELDS:
        return _time(c, p, now)
    column = _COLUMNS[c.field]
    if c.op == IN:
        return f"{column} IN ({', '.join(p for _ in c.values)})", list(c.values)
    return f"{column} {'=' if c.op == '=' else '<>'} {p}", [c.values[0]]


def _shown_status_in(shown: frozenset[int], p: str, now: int) -> tuple[str, list[object]]:
    if not shown:
        return "1 = 0", []
    parts: list[str] = []
    params: list[object] = []
    for status in sorted(shown):
        if status in ACTIVE:  # shown so only while not past expires_at
            parts.append(f"(status = {p} AND expires_at > {p})")
            params += [status, now]
        elif status == EXPIRED:  # recorded, or active and past expires_at
            parts.append(f"(status = {p} OR (status IN ({_params(p, ACTIVE)}) AND expires_at <= {p}))")
            params += [EXPIRED, *ACTIVE, now]
        else:
            parts.append(f"status = {p}")
            params.append(status)
    return "(" + " OR ".join(parts) + ")", params


def _time(c: Condition, p: str, now: int) -> tuple[str, list[object]]:
    if c.field == CLOSED_AT:
        column = _SHOWN_CLOSED_AT.format(p=p, active=_params(p, ACTIVE))
        column_params: list[object] = [*ACTIVE, now]
    else:
        column, column_params = _COLUMNS[c.field], []
    nanos = int(c.values[0])
    floor, remainder = divmod(nanos, 1000)  # stored times are whole microseconds
    ceiling = floor + (1 if remainder else 0)
    if c.op == "=":
        if remainder:
            return "1 = 0", []
        return f"{column} = {p}", [*column_params, floor]
    if c.op == "!=":
        if remainder:
            return "1 = 1", []
        # No closed_at (an open session) is "not equal" too: != is the
        # complement of =.
        nullable = f"{column} IS NULL OR " if c.field == CLOSED_AT else ""
        extra = column_params if nullable else []
        return f"({nullable}{column} <> {p})", [*extra, *column_params, floor]
    bound = {"<": ceiling, "<=": floor, ">": floor, ">=": ceiling}[c.op]
    return f"{column} {c.op} {p}", [*column_params, bound]


def _params(p: str, values: tuple[object, ...]) -> str:
    return ", ".join(p for _ in values)
