"""What boto-prom serves and how: the WSGI apps, and the one metrics server of a process.

:func:`make_app` answers ``/metrics`` (prometheus_client's exposition), ``/healthz`` and a
landing page; :func:`make_multiprocess_app` serves the same from a multiprocess directory. The
server (:class:`MetricsServer`) is prometheus_client's threading WSGI server plus what a
long-lived exporter needs and it lacks: a cap on connections, one deadline and a byte budget
per request, the TLS handshake in the request's thread (not the accept loop), a pause when
``accept`` fails, no tracebacks on stderr, and one-sentence errors for a busy port or an
address this machine cannot bind. :func:`serve` starts it once per process; later callers
reuse it or are told in one sentence why they cannot.

Multiprocess mode: many processes (gunicorn or celery workers) record, one serves.
prometheus_client switches to it when ``PROMETHEUS_MULTIPROC_DIR`` names a directory *before
prometheus_client is imported*: every metric then writes its values to memory-mapped files in
that directory, one set per process, and a scrape reads and sums them all. A gunicorn set-up
(``gunicorn.conf.py``)::

    from prometheus_client import multiprocess
    import boto_prom

    def when_ready(server):          # in the master: one server for all workers
        boto_prom.start_multiprocess_server(port=9875)

    def child_exit(server, worker):  # drop a dead worker's live gauges
        multiprocess.mark_process_dead(worker.pid)

and in the application, ``boto_prom.enable_metrics(conn, start_server=False)``.
"""

from __future__ import annotations

import errno
import io
import logging
import socket
import ssl
import threading
import time
from typing import Callable, Iterable, List, Optional

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler
from prometheus_client.multiprocess import MultiProcessCollector

from ._version import __version__
from .settings import (MULTIPROC_ENV, ConfigurationError, ServerSettings,
                       multiprocess_dir_from_env, resolve_server)
from .webconfig import WSGIApp, load_web_config

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

_log = logging.getLogger("boto_prom")


# --- the apps ---------------------------------------------------------------------------------

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


def multiprocess_registry(path: Optional[str] = None) -> CollectorRegistry:
    """A fresh registry holding every process's metrics, read from the directory.

    Args:
        path: the multiprocess directory (default: ``PROMETHEUS_MULTIPROC_DIR``).
    """
    path = path or multiprocess_dir_from_env()
    if not path:
        raise ConfigurationError(
            f"reading every process's metrics needs the directory the workers record into; "
            f"set {MULTIPROC_ENV} (or pass path=).")
    registry = CollectorRegistry()
    try:
        MultiProcessCollector(registry, path=path)
    except ValueError:
        raise ConfigurationError(
            f"the multiprocess directory {path!r} is not a directory; pass path= or set "
            f"{MULTIPROC_ENV} to the directory the workers record into.") from None
    return registry


def make_multiprocess_app(path: Optional[str] = None) -> WSGIApp:
    """The WSGI app serving every process's metrics, for mounting in a master or sidecar.

    Each request reads the directory afresh into a registry of its own (so the serving
    process's own metrics are never counted twice); ``/``, ``/metrics`` and ``/healthz`` as
    in :func:`make_app`.

    Args:
        path: the multiprocess directory (default: ``PROMETHEUS_MULTIPROC_DIR``), checked now.

    Example:
        >>> app = boto_prom.make_multiprocess_app()  # doctest: +SKIP
    """
    multiprocess_registry(path)  # fail now, not on the first scrape

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        return make_app(multiprocess_registry(path))(environ, start_response)

    return app


# --- the server -------------------------------------------------------------------------------

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
        # On a TLS connection the first read also runs the handshake, under the same deadline.
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


class _Handler(_SilentHandler):
    """prometheus_client's handler (no access log: a scrape every few seconds is not news),
    reading under the server's deadline and byte budget."""

    server: "MetricsServer"

    def setup(self) -> None:
        self.timeout = self.server.request_timeout
        super().setup()
        # Close the stock reader first: an open makefile() would keep the socket from closing.
        self.rfile.close()
        self.rfile = io.BufferedReader(_DeadlineReader(
            self.connection, self.server.request_timeout, self.server.max_request_bytes))

    def get_stderr(self) -> io.StringIO:
        return _LogStream()


