"""What every metrics endpoint shares: the families' constants, parsing
--metrics-listen, the HTTP server of a registry, the build's info."""

from __future__ import annotations

import logging
from typing import Any

import grpc
from prometheus_client import (
    CollectorRegistry,
    Info,
    start_http_server,
)

import sessions

log = logging.getLogger("sessions.metrics")

# grpc_code of a call answered with these, as a refusal of this reason.
REFUSALS = {
    grpc.StatusCode.UNAUTHENTICATED: "access",
    grpc.StatusCode.PERMISSION_DENIED: "access",
    grpc.StatusCode.INVALID_ARGUMENT: "validation",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "rate",
}
TRANSITIONS = {"sessions.SessionStalled": "stall", "sessions.SessionExpired": "expiry"}
HANDLING_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# The library's multiprocess mode: read when prometheus_client is imported,
# so set in a worker's environment before it starts (cli.workers).
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


class MetricsConfigError(ValueError):
    """A --metrics-listen that cannot be used (bad usage: exit 2)."""


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9464`` for an IPv6 host) -> (host, port)."""
    host, sep, port_text = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise MetricsConfigError(f"--metrics-listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9464")
    return host, int(port_text)


def serve_registry(registry: CollectorRegistry, listen: str) -> tuple[Any, int]:
    """An HTTP server for ``registry`` at ``listen``'s /metrics, and its port."""
    host, port = parse_listen(listen)
    try:
        http, _thread = start_http_server(port, host, registry=registry)
    except OSError as e:
        raise MetricsConfigError(f"--metrics-listen {listen}: cannot listen: {e}") from None
    bound = int(http.server_address[1])
    log.info("metrics: http://%s:%d/metrics", host, bound)
    return http, bound


def close_http(http: Any) -> None:
    http.shutdown()
    http.server_close()


def register_build_info(registry: CollectorRegistry) -> None:
    Info("sessions_build", "The running build.", registry=registry).info({"version": sessions.version()})
