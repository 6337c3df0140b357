"""One process's metrics (``Metrics``): a registry of its own, the
families it counts into, and what it is told."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client import values as prometheus_values

from sessions.metrics.calls import MethodMetrics, MetricsInterceptor
from sessions.metrics.serving import (
    GROUP_BUCKETS,
    HANDLING_BUCKETS,
    MULTIPROC_DIR,
    REFUSALS,
    TRANSITIONS,
    MetricsConfigError,
    close_http,
    register_build_info,
    serve_registry,
)
from sessions.metrics.store import StoreCollector


class Metrics:
    def __init__(self, *, shared: bool = False) -> None:
        """``shared``: a worker of `serve --workers N`. It counts into its
        files in the group's directory and serves nothing; the parent serves
        the sums (GroupMetrics), and the figures read when scraped (store,
        projector ownership, build) are the parent's, so none is registered
        here. The process must have started with PROMETHEUS_MULTIPROC_DIR
        set (the library picks its value store at import)."""
        if shared and not getattr(prometheus_values.ValueClass, "_multiprocess", False):
            raise MetricsConfigError(f"a worker's metrics need {MULTIPROC_DIR}, set by `serve --workers N`")
        self.shared = shared
        # No *_created series (a process-wide setting of the library): half
        # the scrape, and of no use to the alerts here.
        disable_created_metrics()
        self.registry = registry = CollectorRegistry()
        rpc = ["grpc_type", "grpc_service", "grpc_method"]
        self.started = Counter("grpc_server_started_total", "RPCs started on the server.", rpc, registry=registry)
        self.handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, regardless of success or failure.",
            [*rpc, "grpc_code"],
            registry=registry,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Time the server's handler took for each RPC, until its answer.",
            rpc,
            buckets=HANDLING_BUCKETS,
            registry=registry,
        )
        self.refusals = Counter(
            "sessions_refusals_total",
            "Calls refused, by reason: access (UNAUTHENTICATED, PERMISSION_DENIED), validation "
            "(INVALID_ARGUMENT), rate (RESOURCE_EXHAUSTED answered by a handler).",
            ["reason"],
            registry=registry,
        )
        self.appended = Counter(
            "sessions_events_appended_total",
            "Events this process appended to the store (committed), by event topic.",
            ["type"],
            registry=registry,
        )
        self.transitions = Counter(
            "sessions_deadline_transitions_total",
            "Sessions this process recorded as stalled or expired.",
            ["kind"],
            registry=registry,
        )
        self.group_commits = Histogram(
            "sessions_group_commit_saves",
            "Saves (commands) written by each commit of the group commit.",
            buckets=GROUP_BUCKETS,
            registry=registry,
        )
        self.replays = Counter(
            "sessions_idempotent_replays_total",
            "Mutating calls answered with their stored operation (a retry with an "
            "idempotency key, or a commit whose acknowledgement was lost).",
            registry=registry,
        )
        self.http_requests, self.http_seconds = _rest_families(registry)
        if not shared:
            register_build_info(registry)
        self._refusals = {reason: self.refusals.labels(reason) for reason in set(REFUSALS.values())}
        self._refusal_of = {code: self._refusals[reason] for code, reason in REFUSALS.items()}
        self._transitions = {kind: self.transitions.labels(kind) for kind in TRANSITIONS.values()}
        self._transition_of = {topic: self._transitions[kind] for topic, kind in TRANSITIONS.items()}
        self._appended: dict[str, Any] = {}
        self._methods: dict[tuple[str, str], MethodMetrics] = {}
        self._http: Any = None
        self.port = 0

    # --- serving ----------------------------------------------------------------------

    def listen(self, listen: str) -> int:
        """Serve /metrics on ``listen`` (HOST:PORT); return the bound port."""
        self._http, self.port = serve_registry(self.registry, listen)
        return self.port

    def close(self) -> None:
        if self._http is not None:
            close_http(self._http)
            self._http = None

    # --- what is told -------------------------------------------------------------------

    def observe(self, app: Any, registry: Any) -> None:
        """Count what ``app`` appends and replays, and read the store's and
        the read model's figures (``registry``: its projection.registry)
        when scraped."""
        if hasattr(app.recorder, "observer"):
            app.recorder.observer = self
        app.on_replay = self.replayed
        if not self.shared:
            self.registry.register(StoreCollector(app, registry))

    def observe_projector(self, projector: Any) -> None:
        """``sessions_projector_owner``: 1 while this process's projector
        owns its read model (projection.ownership), 0 while it stands by.
        (A worker's is the parent's: GroupMetrics.)"""
        if self.shared:
            return
        owner = Gauge(
            "sessions_projector_owner",
            "1 if this process's projector folds the read model now, 0 if it is a standby.",
            registry=self.registry,
        )
        owner.set_function(lambda: 1.0 if projector.ownership.held else 0.0)

    def interceptor(self) -> MetricsInterceptor:
        return MetricsInterceptor(self)

    def events_appended(self, events: Sequence[Any]) -> None:
        for event in events:
            topic = event.topic
            child = self._appended.get(topic)
            if child is None:
                child = self._appended[topic] = self.appended.labels(topic)
            child.inc()
            transition = self._transition_of.get(topic)
            if transition is not None:
                transition.inc()

    def group_committed(self, saves: int) -> None:
        self.group_commits.observe(saves)

    def http_answered(self, route: str, http_method: str, status: int, seconds: float) -> None:
        self.http_requests.labels(route, http_method, str(status)).inc()
        self.http_seconds.labels(route).observe(seconds)

    def replayed(self, method: str) -> None:
        self.replays.inc()

    def method(self, full_method: str, rpc_type: str) -> MethodMetrics:
        key = (full_method, rpc_type)
        found = self._methods.get(key)
        if found is None:
            found = self._methods[key] = MethodMetrics(self, full_method, rpc_type)
        return found


def _rest_families(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    """The REST face's calls: not gRPC calls, so families of their own."""
    requests = Counter(
        "sessions_http_requests_total",
        'Calls answered by the REST face, by route template ("none": no route matched), '
        'HTTP method (GET, POST or "other") and HTTP status.',
        ["route", "http_method", "http_status"],
        registry=registry,
    )
    seconds = Histogram(
        "sessions_http_request_seconds",
        "Time the REST face took for each call, until its answer.",
        ["route"],
        buckets=HANDLING_BUCKETS,
        registry=registry,
    )
    return requests, seconds
