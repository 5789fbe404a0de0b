"""The bundled HTTP server: ``/metrics`` for Prometheus, ``/healthz``, and a landing page.

One server per process, started by the first :func:`boto_prom.enable_metrics` call that asks for
one; later calls reuse it. It runs on daemon threads and never takes the program down: a port
that cannot be bound fails at enable time, with one sentence.
"""

from __future__ import annotations

import errno
import io
import logging
import socket
import ssl
import threading
import time
from socketserver import ThreadingMixIn
from typing import Callable, Hashable, Iterable, List, Optional
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from ._errors import ConfigurationError
from ._version import __version__

DEFAULT_PORT = 9875
"""Outside Prometheus (9090), Pushgateway (9091), Alertmanager (9093), Grafana (3000),
node_exporter (9100) and common application ports (8000, 8080, 5000)."""

DEFAULT_ADDR = "127.0.0.1"
"""Loopback by default: metrics reveal what a program does with AWS. Bind ``0.0.0.0`` (or
``::``) on purpose, for a Prometheus on another host."""

_LANDING = """<!doctype html>
<html><head><title>boto-prom</title></head>
<body><h1>boto-prom {version}</h1>
<p>Prometheus metrics of the AWS calls this process makes.</p>
<ul><li><a href="metrics">/metrics</a></li><li><a href="healthz">/healthz</a></li></ul>
</body></html>
"""

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


def make_app(registry: CollectorRegistry) -> WSGIApp:
    """The WSGI app behind the server, for mounting in a web framework of your own.

    Args:
        registry: the registry ``/metrics`` exposes.
    """
    metrics_app = make_wsgi_app(registry)
    landing = _LANDING.format(version=__version__).encode()

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok\n"]
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [landing]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics\n"]

    return app


_log = logging.getLogger("boto_prom")


class _DeadlineReader(io.RawIOBase):
    """A connection's reads under one deadline and a byte budget, so a client that trickles a
    byte at a time, or sends megabytes of headers, cannot hold a thread or memory for long."""

    def __init__(self, sock: socket.socket, seconds: float, budget: int) -> None:
        self._sock = sock
        self._deadline = time.monotonic() + seconds
        self._budget = budget

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("request deadline passed")
        if self._budget <= 0:
            raise ConnectionAbortedError("request too large")
        # The socket timeout shrinks with each read; the response's writes get what is left.
        self._sock.settimeout(left)
        with memoryview(buffer) as view:
            n = self._sock.recv_into(view[: self._budget])
        self._budget -= n
        return n


