"""What boto-prom serves and how: the WSGI apps, and the one metrics server of a process.

:func:`make_app` answers ``/metrics`` (prometheus_client's exposition), ``/healthz`` and a
landing page, to GET and HEAD (any other method gets a 405); :func:`make_multiprocess_app`
serves the same from a multiprocess directory. The server (:class:`MetricsServer`) is one
asyncio event loop on a daemon thread, with h11 for HTTP/1.1: every connection waits at the
cost of a couple of kilobytes under deadlines of its own (TLS handshake, headers, body,
keep-alive), so no client, idle, slow, scraping in a loop or flooding wrong passwords, can
keep a scrape from being answered.
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
import math
import queue
import socket
import ssl
import sys
import threading
import urllib.parse
from typing import Any, Callable, Deque, Dict, Iterable, List, NamedTuple, Optional, Tuple

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

_SHARED_ANSWERS = "_boto_prom_shared_answers"
"""Set on boto-prom's own apps, whose answer depends only on the request's method, path,
query, Accept, Accept-Encoding and body: the server may answer requests alike with one call."""


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

    setattr(app, _SHARED_ANSWERS, True)
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

    setattr(app, _SHARED_ANSWERS, True)
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
            # Drop the job before waiting for the next: its future holds the connection it
            # answered (and, over TLS, OpenSSL's state) for as long as this thread waits.
            del job, future, fn, args

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

    glibc keeps what a thread's heap grew to, free but not given back, unless asked (tens of
    megabytes after a thousand TLS clients left, most of it OpenSSL's); a collection first,
    so that whatever an exception's traceback still holds in a cycle is freed before the
    trim. Called only when most of a crowd has gone, never per request.
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


class _Loop(asyncio.SelectorEventLoop):  # type: ignore[misc,valid-type]
    """asyncio's loop, handing accepted sockets straight to a protocol.

    ``connect_accepted_socket`` runs a task per connection until it is open, and over TLS
    wraps it in asyncio's TLS protocol, with a read buffer of its own and timers for the
    handshake and the shutdown: all of it for every client of a flood. Here the
    transport is made as that method makes it (its private ``_make_socket_transport``, the
    same since 3.8), with no task, and TLS is :class:`_Client`'s own, through ssl's memory
    BIOs.
    """

    def open_plain(self, sock: socket.socket, protocol: asyncio.Protocol) -> asyncio.Transport:
        return self._make_socket_transport(sock, protocol)  # type: ignore[attr-defined]


_SWEEP_SPACING = 0.1  # seconds between deadline sweeps, at least
_SLICE = 8192  # bytes h11 is given at a time
_NO_HEADERS: Dict[str, str] = {}  # never written to
_PLAIN_TO_TLS = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                 b"Connection: close\r\nContent-Length: 48\r\n\r\n"
                 b"Client sent an HTTP request to an HTTPS server.\n")

# What a connection is doing, and so which deadline it must meet (see _Client).
_HANDSHAKE, _HEAD, _BODY, _ANSWER, _WRITE, _CLOSING, _CLOSED = range(7)


class _Client(asyncio.Protocol):
    """One connection of a MetricsServer: h11's state for it, what it is doing, and the
    deadline it must meet next.

    A protocol, not a task with streams: a connection that says nothing costs this object
    and asyncio's transport, and h11's state only once a byte arrives. Deadlines are a
    number each, checked by the server's one sweep, rather than a timer per read: a
    thousand waiting clients schedule nothing, and leave nothing behind when they go.

    Over TLS it holds an :class:`ssl.SSLObject` between two memory BIOs, as asyncio's own
    TLS protocol does, without that protocol's buffers, task and timers: bytes from the
    transport go in, requests come out, and answers go back the same way.
    """

    __slots__ = ("server", "transport", "http", "state", "deadline", "idle", "paused",
                 "request", "headers", "body", "tls", "incoming", "outgoing", "reading")

    def __init__(self, server: "MetricsServer", handshake_deadline: float = math.inf) -> None:
        self.server = server
        self.transport: Any = None
        self.http: Optional[h11.Connection] = None  # made on the first byte
        self.state = _HEAD
        self.deadline = math.inf
        self.idle = False  # kept alive between requests: idle_timeout until the next byte
        self.paused = False  # the transport's buffer is full: the client is slow to read
        self.request: Optional[h11.Request] = None
        self.headers: Dict[str, str] = _NO_HEADERS
        self.body = b""
        self.reading = False  # in _events: requests answered at once go on in its loop
        self.tls: Optional[ssl.SSLObject] = None
        if server.ssl_context is not None:
            self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            self.tls = server.ssl_context.wrap_bio(self.incoming, self.outgoing,
                                                   server_side=True)
            self.state, self.deadline = _HANDSHAKE, handshake_deadline

    # -- asyncio's calls

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if self.state != _HANDSHAKE:
            self._opened()

    def _opened(self) -> None:
        self.server._opened(self)
        self._await_request(self.server.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self.state >= _CLOSING:
            return
        if self.tls is None:
            self._received(data)
            return
        data, ended = self._decrypt(data)
        if data and self.state < _CLOSING:
            self._received(data)
        if ended and self.state < _CLOSING:
            self._ended()

    def _received(self, data: bytes) -> None:
        """Bytes of requests, in the clear."""
        if self.http is None:
            self.http = h11.Connection(h11.SERVER,
                                       max_incomplete_event_size=self.server.max_request_bytes)
        if self.idle:  # the next request has begun: its headers are due
            self.idle = False
            self._set_deadline(self.server.header_timeout)
        # In slices: h11 limits only an event still incomplete, so headers larger than
        # max_request_bytes, read whole in one chunk, would pass.
        for start in range(0, len(data), _SLICE):
            self.http.receive_data(data[start:start + _SLICE])
            if self.state <= _BODY:
                self._events()
        # Past the request being answered: pipelined (reading is paused meanwhile); h11
        # keeps it for the next cycle.

    def eof_received(self) -> bool:
        self._ended()
        # Plain TCP stays open to answer a request already read (a half-closed client). Over
        # TLS, asyncio's transport closes: a request read in full is still answered, as
        # reading is paused until then, and anything else has ended with the client.
        return self.tls is None

    def _ended(self) -> None:
        """The client will send no more."""
        if self.http is None or self.state >= _CLOSING or self.state == _HANDSHAKE:
            self.close()
        else:
            self.http.receive_data(b"")
            if self.state <= _BODY:
                self._events()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.state == _WRITE:
            self._next_request()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.state = _CLOSED
        # OpenSSL's memory goes now, not when the last reference to this object does.
        self.http = self.request = self.tls = self.incoming = self.outgoing = None
        self.headers = _NO_HEADERS
        self.body = b""
        self.server._forget(self)

    # -- TLS

    def _decrypt(self, data: bytes) -> Tuple[bytes, bool]:
        """data from the wire in, (bytes in the clear, whether the client closed TLS) out;
        shakes hands first."""
        tls = self.tls
        assert tls is not None
        self.incoming.write(data)
        if self.state == _HANDSHAKE:
            try:
                tls.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                return b"", False
            except (ssl.SSLError, OSError, ValueError) as exc:
                # A client that fails the handshake (plain HTTP to the TLS port, no client
                # certificate) is routine: never a traceback on stderr.
                _log.debug("boto-prom: metrics server: handshake failed: %r", exc)
                self.server._handshake_done(self)
                self.state = _CLOSING  # no longer counted anywhere: it must go now
                if getattr(exc, "reason", None) == "HTTP_REQUEST":
                    # Plain HTTP to the TLS port (a scrape config without scheme: https):
                    # say so in HTTP, as Go's exporters do, rather than close in silence.
                    self.transport.write(_PLAIN_TO_TLS)
                self._flush()  # the alert says why, if the client takes it at once
                if self.transport.get_write_buffer_size():
                    self.transport.abort()
                else:
                    self.transport.close()
                return b"", False
            self._flush()  # the handshake's last flight (and TLS 1.3's session tickets)
            self.server._handshake_done(self)
            self._opened()
        chunks = []
        ended = False
        while True:
            try:
                chunk = tls.read(_SLICE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # the client's close_notify
                ended = True
                break
            except (ssl.SSLError, OSError) as exc:
                _log.debug("boto-prom: metrics server: TLS failed: %r", exc)
                self.transport.abort()
                return b"", False
            if not chunk:
                ended = True
                break
            chunks.append(chunk)
        self._flush()
        return b"".join(chunks), ended

    def _flush(self) -> None:
        if self.outgoing.pending:
            self.transport.write(self.outgoing.read())

    def _write(self, data: bytes) -> None:
        if self.tls is not None:
            try:
                self.tls.write(data)
            except (ssl.SSLError, OSError) as exc:
                _log.debug("boto-prom: metrics server: TLS failed: %r", exc)
                self.transport.abort()
                return
            data = self.outgoing.read()
        self.transport.write(data)

    # -- requests

    def _set_deadline(self, seconds: float) -> None:
        self.deadline = self.server._loop.time() + seconds
        self.server._sweep_by(self.deadline)

    def _await_request(self, seconds: float) -> None:
        self.state = _HEAD
        self.server._waiting[self] = None  # newest last
        self._set_deadline(seconds)

    def _events(self) -> None:
        """Act on what h11 has made of the bytes so far.

        An answer made at once (a 401, a 413) starts the next request from inside this
        loop: the loop goes on with it, rather than this method recursing once per
        pipelined request.
        """
        http = self.http
        assert http is not None
        if self.reading:
            return
        self.reading = True
        try:
            while self.state <= _BODY:
                event = http.next_event()
                if event is h11.NEED_DATA:
                    return
                if isinstance(event, h11.Request):
                    self.server._waiting.pop(self, None)
                    self.state, self.request, self.body, self.idle = _BODY, event, b"", False
                    self.headers = {name.decode("latin-1"): value.decode("latin-1")
                                    for name, value in event.headers}  # h11 lowercases
                    self._set_deadline(self.server.body_timeout)
                    declared = self.headers.get("content-length")
                    if declared is not None and int(declared) > self.server.max_request_bytes:
                        self.respond(_text("413 Content Too Large", "request too large\n"))
                elif isinstance(event, h11.Data):
                    self.body += event.data
                    if len(self.body) > self.server.max_request_bytes:
                        self.respond(_text("413 Content Too Large", "request too large\n"))
                elif isinstance(event, h11.EndOfMessage):
                    self.state, self.deadline = _ANSWER, math.inf  # the server's time now
                    self.transport.pause_reading()
                    self.server._answer(self)
                else:  # ConnectionClosed: the client hung up between requests
                    self.close()
        except h11.RemoteProtocolError as exc:
            exc.__traceback__ = None  # its frames would hold this connection until a collection
            if http.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                status = exc.error_status_hint
                phrase = {431: "Request Header Fields Too Large"}.get(status, "Bad Request")
                self.respond(_text(f"{status} {phrase}", "bad request\n"), close=True)
            else:
                self.close()
        finally:
            self.reading = False

    def respond(self, answer: _Answer, close: bool = False) -> None:
        """Send answer to the request read; then the next request, or the close."""
        http = self.http
        if self.state >= _CLOSING or http is None:
            return  # gone while its answer was made
        code, _, reason = answer.status.partition(" ")
        headers = list(answer.headers)
        if self.server.web_config is not None:
            headers += self.server.web_config.headers
        if not any(name.lower() == "content-length" for name, _ in headers):
            headers.append(("Content-Length", str(len(answer.body))))
        if close or http.their_state is not h11.DONE:
            headers.append(("Connection", "close"))  # a body left unread: no next request
        try:
            parts = [http.send(h11.Response(status_code=int(code), reason=reason,
                                            headers=headers))]
            if self.request is None or self.request.method != b"HEAD":
                parts.append(http.send(h11.Data(data=answer.body)))
            parts.append(http.send(h11.EndOfMessage()))
        except Exception:  # an answer h11 will not send (the app's or a header's doing)
            _log.debug("boto-prom: metrics server: cannot send an answer", exc_info=True)
            self.close()
            return
        self._write(b"".join(parts))
        self.request, self.headers, self.body = None, _NO_HEADERS, b""
        if http.our_state is not h11.DONE or http.their_state is not h11.DONE:
            self.close()
        elif self.paused:  # the rest waits in the buffer: the client must take it in time
            self.state = _WRITE
            self._set_deadline(self.server.write_timeout)
        else:
            self._next_request()

    def _next_request(self) -> None:
        assert self.http is not None
        self.http.start_next_cycle()
        begun = bool(self.http.trailing_data[0])  # pipelined: its headers are due already
        self.idle = not begun
        self._await_request(self.server.header_timeout if begun else self.server.idle_timeout)
        self.transport.resume_reading()
        self._events()  # one may be here already (pipelined)

    def close(self) -> None:
        """Close: what is in the buffer goes out first (HTTP/1.0 clients, a 413), under the
        write deadline."""
        if self.state >= _CLOSING:
            return
        if self.state == _HANDSHAKE:
            self.transport.abort()
            return
        self.state = _CLOSING
        self.server._waiting.pop(self, None)
        self._set_deadline(self.server.write_timeout)
        if self.tls is not None:  # say so (close_notify), without waiting for the client's
            try:
                self.tls.unwrap()
            except (ssl.SSLError, OSError, ValueError):
                pass
            self._flush()
        self.transport.close()

    def expire(self) -> None:
        """The deadline has passed: a client still sending its request (or shaking hands)
        gets no answer, and one not taking its answer, or the close, is reset."""
        if self.state in (_HEAD, _BODY):
            self.close()
        else:  # a handshake, or a client that would not take an answer or a close: reset
            self.transport.abort()


class MetricsServer:
    """A running metrics server: listening from construction, on daemon threads.

    One asyncio event loop holds every connection as a small protocol object under deadlines
    of its own, and h11 speaks HTTP/1.1 for it; an idle or trickling client costs a couple of
    kilobytes (tens of them over TLS, most of it OpenSSL's) and nobody else's time. The WSGI
    app runs in a small pool of threads, bcrypt in a smaller one, so neither a slow collector
    nor a storm of wrong passwords blocks the loop; clients asking the same while it is being
    answered share the next answer, so a storm of scrapes costs one collection at a time.
    Build one with :func:`serve` (the process's one server) unless you want another.

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
        write_timeout: seconds for the client to take the part of an answer the system's
            socket buffers do not take at once.
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
        self._shared_answers = getattr(self.app, _SHARED_ANSWERS, False)
        self.web_config = web_config
        if ssl_context is None and web_config is not None:
            ssl_context = web_config.ssl_context
        self.ssl_context = ssl_context
        self._sock = _listen(addr, port)
        self.port: int = self._sock.getsockname()[1]
        self._connections: Dict[_Client, None] = {}
        self._waiting: Dict[_Client, None] = {}  # for a request, oldest first
        # Answers being made, by request: (clients it answers, clients for the next one).
        self._rendering: Dict[tuple, Tuple[List[_Client], List[_Client]]] = {}
        self._sweep: Optional[asyncio.TimerHandle] = None  # the next deadline sweep
        self._sweep_at = math.inf
        self._auth_waiting = 0
        self._accept_failed_at = 0.0
        self._pending: Deque[Tuple[socket.socket, float]] = collections.deque()  # accepted
        # Handshakes under way, oldest first, with the loop time each started.
        self._handshaking: Dict[_Client, float] = {}
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
        """Accept every connection at once: plain ones open at once, TLS ones shake hands
        max_handshakes at a time.

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
            try:
                if self.ssl_context is None:
                    self._loop.open_plain(sock, _Client(self))  # it opens itself
                else:
                    self._pending.append((sock, self._loop.time() + self.handshake_timeout))
                    self._next_handshakes()
            except Exception:  # never the end of accepting: this one client goes
                _log.debug("boto-prom: metrics server: cannot open a connection",
                           exc_info=True)
                sock.close()

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
            oldest.transport.abort()
        while self._pending and len(handshaking) < self.max_handshakes:
            sock, deadline = self._pending.pop()
            client = _Client(self, deadline)
            handshaking[client] = now
            client.transport = self._loop.open_plain(sock, client)
            self._sweep_by(deadline)

    def _handshake_done(self, client: _Client) -> None:
        """client's handshake has ended, well or not: its place goes to the next."""
        if self._handshaking.pop(client, None) is not None or self._pending:
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

    # -- connections (_Client calls these)

    def _opened(self, client: _Client) -> None:
        self._connections[client] = None
        self._crowd = max(self._crowd, self._held())
        if len(self._connections) > self.max_connections and self._waiting:
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            oldest.transport.abort()

    def _forget(self, client: _Client) -> None:
        self._connections.pop(client, None)
        self._waiting.pop(client, None)
        if client in self._handshaking:
            self._handshake_done(client)

    def _sweep_by(self, deadline: float) -> None:
        """Make sure a sweep comes by deadline (or a moment later: sweeps are spaced)."""
        if deadline < self._sweep_at:
            if self._sweep is not None:
                self._sweep.cancel()
            self._sweep_at = max(deadline, self._loop.time() + _SWEEP_SPACING)
            self._sweep = self._loop.call_at(self._sweep_at, self._sweep_deadlines)

    def _sweep_deadlines(self) -> None:
        """Close every connection past its deadline; come back by the next one."""
        self._sweep, self._sweep_at = None, math.inf
        now = self._loop.time()
        soonest = math.inf
        for client in [*self._handshaking, *self._connections]:
            if client.deadline <= now:
                client.expire()
            soonest = min(soonest, client.deadline)  # expire() sets the close's own
        if soonest < math.inf:
            self._sweep_by(soonest)

    # -- answers

    def _answer(self, client: _Client) -> None:
        """Answer client's request: check its password if asked to, then render."""
        config = self.web_config
        if config is not None and config.users:
            authorization = client.headers.get("authorization")
            verdict = config.cached(authorization)
            if verdict is None:
                if self._auth_waiting >= self.max_auth_waiting:
                    client.respond(_text("503 Service Unavailable", "too many password "
                                         "checks; try again\n", ("Retry-After", "1")))
                    return
                self._auth_waiting += 1
                self._auth_pool.submit(config.check, authorization).add_done_callback(
                    lambda checked: self._on_loop(self._checked, client, checked))
                return
            if not verdict:
                client.respond(_Answer(*UNAUTHORIZED))
                return
        self._render(client)

    def _checked(self, client: _Client, checked: "concurrent.futures.Future") -> None:
        self._auth_waiting -= 1
        try:
            verdict = checked.result()
        except Exception:
            _log.debug("boto-prom: a password check failed", exc_info=True)
            client.respond(_text("500 Internal Server Error", "internal server error\n"))
            return
        if not verdict:
            client.respond(_Answer(*UNAUTHORIZED))
        elif client.state == _ANSWER:  # still there
            self._render(client)

    def _render(self, client: _Client) -> None:
        """Have the app answer client, in the app's threads.

        With boto-prom's own apps (:func:`make_app`, :func:`make_multiprocess_app`),
        clients asking the same (same method, path, query, Accept, Accept-Encoding and body) while
        it is being answered wait for the next answer and share it: each gets an answer
        begun after it asked, and a crowd of scrapers costs one collection at a time, so a
        scraper is never queued behind a crowd's.
        """
        environ = self._environ(client)
        key: Any = client  # an app of someone else's: its answer may depend on anything
        if self._shared_answers:
            key = (environ["REQUEST_METHOD"], environ["PATH_INFO"], environ["QUERY_STRING"],
                   environ.get("HTTP_ACCEPT"), environ.get("HTTP_ACCEPT_ENCODING"),
                   client.body)
        batches = self._rendering.get(key)
        if batches is not None:
            batches[1].append(client)  # the next answer
            return
        self._rendering[key] = ([client], [])
        self._start_render(key, environ)

    def _start_render(self, key: tuple, environ: dict) -> None:
        self._app_pool.submit(_call_app, self.app, environ).add_done_callback(
            lambda rendered: self._on_loop(self._rendered, key, rendered))

    def _rendered(self, key: tuple, rendered: "concurrent.futures.Future") -> None:
        clients, following = self._rendering.pop(key, ([], []))
        # The next answer first: a client answered below may ask the same again at once
        # (pipelined), and must wait for an answer begun after that.
        following = [client for client in following if client.state == _ANSWER]
        if following:
            self._rendering[key] = (following, [])
            self._start_render(key, self._environ(following[0]))
        try:
            answer = rendered.result()  # _call_app answers an app's errors with a 500
        except BaseException:  # the pool's thread was stopped under it
            answer = _text("500 Internal Server Error", "internal server error\n")
        for client in clients:
            client.respond(answer)

    def _on_loop(self, callback: Callable, *args: Any) -> None:
        """callback(*args) on the loop's thread, from a pool's; nothing once it has stopped."""
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            pass  # the server has stopped: nobody is waiting

    async def _stop(self) -> None:
        self._accepting.cancel()
        for sock, _ in self._pending:
            sock.close()
        self._pending.clear()
        for client in [*self._handshaking, *self._connections]:
            client.transport.abort()
        # Finish every task, so none is destroyed pending (asyncio would print).
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        # asyncio reports what it cannot hand to anyone (a send failing on a connection the
        # client reset): routine for a server on the network, so never a traceback on stderr.
        _log.debug("boto-prom: metrics server: %s", context.get("message"),
                   exc_info=context.get("exception"))

    def _environ(self, client: _Client) -> dict:
        request, headers, body = client.request, client.headers, client.body
        assert request is not None
        target = request.target.decode("latin-1")
        path, _, query = target.partition("?")
        peer = client.transport.get_extra_info("peername") or ("", 0)
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
