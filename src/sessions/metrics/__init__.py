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

from sessions.metrics.calls import MetricsInterceptor
from sessions.metrics.group import GroupMetrics
from sessions.metrics.process import Metrics
from sessions.metrics.serving import MULTIPROC_DIR, MetricsConfigError, parse_listen
from sessions.metrics.store import StoreCollector

__all__ = [
    "MULTIPROC_DIR",
    "GroupMetrics",
    "Metrics",
    "MetricsConfigError",
    "MetricsInterceptor",
    "StoreCollector",
    "parse_listen",
]
