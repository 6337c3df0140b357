"""The agent rule lives in the domain: the application refuses a caller that
does not act for the session's agent, before anything else is decided."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sessions.api.operations import renderer
from sessions.api.protos import operation_pb2, service_pb2
from sessions.domain.commands import CloseSession, Heartbeat, OpenSession
from sessions.domain.enums import SessionType
from sessions.domain.errors import PermissionDenied
from sessions.domain.policy import Policy
from sessions.store.application import Caller, SessionsApplication
from sessions.store.clock import ManualClock
from sessions.store.urls import parse_store_url

OWNER = Caller("agent:owner", acting_for=frozenset({"agent-1"}))
OTHER = Caller("agent:other", acting_for=frozenset({"agent-2"}))
ADMIN = Caller("admin:ops")  # acting_for None: any agent


@pytest.fixture
def app() -> Iterator[SessionsApplication]:
    application = SessionsApplication(parse_store_url("memory://"), policy=Policy(), clock=ManualClock())
    yield application
    application.close()


def _open(app: SessionsApplication, caller: Caller, agent_id: str = "agent-1") -> str:
    outcome = app.execute(
        OpenSession("c-1", agent_id, SessionType.AD_SYNC), caller, renderer("OpenSession", caller.principal)
    )
    opened = service_pb2.OpenSessionResponse()
    assert operation_pb2.Operation.FromString(outcome.payload).response.Unpack(opened)
    return opened.opened_session.session_id


def test_open_only_under_an_agent_id_the_caller_acts_for(app: SessionsApplication) -> None:
    with pytest.raises(PermissionDenied, match="does not act for agent 'agent-1'"):
        _open(app, OTHER)
    assert app.recorder.max_notification_id() in (None, 0)  # nothing recorded
    assert _open(app, OWNER)


def test_other_agents_may_not_touch_a_session_admins_may(app: SessionsApplication) -> None:
    session_id = _open(app, OWNER)
    head = app.recorder.max_notification_id()
    for call in (
        lambda c: app.execute(Heartbeat(session_id), c, renderer("Heartbeat", c.principal)),
        lambda c: app.execute(CloseSession(session_id, False, ""), c, renderer("CloseSession", c.principal)),
    ):
        with pytest.raises(PermissionDenied):
            call(OTHER)
    assert app.recorder.max_notification_id() == head
    app.execute(Heartbeat(session_id), ADMIN, renderer("Heartbeat", ADMIN.principal))
    app.execute(CloseSession(session_id, False, ""), OWNER, renderer("CloseSession", OWNER.principal))


def test_a_refused_caller_does_not_even_trigger_the_expiry(app: SessionsApplication) -> None:
    session_id = _open(app, OWNER)
    clock = app.clock
    assert isinstance(clock, ManualClock)
    clock.advance(Policy().session_ttl.total_seconds() + 1)
    head = app.recorder.max_notification_id()
    with pytest.raises(PermissionDenied):
        app.execute(Heartbeat(session_id), OTHER, renderer("Heartbeat", OTHER.principal))
    assert app.recorder.max_notification_id() == head
