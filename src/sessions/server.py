"""One process: the gRPC API, the projector (unless disabled), health,
reflection, and a graceful shutdown."""

from __future__ import annotations

import logging
import os
import threading
from concurrent import futures
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import sessions
from sessions import credentials as credentials_file
from sessions.api.access import AccessInterceptor
from sessions.api.audit import AuditService
from sessions.api.edge import add_service
from sessions.api.protos import (
    AUDIT_SERVICE,
    OPERATION_SERVICE,
    SESSION_SERVICE,
    audit_pb2_grpc,
    operation_service_pb2_grpc,
    service_pb2_grpc,
)
from sessions.api.servicers import OperationService, SessionService
from sessions.deadlines import DEFAULT_INTERVAL, DeadlineWorker
from sessions.domain.policy import Policy
from sessions.metrics import Metrics, parse_listen
from sessions.projection.read_model import ReadModel
from sessions.projection.write_through import WriteThrough
from sessions.store.application import SessionsApplication
from sessions.store.clock import Clock, system_clock
from sessions.store.urls import parse_store_url
from sessions.transport import (
    DEFAULT_MAX_CONCURRENT_RPCS,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_STREAMS_PER_CONNECTION,
    DEFAULT_READ_THREADS,
    DEFAULT_THREADS,
    SecurityConfigError,
    ServerTLS,
    is_loopback,
    listen_host,
    server_options,
)

if TYPE_CHECKING:
    from sessions.rest.serving import HttpServer

log = logging.getLogger("sessions.server")

# The gRPC health service name that answers whether the process is alive
# (for a liveness probe); the overall status ("") answers whether it is
# ready to serve.
LIVENESS = "liveness"


