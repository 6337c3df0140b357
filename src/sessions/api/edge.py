"""The API's edge: how every method of our services is registered with the
gRPC server.

**Requests are decoded here, not by gRPC.** grpcio's own request
deserializer answers a request that does not decode with INTERNAL
("Exception deserializing request!"), and after about a hundred of them on
one connection the connection is dead; each also costs the server memory.
Here every method is registered with the request taken as bytes: the bytes
are decoded inside the call, and bytes that do not decode are answered
INVALID_ARGUMENT (field ``request``) like any other bad input, on a
connection that stays usable.

**One validity rule for every string** (validation.check_message): no
string a caller sends may hold NUL, which PostgreSQL cannot store and
SQLite can, so that both backends refuse the same requests; ids also refuse
every other control character; timestamps must be in the range of the
Timestamp type. The rule runs on every request of every method before the
servicer sees it.

**Answers may be sent as stored.** Methods named in ``serialized`` return
bytes their servicer already has (a stored session, a stored Operation):
they are sent as they are, with no parse and no encode.

**Reads may run on threads of their own.** Methods named in ``pooled`` run
on the executor given there instead of the server's pool (grpcio's hook: a
behavior with an ``experimental_thread_pool`` attribute runs the whole call
in that pool: sessions.api.pools).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from time import perf_counter
from typing import Any, cast

import grpc
from google.protobuf.message import DecodeError, Message

from sessions.api import access_log, validation
from sessions.api.errors import translated_errors
from sessions.api.pools import run_in
from sessions.domain.errors import InvalidArgument


class _CapturedHandlers:
    """Stands in for a server to collect the generated helper's handlers."""

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.service, self.handlers = service, dict(handlers)


def add_service(
    add_generated: Callable[[Any, Any], None],
    servicer: Any,
    server: grpc.Server,
    serialized: tuple[str, ...] = (),
    pooled: Mapping[str, futures.ThreadPoolExecutor] | None = None,
) -> None:
    """Register ``servicer`` as the generated ``add_..._to_server`` would,
    except that each method decodes and checks its request itself, the
    methods in ``serialized`` answer with bytes as they are, and those in
    ``pooled`` run on the executor named there."""
    captured = _CapturedHandlers()
    add_generated(servicer, captured)
    pools = pooled or {}
    handlers = {
        name: _guarded(f"{captured.service}/{name}", generated, name in serialized, pools.get(name))
        for name, generated in captured.handlers.items()
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(captured.service, handlers),)
    )
    server.add_registered_method_handlers(captured.service, handlers)


def _guarded(
    method: str, generated: grpc.RpcMethodHandler, as_is: bool, pool: futures.ThreadPoolExecutor | None
) -> grpc.RpcMethodHandler:
    request_type: type[Message] = cast(Any, generated.request_deserializer).__self__  # Type.FromString
    serializer = _as_is if as_is else generated.response_serializer
    decode = _decoder(method, request_type)
    if generated.unary_unary is not None:
        behavior = generated.unary_unary

        def unary(raw: bytes, context: grpc.ServicerContext) -> Any:
            started, request = perf_counter(), None
            try:
                request = decode(raw, context)
                return behavior(request, context)
            finally:
                access_log.called(method, context, request, started)

        return grpc.unary_unary_rpc_method_handler(run_in(unary, pool), response_serializer=serializer)
    if generated.unary_stream is not None:
        streaming = generated.unary_stream

        def stream(raw: bytes, context: grpc.ServicerContext) -> Iterator[Any]:
            started, request = perf_counter(), None
            try:
                request = decode(raw, context)
                yield from streaming(request, context)
            finally:  # the call ends with its stream
                access_log.called(method, context, request, started)

        return grpc.unary_stream_rpc_method_handler(run_in(stream, pool), response_serializer=serializer)
    raise TypeError(f"{method}: only unary requests are served")


def _decoder(method: str, request_type: type[Message]) -> Callable[[bytes, grpc.ServicerContext], Any]:
    name = method.rsplit("/", 1)[-1]
    from_string = request_type.FromString

    def decode(raw: bytes, context: grpc.ServicerContext) -> Any:
        try:
            request = from_string(raw)
            validation.check_message(request)
            return request
        except (DecodeError, RuntimeError, ValueError) as e:
            # (RuntimeError: recursion too deep; ValueError: bad UTF-8)
            refusal: Exception = InvalidArgument(
                "request", f"cannot be decoded as {request_type.DESCRIPTOR.full_name}: {e}"
            )
        except InvalidArgument as e:
            refusal = e
        with translated_errors(context, name):
            raise refusal

    return decode


def _as_is(serialized: bytes) -> bytes:
    return serialized


__all__ = ["add_service"]
