"""Keyset pages through the gRPC API on SQLite and PostgreSQL: 1,000 sessions
in pages of 7 while another thread keeps opening sessions in the same
container, page sizes, and every misuse of a page token."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from sessions.domain.enums import SessionType
from sessions.domain.policy import Policy
from sessions.store.clock import ManualClock
from tests.listing.listing_support import (
    bad_request,
    list_all,
    list_page,
    open_in_app,
    order_key,
)

T0 = datetime(2026, 2, 1, tzinfo=UTC)
# A short TTL and no sync interval: each open ends the previous session of its
# type (expired), so one command makes one session.
POLICY = Policy.from_seconds(session_ttl=10, heartbeat_grace=5, sync_interval=0)
BIG = "c-big"
TYPES = list(SessionType)


def fill(server, clock: ManualClock, container: str, rounds: int) -> None:  # type: ignore[no-untyped-def]
    """Open ``rounds`` x 4 sessions (one per type, all four at the same
    instant, so created_at ties are broken by session_id), then wait until
    the read model has them."""
    app = server.server.app
    position = 0
    for n in range(rounds):
        clock.advance(11)  # the previous round's sessions are past expires_at
        for session_type in TYPES:
            position = open_in_app(app, container, f"agent-{n % 3}", session_type).position
    assert server.server.projector.wait_for(position, 60)


@pytest.fixture
def big(listing_server):  # type: ignore[no-untyped-def]
    clock = ManualClock(T0)
    server = listing_server(policy=POLICY, clock=clock)
    fill(server, clock, BIG, 250)
    return server, clock


def test_pages_of_7_through_1000_sessions_while_new_ones_arrive(big) -> None:  # type: ignore[no-untyped-def]
    server, clock = big
    stub = server.sessions
    existing, _ = list_all(stub, BIG, page_size=1000)
    assert len(existing) == 1000
    expired_at_start = {s.session_id for s in existing if s.status == 5}
    assert len(expired_at_start) == 996  # all but the newest of each type

    stop = threading.Event()
    inserted: list[int] = []  # positions of the opens
    failures: list[BaseException] = []

    def keep_opening() -> None:
        try:
            n = 0
            while not stop.is_set():
                clock.advance(11)
                for session_type in TYPES:
                    outcome = open_in_app(server.server.app, BIG, f"late-{n}", session_type)
                    inserted.append(outcome.position)
                n += 1
        except BaseException as e:  # noqa: BLE001 - reported by the test
            failures.append(e)

    inserter = threading.Thread(target=keep_opening, daemon=True)
    inserter.start()
    try:
        for filter_text in ("", 'status = "EXPIRED" AND session_type IN ("AD_SYNC", "LDAP_SYNC")'):
            seen, pages = list_all(stub, BIG, filter=filter_text, page_size=7)
            ids = [s.session_id for s in seen]
            assert len(ids) == len(set(ids)), "a session was listed twice"
            assert seen == sorted(seen, key=order_key, reverse=True), "pages are out of order"
            if filter_text:
                wanted = {
                    s.session_id
                    for s in existing
                    if s.session_id in expired_at_start and s.session_type in (1, 4)
                }
            else:
                wanted = {s.session_id for s in existing}
                assert pages >= -(-1000 // 7)
            missing = wanted - set(ids)
            assert not missing, f"{len(missing)} sessions that existed at the start were not listed"
    finally:
        stop.set()
        inserter.join(30)
    assert not failures, failures
    assert len(inserted) > 0  # the pages really raced with new sessions
    assert server.server.projector.wait_for(max(inserted), 30)
    after, _ = list_all(stub, BIG, page_size=1000)
    assert len(after) >= 1000 + len(inserted)


def test_page_sizes_and_the_last_page(listing_server) -> None:  # type: ignore[no-untyped-def]
    clock = ManualClock(T0)
    server = listing_server(policy=POLICY, clock=clock)
    fill(server, clock, "c-120", 30)
    stub = server.sessions
    first = list_page(stub, "c-120")
    assert len(first.sessions) == 100 and first.next_page_token  # 0 means 100
    assert len(first.next_page_token) <= 2000
    everything = list_page(stub, "c-120", page_size=120)
    assert len(everything.sessions) == 120 and everything.next_page_token == ""  # exactly full
    assert list(first.sessions) == list(everything.sessions)[:100]
    assert list_page(stub, "c-120", page_size=1000).sessions == everything.sessions

    # The page size may change between pages; the token carries only the position.
    second = list_page(stub, "c-120", page_size=7, page_token=first.next_page_token)
    assert list(second.sessions) == list(everything.sessions)[100:107]
    last = list_page(stub, "c-120", page_size=13, page_token=second.next_page_token)
    assert list(last.sessions) == list(everything.sessions)[107:] and last.next_page_token == ""

    sessions, pages = list_all(stub, "c-120", page_size=1)
    assert pages == 120 and sessions == list(everything.sessions)

    assert list_page(stub, "c-empty").sessions == []
    assert list_page(stub, "c-empty").next_page_token == ""
    for size in (-1, 1001):
        field, _ = bad_request(lambda size=size: list_page(stub, "c-120", page_size=size))
        assert field == "page_size"


def test_token_misuse_is_invalid_argument(listing_server) -> None:  # type: ignore[no-untyped-def]
    clock = ManualClock(T0)
    server = listing_server(policy=POLICY, clock=clock)
    fill(server, clock, "c-a", 3)
    fill(server, clock, "c-b", 3)
    stub = server.sessions
    filter_text = 'session_type != "AD_PASSWORD_HASH"'
    token = list_page(stub, "c-a", page_size=2, filter=filter_text).next_page_token
    assert token

    # The same filter written differently is the same filter.
    respelled = 'session_type  !=  "AD_PASSWORD_HASH"'
    assert list_page(stub, "c-a", page_size=2, filter=respelled, page_token=token).sessions

    def refused(**request: object) -> str:
        fields = {"filter": filter_text, "page_token": token, **request}
        field, description = bad_request(lambda: list_page(stub, fields.pop("container", "c-a"), **fields))  # type: ignore[arg-type]
        assert field == "page_token"
        return description

    assert "another subject_container_id" in refused(container="c-b")
    assert "another filter" in refused(filter="")
    assert "another filter" in refused(filter='session_type != "AD_SYNC"')
    tampered = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    assert "signature" in refused(page_token=tampered) or "not a page token" in refused(page_token=tampered)
    assert "not a page token" in refused(page_token="garbage!")
    assert "not a page token" in refused(page_token="abcd")
    assert "at most 2000 characters" in refused(page_token="A" * 2001)

    # A token outlives the server that issued it (the key is in the store) ...
    server.server.stop(grace=1)
    again = listing_server(policy=POLICY, clock=clock)
    resumed = list_page(again.sessions, "c-a", page_size=2, filter=filter_text, page_token=token)
    assert len(resumed.sessions) == 2