class _LogStream(io.StringIO):
    """wsgiref's error stream: an app's traceback (the client still gets a 500) goes to the
    boto_prom logger at debug, since any client could otherwise fill the program's stderr."""

    def flush(self) -> None:
        text = self.getvalue()
        if text:
            _log.debug("boto-prom: a metrics request failed:\n%s", text.rstrip())
            self.seek(0)
            self.truncate()


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: a scrape every few seconds is not news."""

    # Seconds for the whole request (TLS handshake, request line and headers), not per read.
    # Prometheus's default scrape timeout is 10 s too.
    timeout = 10
    # Bytes a request may send: a scrape's headers are well under 1 KiB, and we take no body.
    max_request_bytes = 64 * 1024

    def setup(self) -> None:
        super().setup()
        # Close the stock reader first: an open makefile() would keep the socket from closing.
        self.rfile.close()
        self.rfile = io.BufferedReader(
            _DeadlineReader(self.connection, self.timeout, self.max_request_bytes))

    def get_stderr(self) -> io.StringIO:
        return _LogStream()

    def log_message(self, format: str, *args: object) -> None:
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    # Connections served at once; more are closed on accept. Prometheus needs one, and the cap
    # keeps a flood of idle clients from taking every thread and file descriptor.
    max_connections = 16
    # wsgiref's listen backlog of 5 drops the SYNs of a burst of connections (the client retries
    # a second later); room for a full set of connections keeps a scrape from waiting on that.
    request_queue_size = 32

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self._accept_failed = False
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def get_request(self) -> tuple:
        try:
            return super().get_request()
        except OSError as exc:
            # Out of file descriptors (EMFILE), accept fails at once while the listening socket
            # stays readable: without a pause the loop spins at 100% CPU.
            level = logging.DEBUG if self._accept_failed else logging.WARNING
            self._accept_failed = True
            _log.log(level, "boto-prom: the metrics server cannot accept a connection (%s); "
                     "retrying every 0.1 s", exc)
            time.sleep(0.1)
            raise

    def process_request(self, request: socket.socket, client_address: object) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # no thread started (the caller closes the connection)
            raise

    def process_request_thread(self, request: socket.socket, client_address: object) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that hangs up, times out, fails the TLS handshake (plain HTTP to the TLS
        # port, no client certificate) or sends garbage is routine: no traceback on stderr.
        _log.debug("boto-prom: metrics client %s", client_address, exc_info=True)


def _server_class(addr: str) -> type:
    try:
        infos = socket.getaddrinfo(addr, None, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror:
        raise ConfigurationError(
            f"addr {addr!r} is not an address or host name this machine can bind; "
            "pass addr= (or set BOTO_PROM_ADDR) to an address such as 127.0.0.1 or 0.0.0.0."
        ) from None
    family = infos[0][0]

    class Server(_ThreadingServer):
        address_family = family

    return Server


class MetricsServer:
    """A running metrics server: where it listens and how to stop it.

    Attributes:
        addr: the address it is bound to.
        port: the port it listens on (the chosen one, when 0 was asked for).
        registry: the registry it serves.
        ssl_context: the server-side TLS context when it serves HTTPS, else None.
    """

    def __init__(self, addr: str, port: int, registry: CollectorRegistry,
                 app: Optional[WSGIApp] = None,
                 ssl_context: Optional[ssl.SSLContext] = None) -> None:
        self.registry = registry
        self.ssl_context = ssl_context
        try:
            self._httpd = make_server(addr, port, app or make_app(registry),
                                      _server_class(addr), handler_class=_QuietHandler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigurationError(
                    f"port {port} on {addr} is already in use; pass port= (or set "
                    "BOTO_PROM_PORT) to a free port, or port=0 to let the system pick one."
                ) from None
            raise ConfigurationError(
                f"cannot listen on {addr} port {port} ({exc.strerror or exc}); pass addr= and "
                "port= (or BOTO_PROM_ADDR and BOTO_PROM_PORT) that this machine can bind."
            ) from None
        if ssl_context is not None:
            # The handshake runs on the first read, in the request's own thread, so a client
            # that never finishes it cannot stall the accept loop.
            self._httpd.socket = ssl_context.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False)
        self.addr = addr
        self.port: int = self._httpd.server_port
        self.variant: Hashable = None
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        name="boto-prom-server", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The ``/metrics`` URL, for humans and tests."""
        host = "127.0.0.1" if self.addr in ("", "0.0.0.0") else self.addr
        if ":" in host:
            host = f"[{host}]"
        scheme = "http" if self.ssl_context is None else "https"
        return f"{scheme}://{host}:{self.port}/metrics"

    def shutdown(self) -> None:
        """Stop serving and free the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


_server: Optional[MetricsServer] = None
_server_lock = threading.Lock()


def ensure_server(addr: Optional[str], port: Optional[int], registry: CollectorRegistry, *,
                  app: Optional[WSGIApp] = None, ssl_context: Optional[ssl.SSLContext] = None,
                  variant: Hashable = None) -> MetricsServer:
    """The process's metrics server, started on the first call and reused after.

    Args:
        addr: the address to bind; None means the running server's, or DEFAULT_ADDR for the
            first.
        port: the port to listen on; None means the running server's, or DEFAULT_PORT for
            the first; 0 lets the system pick a free one (and reuses a running server).
        app: what to serve instead of ``make_app(registry)`` (the multiprocess view, an app
            behind basic auth).
        ssl_context: serve HTTPS with it.
        variant: a hashable name for app and ssl_context (the web config file, the
            multiprocess directory); a later call asking for another one is an error.

    Raises:
        ConfigurationError: the port cannot be bound, or a server already runs on another
            address or port, for another registry or with another variant.
    """
    global _server
    with _server_lock:
        if _server is None:
            _server = MetricsServer(DEFAULT_ADDR if addr is None else addr,
                                    DEFAULT_PORT if port is None else port, registry, app,
                                    ssl_context)
            _server.variant = variant
            return _server
        if addr is not None and addr != _server.addr:
            raise ConfigurationError(
                f"boto-prom's metrics server already listens on {_server.addr}; a process has "
                f"one server, so addr={addr!r} cannot be served too (pass addr="
                f"{_server.addr!r}, or no addr and no BOTO_PROM_ADDR, to reuse it)."
            )
        if port not in (None, 0, _server.port):
            raise ConfigurationError(
                f"boto-prom's metrics server already runs on port {_server.port}; a process "
                f"has one server, so port={port} cannot be served too (pass port="
                f"{_server.port}, or no port and no BOTO_PROM_PORT, to reuse it)."
            )
        if registry is not _server.registry:
            raise ConfigurationError(
                "boto-prom's metrics server already serves another registry; pass the same "
                "registry=, or start_server=False and serve this one yourself."
            )
        if variant != _server.variant:
            raise ConfigurationError(
                "boto-prom's metrics server already runs with other settings (web config or "
                "multiprocess directory); a process has one server, so pass the same ones."
            )
        return _server


def get_server() -> Optional[MetricsServer]:
    """The running metrics server, or None when none was started."""
    return _server


def stop_server() -> None:
    """Stop the process's metrics server, if one runs (tests and clean shutdowns)."""
    global _server
    with _server_lock:
        server, _server = _server, None
    if server is not None:
        server.shutdown()


__all__: List[str] = ["DEFAULT_ADDR", "DEFAULT_PORT", "MetricsServer", "get_server",
                      "make_app", "stop_server"]
