"""Counting calls: the families of the gRPC ecosystem's interceptors
(go-grpc-prometheus), looked up once per method, and the interceptor
that feeds them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from sessions.api.access import GRPC_TYPE
from sessions.api.pools import same_pool


class MethodMetrics:
    """One method's children of the call families, looked up once."""

    __slots__ = ("_handled", "_labels", "_metrics", "_seconds", "started")

    def __init__(self, metrics: Any, full_method: str, rpc_type: str):
        service, _, name = full_method.lstrip("/").partition("/")
        self._metrics = metrics
        self._labels = (rpc_type, service, name)
        self.started = metrics.started.labels(*self._labels)
        self._seconds = metrics.handling.labels(*self._labels)
        self._handled: dict[grpc.StatusCode, Any] = {}

    def done(self, code: grpc.StatusCode, seconds: float) -> None:
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = self._metrics.handled.labels(*self._labels, code.name)
        child.inc()
        self._seconds.observe(seconds)
        refusal = self._metrics._refusal_of.get(code)
        if refusal is not None:
            refusal.inc()


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts every call; installed first, so that it sees the calls the
    interceptors after it (access control) refuse."""

    def __init__(self, metrics: Any):
        self.metrics = metrics
        # method -> (handler, its counting wrapper): a method's handler is the
        # same object call after call unless an interceptor after this one
        # makes one per call (access control does).
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler, MethodMetrics]] = {}

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None  # unknown method: grpc answers UNIMPLEMENTED
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            cached[2].started.inc()
            return cached[1]
        counted = self.metrics.method(method, _rpc_type(handler))
        wrapped = _counting(handler, counted)
        self._wrapped[method] = (handler, wrapped, counted)
        counted.started.inc()
        return wrapped


def _rpc_type(handler: grpc.RpcMethodHandler) -> str:
    # A call access control refused before its request arrived is served
    # by a request stream's handler; its behavior names the method's type.
    declared = getattr(handler.stream_unary or handler.stream_stream, GRPC_TYPE, None)
    if isinstance(declared, str):
        return declared
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


def _code(context: grpc.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
    code = context.code()  # type: ignore[attr-defined]  # set by abort or set_code
    return code if isinstance(code, grpc.StatusCode) else default


def _counting(handler: grpc.RpcMethodHandler, counted: MethodMetrics) -> grpc.RpcMethodHandler:
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(_unary(handler.unary_unary, counted), **kwargs)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(_unary(handler.stream_unary, counted), **kwargs)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(_streaming(handler.unary_stream, counted), **kwargs)
    assert handler.stream_stream is not None  # (one of the four is set)
    return grpc.stream_stream_rpc_method_handler(_streaming(handler.stream_stream, counted), **kwargs)


def _unary(behavior: Callable[..., Any], counted: MethodMetrics) -> Callable[..., Any]:
    clock = time.perf_counter
    ok, unknown = grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN

    def serve(request: Any, context: grpc.ServicerContext) -> Any:
        start = clock()
        try:
            response = behavior(request, context)
        except BaseException:
            # An abort has set the code; anything else grpc answers UNKNOWN.
            counted.done(_code(context, unknown), clock() - start)
            raise
        counted.done(_code(context, ok), clock() - start)
        return response

    return same_pool(serve, behavior)


def _streaming(behavior: Callable[..., Any], counted: MethodMetrics) -> Callable[..., Any]:
    clock = time.perf_counter

    def serve(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        start = clock()
        try:
            yield from behavior(request, context)
        except GeneratorExit:  # the stream was closed early: the client went away
            counted.done(grpc.StatusCode.CANCELLED, clock() - start)
            raise
        except BaseException:
            counted.done(_code(context, grpc.StatusCode.UNKNOWN), clock() - start)
            raise
        counted.done(_code(context, grpc.StatusCode.OK), clock() - start)

    return same_pool(serve, behavior)
