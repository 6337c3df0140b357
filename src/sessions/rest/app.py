"""The REST face as a WSGI application: HTTP in, a Gateway call, JSON out.

Every answer is JSON: the method's response by the protobuf JSON mapping,
or a ``google.rpc.Status`` (``code``, ``message``, ``details`` with
``@type``) under the HTTP status of the standard gRPC-to-HTTP mapping. What
HTTP itself gets wrong is refused here, before any call: an unknown path
(404, NOT_FOUND), a known path with another method (405, UNIMPLEMENTED), a
body over the limit or an undecodable URL (400, INVALID_ARGUMENT naming
``body`` or the parameter). ``GET /openapi.json`` describes the routes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from google.rpc import code_pb2, status_pb2

from sessions.domain.errors import InvalidArgument
from sessions.rest.gateway import (
    HTTP_STATUS,
    METADATA_HEADERS,
    Aborted,
    Context,
    Gateway,
    error_document,
    invalid,
)
from sessions.rest.serving import CLOSE_CONNECTION

log = logging.getLogger("sessions.rest")

OPENAPI_PATH = "/openapi.json"
ROUTE_KEY = "sessions.route"  # the environ key naming the matched route (for the metrics)
StartResponse = Callable[[str, list[tuple[str, str]]], Any]
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    429: "Too Many Requests",
    499: "Client Closed Request",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class RestApp:
    def __init__(
        self,
        gateway: Gateway,
        openapi: Callable[[], dict[str, Any]],
        max_body_bytes: int,
        answered: Callable[[str, str, int, float], None] | None = None,
    ):
        """``answered(route template, HTTP method, HTTP status, seconds)`` is
        told of every answer (the metrics, when they are on)."""
        self.gateway = gateway
        self._answered = answered
        self.max_body_bytes = max_body_bytes
        self._openapi = openapi
        self._openapi_body: bytes | None = None

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        try:
            status, document = self._serve(environ)
        except Exception:  # a fault of ours: logged, and answered as the gRPC face would
            log.exception("REST %s %s: failed", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            status, document = (
                500,
                error_document(status_pb2.Status(code=code_pb2.INTERNAL, message="internal error; see the server log")),
            )
        body = document if isinstance(document, bytes) else _dumps(document)
        start_response(
            f"{status} {_REASONS.get(status, 'Error')}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        if self._answered is not None:
            route = environ.get(ROUTE_KEY, "none")
            # Labels a caller cannot choose: any other method word is "other".
            method = environ.get("REQUEST_METHOD", "")
            method = method if method in ("GET", "POST") else "other"
            self._answered(route, method, status, time.perf_counter() - started)
        return [body]

    def _serve(self, environ: dict[str, Any]) -> tuple[int, dict[str, Any] | bytes]:
        verb = environ.get("REQUEST_METHOD", "GET").upper()
        raw_path, _, raw_query = _request_target(environ).partition("?")
        if raw_path == OPENAPI_PATH:
            environ[ROUTE_KEY] = OPENAPI_PATH
            if verb != "GET":
                return _failure(code_pb2.UNIMPLEMENTED, f"{verb} is not served on {raw_path}; use GET", 405)
            if self._openapi_body is None:
                self._openapi_body = _dumps(self._openapi())
            return 200, self._openapi_body
        matched = None
        path_known = False
        unreadable: InvalidArgument | None = None  # refused once the caller is admitted
        for route in self.gateway.routes:
            try:
                variables = route.match(raw_path)
            except UnicodeDecodeError:
                variables, unreadable = {}, InvalidArgument("path", "a path variable is not percent-encoded UTF-8")
            if variables is None:
                continue
            path_known = True
            if route.http_method == verb:
                matched = route, variables
                break
            unreadable = None
        if matched is None:
            if path_known:
                return _failure(code_pb2.UNIMPLEMENTED, f"{verb} is not served on this path", 405)
            return _failure(code_pb2.NOT_FOUND, f"no route for {verb} {raw_path[:200]}")
        route, variables = matched
        environ[ROUTE_KEY] = route.template
        query: list[tuple[str, str]] = []
        try:
            query = parse_qsl(raw_query, keep_blank_values=True, errors="strict")
        except (UnicodeDecodeError, ValueError):
            unreadable = unreadable or InvalidArgument("query", "is not percent-encoded UTF-8")
        body = None
        if route.body:  # (a body over the limit is refused first, as gRPC refuses a message over its limit)
            body, refusal = self._read_body(environ)
            if refusal is not None:
                return refusal
        metadata = []
        for header, key in METADATA_HEADERS.items():
            value = environ.get(header)
            if value is not None:
                try:  # WSGI hands header bytes over as latin-1
                    metadata.append((key, value.encode("latin-1").decode("utf-8")))
                except UnicodeError:
                    unreadable = unreadable or InvalidArgument(key, "is not UTF-8")
        address = environ.get("REMOTE_ADDR", "")
        peer = f"ipv6:[{address}]" if ":" in address else f"ipv4:{address}"  # as grpc names peers
        peer += f":{environ.get('REMOTE_PORT', '')}"
        try:
            answer = self.gateway.call(route, variables, query, body, Context(metadata, peer), unreadable)
        except Aborted as e:
            return HTTP_STATUS.get(e.status.code, 500), error_document(e.status)
        return 200, answer

    def _read_body(self, environ: dict[str, Any]) -> tuple[bytes, tuple[int, dict[str, Any]] | None]:
        body, refusal = self._read_limited(environ)
        if refusal is not None:  # the rest of the body stays unread: never take it for a request
            close = environ.get(CLOSE_CONNECTION)
            if close is not None:
                close()
        return body, refusal

    def _read_limited(self, environ: dict[str, Any]) -> tuple[bytes, tuple[int, dict[str, Any]] | None]:
        limit = self.max_body_bytes
        length_header = environ.get("CONTENT_LENGTH") or ""
        stream = environ["wsgi.input"]
        if length_header:
            if not length_header.isdigit():
                return b"", _refused("body", "Content-Length is not a number")
            length = int(length_header)
            if length > limit:
                return b"", _refused("body", f"must be at most {limit} bytes, got {length}")
            return stream.read(length), None
        body = stream.read(limit + 1)  # chunked: read no more than the limit allows
        if len(body) > limit:
            return b"", _refused("body", f"must be at most {limit} bytes")
        return body, None


def _request_target(environ: dict[str, Any]) -> str:
    """The path and query as the client sent them (still percent-encoded)."""
    uri = environ.get("REQUEST_URI") or environ.get("RAW_URI")
    if uri is None:
        path = quote(environ.get("PATH_INFO", "").encode("latin-1"), safe="/:@!$&'()*+,;=-._~")
        query = environ.get("QUERY_STRING", "")
        return f"{path}?{query}" if query else path
    if not uri.startswith("/"):  # absolute form: http://host/path?query
        parts = urlsplit(uri)
        return f"{parts.path}?{parts.query}" if parts.query else parts.path
    return str(uri)


def _failure(code: int, message: str, http_status: int | None = None) -> tuple[int, dict[str, Any]]:
    status = status_pb2.Status(code=code, message=message)
    return http_status or HTTP_STATUS[code], error_document(status)


def _refused(field: str, description: str) -> tuple[int, dict[str, Any]]:
    return 400, error_document(invalid(field, description))


def _dumps(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


__all__ = ["OPENAPI_PATH", "RestApp"]
