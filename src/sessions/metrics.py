"""Prometheus metrics, served on ``--metrics-listen HOST:PORT`` at ``/metrics``.

Each ``Metrics`` owns its own ``CollectorRegistry`` (never the library's
global one), so two servers in one process, as in tests, count apart.

What is counted where, at the cost of a counter each:

- **Calls**, with the names and labels of the gRPC ecosystem's Prometheus
  interceptors (go-grpc-prometheus): ``MetricsInterceptor`` is the server's
  outermost interceptor, so it also sees the calls the access interceptor
  refuses. ``grpc_server_started_total`` counts a call when grpc looks up
  its handler; ``grpc_server_handled_total`` and
  ``grpc_server_handling_seconds`` when the handler is done, with the code
  it answered. Calls grpc refuses itself before any handler runs (over
  ``--max-concurrent-rpcs``, a request over ``--max-message-bytes``) are
  started but never handled: grpc does not tell an interceptor how they
  ended.
- **Events** appended and the size of each group commit: the recorder tells
  ``Metrics`` after each commit (store.recorders.CommitObserver); stalls and
  expiries are the events ``SessionStalled`` and ``SessionExpired``.
- **Idempotent replays**: the application tells, for each answer it gave
  from a stored operation record.
- **The store and the read model** (head, position, lag, parked events,
  store up): read from the database when scraped (``StoreCollector``), so
  they cost nothing per call; a scrape that cannot read them says
  ``sessions_store_up 0`` and leaves the others out.

Under ``sessions serve --workers N`` (cli.workers) the parent serves one
endpoint for the group (``GroupMetrics``), the library's multiprocess mode:
each worker counts into files of its own in a directory the parent made
(``PROMETHEUS_MULTIPROC_DIR``, set for the workers only) and serves nothing;
the parent sums the files when scraped and reads the store's figures, the
projector's ownership and the build itself, so that those appear once.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client import values as prometheus_values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

import sessions
from sessions.api.pools import same_pool

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


def _serve(registry: CollectorRegistry, listen: str) -> tuple[Any, int]:
    """An HTTP server for ``registry`` at ``listen``'s /metrics, and its port."""
    host, port = parse_listen(listen)
    try:
        http, _thread = start_http_server(port, host, registry=registry)
    except OSError as e:
        raise MetricsConfigError(f"--metrics-listen {listen}: cannot listen: {e}") from None
    bound = int(http.server_address[1])
    log.info("metrics: http://%s:%d/metrics", host, bound)
    return http, bound


def _close(http: Any) -> None:
    http.shutdown()
    http.server_close()


def _build_info(registry: CollectorRegistry) -> None:
    Info("sessions_build", "The running build.", registry=registry).info({"version": sessions.version()})


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
            _build_info(registry)
        self._refusals = {reason: self.refusals.labels(reason) for reason in set(REFUSALS.values())}
        self._refusal_of = {code: self._refusals[reason] for code, reason in REFUSALS.items()}
        self._transitions = {kind: self.transitions.labels(kind) for kind in TRANSITIONS.values()}
        self._transition_of = {topic: self._transitions[kind] for topic, kind in TRANSITIONS.items()}
        self._appended: dict[str, Any] = {}
        self._methods: dict[tuple[str, str], _MethodMetrics] = {}
        self._http: Any = None
        self.port = 0

    # --- serving ----------------------------------------------------------------------

    def listen(self, listen: str) -> int:
        """Serve /metrics on ``listen`` (HOST:PORT); return the bound port."""
        self._http, self.port = _serve(self.registry, listen)
        return self.port

    def close(self) -> None:
        if self._http is not None:
            _close(self._http)
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

    def method(self, full_method: str, rpc_type: str) -> _MethodMetrics:
        key = (full_method, rpc_type)
        found = self._methods.get(key)
        if found is None:
            found = self._methods[key] = _MethodMetrics(self, full_method, rpc_type)
        return found


def _rest_families(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    """The REST face's calls: not gRPC calls, so families of their own."""
    requests = Counter(
        "sessions_http_requests_total",
        "Calls answered by the REST face, by route template (\"none\": no route matched), "
        "HTTP method (GET, POST or \"other\") and HTTP status.",
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


class _MethodMetrics:
    """One method's children of the call families, looked up once."""

    __slots__ = ("_handled", "_labels", "_metrics", "_seconds", "started")

    def __init__(self, metrics: Metrics, full_method: str, rpc_type: str):
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

    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        # method -> (handler, its counting wrapper): a method's handler is the
        # same object call after call unless an interceptor after this one
        # makes one per call (access control does).
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler, _MethodMetrics]] = {}

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
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


