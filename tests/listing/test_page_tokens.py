"""Page tokens without a store: round trip, size, and every kind of misuse."""

from __future__ import annotations

import base64
import secrets

import pytest

from sessions.api.listing import decode_token, encode_token
from sessions.domain.errors import InvalidArgument
from sessions.projection.listing import Cursor

KEY = secrets.token_bytes(32)
FILTER = '[["status", "=", [4]]]'
CURSOR = Cursor(1_767_225_600_123_456, "sesabcdefghijklmnopq")


def refused(token: str, container: str = "c-1", canonical: str = FILTER, key: bytes = KEY) -> str:
    with pytest.raises(InvalidArgument) as e:
        decode_token(key, token, container, canonical)
    assert e.value.field == "page_token"
    return e.value.description


def test_round_trip_and_size() -> None:
    token = encode_token(KEY, "c-1", FILTER, CURSOR)
    assert decode_token(KEY, token, "c-1", FILTER) == CURSOR
    assert token.isascii() and "=" not in token and "/" not in token and "+" not in token
    longest = encode_token(KEY, "c" * 50, FILTER * 40, Cursor(-(2**63), "ü" * 50))
    assert len(longest) <= 2000
    assert decode_token(KEY, longest, "c" * 50, FILTER * 40) == Cursor(-(2**63), "ü" * 50)


def test_bound_to_container_and_filter() -> None:
    token = encode_token(KEY, "c-1", FILTER, CURSOR)
    assert "another subject_container_id" in refused(token, container="c-2")
    assert "another filter" in refused(token, canonical="[]")


def test_any_change_is_detected() -> None:
    token = encode_token(KEY, "c-1", FILTER, CURSOR)
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for index in range(len(raw)):
        for bit in (0x01, 0x80):
            changed = bytearray(raw)
            changed[index] ^= bit
            forged = base64.urlsafe_b64encode(bytes(changed)).rstrip(b"=").decode()
            message = refused(forged)
            assert "signature" in message or "not a page token" in message, (index, message)
    # A token of another store (another key) is refused the same way.
    assert "signature" in refused(token, key=secrets.token_bytes(32))
    # Characters outside the alphabet, padding, and other spellings of the
    # same bytes are not this token.
    for variant in (token + "=", token + "!", " " + token, token[:-1] + chr(ord(token[-1]) ^ 1)):
        refused(variant)


@pytest.mark.parametrize(
    "garbage",
    [
        "x",
        "abc",
        "!!!!",
        "AAAA",
        "ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ",
        "é" * 8,
        "A" * 1999,
    ],
)
def test_garbage_is_refused(garbage: str) -> None:
    assert "not a page token this service issued" in refused(garbage) or "signature" in refused(garbage)
