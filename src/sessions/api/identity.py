"""Who is calling, and under which idempotency key, from call metadata."""

from __future__ import annotations

import hashlib

import grpc

from sessions.api.access import current_grant
from sessions.api.validation import max_length, no_control_characters
from sessions.store.application import Caller

ANONYMOUS = "anonymous"
MAX_IDEMPOTENCY_KEY = 128


def metadata_value(context: grpc.ServicerContext, key: str) -> str:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value if isinstance(value, str) else value.decode()
    return ""


def caller_of(context: grpc.ServicerContext) -> Caller:
    """With credentials configured, the principal is the credential's name
    (see sessions.api.access). Without, it is a stable digest of the bearer
    token (never the token itself), or "anonymous" when the call carries none."""
    key = idempotency_key(context)
    grant = current_grant()
    if grant is not None:
        return Caller(principal=grant.principal, idempotency_key=key, acting_for=grant.acting_for)
    return Caller(principal=principal_of(context), idempotency_key=key)


def principal_of(context: grpc.ServicerContext) -> str:
    """The caller's principal, as events record it."""
    grant = current_grant()
    if grant is not None:
        return grant.principal
    authorization = metadata_value(context, "authorization")
    token = authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:16] if token else ANONYMOUS


def idempotency_key(context: grpc.ServicerContext) -> str:
    key = metadata_value(context, "idempotency-key")
    return no_control_characters("idempotency-key", max_length("idempotency-key", key, MAX_IDEMPOTENCY_KEY))
