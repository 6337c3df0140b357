"""gRPC servicers: parse, call the store or the read model, translate back.
No business rules live here; every decision is the domain's."""

from __future__ import annotations

from sessions.api import convert, filters, listing, validation
from sessions.api.errors import translated_errors
from sessions.api.identity import caller_of
from sessions.api.operations import renderer
from sessions.api.protos import (
    operation_service_pb2,
    operation_service_pb2_grpc,
    service_pb2,
    service_pb2_grpc,
)
from sessions.domain import commands
from sessions.domain.errors import NotFound
from sessions.projection.listing import Cursor, PageQuery
from sessions.projection.read_model import ReadModel
from sessions.store.application import SessionsApplication

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class SessionService(service_pb2_grpc.SynchronizationSessionServiceServicer):
    # Methods that return their response serialized already (the stored
    # session, the stored Operation); the server registers them so.
    SERIALIZED_RESPONSES = ("GetSession", "OpenSession", "ReportSessionProgress", "Heartbeat", "CloseSession")
    # The reads, which the server may run on a pool of their own (--read-threads).
    READS = ("GetSession", "ListSessions")

    def __init__(self, app: SessionsApplication, read_model: ReadModel):
        self.app = app
        self.read_model = read_model

    # --- writes: a command each, handled by the application -------------------------

    def OpenSession(self, request, context):  # noqa: N802 - gRPC method names
        with translated_errors(context, "OpenSession"):
            validation.required_id("subject_container_id", request.subject_container_id)
            validation.required_id("agent_id", request.agent_id)
            session_type = convert.session_type(request.session_type)
            validation.required_enum("session_type", session_type, request.session_type)
            command = commands.OpenSession(
                request.subject_container_id,
                request.agent_id,
                session_type,  # type: ignore[arg-type]
            )
            return self._execute(command, context)

    def ReportSessionProgress(self, request, context):  # noqa: N802
        with translated_errors(context, "ReportSessionProgress"):
            validation.required_id("session_id", request.session_id)
            entries = convert.progress_entries(list(request.progress_entries))
            command = commands.ReportProgress(request.session_id, tuple(entries))
            return self._execute(command, context)

    def Heartbeat(self, request, context):  # noqa: N802
        with translated_errors(context, "Heartbeat"):
            validation.required_id("session_id", request.session_id)
            return self._execute(commands.Heartbeat(request.session_id), context)

    def CloseSession(self, request, context):  # noqa: N802
        with translated_errors(context, "CloseSession"):
            validation.required_id("session_id", request.session_id)
            validation.max_length("fail_reason", request.fail_reason, 256)
            command = commands.CloseSession(request.session_id, request.failed, request.fail_reason)
            return self._execute(command, context)

    def _execute(self, command: commands.Command, context) -> bytes:
        """The stored answer, as stored: the serialized Operation (the server
        registers the write methods with a pass-through serializer). Nothing
        to wait for: the call's rows committed with its events, into the
        tables every read goes to (projection.registry)."""
        caller = caller_of(context)
        outcome = self.app.execute(command, caller, renderer(command.method, caller.principal))
        return outcome.payload

    # --- reads --------------------------------------------------------------------

    def GetSession(self, request, context):  # noqa: N802
        """Answers with the serialized GetSessionResponse: the stored session
        bytes framed as field 1, never parsed and serialized again (the
        server registers this method with a pass-through serializer). Only a
        session past its expires_at is parsed, to show it EXPIRED."""
        with translated_errors(context, "GetSession"):
            session_id = validation.required_id("session_id", request.session_id)
            row = self.read_model.get(session_id)
            if row is None:
                raise NotFound(f"session {session_id!r} not found")
            now = self.app.clock()
            if convert.shown_as_stored(row.status, row.expires_at, now):
                return convert.field_bytes(1, row.session)
            shown = convert.served_session(row.session, row.status, row.expires_at, now)
            return service_pb2.GetSessionResponse(session=shown).SerializeToString()

    def ListSessions(self, request, context):  # noqa: N802
        with translated_errors(context, "ListSessions"):
            container = validation.required_id("subject_container_id", request.subject_container_id)
            page_size = validation.in_range("page_size", request.page_size, 0, MAX_PAGE_SIZE)
            validation.max_length("page_token", request.page_token, 2000)
            validation.max_length("filter", request.filter, 1000)
            parsed = filters.parse(request.filter)
            key = self.read_model.page_token_key()
            after = (
                listing.decode_token(key, request.page_token, container, parsed.canonical)
                if request.page_token
                else None
            )
            limit = page_size or DEFAULT_PAGE_SIZE
            now = self.app.clock()  # one moment for the filter and for what is shown
            rows = self.read_model.list_page(
                PageQuery(container, parsed.conditions, convert.micros(now), after, limit + 1)
            )
            next_page_token = ""
            if len(rows) > limit:
                rows = rows[:limit]
                last = Cursor(rows[-1].created_at, rows[-1].session_id)
                next_page_token = listing.encode_token(key, container, parsed.canonical, last)
            return service_pb2.ListSessionsResponse(
                sessions=[listing.shown(r, now) for r in rows], next_page_token=next_page_token
            )


class OperationService(operation_service_pb2_grpc.OperationServiceServicer):
    SERIALIZED_RESPONSES = ("Get", "Cancel")  # the stored Operation, as stored

    def __init__(self, app: SessionsApplication):
        self.app = app

    def Get(self, request, context):  # noqa: N802
        with translated_errors(context, "OperationService.Get"):
            operation_id = validation.required_id("operation_id", request.operation_id)
            return self.app.get_operation_payload(operation_id)

    def Cancel(self, request, context):  # noqa: N802
        with translated_errors(context, "OperationService.Cancel"):
            operation_id = validation.required_id("operation_id", request.operation_id)
            # Every operation here is done when it is returned: nothing is left
            # to cancel, so the answer is the operation as it is.
            return self.app.get_operation_payload(operation_id)


__all__ = ["OperationService", "SessionService", "operation_service_pb2"]
