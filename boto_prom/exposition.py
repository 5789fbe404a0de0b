"""What boto-prom serves and how: the WSGI apps, and the one metrics server of a process.

:func:`make_app` answers ``/metrics`` (prometheus_client's exposition), ``/healthz`` and a
landing page, to GET and HEAD (any other method gets a 405); :func:`make_multiprocess_app`
serves the same from a multiprocess directory. The server (:class:`MetricsServer`) is one
asyncio event loop on a daemon thread, with h11 for HTTP/1.1: every connection waits at the
cost of a few kilobytes under deadlines of its own (TLS handshake, headers, body, keep-alive),
so no client, idle, slow or flooding wrong passwords, can keep a scrape from being answered.
It serves TLS and basic auth from a web config (:mod:`boto_prom.webconfig`), never prints a
traceback, and fails with one sentence for a busy port or an address this machine cannot bind.
:func:`serve` starts it once per process; later callers reuse it or are told in one sentence
why they cannot.

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

import asyncio
import collections
import concurrent.futures
import errno
import gc
import io
import logging
import queue
import socket
import ssl
import sys
import threading
import urllib.parse
from asyncio import selector_events, sslproto
from typing import Any, Callable, Deque, Dict, Iterable, List, NamedTuple, Optional, Set, Tuple

import h11
from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app
from prometheus_client.multiprocess import MultiProcessCollector

from ._version import __version__
from .settings import (MULTIPROC_ENV, ConfigurationError, ServerSettings,
                       multiprocess_dir_from_env, resolve_server)
from .webconfig import UNAUTHORIZED, WebConfig, WSGIApp, load_web_config

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

    def get(environ: dict, start_response: Callable) -> Iterable[bytes]:
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

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method == "GET":
            return get(environ, start_response)
        if method == "HEAD":  # the GET's status and headers (its length too), no body
            answer = _call_app(get, dict(environ, REQUEST_METHOD="GET"))
            headers = answer.headers
            if not any(name.lower() == "content-length" for name, _ in headers):
                headers = headers + [("Content-Length", str(len(answer.body)))]
            start_response(answer.status, headers)
            return []
        start_response("405 Method Not Allowed", [
            ("Content-Type", "text/plain; charset=utf-8"), ("Allow", "GET, HEAD")])
        return [b"method not allowed: use GET or HEAD\n"]

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
        raise ConfigurationError.about(
            "path", lambda called: f"the multiprocess directory {path!r} is not a directory; "
            f"pass {called} or set {MULTIPROC_ENV} to the directory the workers record into."
        ) from None
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

class _DaemonPool:
    """A few daemon threads taking jobs from a queue: concurrent.futures' pool without its
    exit-time join, so a scrape or a bcrypt check in flight never holds the program at exit."""

    def __init__(self, name: str, threads: int) -> None:
        self._jobs: "queue.SimpleQueue[Optional[tuple]]" = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=name, daemon=True)
                         for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, fn, args = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:  # handed to the waiting connection
                    future.set_exception(exc)

    def submit(self, fn: Callable, *args: Any) -> "concurrent.futures.Future":
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((future, fn, args))
        return future

    def shutdown(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)


def _malloc_trim() -> Callable[[], Any]:
    """glibc's ``malloc_trim(0)``, or nothing where there is no glibc."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            trim = ctypes.CDLL(None).malloc_trim  # musl and others: no such function
        except (OSError, AttributeError):
            pass
        else:
            trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
            return lambda: trim(0)
    return lambda: None


_malloc_trim_or_nothing = _malloc_trim()


def _give_back_memory() -> None:
    """Give the memory a crowd of connections held back to the system, once it has gone.

    Connections that end in an error (a client gone mid-answer, a reset) leave reference
    cycles through asyncio's streams and the exceptions' tracebacks, each holding its
    connection (and its OpenSSL state) until a full garbage collection; and glibc keeps what
    a thread's heap grew to, free but not given back, unless asked. Measured after a thousand
    TLS clients left: tens of megabytes in both. Called only when most of a crowd has gone,
    never per request.
    """
    gc.collect()
    _malloc_trim_or_nothing()


class _Answer(NamedTuple):
    status: str
    headers: List[Tuple[str, str]]
    body: bytes


