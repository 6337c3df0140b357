"""The access log's view of a call (see sessions.logs): the edge calls
``called`` once per call, when it ends."""

from __future__ import annotations

import sys
from typing import Any

import grpc

from sessions import logs
from sessions.api.identity import principal_of


def called(method: str, context: grpc.ServicerContext, request: Any, started: float) -> None:
    """Log the call that ends now (from a ``finally``: an exception that
    escapes without a status is what gRPC answers UNKNOWN)."""
    status = context.code()  # type: ignore[attr-defined]  # grpc's _Context has it
    if status is not None:
        code = status.name
    else:
        escaped = sys.exc_info()[0]
        if escaped is None:
            code = "OK"
        elif escaped is GeneratorExit:  # a response stream the client left
            code = "CANCELLED"
        else:
            code = "UNKNOWN"
    if not logs.wants_access(code):
        return
    key_present = False
    for name, _ in context.invocation_metadata() or ():
        if name == "idempotency-key":
            key_present = True
            break
    logs.log_call(
        method,
        code,
        started,
        principal_of(context),
        getattr(request, "session_id", "") if request is not None else "",
        key_present,
    )
