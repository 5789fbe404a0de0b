"""A tiny AWS-shaped HTTP server for what a real one will not do on demand.

Queue behaviours with :meth:`FaultServer.script`; each request takes the next one (the last
repeats). Behaviours: ``("status", code)``, ``("reset",)`` (close without answering),
``("slow", seconds, code)``, ``("headers", code, {name: value})`` (custom response headers,
e.g. no or a bad Content-Length), ``("error", code, aws_code)`` (an error answer carrying that AWS
error code), ``("gate", code)`` (hold the answer until ``gate`` is set). Every request is also
recorded in ``requests``.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple

_BODY = (b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>%s</Code>"
         b"<Message>fault server</Message></Error></Errors><RequestID>fault-0001</RequestID>"
         b"</Response>")


class FaultServer:
    def __init__(self) -> None:
        self._script: List[Tuple[Any, ...]] = [("status", 200)]
        self._lock = threading.Lock()
        self.requests: List[Dict[str, Any]] = []
        self.host = "127.0.0.1"
        self.port = 0
        self._httpd: Optional[ThreadingHTTPServer] = None
        self.gate = threading.Event()

    def script(self, *behaviours: Tuple[Any, ...]) -> None:
        """Answer the next requests with these behaviours, in order; the last one repeats."""
        with self._lock:
            self._script = list(behaviours)

    def _next(self) -> Tuple[Any, ...]:
        with self._lock:
            return self._script.pop(0) if len(self._script) > 1 else self._script[0]

    def __enter__(self) -> "FaultServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall per answer

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.requests.append({"method": self.command, "path": self.path,
                                        "headers": dict(self.headers), "body": body})
                behaviour = server._next()
                kind = behaviour[0]
                if kind == "reset":
                    # RST instead of FIN: the client sees a reset, not a clean close.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return
                headers: Dict[str, str] = {}
                aws_code = None
                if kind == "gate":
                    server.gate.wait(30)
                    code = behaviour[1]
                elif kind == "error":
                    code, aws_code = behaviour[1], behaviour[2]
                elif kind == "slow":
                    time.sleep(behaviour[1])
                    code = behaviour[2]
                elif kind == "headers":
                    code, headers = behaviour[1], behaviour[2]
                else:
                    code = behaviour[1]
                payload = b"" if code < 400 else _BODY % str(aws_code or code).encode()
                if code < 400:
                    payload = (b"<DescribeRegionsResponse><requestId>ok</requestId>"
                               b"<regionInfo/></DescribeRegionsResponse>")
                self.send_response(code)
                self.send_header("x-amzn-RequestId", "fault-0001")
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(payload)))
                for name, value in headers.items():
                    if value is not None:
                        self.send_header(name, value)
                if "Content-Length" in headers and headers["Content-Length"] is None:
                    self.close_connection = True
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

        self._httpd = ThreadingHTTPServer((self.host, 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_port
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.gate.set()  # release any answer still held
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()


def closed_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
