"""The audit service: a session's recorded history over gRPC."""

from __future__ import annotations

import json

from sessions.api import convert, validation
from sessions.api.errors import translated_errors
from sessions.api.protos import audit_pb2, audit_pb2_grpc
from sessions.domain.errors import InvalidArgument
from sessions.projection.history import (
    session_as_of,
    session_at_version,
    session_history,
)
from sessions.store.application import SessionsApplication

PAGE_SIZE = 250


class AuditService(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, app: SessionsApplication):
        self.app = app

    def StreamHistory(self, request, context):  # noqa: N802
        with translated_errors(context, "AuditService.StreamHistory"):
            session_id = validation.required_id("session_id", request.session_id)
            page = audit_pb2.HistoryPage()
            for entry in session_history(self.app, session_id):
                page.entries.append(
                    audit_pb2.HistoryEntry(
                        version=entry.version,
                        position=entry.position,
                        recorded_at=convert.timestamp(entry.recorded_at),
                        event_type=entry.event_type,
                        principal=entry.principal,
                        idempotency_key=entry.idempotency_key,
                        changes_json=json.dumps(entry.changes, ensure_ascii=False),
                        link=entry.link,
                        state=entry.state,
                    )
                )
                if len(page.entries) == PAGE_SIZE:
                    yield page
                    page = audit_pb2.HistoryPage()
            if page.entries:
                yield page

    def GetSessionAt(self, request, context):  # noqa: N802
        with translated_errors(context, "AuditService.GetSessionAt"):
            session_id = validation.required_id("session_id", request.session_id)
            point = request.WhichOneof("point")
            if point == "version":
                if request.version < 1:
                    raise InvalidArgument("version", "must be 1 or more")
                session = session_at_version(self.app, session_id, request.version)
                message = convert.session_message(session)
            elif point == "as_of":
                session, message = session_as_of(
                    self.app, session_id, request.as_of.ToDatetime(tzinfo=convert.EPOCH.tzinfo)
                )
            else:
                raise InvalidArgument("point", "give as_of or version")
            return audit_pb2.GetSessionAtResponse(session=message, version=session.version)
