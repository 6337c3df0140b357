from __future__ import annotations

from collections.abc import Iterator

import pytest
from store_support import POLICY, T0, Render

from sessions.store.application import SessionsApplication
from sessions.store.clock import ManualClock
from sessions.store.urls import parse_store_url


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def render() -> Render:
    return Render()


@pytest.fixture
def app(clock: ManualClock) -> Iterator[SessionsApplication]:
    application = SessionsApplication(parse_store_url("memory://"), policy=POLICY, clock=clock)
    yield application
    application.close()