class SessionsServer:
    def __init__(
        self,
        store_url: str,
        listen: str = "127.0.0.1:50051",
        *,
        policy: Policy | None = None,
        run_projector: bool = True,
        run_deadlines: bool = True,
        rebuild_on_start: bool = False,
        deadline_interval: float = DEFAULT_INTERVAL,
        clock: Clock = system_clock,
        max_workers: int = DEFAULT_THREADS,
        read_threads: int = DEFAULT_READ_THREADS,
        auth_file: str | os.PathLike[str] | None = None,
        insecure_no_auth: bool = False,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_client_ca: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_concurrent_rpcs: int | None = DEFAULT_MAX_CONCURRENT_RPCS,
        max_streams_per_connection: int = DEFAULT_MAX_STREAMS_PER_CONNECTION,
        http_listen: str | None = None,
        metrics_listen: str | None = None,
        metrics_shared: bool = False,
        reuse_port: bool = False,
    ):
        """Security (issue 7): with ``auth_file`` every call is authenticated
        and authorized (sessions.api.access); without, the server is open and
        may listen only on loopback unless ``insecure_no_auth``. Raises
        SecurityConfigError or credentials.CredentialsError before anything
        is opened when the configuration is unsafe or unreadable.

        ``metrics_listen`` (HOST:PORT): serve Prometheus metrics there
        (sessions.metrics); a value that is not HOST:PORT raises
        MetricsConfigError here, an address that cannot be bound in start().
        With ``metrics_shared`` (a worker of `serve --workers N`) it counts
        for the group and serves nothing: the parent serves the group's
        metrics at ``metrics_listen`` (sessions.metrics.GroupMetrics).

        ``reuse_port``: listen with SO_REUSEPORT, beside the other workers of
        `serve --workers N` (cli.workers).

        ``read_threads``: GetSession and ListSessions run on a pool of their
        own of this many threads, the other calls on ``max_workers``
        (0: every call on ``max_workers``)."""
        self.settings = parse_store_url(store_url)
        self.listen = listen
        self.reuse_port = reuse_port
        self.http_listen = http_listen or None  # the REST face (sessions.rest); off by default
        self.http_port = 0
        self.http: HttpServer | None = None
        self.policy = policy or Policy()
        self.run_projector = run_projector
        self.run_deadlines = run_deadlines
        self.rebuild_on_start = rebuild_on_start
        self.deadline_interval = deadline_interval
        self.clock = clock
        self.max_workers = max_workers
        self.read_threads = read_threads
        self.read_pool: futures.ThreadPoolExecutor | None = None
        self.port = 0
        self._stopped = threading.Event()
        self._caught_up = False  # the projector folded the log as it was at start
        self.auth_file = os.fspath(auth_file) if auth_file else None
        self.insecure_no_auth = insecure_no_auth
        self.tls = ServerTLS.from_options(tls_cert, tls_key, tls_client_ca)
        self._tls_credentials = self.tls.credentials() if self.tls is not None else None
        self.max_message_bytes = max_message_bytes
        self.max_concurrent_rpcs = max_concurrent_rpcs
        self.max_streams_per_connection = max_streams_per_connection
        self.metrics_listen = metrics_listen
        self.metrics: Metrics | None = None
        if metrics_listen:
            parse_listen(metrics_listen)
            self.metrics = Metrics(shared=metrics_shared)
        self.access = (
            AccessInterceptor(credentials_file.load(self.auth_file)) if self.auth_file else None
        )
        self._refuse_an_open_server_off_loopback()

    def reload_credentials(self) -> bool:
        """Re-read the credentials file (SIGHUP). A file that does not load
        leaves the credentials as they were; returns whether it loaded."""
        if self.access is None:
            log.warning("credentials: none configured (no --auth-file); nothing to reload")
            return False
        assert self.auth_file is not None
        try:
            loaded = credentials_file.load(self.auth_file)
        except credentials_file.CredentialsError as e:
            log.error("credentials: reload failed, keeping the previous ones: %s", e)
            return False
        self.access.credentials = loaded
        log.info("credentials: reloaded from %s: %s", self.auth_file, loaded.describe())
        return True

    def _refuse_an_open_server_off_loopback(self) -> None:
        open_server = self.access is None and not self.insecure_no_auth
        if open_server and not is_loopback(self.listen):
            raise SecurityConfigError(
                f"refusing to listen on {self.listen} without credentials: every caller would be "
                "accepted. Give --auth-file (SESSIONS_AUTH_FILE) with tokens made by "
                "`sessions auth add-token`, listen on 127.0.0.1, or pass --insecure-no-auth "
                "if an open server on this address is really intended."
            )
        if self.http_listen:
            listen_host(self.http_listen)  # HOST:PORT, or SecurityConfigError (bad usage)
            if open_server and not is_loopback(self.http_listen):
                raise SecurityConfigError(
                    f"refusing to serve REST on {self.http_listen} without credentials (see --listen)"
                )

    def start(self) -> int:
        """Start serving; return the bound port. Health says SERVING once the
        projector has folded the log as it was at start."""
        if self.metrics is not None and not self.metrics.shared:
            assert self.metrics_listen is not None
            self.metrics.listen(self.metrics_listen)  # first: a busy port fails before anything opens
        log.info("sessions %s", sessions.version())
        log.info("store: %s", self.settings.description)
        log.info("policy: %s", self.policy.describe())
        # Each command writes its sessions' rows with its events (read-your-writes).
        self.app = SessionsApplication(
            self.settings, policy=self.policy, clock=self.clock, with_events=WriteThrough
        )
        self.read_model = read_model = ReadModel(self.app, run_projector=self.run_projector)
        self.projector = read_model.projector
        if self.metrics is not None:
            self.metrics.observe(self.app, read_model.registry)
            if self.projector is not None:
                self.metrics.observe_projector(self.projector)
        self.deadlines = (
            DeadlineWorker(
                self.app,
                read_model,
                interval=self.deadline_interval,
                on_sweep=self._wake_projector,
            )
            if self.run_deadlines
            else None
        )

        self.server = self._grpc_server(read_model)
        if self.tls is not None:
            assert self._tls_credentials is not None  # made with self.tls
            self.port = self.server.add_secure_port(self.listen, self._tls_credentials)
        else:
            self.port = self.server.add_insecure_port(self.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.listen}")
        if self.http_listen:  # before gRPC serves: a REST address that cannot be bound stops the start
            from sessions.rest import http_server

            self.http = http_server(
                self.http_listen,
                app=self.app,
                read_model=self.read_model,
                access=self.access,
                max_message_bytes=self.max_message_bytes,
                threads=self.max_workers,
                tls=self.tls,
                answered=self.metrics.http_answered if self.metrics is not None else None,
            )
            self.http_port = self.http.start()
        self.server.start()
        host = self.listen.rsplit(":", 1)[0]
        transport = self.tls.describe() if self.tls is not None else "plaintext"
        log.info("listening on %s:%d (gRPC, %s)", host, self.port, transport)
        self._log_security()

        self._start_workers(read_model)
        return self.port

    def _grpc_server(self, read_model: ReadModel) -> grpc.Server:
        """The gRPC server with every service registered (not yet listening)."""
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="grpc"),
            options=server_options(self.max_message_bytes, self.max_streams_per_connection, self.reuse_port),
            interceptors=self._interceptors() or None,
            maximum_concurrent_rpcs=self.max_concurrent_rpcs,
        )
        # Reads on few threads, writes on many (an optimisation: no promise
        # rests on it; --read-threads 0 serves every call on one pool). A
        # write holds its thread while its group commits, so many threads
        # let many writes share a commit; a read holds its thread only for
        # its own work, and many threads running Python at once cost each
        # call more CPU in handoffs of the interpreter lock (bench/README.md,
        # issue 18: a GetSession costs about a tenth less CPU here than with
        # every call on 32 threads, and 16 agents write as fast). A
        # client that never sends its request holds a read thread as it
        # would hold one of the server's pool; grpc's limits apply to both.
        # Access control refuses a call by its metadata before the request
        # is awaited (api.access): only an admitted caller can hold one.
        if self.read_threads:
            self.read_pool = futures.ThreadPoolExecutor(
                max_workers=self.read_threads, thread_name_prefix="grpc-read"
            )
        # Every request is decoded and checked at the edge (api.edge).
        add_service(
            service_pb2_grpc.add_SynchronizationSessionServiceServicer_to_server,
            SessionService(self.app, read_model),
            server,
            SessionService.SERIALIZED_RESPONSES,
            pooled=dict.fromkeys(SessionService.READS, self.read_pool) if self.read_pool else None,
        )
        add_service(
            operation_service_pb2_grpc.add_OperationServiceServicer_to_server,
            OperationService(self.app),
            server,
            OperationService.SERIALIZED_RESPONSES,
        )
        add_service(
            audit_pb2_grpc.add_AuditServiceServicer_to_server, AuditService(self.app), server
        )
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        # Liveness: SERVING while the process runs, whatever the store does.
        self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        # Readiness follows the store: NOT_SERVING while it cannot be reached.
        self.app.store_health.on_down(self._update_health)
        self.app.store_health.on_back(self._update_health)
        reflection.enable_server_reflection(
            (
                SESSION_SERVICE,
                OPERATION_SERVICE,
                AUDIT_SERVICE,
                health.SERVICE_NAME,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        return server

    def _start_workers(self, read_model: ReadModel) -> None:
        """The read model (and its projector, unless elsewhere), the deadline
        worker, and a rebuild if asked for (--rebuild-on-start)."""
        log.info("read model: serving %s", read_model.live_table)
        if self.projector is None:
            log.info("projector: not in this process (--no-projector)")
            read_model.start()
            self._caught_up = True
            self._update_health()
        else:
            head = self.app.recorder.max_notification_id() or 0
            log.info("projector: read model at %d, log head at %d", self.projector.position, head)
            read_model.start()
            threading.Thread(target=self._serve_when_caught_up, args=(head,), daemon=True).start()
        if self.deadlines is not None:
            self.deadlines.start()
            log.info("deadlines: sweeping every %gs", self.deadline_interval)
        if self.rebuild_on_start and read_model.outdated:
            threading.Thread(target=self._rebuild, name="rebuild", daemon=True).start()

    def _interceptors(self) -> list[grpc.ServerInterceptor]:
        """Metrics first: they count the calls access control refuses."""
        interceptors: list[grpc.ServerInterceptor] = []
        if self.metrics is not None:
            interceptors.append(self.metrics.interceptor())
        if self.access is not None:
            interceptors.append(self.access)
        return interceptors

    def _rebuild(self) -> None:
        """Build the current version while the old one serves; it takes over
        when it reaches the head (--rebuild-on-start)."""
        from sessions.projection.rebuild import rebuild

        log.info("rebuild: building the read model's current version (--rebuild-on-start)")
        try:
            result = rebuild(self.app)
        except Exception:
            log.exception("rebuild: failed; the previous version keeps serving")
            return
        log.info("rebuild: %s is live (%d events folded)", result.table, result.events)

    def _log_security(self) -> None:
        log.info(
            "limits: messages up to %d bytes, %s calls at once, %d per connection",
            self.max_message_bytes,
            self.max_concurrent_rpcs or "unbounded",
            self.max_streams_per_connection,
        )
        if self.access is not None:
            log.info(
                "access control: credentials from %s: %s",
                self.auth_file,
                self.access.credentials.describe(),
            )
            for address in (self.listen, self.http_listen):
                if address and self.tls is None and not is_loopback(address):
                    log.warning(
                        "bearer tokens travel in clear text to %s: use --tls-cert/--tls-key "
                        "unless TLS is terminated in front of this server", address
                    )
        elif is_loopback(self.listen):
            log.warning(
                "no credentials configured (--auth-file): the server is OPEN, every caller "
                "is accepted; serving on loopback only"
            )
        else:
            log.warning(
                "no credentials configured and --insecure-no-auth: the server is OPEN to "
                "every caller that reaches %s", self.listen
            )

    def _wake_projector(self, sweep: object) -> None:
        if self.projector is not None and getattr(sweep, "position", None):
            self.projector.wake()

    def _serve_when_caught_up(self, head: int) -> None:
        assert self.projector is not None
        while not self._stopped.is_set():
            if self.projector.wait_for(head, timeout=1.0):
                log.info("projector: caught up at %d; SERVING", self.projector.position)
                self._caught_up = True
                self._update_health()
                return

    def _update_health(self) -> None:
        """Readiness: SERVING once the projector caught up with the log as it
        was at start, while the store can be reached and until stopping."""
        ready = self._caught_up and not self.app.store_health.down and not self._stopped.is_set()
        self._set_health(
            health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        )

    def _set_health(self, status: int) -> None:
        for service in ("", SESSION_SERVICE, OPERATION_SERVICE, AUDIT_SERVICE):
            self.health.set(service, status)

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting calls, let in-flight ones finish, then stop the
        projector and close the store."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.health.set(LIVENESS, health_pb2.HealthCheckResponse.NOT_SERVING)
        # (said after health says it: a line an operator or a test can wait for)
        log.info("shutting down: finishing in-flight calls (up to %gs)", grace)
        # Both faces stop accepting at once, and share one grace period.
        grpc_stopped = self.server.stop(grace)
        if self.http is not None:
            self.http.stop(grace)
        grpc_stopped.wait()
        if self.read_pool is not None:
            self.read_pool.shutdown(wait=False)
        if self.deadlines is not None:
            self.deadlines.stop()
        self.read_model.stop()
        if self.metrics is not None:
            self.metrics.close()
        self.app.close()
        log.info("stopped")
