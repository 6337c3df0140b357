"""Exceptions -> gRPC status codes, with rich details where they help."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from eventsourcing.persistence import InterfaceError, OperationalError
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from sessions.domain.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    StateConflict,
)
from sessions.store.application import ConcurrencyConflict

log = logging.getLogger("sessions.api")


class ProjectionBehind(Exception):
    """The write landed but the read model did not catch up in time."""


def _status(code: int, message: str, *details: object) -> status_pb2.Status:
    status = status_pb2.Status(code=code, message=message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)  # type: ignore[arg-type]
        status.details.append(packed)
    return status


@contextmanager
def translated_errors(context: grpc.ServicerContext, method: str) -> Iterator[None]:
    """Abort the call with the status that matches the exception raised inside."""
    try:
        yield
    except InvalidArgument as e:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=e.field, description=e.description
        )
        _abort(context, method, _status(
            code_pb2.INVALID_ARGUMENT, str(e), error_details_pb2.BadRequest(field_violations=[violation])
        ))
    except NotFound as e:
        _abort(context, method, _status(code_pb2.NOT_FOUND, str(e)))
    except StateConflict as e:
        _abort(context, method, _status(code_pb2.FAILED_PRECONDITION, str(e)))
    except PermissionDenied as e:
        _abort(context, method, _status(code_pb2.PERMISSION_DENIED, str(e)))
    except ConcurrencyConflict as e:
        _abort(context, method, _status(code_pb2.ABORTED, str(e)))
    except ProjectionBehind as e:
        _abort(context, method, _status(code_pb2.UNAVAILABLE, str(e)))
    except (InterfaceError, OperationalError) as e:
        log.error("%s: store unavailable: %s", method, e)
        _abort(context, method, _status(code_pb2.UNAVAILABLE, "the event store is unavailable"))
    except Exception:
        # A fault of ours, never of the request (the edge refuses what the
        # store cannot hold): INTERNAL, with the traceback in the log only.
        log.exception("%s: failed", method)
        _abort(context, method, _status(code_pb2.INTERNAL, "internal error; see the server log"))


def _abort(context: grpc.ServicerContext, method: str, status: status_pb2.Status) -> None:
    log.info("%s refused: %s %s", method, code_pb2.Code.Name(status.code), status.message)
    context.abort_with_status(rpc_status.to_status(status))
