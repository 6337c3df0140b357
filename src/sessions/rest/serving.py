"""The HTTP server of the REST face: cheroot, a threaded WSGI server.

Why cheroot: the calls are blocking (the store, the read model), so a
server that runs the application on a pool of threads serves them as they
are, with no event loop to hand them over from; cheroot parses HTTP/1.1
with keep-alive, parks idle connections in a selector rather than on a
thread, is pure Python with no build step, and is well kept (it is
CherryPy's server). bench/suite.py (``--only rest``) measures GetSession
over it against the same call over gRPC.
"""

from __future__ import annotations

import logging
import ssl
import threading
from typing import Any

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from sessions.transport import SecurityConfigError, ServerTLS, listen_host

log = logging.getLogger("sessions.rest")

# The environ key of a callable that makes the server close the connection
# after this answer: for a request whose body was refused unread (over the
# limit), whose unread bytes must never be taken for the next request.
CLOSE_CONNECTION = "sessions.close_connection"


KEEP_ALIVE_CONNECTIONS = 1024
# The request line and headers together, at most (cheroot's default is no
# limit: a client could make the server hold any amount before it is even
# authenticated). gRPC's own metadata limit is 8 KiB; REST requests carry a
# token and a key, far below this.
MAX_HEADER_BYTES = 64 * 1024


class _Gateway(wsgi.Gateway_10):
    def get_environ(self) -> Any:  # (cheroot's stubs say None)
        environ: dict[str, Any] = super().get_environ()
        request = self.req
        environ[CLOSE_CONNECTION] = lambda: setattr(request, "close_connection", True)
        return environ


class HttpServer:
    def __init__(self, listen: str, app: Any, *, threads: int = 16, tls: ServerTLS | None = None):
        host = listen_host(listen)
        port_text = listen.rpartition(":")[2]
        if not port_text.isdigit() or int(port_text) > 65535:
            raise SecurityConfigError(f"listen address {listen!r} is not HOST:PORT")
        port = int(port_text)
        self.listen = listen
        self.tls = tls
        self._server = wsgi.Server((host, port), app, numthreads=threads, server_name="sessions", timeout=30)
        self._server.gateway = _Gateway
        # Idle keep-alive connections wait in a selector, not on a thread;
        # cheroot keeps at most 10 by default and closes the others after
        # each answer, so that clients with more connections reconnect per call.
        self._server.keep_alive_conn_limit = KEEP_ALIVE_CONNECTIONS
        self._server.max_request_header_size = MAX_HEADER_BYTES
        if tls is not None:
            adapter = BuiltinSSLAdapter(tls.cert, tls.key)
            if tls.client_ca:
                adapter.context.load_verify_locations(tls.client_ca)
                adapter.context.verify_mode = ssl.CERT_REQUIRED
            self._server.ssl_adapter = adapter
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> int:
        """Bind and serve in a thread; return the bound port."""
        try:
            self._server.prepare()
        except OSError as e:
            raise OSError(f"cannot listen on {self.listen} (REST): {e}") from e
        self.port = int(self._server.bind_addr[1])
        self._thread = threading.Thread(target=self._server.serve, name="http", daemon=True)
        self._thread.start()
        scheme = "https" if self.tls is not None else "http"
        log.info("listening on %s:%d (REST, %s)", listen_host(self.listen), self.port, scheme)
        return self.port

    def stop(self, grace: float = 5.0) -> None:
        """Stop accepting; calls in progress have up to ``grace`` seconds to
        finish (cheroot's shutdown timeout)."""
        self._server.shutdown_timeout = grace
        self._server.stop()
        if self._thread is not None:
            self._thread.join(timeout=grace + 5)


__all__ = ["HttpServer"]
