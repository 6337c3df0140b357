"""Access control: the one place that decides who may call what.

A server run with a credentials file installs ``AccessInterceptor``. For every
call except health and reflection (always open) it

1. authenticates: the ``authorization: Bearer <token>`` metadata must name a
   live credential (missing, unknown or revoked: UNAUTHENTICATED);
2. authorizes by role, with the table ``ALLOWED`` below (PERMISSION_DENIED);
3. makes the caller's ``Grant`` (principal, role, agent ids) current for the
   call, where ``identity.caller_of`` picks it up: the principal is what every
   event and operation records, the agent ids are what the domain checks
   (``sessions.domain.access``): an agent opens sessions only under its own
   agent ids and touches only sessions opened for them.

Steps 1 and 2 need only the call's metadata: they run when the call arrives,
before its request is awaited, so a refused caller never holds a serving
thread (a call that never sends its request would hold one); the grant and
the deadline's check reach the call's own thread.

Roles: ``agent`` writes its own sessions and reads (GetSession, ListSessions,
OperationService.Get and Cancel: clients poll operations, and a session's
state is what an agent resumes from); ``reader`` reads only; ``auditor`` reads
and also calls the AuditService; ``admin`` may call everything, for any agent.
A method missing from the table is refused to all but admins (deny by default).

Refusals are logged (logger ``sessions.access``) with the principal and the
reason, never with the token.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn, cast

import grpc

from sessions.api.pools import same_pool
from sessions.api.protos import AUDIT_SERVICE, OPERATION_SERVICE, SESSION_SERVICE
from sessions.credentials import CredentialSet

log = logging.getLogger("sessions.access")

AGENT, READER, AUDITOR, ADMIN = "agent", "reader", "auditor", "admin"
_WRITERS = frozenset({AGENT, ADMIN})
_READERS = frozenset({AGENT, READER, AUDITOR, ADMIN})
_AUDITORS = frozenset({AUDITOR, ADMIN})

ALLOWED: dict[str, frozenset[str]] = {
    f"/{SESSION_SERVICE}/OpenSession": _WRITERS,
    f"/{SESSION_SERVICE}/ReportSessionProgress": _WRITERS,
    f"/{SESSION_SERVICE}/Heartbeat": _WRITERS,
    f"/{SESSION_SERVICE}/CloseSession": _WRITERS,
    f"/{SESSION_SERVICE}/GetSession": _READERS,
    f"/{SESSION_SERVICE}/ListSessions": _READERS,
    f"/{OPERATION_SERVICE}/Get": _READERS,
    f"/{OPERATION_SERVICE}/Cancel": _WRITERS,
    f"/{AUDIT_SERVICE}/StreamHistory": _AUDITORS,
    f"/{AUDIT_SERVICE}/GetSessionAt": _AUDITORS,
}
OPEN_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


@dataclass(frozen=True)
class Grant:
    """An authenticated caller, as the rest of the call sees it."""

    principal: str
    role: str
    # Agent ids the caller may act for; None: any (admin).
    acting_for: frozenset[str] | None


_current: contextvars.ContextVar[Grant | None] = contextvars.ContextVar("sessions_grant", default=None)


def current_grant() -> Grant | None:
    """The grant of the call being served by this thread, if access control is on."""
    return _current.get()


def bearer_token(context: grpc.ServicerContext) -> str:
    return _bearer(context.invocation_metadata())


def _bearer(metadata: Any) -> str:
    for name, value in metadata or ():
        if name == "authorization":
            text = value if isinstance(value, str) else value.decode("utf-8", "replace")
            scheme, _, token = text.strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


class AccessInterceptor(grpc.ServerInterceptor):
    def __init__(self, credentials: CredentialSet):
        # Replaced whole on reload (one attribute assignment: atomic for readers).
        self.credentials = credentials

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler  # unknown methods: UNIMPLEMENTED, as without us
        # Authenticated and authorized by role here, from the call's metadata,
        # before its request arrives (on gRPC's polling thread: a SHA-256 and
        # a dict lookup). grpcio gives a unary method's call a serving thread
        # that then waits for the request: a refused call is answered by a
        # handler that never reads it (a request stream, on the server's
        # pool), so a client without a valid token cannot hold a thread by
        # never sending its request. What needs the request (the domain's
        # agent rule) and the deadline are checked on the serving thread.
        verdict = self.check(method, handler_call_details.invocation_metadata)
        if isinstance(verdict, Refusal):
            return _refusing(handler, method, verdict)
        return _wrapped(handler, method, lambda context: _started_in_time(verdict, method, context))

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """``handler`` admitting each call from its context's metadata (the
        REST gateway: one handler for every call of a route)."""
        return _wrapped(handler, method, lambda context: self.admit(method, context))

    def admit(self, method: str, context: grpc.ServicerContext) -> Grant:
        """Authenticate and authorize the call, or abort it."""
        verdict = self.check(method, context.invocation_metadata())
        if isinstance(verdict, Refusal):
            verdict.abort(context, method)
        return _started_in_time(verdict, method, context)

    def check(self, method: str, metadata: Any) -> Grant | Refusal:
        """The caller's grant by the call's metadata, or why it is refused."""
        token = _bearer(metadata)
        if not token:
            return Refusal(
                "anonymous", grpc.StatusCode.UNAUTHENTICATED,
                "missing credentials: send 'authorization: Bearer <token>' metadata", "no bearer token",
            )
        found = self.credentials.authenticate(token)
        credential = found.credential
        if credential is None:
            return Refusal(
                "unknown", grpc.StatusCode.UNAUTHENTICATED,
                "invalid credentials: the token is unknown or revoked", found.reason,
            )
        allowed = ALLOWED.get(method)
        if credential.role != ADMIN and (allowed is None or credential.role not in allowed):
            return Refusal(
                credential.principal, grpc.StatusCode.PERMISSION_DENIED,
                f"role {credential.role!r} may not call {method.rsplit('/', 1)[-1]}",
            )
        acting_for = frozenset(credential.agent_ids) if credential.role == AGENT else None
        return Grant(credential.principal, credential.role, acting_for)


@dataclass(frozen=True)
class Refusal:
    """A call refused before it reached the service."""

    principal: str
    code: grpc.StatusCode
    message: str
    reason: str | None = None

    def abort(self, context: grpc.ServicerContext, method: str) -> NoReturn:
        _refuse(context, method, self.principal, self.code, self.message, reason=self.reason)


def _started_in_time(grant: Grant, method: str, context: grpc.ServicerContext) -> Grant:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        _refuse(context, method, "-", grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the call started")
    return grant


# The gRPC type a refused call's method has (its handler's type is a request
# stream's, so that it never waits for the request): what metrics label it by.
GRPC_TYPE = "grpc_type"


def _refusing(handler: grpc.RpcMethodHandler, method: str, refusal: Refusal) -> grpc.RpcMethodHandler:
    """A handler that refuses the call without reading its request, on the
    server's pool (never a method's own, e.g. the reads')."""

    def refuse(requests: Any, context: grpc.ServicerContext) -> Any:
        refusal.abort(context, method)

    def refuse_streaming(requests: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        refusal.abort(context, method)
        yield  # (a generator, as a response stream's behavior is)

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.response_streaming:
        setattr(refuse_streaming, GRPC_TYPE, "bidi_stream" if handler.request_streaming else "server_stream")
        return grpc.stream_stream_rpc_method_handler(refuse_streaming, **kwargs)
    setattr(refuse, GRPC_TYPE, "client_stream" if handler.request_streaming else "unary")
    return grpc.stream_unary_rpc_method_handler(refuse, **kwargs)


def _refuse(
    context: grpc.ServicerContext,
    method: str,
    principal: str,
    code: grpc.StatusCode,
    message: str,
    *,
    reason: str | None = None,
) -> NoReturn:
    log.warning(
        "refused %s from %s: %s principal=%s reason=%s",
        method, context.peer(), code.name, principal, reason or message,
    )
    context.abort(code, message)
    raise AssertionError("context.abort returned")  # it raises


def _log_denied(method: str, grant: Grant, context: grpc.ServicerContext) -> None:
    """The domain's refusals (an agent acting for another agent) leave the
    servicer as aborted calls: log them here, where the principal is known."""
    try:
        code = context.code()  # type: ignore[attr-defined]
    except AttributeError:
        return
    if code == grpc.StatusCode.PERMISSION_DENIED:
        details = context.details()  # type: ignore[attr-defined]
        if isinstance(details, bytes):
            details = details.decode("utf-8", "replace")
        log.warning(
            "refused %s from %s: PERMISSION_DENIED principal=%s reason=%s",
            method, context.peer(), grant.principal, details,
        )


Admit = Callable[[grpc.ServicerContext], Grant]


def _wrapped(handler: grpc.RpcMethodHandler, method: str, admit: Admit) -> grpc.RpcMethodHandler:
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _unary(handler.unary_unary, method, admit),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _unary(handler.stream_unary, method, admit),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _streaming(handler.unary_stream, method, admit),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.stream_stream_rpc_method_handler(
        _streaming(cast(Callable[..., Any], handler.stream_stream), method, admit),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _unary(behavior: Callable[..., Any], method: str, admit: Admit) -> Callable[..., Any]:
    def serve(request: Any, context: grpc.ServicerContext) -> Any:
        grant = admit(context)
        token = _current.set(grant)
        try:
            return behavior(request, context)
        except Exception:
            _log_denied(method, grant, context)
            raise
        finally:
            _current.reset(token)

    return same_pool(serve, behavior)


def _streaming(behavior: Callable[..., Any], method: str, admit: Admit) -> Callable[..., Any]:
    def serve(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        grant = admit(context)
        # The grant is current only while the servicer's generator runs, so a
        # response stream suspended between items never leaks it.
        token = _current.set(grant)
        try:
            responses = iter(behavior(request, context))
        finally:
            _current.reset(token)
        while True:
            token = _current.set(grant)
            try:
                response = next(responses)
            except StopIteration:
                return
            except Exception:
                _log_denied(method, grant, context)
                raise
            finally:
                _current.reset(token)
            yield response

    return same_pool(serve, behavior)