class MetricsServer(ThreadingWSGIServer):
    """A running metrics server: listening from construction, on a daemon thread.

    Build one with :func:`serve` (the process's one server) unless you want another.

    Args:
        addr: the address to bind (an IP address or a host name).
        port: the port; 0 lets the system pick a free one.
        registry: the registry it serves (and that :func:`serve` compares on reuse).
        app: what to serve instead of ``make_app(registry)``.
        ssl_context: serve HTTPS with this server-side context.

    Attributes:
        addr: the address it is bound to.
        port: the port it listens on (the chosen one, when 0 was asked for).
        registry: the registry it serves.
        ssl_context: the server-side TLS context when it serves HTTPS, else None.
        max_connections: connections served at once; more are closed on accept. Prometheus
            needs one, and the cap keeps a flood of idle clients from taking every thread and
            file descriptor. Set it on the class before a server starts.
        request_timeout: seconds for a whole request (TLS handshake, request line and
            headers), not per read; Prometheus's default scrape timeout is 10 s too.
        max_request_bytes: bytes a request may send: a scrape's headers are well under 1 KiB,
            and no body is read.

    Raises:
        ConfigurationError: the port is in use, or the address cannot be bound.
    """

    max_connections = 16
    request_timeout = 10.0
    max_request_bytes = 64 * 1024
    allow_reuse_address = True
    # wsgiref's listen backlog of 5 drops the SYNs of a burst of connections (the client retries
    # a second later); room for a full set of connections keeps a scrape from waiting on that.
    request_queue_size = 32

    def __init__(self, addr: str, port: int, registry: CollectorRegistry,
                 app: Optional[WSGIApp] = None,
                 ssl_context: Optional[ssl.SSLContext] = None) -> None:
        self.addr = addr
        self.registry = registry
        self.ssl_context = ssl_context
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self._accept_failed = False
        try:
            infos = socket.getaddrinfo(addr, None, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
        except socket.gaierror:
            raise ConfigurationError(
                f"addr {addr!r} is not an address or host name this machine can bind; pass "
                "addr= (or set BOTO_PROM_ADDR) to an address such as 127.0.0.1 or 0.0.0.0."
            ) from None
        self.address_family = infos[0][0]
        try:
            super().__init__((addr, port), _Handler)
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
        self.set_app(app or make_app(registry))
        if ssl_context is not None:
            # The handshake runs on the first read, in the request's own thread, so a client
            # that never finishes it cannot stall the accept loop.
            self.socket = ssl_context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False)
        self.port: int = self.server_port
        self._thread = threading.Thread(target=self.serve_forever, name="boto-prom-server",
                                        daemon=True)
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
        super().shutdown()
        self.server_close()
        self._thread.join(timeout=5)

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


# --- the process's one server -----------------------------------------------------------------

_server: Optional[MetricsServer] = None
_started_with = ServerSettings()  # what _server was started for
_lock = threading.Lock()


