"""The filter language, without a store: what parses to what, every error with
its position, and that values never reach the SQL text."""

from __future__ import annotations

import re

import pytest

from sessions.api import filters
from sessions.domain.errors import InvalidArgument
from sessions.projection.listing import Condition, Cursor, PageQuery, page_sql

JAN1 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z in nanoseconds


def conditions(text: str) -> tuple[Condition, ...]:
    return filters.parse(text).conditions


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ()),
        ("   \t\n", ()),
        ('status = "FAILED"', (Condition("status", "=", (4,)),)),
        ('status!="OPENED"', (Condition("status", "!=", (1,)),)),
        ('status IN ("PENDING", "EXPIRED")', (Condition("status", "IN", (2, 5)),)),
        ('status in("COMPLETED")', (Condition("status", "IN", (3,)),)),
        ('session_type = "LDAP_SYNC"', (Condition("session_type", "=", (4,)),)),
        (
            'session_type IN ("AD_SYNC","AD_PASSWORD_HASH","AD_USER_CONTROL")',
            (Condition("session_type", "IN", (1, 2, 3)),),
        ),
        ('sync_mode != "DELTA"', (Condition("sync_mode", "!=", (2,)),)),
        ('agent_id = "agent-1"', (Condition("agent_id", "=", ("agent-1",)),)),
        ('agent_id IN ("a", "")', (Condition("agent_id", "IN", ("a", "")),)),
        (r'agent_id = "say \"hi\" \\ bye"', (Condition("agent_id", "=", ('say "hi" \\ bye',)),)),
        ('agent_id = "ünïcødé 🚀"', (Condition("agent_id", "=", ("ünïcødé 🚀",)),)),
        ('created_at >= "2026-01-01T00:00:00Z"', (Condition("created_at", ">=", (JAN1,)),)),
        ('created_at < "2026-01-01T03:00:00+03:00"', (Condition("created_at", "<", (JAN1,)),)),
        ('created_at <= "2025-12-31t19:30:00-04:30"', (Condition("created_at", "<=", (JAN1,)),)),
        ('closed_at > "2026-01-01T00:00:00.5z"', (Condition("closed_at", ">", (JAN1 + 500_000_000,)),)),
        ('expires_at = "2026-01-01T00:00:00.000000001Z"', (Condition("expires_at", "=", (JAN1 + 1,)),)),
        ('expires_at != "1969-12-31T23:59:59.999999Z"', (Condition("expires_at", "!=", (-1000,)),)),
        (
            'status = "FAILED" AND session_type = "AD_SYNC" and created_at >= "2026-01-01T00:00:00Z"',
            (
                Condition("status", "=", (4,)),
                Condition("session_type", "=", (1,)),
                Condition("created_at", ">=", (JAN1,)),
            ),
        ),
    ],
)
def test_valid_forms(text: str, expected: tuple[Condition, ...]) -> None:
    assert conditions(text) == expected


def test_values_that_look_like_sql_or_syntax_are_plain_values() -> None:
    for value in [
        "x' OR 1=1 --",
        "'; DROP TABLE session_snapshots_v1; --",
        'a" OR agent_id != "',  # written escaped below: stays one value
        "AND status = ",
        "%s ? $1 {table}",
        ") OR (1=1",
    ]:
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        parsed = conditions(f'agent_id = "{escaped}"')
        assert parsed == (Condition("agent_id", "=", (value,)),)


def test_canonical_form_ignores_spelling_but_not_meaning() -> None:
    same = [
        'status = "FAILED" AND agent_id IN ("b", "a")',
        'agent_id in ("a","b","a")   and   status="FAILED"',
        'agent_id IN ("a", "b") AND status IN ("FAILED")',
    ]
    assert len({filters.parse(t).canonical for t in same}) == 1
    assert (
        filters.parse('created_at > "2026-01-01T00:00:00Z"').canonical
        == filters.parse('created_at > "2026-01-01T01:00:00.000+01:00"').canonical
    )
    different = [
        'status = "FAILED"',
        'status != "FAILED"',
        'status = "COMPLETED"',
        'agent_id = "FAILED"',
        'status = "FAILED" AND agent_id = "a"',
        "",
    ]
    assert len({filters.parse(t).canonical for t in different}) == len(different)


