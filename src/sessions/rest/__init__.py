"""The REST face: the gRPC services over HTTP/JSON, by their google.api.http
rules (routes.py), through the gRPC face's own handlers (gateway.py), as a
WSGI application (app.py) on a threaded HTTP server (serving.py), described
by an OpenAPI document generated from the same descriptors (openapi.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sessions.rest.serving import HttpServer
    from sessions.server import SessionsServer


def http_server(server: SessionsServer, listen: str) -> HttpServer:
    """The REST face of a started ``server``: its application, read model,
    access control and limits; the same servicers the gRPC face registers."""
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
                SessionService(server.app, server.read_model),
                SessionService.SERIALIZED_RESPONSES,
            ),
            (
                operation_service_pb2_grpc.add_OperationServiceServicer_to_server,
                OperationService(server.app),
                OperationService.SERIALIZED_RESPONSES,
            ),
        ],
        server.access,
    )
    app = RestApp(
        gateway,
        lambda: openapi.document(served, bearer_required=server.access is not None),
        max_body_bytes=server.max_message_bytes,
    )
    return HttpServer(listen, app, threads=server.max_workers, tls=server.tls)


__all__ = ["http_server"]
