"""The REST face: the gRPC services over HTTP/JSON, by their google.api.http
rules (routes.py), through the gRPC face's own handlers (gateway.py), as a
WSGI application (app.py) on a threaded HTTP server (serving.py), described
by an OpenAPI document generated from the same descriptors (openapi.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sessions.api.access import AccessInterceptor
    from sessions.rest.serving import HttpServer
    from sessions.transport import ServerTLS


def http_server(
    listen: str,
    *,
    app: Any,
    read_model: Any,
    access: AccessInterceptor | None,
    max_message_bytes: int,
    threads: int,
    tls: ServerTLS | None,
    answered: Callable[[str, str, int, float], None] | None = None,
) -> HttpServer:
    """The REST face of a server: its application, read model, access
    control and limits; the same servicers the gRPC face registers."""
    from sessions.api.protos import operation_service_pb2_grpc, service_pb2_grpc
    from sessions.api.servicers import OperationService, SessionService
    from sessions.rest import openapi
    from sessions.rest.app import RestApp
    from sessions.rest.gateway import Gateway
    from sessions.rest.routes import routes
    from sessions.rest.serving import HttpServer

    served = routes()
    gateway = Gateway(
        served,
        [
            (
                service_pb2_grpc.add_SynchronizationSessionServiceServicer_to_server,
                SessionService(app, read_model),
                SessionService.SERIALIZED_RESPONSES,
            ),
            (
                operation_service_pb2_grpc.add_OperationServiceServicer_to_server,
                OperationService(app),
                OperationService.SERIALIZED_RESPONSES,
            ),
        ],
        access,
    )
    rest_app = RestApp(
        gateway,
        lambda: openapi.document(served, bearer_required=access is not None),
        max_body_bytes=max_message_bytes,
        answered=answered,
    )
    return HttpServer(listen, rest_app, threads=threads, tls=tls)


__all__ = ["http_server"]