def _code(context: grpc.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
    code = context.code()  # type: ignore[attr-defined]  # set by abort or set_code
    return code if isinstance(code, grpc.StatusCode) else default


def _counting(handler: grpc.RpcMethodHandler, counted: _MethodMetrics) -> grpc.RpcMethodHandler:
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


def _unary(behavior: Callable[..., Any], counted: _MethodMetrics) -> Callable[..., Any]:
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


def _streaming(behavior: Callable[..., Any], counted: _MethodMetrics) -> Callable[..., Any]:
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


class StoreCollector(Collector):
    """The store's and the read model's figures, read when scraped: the head
    of the log, the live read model's position, lag and parked events, and
    whether the store answered. Cheap queries (maxima, one row, a count of
    parked events); an error makes ``sessions_store_up`` 0, never a failed
    scrape."""

    def __init__(self, app: Any, registry: Any):
        self.app = app
        self.registry = registry

    def describe(self) -> Iterable[Any]:
        # Names only: registering must not query the store.
        return [family for family, _ in self._families()]

    def collect(self) -> Iterable[Any]:
        (up, _), *rest = self._families()
        values = self._read() if not self.app.store_health.down else None
        up.add_metric([], 1.0 if values is not None else 0.0)
        yield up
        if values is None:
            return
        for family, key in rest:
            family.add_metric([], values[key])
            yield family

    def _read(self) -> dict[str, float] | None:
        from sessions.projection.row_tables import rows_named
        from sessions.projection.rows import NAME
        from sessions.projection.status import lag_seconds

        try:
            live = self.registry.get(NAME).live_table
            view = rows_named(self.app, live)
            position = view.position()
            head = self.app.recorder.max_notification_id() or 0
            lag = lag_seconds(self.app, position) if head > position else 0.0
            parked = view.parked_count()
        except Exception:  # noqa: BLE001 - said as sessions_store_up 0
            log.debug("metrics: cannot read the store", exc_info=True)
            return None
        return {
            "head": float(head),
            "position": float(position),
            "lag_events": float(max(head - position, 0)),
            "lag_seconds": math.nan if lag is None else lag,
            "parked": float(parked),
        }

    @staticmethod
    def _families() -> list[tuple[GaugeMetricFamily, str]]:
        return [
            (GaugeMetricFamily("sessions_store_up", "1 if the store answered this scrape, else 0."), "up"),
            (
                GaugeMetricFamily(
                    "sessions_log_head_position", "Notification id of the last event in the store's log."
                ),
                "head",
            ),
            (
                GaugeMetricFamily(
                    "sessions_projection_position", "Position of the log the live read model has folded."
                ),
                "position",
            ),
            (
                GaugeMetricFamily(
                    "sessions_projection_lag_events", "Events in the log the live read model has not folded."
                ),
                "lag_events",
            ),
            (
                GaugeMetricFamily(
                    "sessions_projection_lag_seconds",
                    "Age of the oldest event the live read model has not folded (0: caught up; NaN: "
                    "its time cannot be read).",
                ),
                "lag_seconds",
            ),
            (GaugeMetricFamily("sessions_parked_events", "Events the live read model's projector parked."), "parked"),
        ]


class GroupMetrics:
    """The metrics of `sessions serve --workers N`, served by the parent at
    --metrics-listen for the whole group (the library's multiprocess mode,
    its documented way for servers of several processes):

    - **counters and histograms** (calls, events, commits, replays,
      refusals, REST): each worker writes its own into files named by its
      pid in ``directory`` (made fresh here, removed by ``close``); a
      scrape sums every file. A worker that exits leaves what it counted:
      ``worker_exited`` adds its files into the ``*_retired.db`` files, so
      the sums never go back when a worker is replaced, and the files stay
      one per live worker plus one. A counter counts what the group has
      counted since the parent started: a restart of the parent (not of a
      worker) starts from 0, as a restart of one process does.
    - **the store's figures** and ``sessions_build_info``: read by the
      parent itself when scraped, through a store connection of its own
      opened at the first scrape (``open_store``), so they appear once.
    - ``sessions_projector_owner``: 1 while worker 0's projector holds the
      read model's ownership, as the database says (the projectors table
      joined with its locks, as `projections status` reads it; on SQLite,
      while worker 0 runs); left out when the group runs no projector.

    Workers write no gauges (``Metrics(shared=True)``), so no gauge mode is
    needed; ``mark_process_dead`` is still called for a worker that exits,
    as the library asks."""

    def __init__(self, open_store: Callable[[], tuple[Any, Any]], projector_pid: Callable[[], int | None] | None):
        """``open_store``: (application, its projection registry), opened in
        this process; ``projector_pid``: the pid of the worker that runs the
        projector while it runs (None: none runs now), or None if the group
        runs no projector."""
        disable_created_metrics()
        self.directory = tempfile.mkdtemp(prefix="sessions-metrics-")
        self.registry = CollectorRegistry()
        self._files = _WorkerFiles(self.directory)
        self.registry.register(self._files)
        self._store = _GroupStore(open_store, projector_pid)
        self.registry.register(self._store)
        _build_info(self.registry)
        self._http: Any = None
        self.port = 0

    def listen(self, listen: str) -> int:
        self._http, self.port = _serve(self.registry, listen)
        return self.port

    def worker_exited(self, pid: int) -> None:
        self._files.retire(pid)

    def close(self) -> None:
        """Stop serving, close the store, remove the directory (after the
        workers stopped)."""
        if self._http is not None:
            _close(self._http)
            self._http = None
        self._store.close()
        self._files.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class _WorkerFiles(Collector):
    """The sums of the workers' files. One lock keeps a scrape and the
    retirement of a worker's files apart: a scrape never sees a worker's
    counts both in its own files and in the retired ones, nor in neither."""

    RETIRED = ("counter", "histogram")  # the kinds a worker writes

    def __init__(self, directory: str):
        self.directory = directory
        self._lock = threading.Lock()
        self._collector = MultiProcessCollector(None, path=directory)
        self._retired: dict[str, MmapedDict] = {}

    def collect(self) -> Iterable[Any]:
        with self._lock:
            return list(self._collector.collect())

    def retire(self, pid: int) -> None:
        """Worker ``pid`` exited (it writes no more): its counts go into the
        retired files, added key by key (a histogram's buckets are stored
        per bucket, so they add too), and its own files go."""
        mark_process_dead(pid, self.directory)
        with self._lock:
            for kind in self.RETIRED:
                path = os.path.join(self.directory, f"{kind}_{pid}.db")
                if not os.path.exists(path):
                    continue
                retired = self._retired.get(kind)
                if retired is None:
                    retired = self._retired[kind] = MmapedDict(os.path.join(self.directory, f"{kind}_retired.db"))
                for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(path):
                    before, _ = retired.read_value(key)
                    retired.write_value(key, before + value, timestamp)
                os.remove(path)

    def close(self) -> None:
        with self._lock:
            for retired in self._retired.values():
                retired.close()
            self._retired.clear()


class _GroupStore(Collector):
    """The store's figures (StoreCollector) and the projector's ownership,
    read by the parent when scraped, through an application it opens at
    the first scrape (and again at the next, if the store could not be
    reached: ``sessions_store_up 0`` meanwhile)."""

    def __init__(self, open_store: Callable[[], tuple[Any, Any]], projector_pid: Callable[[], int | None] | None):
        self._open_store = open_store
        self._projector_pid = projector_pid
        self._lock = threading.Lock()
        self._app: Any = None
        self._collector: StoreCollector | None = None
        self._host = socket.gethostname()

    def describe(self) -> Iterable[Any]:
        return []  # (registering must not open the store)

    def collect(self) -> Iterable[Any]:
        with self._lock:
            collector = self._opened()
            if collector is None:
                up = GaugeMetricFamily("sessions_store_up", "1 if the store answered this scrape, else 0.")
                up.add_metric([], 0.0)
                return [up]
            found = list(collector.collect())
            owner = self._owner()
            return found if owner is None else [*found, owner]

    def _opened(self) -> StoreCollector | None:
        if self._collector is None:
            try:
                self._app, registry = self._open_store()
            except Exception:  # noqa: BLE001 - said as sessions_store_up 0
                log.debug("metrics: cannot open the store", exc_info=True)
                return None
            self._collector = StoreCollector(self._app, registry)
        return self._collector

    def _owner(self) -> GaugeMetricFamily | None:
        if self._projector_pid is None:
            return None
        from sessions.projection.ownership import projectors
        from sessions.projection.rows import NAME

        pid = self._projector_pid()
        try:
            found = projectors(self._app, NAME) if pid is not None else []
        except Exception:  # noqa: BLE001 - the store's trouble is said by sessions_store_up
            log.debug("metrics: cannot read the projectors", exc_info=True)
            return None
        if found is None:  # SQLite: worker 0's projector is the file's one projector
            owns = pid is not None
        else:
            owns = any(p.role == "owner" and p.pid == pid and p.host == self._host for p in found)
        family = GaugeMetricFamily(
            "sessions_projector_owner",
            "1 if worker 0's projector folds the read model now, 0 if it is a standby or not running.",
        )
        family.add_metric([], 1.0 if owns else 0.0)
        return family

    def close(self) -> None:
        with self._lock:
            if self._app is not None:
                self._app.close()
                self._app = None
                self._collector = None


__all__ = ["GroupMetrics", "Metrics", "MetricsConfigError", "MetricsInterceptor", "StoreCollector", "parse_listen"]
