"""Refusals the domain can give. The API layer maps each to a status code."""

from __future__ import annotations


class DomainError(Exception):
    """Base class of every refusal decided by the domain."""


class InvalidArgument(DomainError):
    """A command's input breaks a rule of the domain (INVALID_ARGUMENT).

    ``field`` names the offending field as a path, e.g.
    ``progress_entries[0].change_info[1].successful``.
    """

    def __init__(self, field: str, description: str):
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


class StateConflict(DomainError):
    """The session's current state forbids the action (FAILED_PRECONDITION)."""


class PermissionDenied(DomainError):
    """The caller may not act on this session (PERMISSION_DENIED)."""


class NotFound(DomainError):
    """No session (or operation) has the given id (NOT_FOUND)."""
