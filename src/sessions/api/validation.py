"""The wire contract's constraints (spec/API.md), checked before anything
reaches the domain. Each refusal names the field."""

from __future__ import annotations

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
