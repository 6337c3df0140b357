"""The domain's vocabularies. Values equal the public API's enum numbers so
that translation is a lookup; stored events carry the names."""

from __future__ import annotations

from enum import Enum


class DomainEnum(Enum):
    # Members are singletons compared by identity, so identity hashing is
    # exact; Enum's own __hash__ is Python code, and folds hash a lot.
    __hash__ = object.__hash__


class SessionStatus(DomainEnum):
    OPENED = 1
    PENDING = 2
    COMPLETED = 3
    FAILED = 4
    EXPIRED = 5

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES

    @property
    def is_active(self) -> bool:
        return self in ACTIVE_STATUSES


FINAL_STATUSES = frozenset(
    {SessionStatus.COMPLETED, SessionStatus.FAILED, SessionStatus.EXPIRED}
)
# A session in one of these statuses runs until its expires_at; from then on
# every reader sees it EXPIRED, before the expiry event is recorded too
# (read-time expiry: session.visible_status is the rule on domain values).
ACTIVE_STATUSES = frozenset({SessionStatus.OPENED, SessionStatus.PENDING})
# The same statuses as the read model stores them (its status column).
ACTIVE_STATUS_NUMBERS: tuple[int, ...] = tuple(sorted(s.value for s in ACTIVE_STATUSES))


class SyncMode(DomainEnum):
    FULL_SYNC = 1
    DELTA = 2


class SessionType(DomainEnum):
    AD_SYNC = 1
    AD_PASSWORD_HASH = 2
    AD_USER_CONTROL = 3
    LDAP_SYNC = 4


class RelatedObjectType(DomainEnum):
    USER = 1
    GROUP = 2
    MEMBERSHIP = 3


class ChangeType(DomainEnum):
    CREATE = 1
    UPDATE = 2
    DELETE = 3
    ACTIVATE = 4
    DEACTIVATE = 5
    PASSWORD_HASH_UPDATE = 6


class OpenResult(DomainEnum):
    SUCCESS = 1
    OPENED_SESSION_EXISTS = 2
    TOO_EARLY = 3


DOMAIN_ENUMS: tuple[type[Enum], ...] = (
    SessionStatus,
    SyncMode,
    SessionType,
    RelatedObjectType,
    ChangeType,
    OpenResult,
)