def _text(status: str, body: str, *headers: Tuple[str, str]) -> _Answer:
    return _Answer(status, [("Content-Type", "text/plain; charset=utf-8"), *headers],
                   body.encode())


def _call_app(app: WSGIApp, environ: dict) -> _Answer:
    """One WSGI call, collected whole (a scrape is one body, built at once anyway)."""
    started: list = []
    body: List[bytes] = []

    def start_response(status: str, headers: List[Tuple[str, str]],
                       exc_info: Any = None) -> Callable:
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status, list(headers)]
        return body.append

    try:
        result = app(environ, start_response)
        try:
            body.extend(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return _Answer(started[0], started[1], b"".join(body))
    except Exception:
        # A client's bad Accept header or a collector's bug: the client gets a 500; the
        # traceback goes to the boto_prom logger at debug, since any client could otherwise
        # fill the program's stderr.
        _log.debug("boto-prom: a metrics request failed", exc_info=True)
        return _text("500 Internal Server Error", "internal server error\n")


_TLS_READ_BYTES = 4096


class _SSLProtocol(sslproto.SSLProtocol):  # type: ignore[misc,valid-type]
    max_size = _TLS_READ_BYTES


class _Loop(asyncio.SelectorEventLoop):  # type: ignore[misc,valid-type]
    """asyncio's loop, with a small read buffer per TLS connection.

    asyncio gives each TLS connection a 256 KiB read buffer (3.11 and later allocate it up
    front, older versions on every read): 250 MB for 1,000 idle clients. Ours reads 4 KiB at
    a time: a scrape's request is a few hundred bytes, and anything longer simply takes more
    reads. This is asyncio's own method (the same since 3.8, less 3.12's check that a socket
    has no transport yet: ours are freshly accepted) with our protocol class in it, since
    ``max_size`` is a class attribute there.
    """

    def _make_ssl_transport(self, rawsock: socket.socket, protocol: asyncio.Protocol,
                            sslcontext: ssl.SSLContext, waiter: Any = None, *,
                            server_side: bool = False, server_hostname: Optional[str] = None,
                            extra: Optional[dict] = None, server: Any = None,
                            **timeouts: Any) -> asyncio.Transport:
        ssl_protocol = _SSLProtocol(self, protocol, sslcontext, waiter, server_side,
                                    server_hostname, **timeouts)
        selector_events._SelectorSocketTransport(  # type: ignore[attr-defined]
            self, rawsock, ssl_protocol, extra=extra, server=server)
        return ssl_protocol._app_transport


class MetricsServer:
    """A running metrics server: listening from construction, on daemon threads.

    One asyncio event loop holds every connection, each under deadlines of its own, and h11
    speaks HTTP/1.1 for it; an idle or trickling client costs kilobytes (tens of them over TLS,
    most of it OpenSSL's) and nobody else's time. The WSGI app runs in a small pool of threads, bcrypt in a smaller one, so neither a
    slow collector nor a storm of wrong passwords blocks the loop. Build one with
    :func:`serve` (the process's one server) unless you want another.

    Args:
        addr: the address to bind (an IP address or a host name).
        port: the port; 0 lets the system pick a free one.
        registry: the registry it serves (and that :func:`serve` compares on reuse).
        app: what to serve instead of ``make_app(registry)``.
        ssl_context: serve HTTPS with this server-side context (default: the web config's).
        web_config: answer only its ``basic_auth_users``, with its headers, over its TLS.

    Attributes:
        addr: the address it is bound to.
        port: the port it listens on (the chosen one, when 0 was asked for).
        registry: the registry it serves.
        ssl_context: the server-side TLS context when it serves HTTPS, else None.

    The limits below are class attributes: set them on the class (or a subclass) before a
    server starts. Seconds are per connection, and a client past one is closed without an
    answer.

    Attributes:
        handshake_timeout: seconds for the TLS handshake, from the connection.
        header_timeout: seconds for a request line and headers, from the connection (the
            first request) or from the request's first byte (the next ones).
        body_timeout: seconds for a request body, after its headers (scrapes send none).
        idle_timeout: seconds a kept-alive connection may wait for its next request; longer
            than a one-minute scrape interval, so Prometheus keeps its connection.
        write_timeout: seconds for the client to take an answer.
        max_request_bytes: bytes of headers, and bytes of body, a request may send.
        max_connections: connections held at once; past it, the one that has waited longest
            for its request is closed to make room (never one being answered).
        max_auth_waiting: requests waiting for a bcrypt check; more get a 503 at once.
        max_handshakes: TLS handshakes under way at once (each holds tens of kilobytes of
            OpenSSL's until it ends); later connections wait their turn, newest first, and
            are closed at their handshake deadline all the same.
        handshake_turn: seconds a handshake keeps its place while others wait for one;
            past it the oldest is closed to make room, so clients that connect and never
            finish cannot hold the places and keep a scraper waiting.

    Raises:
        ConfigurationError: the port is in use, or the address cannot be bound.
    """

    handshake_timeout = 10.0
    header_timeout = 10.0
    body_timeout = 10.0
    idle_timeout = 75.0
    write_timeout = 10.0
    max_request_bytes = 64 * 1024
    max_connections = 10_000
    max_auth_waiting = 64
    max_handshakes = 256
    handshake_turn = 1.0
    app_threads = 2
    auth_threads = 1  # bcrypt is CPU-heavy by design: one check at a time, as Go does
    # Room for a burst of connections: a SYN dropped by a full backlog costs a client a second.
    backlog = 1024

    def __init__(self, addr: str, port: int, registry: CollectorRegistry,
                 app: Optional[WSGIApp] = None,
                 ssl_context: Optional[ssl.SSLContext] = None,
                 web_config: Optional[WebConfig] = None) -> None:
        self.addr = addr
        self.registry = registry
        self.app = app or make_app(registry)
        self.web_config = web_config
        if ssl_context is None and web_config is not None:
            ssl_context = web_config.ssl_context
        self.ssl_context = ssl_context
        self._sock = _listen(addr, port)
        self.port: int = self._sock.getsockname()[1]
        self._waiting: Dict[asyncio.StreamWriter, None] = {}  # oldest first
        self._connections: Set[asyncio.StreamWriter] = set()
        self._auth_waiting = 0
        self._accept_failed_at = 0.0
        self._pending: Deque[Tuple[socket.socket, float]] = collections.deque()  # accepted
        # Handshakes under way, oldest first, with the loop time each started.
        self._handshaking: Dict["asyncio.Task[None]", float] = {}
        self._turns: Optional[asyncio.TimerHandle] = None  # the next look at the oldest
        self._crowd = 0  # the most connections held since memory was last given back
        self._closed = False
        self._app_pool = _DaemonPool("boto-prom-app", self.app_threads)
        self._auth_pool = _DaemonPool("boto-prom-auth", self.auth_threads)
        self._loop = _Loop()
        self._loop.set_exception_handler(self._loop_error)
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,),
                                        name="boto-prom-server", daemon=True)
        self._thread.start()
        ready.wait()

    @property
    def url(self) -> str:
        """The ``/metrics`` URL, for humans and tests."""
        host = "127.0.0.1" if self.addr in ("", "0.0.0.0") else self.addr
        if ":" in host:
            host = f"[{host}]"
        scheme = "http" if self.ssl_context is None else "https"
        return f"{scheme}://{host}:{self.port}/metrics"

    def shutdown(self) -> None:
        """Stop serving, close every connection and free the port."""
        if self._closed:
            return
        self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=5)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._app_pool.shutdown()
            self._auth_pool.shutdown()
            self._sock.close()

    # -- the loop's thread

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._accepting = self._loop.create_task(self._accept())
        self._loop.call_soon(self._tidy)
        ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _accept(self) -> None:
        """Accept every connection at once, and shake hands with at most max_handshakes.

        A TLS handshake in progress holds tens of kilobytes of OpenSSL's buffers (an
        established connection a third of that): a thousand clients connecting at once would
        hold them all together. Accepted sockets wait for their turn instead, newest first,
        so a scraper that just connected is not queued behind a flood, and each is closed
        when its handshake deadline (from the connection) passes before its turn. A
        handshake that has had its turn (handshake_turn) while others wait is closed to make
        room: an honest one takes milliseconds, so the places cannot be held by clients that
        never finish.
        """
        while True:
            try:
                sock, _ = await self._loop.sock_accept(self._sock)
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: warn once, then at debug, and retry every second
                    # rather than spin.
                    level = logging.DEBUG if self._accept_failed_at else logging.WARNING
                    self._accept_failed_at = self._loop.time()
                    _log.log(level, "boto-prom: the metrics server cannot accept a "
                             "connection (%s); retrying every second", exc)
                    await asyncio.sleep(1)
                continue
            self._pending.append((sock, self._loop.time() + self.handshake_timeout))
            self._next_handshakes()

    def _turn_over(self) -> None:
        self._turns = None
        self._next_handshakes()

    def _next_handshakes(self) -> None:
        now = self._loop.time()
        while self._pending and self._pending[0][1] <= now:
            self._pending.popleft()[0].close()
        handshaking = self._handshaking
        while self._pending and len(handshaking) >= self.max_handshakes:
            oldest, started = next(iter(handshaking.items()))
            if now - started < self.handshake_turn:
                if self._turns is None:
                    self._turns = self._loop.call_at(started + self.handshake_turn,
                                                     self._turn_over)
                break
            del handshaking[oldest]
            oldest.cancel()  # _open closes its socket
        while self._pending and len(handshaking) < self.max_handshakes:
            sock, deadline = self._pending.pop()
            task = self._loop.create_task(self._open(sock, deadline - now))
            handshaking[task] = now
            task.add_done_callback(self._handshake_done)

    def _handshake_done(self, task: "asyncio.Task[None]") -> None:
        if self._handshaking.pop(task, None) is not None or self._pending:
            self._next_handshakes()

    def _held(self) -> int:
        return len(self._connections) + len(self._handshaking) + len(self._pending)

    def _tidy(self) -> None:
        """Every few seconds: once most of a crowd of connections has gone, give the memory
        it held back to the system (a crowd: a few hundred, far more than scrapers)."""
        held = self._held()
        if self._crowd >= 256 and held * 4 <= self._crowd:
            _give_back_memory()
            self._crowd = held
        self._loop.call_later(5, self._tidy)

    async def _open(self, sock: socket.socket, handshake_timeout: float) -> None:
        """sock as a stream (after its TLS handshake, when there is TLS) for _connection."""
        reader = asyncio.StreamReader(limit=self.max_request_bytes, loop=self._loop)
        protocol = asyncio.StreamReaderProtocol(reader, self._connection, loop=self._loop)
        tls = {} if self.ssl_context is None else {
            "ssl": self.ssl_context, "ssl_handshake_timeout": handshake_timeout}
        try:
            await self._loop.connect_accepted_socket(lambda: protocol, sock, **tls)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError) as exc:
            # A client that fails or abandons the TLS handshake (plain HTTP to the TLS port,
            # no client certificate) is routine: never a traceback on stderr.
            _log.debug("boto-prom: metrics server: handshake failed: %r", exc)
            # asyncio's waiter holds this exception, and its traceback the frames that hold
            # the waiter: without the frames, the failed connection (and OpenSSL's memory)
            # is freed now rather than at some later full garbage collection.
            exc.__traceback__ = None
            sock.close()
        except asyncio.CancelledError:
            sock.close()  # its turn is over (or the server stops)
            raise

    async def _stop(self) -> None:
        self._accepting.cancel()
        for sock, _ in self._pending:
            sock.close()
        self._pending.clear()
        for writer in list(self._connections):
            writer.transport.abort()
        # Finish every connection's task, so none is destroyed pending (asyncio would print).
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        # asyncio reports what it cannot hand to anyone (an SSL error on a closing
        # connection): routine for a server on the network, so never a traceback on stderr.
        _log.debug("boto-prom: metrics server: %s", context.get("message"),
                   exc_info=context.get("exception"))

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        self._crowd = max(self._crowd, self._held())
        if len(self._connections) > self.max_connections and self._waiting:
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            oldest.transport.abort()
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_request_bytes)
        try:
            deadline = self._loop.time() + self.header_timeout
            while True:
                self._waiting[writer] = None
                request = await self._request(conn, reader, deadline)
                self._waiting.pop(writer, None)
                if not isinstance(request, h11.Request):
                    return  # the client hung up between requests
                answer = await self._answer(conn, reader, request, writer)
                await self._send(conn, writer, request, answer)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
                deadline = None
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                status = exc.error_status_hint
                phrase = {431: "Request Header Fields Too Large"}.get(status, "Bad Request")
                await self._send(conn, writer, None,
                                 _text(f"{status} {phrase}", "bad request\n"), close=True)
        except (asyncio.TimeoutError, ConnectionError, OSError, h11.LocalProtocolError):
            pass  # past a deadline, hung up, or reset: nothing to say to it
        finally:
            self._waiting.pop(writer, None)
            self._connections.discard(writer)
            # close, not abort: an answer still in the buffer goes out first (HTTP/1.0
            # clients, a 413), under the write deadline.
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), self.write_timeout)
            except (asyncio.TimeoutError, OSError):
                writer.transport.abort()

    async def _read(self, conn: h11.Connection, reader: asyncio.StreamReader,
                    deadline: float) -> Any:
        """conn's next event, reading until it comes or the deadline passes."""
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            left = deadline - self._loop.time()
            if left <= 0:
                raise asyncio.TimeoutError
            conn.receive_data(await asyncio.wait_for(reader.read(8192), left))

    async def _request(self, conn: h11.Connection, reader: asyncio.StreamReader,
                       deadline: Optional[float]) -> Any:
        """The next request's head; deadline None: a kept-alive connection, idle until then."""
        if deadline is None:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event  # pipelined: already here
            conn.receive_data(await asyncio.wait_for(reader.read(8192), self.idle_timeout))
            deadline = self._loop.time() + self.header_timeout
        return await self._read(conn, reader, deadline)

    async def _answer(self, conn: h11.Connection, reader: asyncio.StreamReader,
                      request: h11.Request, writer: asyncio.StreamWriter) -> _Answer:
        headers = {name.decode("latin-1"): value.decode("latin-1")
                   for name, value in request.headers}  # h11 lowercases names
        declared = headers.get("content-length")
        if declared is not None and int(declared) > self.max_request_bytes:
            return _text("413 Content Too Large", "request too large\n")
        body = b""
        deadline = self._loop.time() + self.body_timeout
        while True:
            event = await self._read(conn, reader, deadline)
            if isinstance(event, h11.EndOfMessage):
                break
            if isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError
            body += event.data
            if len(body) > self.max_request_bytes:
                return _text("413 Content Too Large", "request too large\n")
        config = self.web_config
        if config is not None and config.users:
            authorization = headers.get("authorization")
            verdict = config.cached(authorization)
            if verdict is None:
                if self._auth_waiting >= self.max_auth_waiting:
                    return _text("503 Service Unavailable", "too many password checks; try "
                                 "again\n", ("Retry-After", "1"))
                self._auth_waiting += 1
                try:
                    verdict = await asyncio.wrap_future(
                        self._auth_pool.submit(config.check, authorization))
                finally:
                    self._auth_waiting -= 1
            if not verdict:
                return _Answer(*UNAUTHORIZED)
        environ = self._environ(request, headers, body, writer)
        return await asyncio.wrap_future(self._app_pool.submit(_call_app, self.app, environ))

    def _environ(self, request: h11.Request, headers: Dict[str, str], body: bytes,
                 writer: asyncio.StreamWriter) -> dict:
        target = request.target.decode("latin-1")
        path, _, query = target.partition("?")
        peer = writer.get_extra_info("peername") or ("", 0)
        environ = {
            "REQUEST_METHOD": request.method.decode("ascii"),
            "SCRIPT_NAME": "",
            "PATH_INFO": urllib.parse.unquote(path, "latin-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": self.addr,
            "SERVER_PORT": str(self.port),
            "SERVER_PROTOCOL": "HTTP/" + request.http_version.decode("ascii"),
            "REMOTE_ADDR": peer[0],
            "CONTENT_LENGTH": str(len(body)) if body else "",
            "CONTENT_TYPE": headers.get("content-type", ""),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http" if self.ssl_context is None else "https",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in headers.items():
            if name not in ("content-length", "content-type"):
                environ["HTTP_" + name.upper().replace("-", "_")] = value
        return environ

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter,
                    request: Optional[h11.Request], answer: _Answer,
                    close: bool = False) -> None:
        code, _, reason = answer.status.partition(" ")
        headers = list(answer.headers)
        if self.web_config is not None:
            headers += self.web_config.headers
        if not any(name.lower() == "content-length" for name, _ in headers):
            headers.append(("Content-Length", str(len(answer.body))))
        if close or conn.their_state is not h11.DONE:
            headers.append(("Connection", "close"))  # a body left unread: no next request
        writer.write(conn.send(h11.Response(status_code=int(code), reason=reason,
                                            headers=headers)))
        if request is None or request.method != b"HEAD":
            writer.write(conn.send(h11.Data(data=answer.body)))
        writer.write(conn.send(h11.EndOfMessage()))
        await asyncio.wait_for(writer.drain(), self.write_timeout)


def _listen(addr: str, port: int) -> socket.socket:
    """A listening socket on addr and port, or one sentence saying why not."""
    try:
        infos = socket.getaddrinfo(addr, port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror:
        raise ConfigurationError.about(
            "addr", lambda called: f"{called} {addr!r} is not an address or host name this "
            "machine can bind; pass one such as 127.0.0.1 or 0.0.0.0 (or set BOTO_PROM_ADDR)."
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(MetricsServer.backlog)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigurationError.about(
                "port", lambda called: f"port {port} on {addr} is already in use; pass a free "
                f"port as {called}=N (or BOTO_PROM_PORT=N), or {called}=0 to let the system "
                "pick one."
            ) from None
        raise ConfigurationError(
            f"cannot listen on {addr} port {port} ({exc.strerror or exc}); pass addr= and "
            "port= (or BOTO_PROM_ADDR and BOTO_PROM_PORT) that this machine can bind."
        ) from None
    sock.setblocking(False)
    return sock


# --- the process's one server -----------------------------------------------------------------

_server: Optional[MetricsServer] = None
_started_with = ServerSettings()  # what _server was started for
_lock = threading.Lock()


def serve(server: ServerSettings, registry: CollectorRegistry, *,
          api_advice: bool = True) -> MetricsServer:
    """The process's metrics server for these settings: started now, or the running one.

    A process has one server. ``server.addr`` and ``server.port`` left None take the running
    server's, else DEFAULT_ADDR and DEFAULT_PORT; port 0 picks a free port, or reuses the
    running server. With ``server.multiprocess_dir`` it serves that directory, with
    ``server.web_config`` it serves behind that file's TLS and basic auth.

    Args:
        server: where and what to serve (:func:`boto_prom.settings.resolve_server`).
        registry: the registry to serve (unless a multiprocess directory is served).
        api_advice: in multiprocess mode, end an error with how a program serves once
            (``start_multiprocess_server()`` in one process, ``start_server=False`` in the
            workers). ``boto-prom run`` and ``boto-prom serve`` start the one server
            themselves, so the advice does not apply to them: they pass False.

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
        config = None
        if server.web_config is not None:
            config = load_web_config(server.web_config)
        try:
            _server = MetricsServer(DEFAULT_ADDR if server.addr is None else server.addr,
                                    DEFAULT_PORT if server.port is None else server.port,
                                    registry, app, web_config=config)
        except ConfigurationError as exc:
            if server.multiprocess_dir is None or not api_advice:
                raise
            raise _with_serve_once_advice(exc) from None
        _started_with = server
        return _server


def _with_serve_once_advice(exc: ConfigurationError) -> ConfigurationError:
    """exc's sentence (still about its setting, under whatever name a caller gives it) ending
    with how a program serves every process's metrics once."""
    def advised(sentence: str) -> str:
        return (f"{sentence.rstrip('.')}; in multiprocess mode one process serves every "
                "process's metrics, so start it once (boto_prom.start_multiprocess_server() in "
                "gunicorn's when_ready) and pass start_server=False to enable_metrics in "
                "workers.")

    if exc.setting is None:
        return ConfigurationError(advised(str(exc)))
    setting = exc.setting
    return ConfigurationError.about(setting,
                                    lambda called: advised(exc.naming({setting: called})))


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
