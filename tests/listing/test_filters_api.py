"""Every filter field and operator through the gRPC API, on SQLite and
PostgreSQL, including sessions that only read-time expiry shows EXPIRED."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from sessions.api.protos import service_pb2, session_pb2
from sessions.domain.policy import Policy
from sessions.store.clock import ManualClock
from tests.listing.listing_support import (
    bad_request,
    list_all,
    list_page,
    matches,
    open_over_grpc,
    order_key,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = Policy.from_seconds(session_ttl=600, heartbeat_grace=120, sync_interval=0, full_sync_period=86400)
C = "c-filters"
AD_SYNC, AD_PASSWORD_HASH, AD_USER_CONTROL, LDAP_SYNC = 1, 2, 3, 4
ODD_AGENT = 'o\'brien "q" \\ x'


def ts(seconds: float, offset_hours: int = 0) -> str:
    """T0 + seconds as RFC 3339, in UTC ("Z") or at a given offset."""
    moment = T0 + timedelta(seconds=seconds)
    if offset_hours == 0:
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{moment.microsecond:06d}" if moment.microsecond else "") + "Z"
    return moment.astimezone(timezone(timedelta(hours=offset_hours))).isoformat()


class World:
    """Seven sessions in container C (and one elsewhere), built through the API:

    s1 COMPLETED  AD_SYNC          FULL_SYNC agent-a  created 0,  closed 10
    s2 FAILED     AD_SYNC          DELTA     agent-b  created 20, closed 30
    s3 OPENED     AD_SYNC          FULL_SYNC agent-a  created 40, expires 1200
    s4 OPENED*    AD_PASSWORD_HASH FULL_SYNC agent-b  created 50, expires 650
    s5 EXPIRED    LDAP_SYNC        FULL_SYNC ODD      created 60, expires 660 (recorded)
    s6 PENDING    AD_USER_CONTROL  FULL_SYNC agent-c  created 70, expires 1200
    s7 OPENED     LDAP_SYNC        FULL_SYNC agent-c  created 661, expires 1261

    * stored OPENED, shown EXPIRED from 650 on (no expiry event: the
      deadline worker is off). At 1230, s3 and s6 are past expires_at too.
    """

    def __init__(self, server, clock: ManualClock):  # type: ignore[no-untyped-def]
        self.server, self.clock, self.stub = server, clock, server.sessions
        app, projector = server.server.app, server.server.projector
        stub = self.stub

        def at(seconds: float) -> None:
            clock.advance((T0 + timedelta(seconds=seconds) - clock()).total_seconds())

        def close(session_id: str, failed: bool = False) -> None:
            stub.CloseSession(
                service_pb2.CloseSessionRequest(session_id=session_id, failed=failed, fail_reason="x" if failed else "")
            )

        self.other = open_over_grpc(stub, "c-other", "agent-a", AD_SYNC)
        self.s1 = open_over_grpc(stub, C, "agent-a", AD_SYNC)
        at(10)
        close(self.s1)
        at(20)
        self.s2 = open_over_grpc(stub, C, "agent-b", AD_SYNC)
        at(30)
        close(self.s2, failed=True)
        at(40)
        self.s3 = open_over_grpc(stub, C, "agent-a", AD_SYNC)
        at(50)
        self.s4 = open_over_grpc(stub, C, "agent-b", AD_PASSWORD_HASH)
        at(60)
        self.s5 = open_over_grpc(stub, C, ODD_AGENT, LDAP_SYNC)
        at(70)
        self.s6 = open_over_grpc(stub, C, "agent-c", AD_USER_CONTROL)
        at(600)
        for session_id in (self.s3, self.s6):
            stub.Heartbeat(service_pb2.HeartbeatRequest(session_id=session_id))
        at(661)
        assert projector.wait_for(app.expire_session(self.s5), 10)
        self.s7 = open_over_grpc(stub, C, "agent-c", LDAP_SYNC)
        at(730)
        assert projector.wait_for(app.stall_session(self.s6), 10)
        self.at = at

    def ids(self, filter: str) -> list[str]:  # noqa: A002
        return [s.session_id for s in list_all(self.stub, C, filter=filter)[0]]

    def names(self, filter: str) -> list[str]:  # noqa: A002
        by_id = {getattr(self, f"s{n}"): f"s{n}" for n in range(1, 8)}
        return [by_id[i] for i in self.ids(filter)]

    def stored_status(self, session_id: str) -> int:
        row = self.server.server.read_model.live.get(session_id)
        assert row is not None
        return row.status


@pytest.fixture
def world(listing_server) -> World:  # type: ignore[no-untyped-def]
    clock = ManualClock(T0)
    return World(listing_server(policy=POLICY, clock=clock), clock)


def filters_for_every_field_and_operator() -> list[str]:
    cases = []
    for status in ("OPENED", "PENDING", "COMPLETED", "FAILED", "EXPIRED"):
        cases += [f'status = "{status}"', f'status != "{status}"']
    cases += [
        'status IN ("OPENED", "PENDING")',
        'status IN ("EXPIRED", "FAILED", "COMPLETED")',
        'status IN ("PENDING")',
    ]
    for session_type in ("AD_SYNC", "AD_PASSWORD_HASH", "AD_USER_CONTROL", "LDAP_SYNC"):
        cases += [f'session_type = "{session_type}"', f'session_type != "{session_type}"']
    cases += ['session_type IN ("AD_PASSWORD_HASH", "LDAP_SYNC")']
    cases += [
        'sync_mode = "FULL_SYNC"',
        'sync_mode = "DELTA"',
        'sync_mode != "DELTA"',
        'sync_mode IN ("DELTA", "FULL_SYNC")',
    ]
    cases += [
        'agent_id = "agent-a"',
        'agent_id != "agent-a"',
        'agent_id IN ("agent-b", "agent-c")',
        'agent_id = "nobody"',
        'agent_id IN ("")',
    ]
    for field, moments in {
        "created_at": (0, 40, 60, 661, 45.5),
        "closed_at": (10, 30, 650, 660, 1200),
        "expires_at": (600, 650, 660, 1200, 1261),
    }.items():
        for moment in moments:
            for op in ("=", "!=", "<", "<=", ">", ">="):
                cases.append(f'{field} {op} "{ts(moment)}"')
    cases += [
        f'created_at = "{ts(40, offset_hours=3)}"',
        f'created_at >= "{ts(40, offset_hours=-5)}"',
        f'expires_at < "{ts(650, offset_hours=14)}"',
        'status = "EXPIRED" AND session_type = "AD_PASSWORD_HASH"',
        f'status IN ("OPENED", "PENDING") AND created_at > "{ts(50)}"',
        f'status != "COMPLETED" AND agent_id IN ("agent-a", "agent-b") AND closed_at < "{ts(700)}"',
        f'closed_at >= "{ts(30)}" AND closed_at <= "{ts(660)}" AND sync_mode = "FULL_SYNC"',
        'status = "FAILED" AND status = "COMPLETED"',
        'status != "FAILED" AND status != "OPENED" AND status != "EXPIRED"',
    ]
    return cases


def test_every_field_and_operator_matches_the_reference(world: World) -> None:
    for moment in (730, 1200, 1230):  # before, at and after s3 and s6 reach expires_at
        world.at(moment)
        everything, _ = list_all(world.stub, C)
        assert len(everything) == 7
        assert everything == sorted(everything, key=order_key, reverse=True)
        for session in everything:  # a page shows what GetSession shows
            assert (
                session == world.stub.GetSession(service_pb2.GetSessionRequest(session_id=session.session_id)).session
            )
        for text in filters_for_every_field_and_operator():
            expected = [s.session_id for s in everything if matches(s, text)]
            assert world.ids(text) == expected, (moment, text)


def test_read_time_expiry_is_what_filters_see(world: World) -> None:
    assert world.stored_status(world.s4) == session_pb2.OPENED  # no expiry event
    assert world.names('status = "EXPIRED"') == ["s5", "s4"]
    assert world.names('status = "OPENED"') == ["s7", "s3"]
    assert world.names('status = "PENDING"') == ["s6"]
    assert world.names('status != "EXPIRED" AND status != "OPENED"') == ["s6", "s2", "s1"]
    assert world.names(f'closed_at = "{ts(650)}"') == ["s4"]  # shown closed at its expires_at
    assert world.names(f'closed_at > "{ts(30)}"') == ["s5", "s4"]
    assert world.names(f'closed_at != "{ts(10)}"') == ["s7", "s6", "s5", "s4", "s3", "s2"]

    world.at(1199.999999)
    assert world.names('status = "OPENED"') == ["s7", "s3"]
    world.at(1200)  # expires_at is the first moment a session is shown EXPIRED
    assert world.names('status = "OPENED"') == ["s7"]
    assert world.names('status = "EXPIRED"') == ["s6", "s5", "s4", "s3"]
    world.at(1230)
    assert world.stored_status(world.s3) == session_pb2.OPENED
    assert world.stored_status(world.s6) == session_pb2.PENDING
    assert world.names('status = "EXPIRED"') == ["s6", "s5", "s4", "s3"]
    assert world.names('status IN ("OPENED", "PENDING")') == ["s7"]
    assert world.names(f'closed_at = "{ts(1200)}"') == ["s6", "s3"]
    assert world.names(f'closed_at < "{ts(1200)}" AND status = "EXPIRED"') == ["s5", "s4"]
    for session in list_all(world.stub, C, filter='status = "EXPIRED"')[0]:
        assert session.status == session_pb2.EXPIRED and session.closed_at == session.expires_at


def test_hand_checked_answers(world: World) -> None:
    assert world.names('session_type = "AD_SYNC"') == ["s3", "s2", "s1"]
    assert world.names('sync_mode = "DELTA"') == ["s2"]
    assert world.names('agent_id IN ("agent-b", "agent-c")') == ["s7", "s6", "s4", "s2"]
    assert world.names('status = "FAILED"') == ["s2"]
    assert world.names(f'created_at > "{ts(40)}" AND created_at <= "{ts(70)}"') == ["s6", "s5", "s4"]
    # Sub-microsecond bounds: 40 s + 1 ns lies strictly between s3 (40 s) and s4 (50 s).
    just_after_40 = "2026-01-01T00:00:40.000000001Z"
    assert world.names(f'created_at < "{just_after_40}" AND created_at > "{ts(20)}"') == ["s3"]
    assert world.names(f'created_at >= "{just_after_40}" AND created_at < "{ts(60)}"') == ["s4"]
    assert world.names(f'created_at = "{just_after_40}"') == []
    assert len(world.names(f'created_at != "{just_after_40}"')) == 7
    assert world.names(f'expires_at = "{ts(1200, offset_hours=5)}"') == ["s6", "s3"]
    assert world.names("") == ["s7", "s6", "s5", "s4", "s3", "s2", "s1"]
    assert list_all(world.stub, "c-other")[0][0].session_id == world.other


def test_values_that_look_like_sql_are_only_values(world: World) -> None:
    for text in (
        'agent_id = "x\' OR 1=1 --"',
        "agent_id = \"x' OR '1'='1\"",
        'agent_id = "\\" OR 1=1 --"',
        'agent_id IN ("a\'); DROP TABLE session_snapshots_v1; --")',
        'agent_id = "%s"',
        'agent_id = "?"',
    ):
        assert world.ids(text) == [], text
    # The table is still there, and the one odd agent id is found exactly.
    assert world.names('agent_id = "o\'brien \\"q\\" \\\\ x"') == ["s5"]
    assert world.names('agent_id != "o\'brien \\"q\\" \\\\ x" AND session_type = "LDAP_SYNC"') == ["s7"]
    assert len(world.ids("")) == 7


def test_bad_filters_are_invalid_argument_over_the_wire(world: World) -> None:
    for text, expected in (
        ('status = "BROKEN"', "at position 10: unknown status 'BROKEN'"),
        ("status = 'FAILED'", "at position 10: values must be in double quotes"),
        ('created_at > "soon"', "at position 14: created_at: 'soon' is not a time"),
        ('agent_id < "a"', "at position 10: operator '<' does not apply to agent_id"),
        ('colour = "red"', "at position 1: unknown field 'colour'"),
        ('status = "FAILED" OR', "at position 19: expected AND"),
        ("x" * 1001, "must be at most 1000 characters"),
    ):
        field, description = bad_request(lambda text=text: list_page(world.stub, C, filter=text))
        assert field == "filter"
        assert expected in description, description
