"""The wire contract's constraints, checked before anything reaches the
domain. Each refusal names the field."""

from __future__ import annotations

import re
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from sessions.domain.errors import InvalidArgument

MAX_ID = 50


def required_id(name: str, value: str) -> str:
    if not value:
        raise InvalidArgument(name, "is required")
    return max_length(name, value, MAX_ID)


def max_length(name: str, value: str, limit: int) -> str:
    if len(value) > limit:
        raise InvalidArgument(name, f"must be at most {limit} characters, got {len(value)}")
    return value


def in_range(name: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise InvalidArgument(name, f"must be between {low} and {high}, got {value}")
    return value


def required_enum(name: str, converted: object, number: int) -> None:
    if converted is None:
        what = "is required" if number == 0 else f"has unknown value {number}"
        raise InvalidArgument(name, what)


# --- the rule every request meets at the edge (sessions.api.edge) --------------

# Fields that hold ids or keys: no control character at all (they end up in
# logs, URLs and store keys). Any other string: no NUL, which PostgreSQL
# cannot store; so one request is valid or not on every backend alike.
ID_FIELDS = frozenset({"session_id", "subject_container_id", "agent_id", "operation_id"})
TIMESTAMP = "google.protobuf.Timestamp"
# The range of google.protobuf.Timestamp: 0001-01-01T00:00:00Z to
# 9999-12-31T23:59:59.999999999Z.
MIN_SECONDS = -62_135_596_800
MAX_SECONDS = 253_402_300_799


def check_message(message: Message, path: str = "") -> None:
    """Refuse (INVALID_ARGUMENT, naming the field) a string with a character
    the store cannot hold, an id with a control character, or a timestamp
    out of its type's range, anywhere in ``message``. Only the fields that
    can hold a string or a timestamp are looked at (worked out once per
    message type); strings are scanned in C (a regular expression)."""
    descriptor: Any = message.DESCRIPTOR
    checks = _CHECKS.get(descriptor.full_name)
    if checks is None:
        checks = _CHECKS[descriptor.full_name] = _checks_of(descriptor)
    if checks is _TIMESTAMP:
        _check_timestamp(path, message)
        return
    for name, kind, repeated in checks:
        value = getattr(message, name)
        if not value and kind != _MESSAGE:
            continue
        full = f"{path}.{name}" if path else name
        if kind == _MESSAGE:
            if repeated:
                for i, item in enumerate(value):
                    check_message(item, f"{full}[{i}]")
            elif message.HasField(name):
                check_message(value, full)
        elif repeated:
            for i, text in enumerate(value):
                _check_string(f"{full}[{i}]", kind, text)
        else:
            _check_string(full, kind, value)


_ID, _TEXT, _MESSAGE = "id", "text", "message"
_TIMESTAMP: tuple[tuple[str, str, bool], ...] = (("", "timestamp", False),)
_CHECKS: dict[str, tuple[tuple[str, str, bool], ...]] = {}
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _checks_of(descriptor: Descriptor) -> tuple[tuple[str, str, bool], ...]:
    """(field name, kind, repeated) for each field of a message type that
    can hold a string or a timestamp, directly or in a message within."""
    if descriptor.full_name == TIMESTAMP:
        return _TIMESTAMP
    checks = []
    for f in descriptor.fields:
        if f.type == FieldDescriptor.TYPE_STRING:
            checks.append((f.name, _ID if f.name in ID_FIELDS else _TEXT, f.is_repeated))
        elif f.message_type is not None and _holds_checked(f.message_type, frozenset()):
            checks.append((f.name, _MESSAGE, f.is_repeated))
    return tuple(checks)


def _holds_checked(descriptor: Descriptor, seen: frozenset[str]) -> bool:
    if descriptor.full_name == TIMESTAMP:
        return True
    seen = seen | {descriptor.full_name}
    return any(
        f.type == FieldDescriptor.TYPE_STRING
        or (
            f.message_type is not None
            and f.message_type.full_name not in seen
            and _holds_checked(f.message_type, seen)
        )
        for f in descriptor.fields
    )


def _check_string(path: str, kind: str, text: str) -> None:
    if kind == _ID:
        bad = _CONTROL.search(text)
        if bad is not None:
            raise InvalidArgument(
                path, f"must not contain control characters (found U+{ord(bad.group()):04X})"
            )
    elif "\0" in text:
        raise InvalidArgument(path, "must not contain the NUL character (U+0000)")


def _check_timestamp(path: str, message: Message) -> None:
    seconds, nanos = message.seconds, message.nanos  # type: ignore[attr-defined]
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise InvalidArgument(
            path, "must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999999Z"
        )
    if not 0 <= nanos <= 999_999_999:
        raise InvalidArgument(path, f"nanos must be between 0 and 999999999, got {nanos}")


def no_control_characters(name: str, value: str) -> str:
    """The id rule, for ids that come from call metadata (idempotency-key)."""
    _check_string(name, _ID, value)
    return value