@pytest.mark.parametrize(
    ("text", "position", "expected"),
    [
        # unparseable
        ("status", 7, "expected an operator after status"),
        ("status =", 9, "expected a double-quoted value for status, found end of filter"),
        ("status = FAILED", 10, "found 'FAILED' (write \"FAILED\")"),
        ('status == "FAILED"', 9, "expected a double-quoted value for status, found '='"),
        ('status = "FAILED" status', 19, "expected AND or the end of the filter"),
        ('status = "FAILED" OR status = "COMPLETED"', 19, "OR and NOT are not supported"),
        ('NOT status = "FAILED"', 1, "unknown field 'NOT'"),
        ('status = "FAILED" AND', 22, "expected a field name"),
        ('AND status = "FAILED"', 1, "expected a field name"),
        ('status = "FAILED" AND AND', 23, "expected a field name"),
        ('= "FAILED"', 1, "expected a field name"),
        ('status IN "FAILED"', 11, "expected '(' to open the IN list"),
        ("status IN ()", 12, "expected a double-quoted value for status, found ')'"),
        ('status IN ("FAILED",)', 21, "expected a double-quoted value"),
        ('status IN ("FAILED" "COMPLETED")', 21, "expected ',' or ')' to close the IN list"),
        ('status IN ("FAILED"', 20, "expected ',' or ')' to close the IN list, found end of filter"),
        ('agent_id = "abc', 12, "unterminated value"),
        ('agent_id = "abc\\', 12, "unterminated value"),
        ('agent_id = "a\\nb"', 14, "unknown escape '\\n'"),
        ("agent_id = 'x'", 12, "double quotes"),
        ('agent_id ! "x"', 10, "expected '!='"),
        ('agent_id = "x";', 15, "unexpected character ';'"),
        ('agent_id = "x" -- comment', 16, "unexpected character '-'"),
        # unknown field or enum name
        ('foo = "x"', 1, "unknown field 'foo'; expected one of status, session_type"),
        ('Status = "FAILED"', 1, "unknown field 'Status'"),
        (
            'status = "failed"',
            10,
            "unknown status 'failed'; expected one of OPENED, PENDING, COMPLETED, FAILED, EXPIRED",
        ),
        ('status = "SESSION_STATUS_UNSPECIFIED"', 10, "unknown status"),
        ('session_type = "AD_SYNC" AND session_type IN ("AD_SYNC", "LDAP")', 58, "unknown session_type 'LDAP'"),
        ('sync_mode = "FULL"', 13, "unknown sync_mode 'FULL'; expected one of FULL_SYNC, DELTA"),
        # wrong operator for the field
        ('status < "FAILED"', 8, "operator '<' does not apply to status; expected one of =, !=, IN"),
        ('agent_id >= "a"', 10, "operator '>=' does not apply to agent_id"),
        ('sync_mode > "DELTA"', 11, "operator '>' does not apply to sync_mode"),
        (
            'created_at IN ("2026-01-01T00:00:00Z")',
            12,
            "operator IN does not apply to created_at; expected one of =, !=, <, <=, >, >=",
        ),
        # bad times
        ('created_at > "yesterday"', 14, "'yesterday' is not a time; expected an RFC 3339 time"),
        ('created_at > "2026-01-01"', 14, "is not a time"),
        ('created_at > "2026-01-01T00:00:00"', 14, "is not a time"),  # no offset
        ('created_at > "2026-01-01 00:00:00Z"', 14, "is not a time"),
        ('closed_at > "2026-13-01T00:00:00Z"', 13, "month must be in 1..12"),
        ('closed_at > "2026-02-30T00:00:00Z"', 13, "day is out of range"),
        ('expires_at > "2026-01-01T24:00:00Z"', 14, "hour must be in 0..23"),
        ('expires_at > "2026-01-01T00:00:60Z"', 14, "second must be in 0..59"),
        ('expires_at > "0000-01-01T00:00:00Z"', 14, "year 0 is out of range"),
        ('expires_at > "2026-01-01T00:00:00+24:00"', 14, "offset +24:00 is out of range"),
        ('expires_at > "2026-01-01T00:00:00.1234567891Z"', 14, "at most 9 fractional digits"),
        ('expires_at > "2026-01-01T00:00:00.Z"', 14, "is not a time"),
    ],
)
def test_errors_name_the_position_and_what_was_expected(text: str, position: int, expected: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        filters.parse(text)
    assert refused.value.field == "filter"
    assert refused.value.description.startswith(f"at position {position}: "), refused.value.description
    assert expected in refused.value.description


def test_the_first_problem_in_the_text_is_the_one_reported() -> None:
    with pytest.raises(InvalidArgument, match="position 1: unknown field 'foo'"):
        filters.parse('foo = "x" ; bar')
    with pytest.raises(InvalidArgument, match="position 7: unexpected character"):
        filters.parse("status;")


@pytest.mark.parametrize("placeholder", ["?", "%s"])
def test_every_value_is_a_bound_parameter(placeholder: str) -> None:
    sneaky = "x' OR 1=1 --"
    text = (
        f'agent_id = "{sneaky}" AND agent_id IN ("a\\"b", "c") AND status IN ("EXPIRED", "PENDING") '
        'AND session_type != "AD_SYNC" AND sync_mode = "DELTA" AND created_at >= "2026-01-01T00:00:00Z" '
        'AND closed_at != "2026-01-02T00:00:00Z" AND expires_at < "2026-01-03T00:00:00.0000005Z"'
    )
    query = PageQuery("container'--", conditions(text), 12345, Cursor(777, "ses'x"), 8)
    built = page_sql(query, "snapshots", placeholder)
    assert built is not None
    sql, params = built
    assert sql.count(placeholder) == len(params)
    for value in (sneaky, 'a"b', "container'--", "ses'x", "12345", "777"):
        assert value not in sql
    # Only fixed words, column names, placeholders and the constants 0/1
    # (always-false/true tests) appear in the SQL.
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*|\d+", sql.replace(placeholder, " ")))
    allowed = {
        "SELECT",
        "FROM",
        "WHERE",
        "AND",
        "OR",
        "IN",
        "ORDER",
        "BY",
        "DESC",
        "LIMIT",
        "UNION",
        "ALL",
        "AS",
        "CASE",
        "WHEN",
        "THEN",
        "ELSE",
        "END",
        "IS",
        "NULL",
        "snapshots",
        "session",
        "status",
        "expires_at",
        "created_at",
        "session_id",
        "subject_container_id",
        "agent_id",
        "session_type",
        "sync_mode",
        "closed_at",
        "branch0",
        "branch1",
        "branch2",
        "0",
        "1",
    }
    assert words <= allowed, words - allowed
    assert sneaky in params and 'a"b' in params and "container'--" in params


def test_contradictory_status_terms_need_no_query() -> None:
    query = PageQuery("c", conditions('status = "FAILED" AND status = "COMPLETED"'), 0, None, 5)
    assert page_sql(query, "t", "?") is None
