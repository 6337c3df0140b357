"""Servers for the audit tests: with the deadline worker off, so that a stall
is recorded only when a test asks for it and a session past its expires_at
stays stored OPENED (read-time expiry only)."""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.fixture
def quiet_server(store_url: str, start_server) -> Callable:  # type: ignore[no-untyped-def,type-arg]
    """start(clock=..., policy=...) -> RunningServer on this test's store."""
    return lambda **options: start_server(store_url, run_deadlines=False, **options)
