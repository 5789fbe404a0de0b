"""Abusive clients of a metrics server, as a child process: idle connections, slowloris
clients, stalled TLS handshakes and wrong-password loops, each reconnecting when the server
closes it, until stdin closes or the time is up. Prints "ready" once every connection is
open, and at the end one JSON line of what happened.

    python tests/load_clients.py PORT [--tls CAFILE] [--idle N] [--slowloris N]
        [--stalled-tls N] [--wrong-password N] [--user USER] [--seconds S]

Loopback only; every role pauses 0.1 s between connections, so the load is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import os
import ssl
import sys
import threading
from typing import Optional

HOST = "127.0.0.1"
# The first bytes of a TLS ClientHello: a server waits for the rest, which never comes.
PARTIAL_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"

counts: "collections.Counter[str]" = collections.Counter()


async def _open(port: int, context: Optional[ssl.SSLContext]):
    return await asyncio.wait_for(asyncio.open_connection(HOST, port, ssl=context), 30)


async def _until_closed(reader: asyncio.StreamReader) -> None:
    while await reader.read(4096):
        pass


async def idle(port: int, context: Optional[ssl.SSLContext], opened: asyncio.Event) -> None:
    """Connect (and shake hands, over TLS), then say nothing."""
    while True:
        try:
            reader, writer = await _open(port, context)
            counts["idle_connects"] += 1
            opened.set()
            try:
                await _until_closed(reader)
                counts["idle_closed_by_server"] += 1
            finally:
                writer.transport.abort()
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            counts["idle_errors"] += 1
        await asyncio.sleep(0.1)


async def slowloris(port: int, context: Optional[ssl.SSLContext], opened: asyncio.Event,
                    every: float = 3.0) -> None:
    """Send a request line, then a byte of header every few seconds."""
    while True:
        try:
            reader, writer = await _open(port, context)
            counts["slowloris_connects"] += 1
            opened.set()
            try:
                writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                while True:
                    try:
                        if not await asyncio.wait_for(reader.read(4096), every):
                            break
                    except asyncio.TimeoutError:
                        writer.write(b"x")
                counts["slowloris_closed_by_server"] += 1
            finally:
                writer.transport.abort()
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            counts["slowloris_errors"] += 1
        await asyncio.sleep(0.1)


async def stalled_tls(port: int, opened: asyncio.Event) -> None:
    """Start a TLS handshake and never finish it."""
    while True:
        try:
            reader, writer = await _open(port, None)
            counts["stalled_connects"] += 1
            opened.set()
            try:
                writer.write(PARTIAL_HELLO)
                await _until_closed(reader)
                counts["stalled_closed_by_server"] += 1
            finally:
                writer.transport.abort()
        except (OSError, asyncio.TimeoutError):
            counts["stalled_errors"] += 1
        await asyncio.sleep(0.1)


async def wrong_password(port: int, context: Optional[ssl.SSLContext], user: str,
                         opened: asyncio.Event) -> None:
    """Ask for /metrics with a wrong password, again and again, on a kept-alive connection."""
    token = base64.b64encode(f"{user}:wrong-password".encode()).decode()
    request = (f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\r\n\r\n"
               .encode())
    while True:
        try:
            reader, writer = await _open(port, context)
            opened.set()
            try:
                while True:
                    writer.write(request)
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = head.split(b" ", 2)[1].decode()
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":", 1)[1])
                    await reader.readexactly(length)
                    counts[f"wrong_password_{status}"] += 1
                    if b"connection: close" in head.lower():
                        break
            finally:
                writer.transport.abort()
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, ssl.SSLError, ValueError, IndexError):
            counts["wrong_password_errors"] += 1
        await asyncio.sleep(0.1)


async def main(args: argparse.Namespace) -> None:
    context = None
    if args.tls:
        context = ssl.create_default_context(cafile=args.tls)
    loop = asyncio.get_running_loop()
    # Connections the server cuts off mid-TLS make asyncio report errors: count them, since
    # printing thousands would fill (and block on) the parent's pipe.
    loop.set_exception_handler(lambda _loop, _context: counts.update(["loop_errors"]))
    roles, first = [], []

    def start(coroutine_function, *role_args):
        event = asyncio.Event()
        first.append(event)
        roles.append(asyncio.ensure_future(coroutine_function(*role_args, event)))

    for _ in range(args.idle):
        start(idle, args.port, context)
    for _ in range(args.slowloris):
        start(slowloris, args.port, context)
    for _ in range(args.stalled_tls):
        start(stalled_tls, args.port)
    for _ in range(args.wrong_password):
        start(wrong_password, args.port, context, args.user)
    await asyncio.wait_for(asyncio.gather(*(event.wait() for event in first)), 60)
    print("ready", flush=True)
    stdin_closed = loop.create_future()

    def wait_for_stdin() -> None:  # a daemon thread: nothing waits for it at exit
        sys.stdin.read()
        try:
            loop.call_soon_threadsafe(lambda: stdin_closed.done() or stdin_closed.set_result(1))
        except RuntimeError:
            pass  # the loop is gone already

    threading.Thread(target=wait_for_stdin, daemon=True).start()
    await asyncio.wait([stdin_closed], timeout=args.seconds)
    print(json.dumps(dict(counts)), flush=True)
    # Leave at once: cancelling a thousand TLS connections politely can wait out asyncio's
    # 30 s TLS shutdown timeout on each one still in the server's backlog.
    os._exit(0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--tls", metavar="CAFILE")
    parser.add_argument("--idle", type=int, default=0)
    parser.add_argument("--slowloris", type=int, default=0)
    parser.add_argument("--stalled-tls", type=int, default=0)
    parser.add_argument("--wrong-password", type=int, default=0)
    parser.add_argument("--user", default="prometheus")
    parser.add_argument("--seconds", type=float, default=60)
    asyncio.run(main(parser.parse_args()))
