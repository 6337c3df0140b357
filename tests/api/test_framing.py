"""GetSession sends stored bytes framed as field 1: the same bytes protobuf
would produce for the response message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sessions.api import convert
from sessions.api.protos import service_pb2, session_pb2


def test_framed_bytes_equal_the_serialized_response() -> None:
    for size in (0, 5, 127, 128, 300, 20_000):
        session = session_pb2.SynchronizationSession(session_id="s", fail_reason="x" * size)
        stored = session.SerializeToString(deterministic=True)
        expected = service_pb2.GetSessionResponse(session=session).SerializeToString(deterministic=True)
        assert convert.field_bytes(1, stored) == expected
        assert service_pb2.GetSessionResponse.FromString(convert.field_bytes(1, stored)).session == session


def test_only_active_sessions_past_expiry_are_not_shown_as_stored() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    at = convert.micros(now)
    assert convert.shown_as_stored(session_pb2.OPENED, at + 1, now)
    assert not convert.shown_as_stored(session_pb2.OPENED, at, now)
    assert not convert.shown_as_stored(session_pb2.PENDING, at - 1, now)
    assert convert.shown_as_stored(session_pb2.COMPLETED, at - 1, now)
    assert convert.shown_as_stored(session_pb2.FAILED, convert.micros(now - timedelta(days=1)), now)
