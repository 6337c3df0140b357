"""The audit service: a session's recorded history over gRPC."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sessions.api import convert, validation
from sessions.api.errors import translated_errors
from sessions.api.protos import audit_pb2, audit_pb2_grpc
from sessions.audit.history import (
    history_steps,
    session_as_of,
    session_at_version,
)
from sessions.domain.errors import InvalidArgument
from sessions.store.application import SessionsApplication

PAGE_SIZE = 250


def _changes_encoder() -> Callable[[dict[str, Any]], str]:
    """json.dumps(changes, ensure_ascii=False), the same text: json.dumps
    makes an encoder per call, and then the C encoder per call; this makes
    the C encoder once (when there is one)."""
    encoder = json.JSONEncoder(ensure_ascii=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return encoder.encode
    encode = make(
        None,  # no markers: changes come from parsed JSON and cannot be circular
        encoder.default,
        json.encoder.encode_basestring,
        None,
        encoder.key_separator,
        encoder.item_separator,
        encoder.sort_keys,
        encoder.skipkeys,
        encoder.allow_nan,
    )
    return lambda changes: "".join(encode(changes, 0))


changes_json = _changes_encoder()


class AuditService(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, app: SessionsApplication):
        self.app = app

    def StreamHistory(self, request, context):  # noqa: N802
        with translated_errors(context, "AuditService.StreamHistory"):
            session_id = validation.required_id("session_id", request.session_id)
            # Entries are built in place in their page (no message is built
            # to be copied in), the state copied from the one message the
            # history updates (C code); see bench/audit_history.py.
            page = audit_pb2.HistoryPage()
            add = page.entries.add
            count = 0
            for record, event, changes, state in history_steps(self.app, session_id):
                entry = add(
                    version=record.version,
                    position=record.position,
                    event_type=record.topic.removeprefix("sessions."),
                    principal=event.principal,
                    idempotency_key=event.idempotency_key,
                    changes_json=changes_json(changes),
                    link=event.link,
                )
                convert.set_timestamp(entry.recorded_at, event.timestamp)
                entry.state.CopyFrom(state)
                count += 1
                if count == PAGE_SIZE:
                    yield page
                    page = audit_pb2.HistoryPage()
                    add = page.entries.add
                    count = 0
            if count:
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
