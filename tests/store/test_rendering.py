"""A write's values rendered into its one message (store.recorders._Rendering)
come back from PostgreSQL exactly as they were, whatever they hold: quotes,
backslashes, braces, commas, NULL-looking text, any bytes; and a value the
fast path does not know goes through psycopg's own client-side binding."""

from __future__ import annotations

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessions.store.recorders import _Rendering

pytestmark = pytest.mark.postgres

TEXT = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40)
BIGINT = st.integers(min_value=-(2**63), max_value=2**63 - 1)
STATEMENT = b"SELECT %s::text[], %s::bytea[], %s::bigint[]"


@pytest.fixture
def conn(postgres_url: str):  # type: ignore[no-untyped-def]
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        yield connection


def _round_trip(conn, params):  # type: ignore[no-untyped-def]
    rendering = _Rendering(conn)
    rendering.execute(STATEMENT, params)
    (message,) = rendering.rendered
    return conn.execute(message).fetchone()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    texts=st.lists(st.none() | TEXT, max_size=5),
    blobs=st.lists(st.none() | st.binary(max_size=40), max_size=5),
    numbers=st.lists(st.none() | BIGINT, max_size=5),
)
def test_values_come_back_as_they_were(conn, texts, blobs, numbers) -> None:  # type: ignore[no-untyped-def]
    assert _round_trip(conn, [texts, blobs, numbers]) == (texts, blobs, numbers)


@pytest.mark.parametrize(
    "text",
    ["NULL", "null", "", " ", "{}", "{a,b}", 'a"b', "a\\b", "\\", '"', "'", "''", "it's", "a,b", "é ü 中",
     "'); DROP TABLE x; --", "\\x00", "E'\\\\'", "$$", "\t\n\r"],
)
def test_awkward_text(conn, text: str) -> None:  # type: ignore[no-untyped-def]
    assert _round_trip(conn, [[text], [text.encode()], [1]]) == ([text], [text.encode()], [1])


def test_a_value_of_another_kind_goes_through_psycopgs_binding(conn) -> None:  # type: ignore[no-untyped-def]
    import datetime

    rendering = _Rendering(conn)
    day = datetime.date(2026, 12, 2)
    rendering.execute(b"SELECT %s::date[]", [[day]])
    assert conn.execute(rendering.rendered[0]).fetchone() == ([day],)