def serve(server: ServerSettings, registry: CollectorRegistry) -> MetricsServer:
    """The process's metrics server for these settings: started now, or the running one.

    A process has one server. ``server.addr`` and ``server.port`` left None take the running
    server's, else DEFAULT_ADDR and DEFAULT_PORT; port 0 picks a free port, or reuses the
    running server. With ``server.multiprocess_dir`` it serves that directory, with
    ``server.web_config`` it serves behind that file's TLS and basic auth.

    Args:
        server: where and what to serve (:func:`boto_prom.settings.resolve_server`).
        registry: the registry to serve (unless a multiprocess directory is served).

    Raises:
        ConfigurationError: the port cannot be bound, a bad web config, or a server already
            runs on another address or port, for another registry or with another web config
            or multiprocess directory.
    """
    global _server, _started_with
    with _lock:
        if _server is not None:
            _check_reuse(_server, _started_with, server, registry)
            return _server
        if server.multiprocess_dir is not None:
            app = make_multiprocess_app(server.multiprocess_dir)
        else:
            app = make_app(registry)
        ssl_context = None
        if server.web_config is not None:
            config = load_web_config(server.web_config)
            app, ssl_context = config.wrap(app), config.ssl_context
        try:
            _server = MetricsServer(DEFAULT_ADDR if server.addr is None else server.addr,
                                    DEFAULT_PORT if server.port is None else server.port,
                                    registry, app, ssl_context)
        except ConfigurationError as exc:
            if server.multiprocess_dir is None:
                raise
            raise ConfigurationError(
                f"{str(exc).rstrip('.')}; in multiprocess mode one process serves every "
                "process's metrics, so start it once (boto_prom.start_multiprocess_server() in "
                "gunicorn's when_ready) and pass start_server=False to enable_metrics in "
                "workers.") from None
        _started_with = server
        return _server


def _check_reuse(running: MetricsServer, started_with: ServerSettings,
                 server: ServerSettings, registry: CollectorRegistry) -> None:
    if server.addr is not None and server.addr != running.addr:
        raise ConfigurationError(
            f"boto-prom's metrics server already listens on {running.addr}; a process has "
            f"one server, so addr={server.addr!r} cannot be served too (pass addr="
            f"{running.addr!r}, or no addr and no BOTO_PROM_ADDR, to reuse it).")
    if server.port not in (None, 0, running.port):
        raise ConfigurationError(
            f"boto-prom's metrics server already runs on port {running.port}; a process has "
            f"one server, so port={server.port} cannot be served too (pass port="
            f"{running.port}, or no port and no BOTO_PROM_PORT, to reuse it).")
    if registry is not running.registry:
        raise ConfigurationError(
            "boto-prom's metrics server already serves another registry; pass the same "
            "registry=, or start_server=False and serve this one yourself.")
    if (server.web_config, server.multiprocess_dir) != (started_with.web_config,
                                                         started_with.multiprocess_dir):
        raise ConfigurationError(
            "boto-prom's metrics server already runs with other settings (web config or "
            "multiprocess directory); a process has one server, so pass the same ones.")


def get_server() -> Optional[MetricsServer]:
    """The running metrics server, or None when none was started."""
    return _server


def stop_server() -> None:
    """Stop the process's metrics server, if one runs (tests and clean shutdowns)."""
    global _server, _started_with
    with _lock:
        running, _server, _started_with = _server, None, ServerSettings()
    if running is not None:
        running.shutdown()


def start_multiprocess_server(
    port: Optional[int] = None,
    addr: Optional[str] = None,
    *,
    path: Optional[str] = None,
    web_config: Optional[str] = None,
) -> MetricsServer:
    """Serve every process's metrics from this process (gunicorn's master, a sidecar).

    Args:
        port: as for :func:`boto_prom.enable_metrics` (``BOTO_PROM_PORT`` or 9875).
        addr: as for :func:`boto_prom.enable_metrics` (``BOTO_PROM_ADDR`` or 127.0.0.1).
        path: the multiprocess directory (default: ``PROMETHEUS_MULTIPROC_DIR``).
        web_config: a web configuration file for TLS and basic auth (default:
            ``BOTO_PROM_WEB_CONFIG``), as for :func:`boto_prom.enable_metrics`.

    Returns:
        The running :class:`MetricsServer`.

    Raises:
        ConfigurationError: no directory, a bad setting, or as :func:`serve`.
    """
    return serve(resolve_server(port, addr, web_config=web_config, multiprocess_dir=path),
                 REGISTRY)


__all__: List[str] = [
    "DEFAULT_ADDR", "DEFAULT_PORT", "MetricsServer", "get_server", "make_app",
    "make_multiprocess_app", "multiprocess_registry", "serve", "start_multiprocess_server",
    "stop_server",
]
