"""Servers for the listing tests: with the deadline worker off, so a session
past its expires_at stays stored OPENED/PENDING and only read-time expiry
shows it EXPIRED (what the filters must respect)."""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.fixture
def listing_server(store_url: str, start_server) -> Callable:  # type: ignore[no-untyped-def,type-arg]
    """start(clock=..., policy=...) -> RunningServer on this test's store."""
    return lambda **options: start_server(store_url, run_deadlines=False, **options)
