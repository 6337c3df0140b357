"""Fixtures of the projection operations tests: applications on a test's
stores (closed after it), and a second store of the other backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from sessions.store.application import SessionsApplication
from sessions.store.clock import ManualClock
from tests.projection.projection_support import make_app


@pytest.fixture
def apps() -> Iterator[Callable[..., SessionsApplication]]:
    """apps(url, clock=None) -> an application on that store, as another
    process would open it; all are closed after the test. Ask for this
    fixture after the store fixtures, so that it is torn down first."""
    opened: list[SessionsApplication] = []

    def new(url: str, clock: ManualClock | None = None) -> SessionsApplication:
        opened.append(make_app(url, clock))
        return opened[-1]

    yield new
    while opened:
        opened.pop().close()


@pytest.fixture
def other_backend_url(store_url: str, request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """A second, empty store on the other backend than ``store_url``."""
    if store_url.startswith("sqlite"):
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite://{tmp_path}/other.db"


@pytest.fixture
def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    """An SQLite store, for tests of logic that no backend changes."""
    return f"sqlite://{tmp_path}/sessions.db"
