"""The bundled metrics server and the multiprocess view: scraped over real HTTP, linted by the
real promtool, and fed by real worker processes recording into one directory."""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.multiprocess import mark_process_dead
from prometheus_client.parser import text_string_to_metric_families

import boto_prom
from boto_prom import ConfigurationError
from boto_prom.exposition import (DEFAULT_ADDR, MetricsServer, get_server,
                                  make_multiprocess_app, multiprocess_registry, serve)
from boto_prom.settings import ServerSettings
from tests.conftest import HAS_BOTO2, require_binary
from tests.procs import busy_port, child_env, finish, get, read_line, start_worker

needs_boto2 = pytest.mark.skipif(not HAS_BOTO2, reason="boto 2 needs Python 3.11 or older")


def fetch(url, accept=None):
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, response.headers.get("Content-Type"), response.read().decode()


def start(registry, addr=None, port=None):
    """The process's server for addr and port, as enable_metrics asks for it."""
    return serve(ServerSettings(addr=addr, port=port), registry)


# --- the server -------------------------------------------------------------------------------

@pytest.fixture
def served(aws, registry):
    """An EC2 connection with metrics on and the server on a free port, after two calls."""
    conn = aws.ec2()
    hook = boto_prom.enable_metrics(conn, port=0, registry=registry)
    conn.get_all_instances()
    with pytest.raises(Exception):
        conn.get_all_instances(instance_ids=["i-00000000000000000"])
    return hook


@needs_boto2
def test_port_zero_picks_a_port_that_can_be_read_back(served):
    """port=0 gives a real port on the hook's server and in get_server()."""
    assert served.server is get_server()
    assert served.server.port > 0
    assert served.server.url.endswith(f":{served.server.port}/metrics")


@needs_boto2
def test_metrics_text_format_parses_with_exact_values(served):
    """/metrics speaks the text format, and prometheus_client's parser reads our values."""
    status, ctype, body = fetch(served.server.url)
    assert status == 200 and ctype.startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(body) for s in family.samples}
    base = (("action", "DescribeInstances"), ("aws_region", "us-west-2"),
            ("aws_service", "ec2"))
    assert samples[("boto_requests_total", tuple(sorted(base + (("status_code", "200"),))))] == 1
    assert samples[("boto_requests_total", tuple(sorted(base + (("status_code", "400"),))))] == 1
    assert samples[("boto_request_errors_total",
                    tuple(sorted(base + (("error_type", "400"),))))] == 1
    assert samples[("boto_request_duration_seconds_count", tuple(sorted(base)))] == 2


@needs_boto2
def test_openmetrics_when_asked(served):
    """A scraper asking for OpenMetrics gets it, ending in # EOF."""
    _, ctype, body = fetch(served.server.url, accept="application/openmetrics-text; version=1.0.0")
    assert ctype.startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")
    assert "boto_requests_total{" in body


@needs_boto2
def test_landing_page_health_and_not_found(served):
    """/ links to /metrics, /healthz answers ok, anything else is a 404."""
    base = served.server.url[: -len("/metrics")]
    status, ctype, body = fetch(base + "/")
    assert status == 200 and 'href="metrics"' in body and ctype.startswith("text/html")
    assert fetch(base + "/healthz")[2] == "ok\n"
    with pytest.raises(urllib.error.HTTPError) as raised:
        fetch(base + "/secrets")
    assert raised.value.code == 404


@needs_boto2
def test_promtool_finds_no_lint_problems(served):
    """The real promtool check metrics accepts our exposition without a lint complaint."""
    promtool = require_binary("promtool")
    _, _, body = fetch(served.server.url)
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_boto2
def test_busy_port_fails_enable_with_one_sentence(aws, registry):
    """A port someone else holds fails enable_metrics naming the port and the way out."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        conn = aws.ec2()
        with pytest.raises(ConfigurationError) as raised:
            boto_prom.enable_metrics(conn, port=port, registry=registry)
    message = str(raised.value)
    assert str(port) in message and "port=0" in message and "\n" not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert conn.request_hook is None, "a failed enable leaves the connection as it was"


def test_unbindable_address_fails_with_one_sentence(registry):
    """An address this machine does not have is a ConfigurationError, not a traceback."""
    with pytest.raises(ConfigurationError, match="addr"):
        start(registry, "no-such-host.invalid", 0)
    with pytest.raises(ConfigurationError, match="cannot listen on 192.0.2.1"):
        start(registry, "192.0.2.1", 0)
    assert get_server() is None


@needs_boto2
def test_later_enables_reuse_the_server(aws, registry):
    """A second connection reuses the running server; asking for another port is an error."""
    first = boto_prom.enable_metrics(aws.ec2(), port=0, registry=registry)
    second = boto_prom.enable_metrics(aws.iam(), registry=registry,
                                      port=first.server.port)
    third = boto_prom.enable_metrics(aws.s3(), registry=registry, port=0)
    assert first.server is second.server is third.server
    other = first.server.port + 1 if first.server.port < 65535 else first.server.port - 1
    with pytest.raises(ConfigurationError, match="already runs on port"):
        boto_prom.enable_metrics(aws.dynamodb(), registry=registry, port=other)


def test_explicit_other_addr_is_a_configuration_error(registry):
    """A later call naming another address fails in one sentence; no addr reuses the server."""
    first = start(registry, None, 0)
    assert first.addr == DEFAULT_ADDR
    assert start(registry, None, None) is first
    assert start(registry, DEFAULT_ADDR, first.port) is first
    with pytest.raises(ConfigurationError, match="already listens on 127.0.0.1") as raised:
        start(registry, "0.0.0.0", first.port)
    assert "\n" not in str(raised.value)


def _read_to_close(sock):
    """All sock receives until the server closes it."""
    answer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return answer
        answer += chunk


def _hold_connections(server, count):
    """count silent connections to server, once the server holds them all."""
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=5)
            for _ in range(count)]
    deadline = time.monotonic() + 10
    while len(server._connections) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return held


def _closed_by_server(sock):
    """True when the server has closed (or reset) the connection, False on a read timeout."""
    try:
        return sock.recv(1) == b""
    except socket.timeout:
        return False
    except OSError:
        return True


def test_past_the_connection_cap_the_longest_waiting_client_makes_room(registry, monkeypatch):
    """With every connection slot held by idle clients, a new client is served at once: the
    one that has waited longest for its request is closed to make room."""
    monkeypatch.setattr(MetricsServer, "max_connections", 8)
    server = start(registry, "127.0.0.1", 0)
    address = ("127.0.0.1", server.port)
    held = []
    try:
        for _ in range(8):
            held.append(socket.create_connection(address, timeout=5))
            time.sleep(0.01)  # an order the server sees too
        started = time.monotonic()
        assert fetch(server.url)[0] == 200
        assert time.monotonic() - started < 1
        assert _closed_by_server(held[0]), "the oldest idle client makes room"
        held[-1].settimeout(0.2)
        assert not _closed_by_server(held[-1]), "the newest keeps its place"
    finally:
        for sock in held:
            sock.close()


@contextlib.contextmanager
def _stalled_tls_handshakes(registry, tmp_path, count):
    """A TLS MetricsServer and count clients stuck half-way through a handshake (sent in
    turn, a tenth of a second apart): yields (server, stalled sockets, CA file)."""
    import ssl

    from tests.load_clients import PARTIAL_HELLO
    from tests.pki import make_pki

    pki = make_pki(str(tmp_path))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["server_cert"], pki["server_key"])
    server = MetricsServer("127.0.0.1", 0, registry, ssl_context=context)
    stalled = []
    try:
        for _ in range(count):
            stalled.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
            stalled[-1].sendall(PARTIAL_HELLO)
            time.sleep(0.1)
        yield server, stalled, pki["ca"]
    finally:
        server.shutdown()
        for sock in stalled:
            sock.close()


def _scrape_over_tls(server, ca):
    import ssl

    with urllib.request.urlopen(server.url, timeout=10,
                                context=ssl.create_default_context(cafile=ca)) as response:
        assert response.status == 200


def test_tls_handshakes_past_the_cap_wait_their_turn_newest_first(registry, monkeypatch,
                                                                  tmp_path):
    """With both handshake slots held by stalled TLS clients, later connections wait their
    turn; each stalled one is closed at its handshake deadline, and the newest waiting (a
    real client) is answered as soon as a slot frees."""
    monkeypatch.setattr(MetricsServer, "max_handshakes", 2)
    monkeypatch.setattr(MetricsServer, "handshake_timeout", 1.5)
    monkeypatch.setattr(MetricsServer, "handshake_turn", 5.0)  # the deadline comes first
    # Two take the slots, the third waits.
    with _stalled_tls_handshakes(registry, tmp_path, 3) as (server, stalled, ca):
        started = time.monotonic()
        _scrape_over_tls(server, ca)
        assert 1 < time.monotonic() - started < 3, "served when the first slot freed"
        for sock in stalled:
            assert _closed_by_server(sock), "closed at its handshake deadline"


def test_stalled_tls_handshakes_give_their_places_to_a_waiting_client(registry, monkeypatch,
                                                                    tmp_path):
    """Stalled TLS clients holding every handshake place lose them once they have had their
    turn (handshake_turn) while a client waits, long before their deadline: they cannot keep
    a scraper waiting."""
    monkeypatch.setattr(MetricsServer, "max_handshakes", 2)
    monkeypatch.setattr(MetricsServer, "handshake_timeout", 30.0)
    monkeypatch.setattr(MetricsServer, "handshake_turn", 0.5)
    with _stalled_tls_handshakes(registry, tmp_path, 2) as (server, stalled, ca):
        started = time.monotonic()
        _scrape_over_tls(server, ca)
        assert time.monotonic() - started < 5, "served after a turn, not at the 30 s deadline"
        assert _closed_by_server(stalled[0]), "the oldest stalled client gave up its place"


def test_memory_is_given_back_once_a_crowd_has_gone(registry, monkeypatch):
    """After a crowd of connections (here 300) has come and gone, the server collects the
    garbage and gives freed memory back, once; while they stay, it does not."""
    from boto_prom import exposition

    calls = []
    monkeypatch.setattr(exposition, "_give_back_memory", lambda: calls.append(1))
    server = MetricsServer("127.0.0.1", 0, registry)
    crowd = _hold_connections(server, 300)
    try:
        time.sleep(5.5)  # a tidy-up has passed
        assert calls == []
        for sock in crowd:
            sock.close()
        deadline = time.monotonic() + 10
        while not calls and time.monotonic() < deadline:
            time.sleep(0.1)
        assert calls == [1]
    finally:
        server.shutdown()
        for sock in crowd:
            sock.close()


def _cut_off_after(sock, chunk, interval, limit=5.0):
    """Seconds until the server closes sock while chunk is sent every interval seconds."""
    sock.settimeout(interval)
    started = time.monotonic()
    while time.monotonic() - started < limit:
        try:
            if chunk:
                sock.sendall(chunk)
        except OSError:
            break
        if _closed_by_server(sock):
            break
    return time.monotonic() - started


def test_slowloris_client_is_cut_off_at_the_header_deadline(registry, monkeypatch):
    """A client trickling a header byte every 0.2 s is cut off at the (here 1 s) deadline."""
    monkeypatch.setattr(MetricsServer, "header_timeout", 1)
    server = start(registry, "127.0.0.1", 0)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        assert 0.8 < _cut_off_after(sock, b"X", 0.2) < 3


def test_silent_client_is_cut_off_at_the_header_deadline(registry, monkeypatch):
    """A client that connects and says nothing is closed at the header deadline."""
    monkeypatch.setattr(MetricsServer, "header_timeout", 1)
    server = start(registry, "127.0.0.1", 0)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        assert 0.8 < _cut_off_after(sock, b"", 0.2) < 3


def test_trickled_body_is_cut_off_at_the_body_deadline(registry, monkeypatch):
    """A request whose body comes a byte at a time is closed at the body deadline."""
    monkeypatch.setattr(MetricsServer, "body_timeout", 1)
    server = start(registry, "127.0.0.1", 0)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        assert 0.8 < _cut_off_after(sock, b"X", 0.2) < 3


def test_kept_alive_connection_is_served_again_then_closed_when_idle(registry, monkeypatch):
    """One connection carries several scrapes, and is closed after the idle deadline."""
    monkeypatch.setattr(MetricsServer, "idle_timeout", 1)
    server = start(registry, "127.0.0.1", 0)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    for _ in range(3):
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b"ok\n")
    started = time.monotonic()
    assert _closed_by_server(connection.sock)
    assert 0.8 < time.monotonic() - started < 3
    connection.close()


def _answer_or_reset(port, request):
    """The server's whole answer to request, or b"" when it reset the connection first."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        answer = b""
        try:
            sock.sendall(request)
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return answer
                answer += chunk
        except ConnectionError:
            return answer


def test_oversized_headers_and_bodies_are_refused(registry):
    """Headers past 64 KiB get a 431 (or a reset), a body past it a 413, and the connection
    is closed; neither is served."""
    server = start(registry, "127.0.0.1", 0)
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    answer = _answer_or_reset(server.port, big)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    answer = _answer_or_reset(server.port,
                              b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in answer


@pytest.mark.parametrize("path", ["/", "/healthz", "/metrics"])
def test_head_answers_like_get_and_other_methods_get_405(registry, path):
    """HEAD gives GET's status and headers without a body; POST, PUT, DELETE, OPTIONS get a
    405 naming GET and HEAD, on every path."""
    Gauge("boto_test_gauge", "a gauge", registry=registry).set(1)
    server = start(registry, "127.0.0.1", 0)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    connection.request("GET", path)
    got = connection.getresponse()
    body = got.read()
    connection.request("HEAD", path)
    head = connection.getresponse()
    assert head.read() == b"" and head.status == got.status == 200
    assert head.getheader("Content-Type") == got.getheader("Content-Type")
    assert int(head.getheader("Content-Length")) == len(body) > 0
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
        connection.request(method, path, body=b"x" if method != "OPTIONS" else None)
        response = connection.getresponse()
        response.read()
        assert response.status == 405, method
        assert response.getheader("Allow") == "GET, HEAD"
    connection.close()


class _SlowCountingCollector:
    """A collector that takes a while and says how many times it has been collected."""

    def __init__(self, seconds):
        self.seconds, self.calls = seconds, 0

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        self.calls += 1
        call = self.calls
        time.sleep(self.seconds)
        yield GaugeMetricFamily("boto_test_collection", "which collection this is", value=call)


def _collection_number(body):
    for line in body.splitlines():
        if line.startswith("boto_test_collection "):
            return float(line.split()[1])
    raise AssertionError(body)


def test_scrapes_asking_meanwhile_share_the_next_collection(registry):
    """Twenty clients asking while a collection runs share the next one: each answer was
    begun after its request, and the crowd costs two collections, not twenty-one."""
    collector = _SlowCountingCollector(0.5)
    registry.register(collector)
    server = start(registry, "127.0.0.1", 0)
    seen = {}

    def scrape(name):
        seen[name] = _collection_number(fetch(server.url)[2])

    first = threading.Thread(target=scrape, args=("first",))
    first.start()
    deadline = time.monotonic() + 5
    while collector.calls == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    crowd = [threading.Thread(target=scrape, args=(n,)) for n in range(20)]
    for thread in crowd:
        thread.start()
    for thread in [first, *crowd]:
        thread.join(10)
    assert seen.pop("first") == 1
    assert set(seen.values()) == {2.0} and len(seen) == 20
    assert collector.calls == 2
    assert fetch(server.url)[0] == 200 and collector.calls == 3, "a later scrape collects anew"


def test_different_scrapes_are_not_shared(registry):
    """Scrapes asking for different answers (text and OpenMetrics) each get their own."""
    collector = _SlowCountingCollector(0.3)
    registry.register(collector)
    server = start(registry, "127.0.0.1", 0)
    answers = {}

    def scrape(accept):
        answers[accept] = fetch(server.url, accept)[1]

    threads = [threading.Thread(target=scrape, args=(accept,))
               for accept in ("text/plain", "application/openmetrics-text")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert answers["text/plain"].startswith("text/plain")
    assert answers["application/openmetrics-text"].startswith("application/openmetrics-text")
    assert collector.calls == 2


def test_pipelined_requests_are_answered_in_order(registry):
    """Three requests sent at once on one connection get three answers, in order."""
    server = start(registry, "127.0.0.1", 0)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = _read_to_close(sock)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answer) == [b"200", b"404", b"200"]


def _read_answers(sock, count, limit=5.0):
    """What sock receives until count answers have come (or limit seconds pass)."""
    sock.settimeout(limit)
    answer = b""
    started = time.monotonic()
    while answer.count(b"HTTP/1.1 ") < count and time.monotonic() - started < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    return answer


def test_a_pipelined_scrape_waits_for_a_collection_begun_after_it(registry):
    """A client pipelining two scrapes while another client asks the same gets both
    answers, the second from a collection begun after it asked."""
    collector = _SlowCountingCollector(0.4)
    registry.register(collector)
    server = start(registry, "127.0.0.1", 0)
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as first, \
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as other:
        first.sendall(request + request)
        time.sleep(0.2)
        other.sendall(request)
        assert re.findall(rb"\nboto_test_collection (\S+)", _read_answers(other, 1)) == [b"2.0"]
        assert re.findall(rb"\nboto_test_collection (\S+)",
                          _read_answers(first, 2)) == [b"1.0", b"3.0"]


def test_an_app_of_ones_own_is_called_for_every_request(registry):
    """A WSGI app given to MetricsServer may answer by any header: requests alike are not
    shared, so each client gets its own answer."""
    def app(environ, start_response):
        time.sleep(0.3)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ.get("HTTP_X_WHO", "nobody").encode()]

    server = MetricsServer("127.0.0.1", 0, registry, app=app)
    answers = {}

    def ask(who):
        request = urllib.request.Request(server.url, headers={"X-Who": who})
        with urllib.request.urlopen(request, timeout=5) as response:
            answers[who] = response.read()

    try:
        threads = [threading.Thread(target=ask, args=(who,)) for who in ("carol", "alice", "bob")]
        threads[0].start()
        time.sleep(0.1)  # alice and bob ask while carol is answered
        for thread in threads[1:]:
            thread.start()
        for thread in threads:
            thread.join(10)
    finally:
        server.shutdown()
    assert answers == {"carol": b"carol", "alice": b"alice", "bob": b"bob"}


def test_many_pipelined_requests_answered_at_once_are_all_answered(registry, tmp_path):
    """A thousand pipelined requests without a password, each refused on the spot with a
    401, all get their answer (the server neither recurses nor drops one)."""
    import bcrypt

    from boto_prom.webconfig import load_web_config

    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "web.yml").write_text(f"basic_auth_users:\n  alice: '{hashed}'\n")
    server = MetricsServer("127.0.0.1", 0, registry,
                           web_config=load_web_config(str(tmp_path / "web.yml")))
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost:x\r\n\r\n" * 1000)  # 300 in a read
            assert _read_answers(sock, 1000, 10).count(b"HTTP/1.1 401 ") == 1000
    finally:
        server.shutdown()


def test_a_pipelined_request_begun_is_held_to_the_header_deadline(registry, monkeypatch):
    """When the start of the next request came with the last one, its headers are due by
    the header deadline, not the (longer) idle one."""
    monkeypatch.setattr(MetricsServer, "header_timeout", 1)
    monkeypatch.setattr(MetricsServer, "idle_timeout", 30)
    server = start(registry, "127.0.0.1", 0)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\n")
        assert _read_answers(sock, 1).count(b"HTTP/1.1 200 ") == 1
        assert 0.5 < _cut_off_after(sock, b"", 0.2) < 3


def test_client_that_half_closes_after_its_request_gets_the_answer(registry):
    """A client that shuts its sending side after the request (as some HTTP/1.0 tools do)
    still reads the whole answer."""
    server = start(registry, "127.0.0.1", 0)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        answer = _read_to_close(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\nok\n")


def test_idle_connections_hold_no_task_and_no_timer(registry):
    """A hundred silent clients are a hundred protocol objects: no task, and no timer of
    their own in the loop (one sweep keeps every deadline)."""
    import asyncio

    server = MetricsServer("127.0.0.1", 0, registry)
    held = _hold_connections(server, 100)
    try:
        tasks = asyncio.run_coroutine_threadsafe(_count_tasks(), server._loop).result(5)
        assert len(server._connections) == 100
        assert tasks == 1, "only the accept loop"
        assert len(server._loop._scheduled) <= 3, "the sweep and the tidy-up, no more"
    finally:
        server.shutdown()
        for sock in held:
            sock.close()


async def _count_tasks():
    import asyncio

    return len(asyncio.all_tasks()) - 1  # not this one


def test_http_1_0_client_gets_the_whole_scrape_before_the_close(registry):
    """An HTTP/1.0 client (no keep-alive) reads a large scrape to its last byte."""
    gauge = Gauge("boto_test_wide", "a wide gauge", ["n"], registry=registry)
    for n in range(5000):
        gauge.labels(str(n)).set(n)
    server = start(registry, "127.0.0.1", 0)
    with socket.socket() as sock:  # a slow reader: most of the answer waits in the server
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(5)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        time.sleep(0.5)
        answer = _read_to_close(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:")][0])
    assert length > 150_000 and len(body) == length
    assert body.rstrip().endswith(b'boto_test_wide{n="4999"} 4999.0')


def test_shutdown_with_clients_connected_is_quiet(registry, capfd):
    """Stopping a server that holds idle and half-sent connections prints nothing."""
    server = MetricsServer("127.0.0.1", 0, registry)
    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=5)
             for _ in range(20)]
    socks[0].sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    time.sleep(0.2)
    server.shutdown()
    import gc

    gc.collect()
    assert capfd.readouterr().err == ""
    for sock in socks:
        assert _closed_by_server(sock)
        sock.close()


def test_server_starts_in_under_100_ms_on_daemon_threads(registry):
    """Construction returns a listening server within 100 ms; every thread it runs is a
    daemon, so it never keeps the program alive."""
    started = time.monotonic()
    server = MetricsServer("127.0.0.1", 0, registry)
    elapsed = time.monotonic() - started
    try:
        assert elapsed < 0.1, elapsed
        assert fetch(server.url)[0] == 200
        ours = [t for t in threading.enumerate() if t.name.startswith("boto-prom-")]
        assert {t.name for t in ours} >= {"boto-prom-server", "boto-prom-app",
                                          "boto-prom-auth"}
        assert all(t.daemon for t in ours)
    finally:
        server.shutdown()
    with socket.socket() as sock:  # the port is free again (for a server, as ours binds)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", server.port))
        sock.listen()


class _BrokenCollector:
    """A collector with a bug: every scrape of its registry raises."""

    def collect(self):
        raise RuntimeError("a collector's bug")


def test_a_scrape_that_raises_is_a_500_without_a_traceback_on_stderr(registry, capfd, caplog):
    """A scrape that raises in prometheus_client gets a 500, logged at debug, not printed, and
    the server answers again once the cause is gone."""
    # A collector's bug raises on every prometheus_client; a bad OpenMetrics version in Accept
    # only from 0.24 on (0.17, the oldest allowed, ignores it), so it cannot be the trigger.
    caplog.set_level(logging.DEBUG, logger="boto_prom")
    server = start(registry, "127.0.0.1", 0)
    broken = _BrokenCollector()
    registry.register(broken)
    for accept in (None, "application/openmetrics-text; version=1.0.0", "text/plain"):
        with pytest.raises(urllib.error.HTTPError) as raised:
            fetch(server.url, accept=accept)
        assert raised.value.code == 500
    registry.unregister(broken)
    assert fetch(server.url)[0] == 200
    assert "Traceback" not in capfd.readouterr().err
    assert "Traceback" in caplog.text


def test_accept_failures_pause_and_warn_once_instead_of_spinning(registry, caplog):
    """Out of file descriptors, the server retries accept every second (not thousands of
    times), warns once, and serves again when descriptors are back."""
    import resource

    caplog.set_level(logging.DEBUG, logger="boto_prom")
    server = start(registry, "127.0.0.1", 0)
    cpu = time.process_time()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    clients = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 4, hard))
        while True:  # every descriptor left goes to a client: the server can accept none
            try:
                clients.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
            except OSError:
                break
        time.sleep(2.5)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert time.process_time() - cpu < 1, "no spinning while accept fails"
    failures = [r for r in caplog.records if "cannot accept" in r.getMessage()]
    assert 1 <= len(failures) <= 5
    assert [r.levelno for r in failures].count(logging.WARNING) == 1
    try:
        assert fetch(server.url)[0] == 200
    finally:
        for sock in clients:
            sock.close()


@needs_boto2
def test_server_thread_is_a_daemon(served):
    """The server never keeps the program alive at exit."""
    threads = [t for t in threading.enumerate() if t.name == "boto-prom-server"]
    assert threads and all(t.daemon for t in threads)


@needs_boto2
def test_enable_without_port_reuses_a_server_started_on_port_zero(aws, registry, monkeypatch):
    """After a port=0 start, an enable that names no port reuses that server."""
    monkeypatch.delenv("BOTO_PROM_PORT", raising=False)
    first = boto_prom.enable_metrics(aws.ec2(), port=0, registry=registry)
    second = boto_prom.enable_metrics(aws.iam(), registry=registry)
    assert second.server is first.server


# --- multiprocess mode ------------------------------------------------------------------------

CALLS = 15
DESCRIBE = dict(aws_service="ec2", aws_region="us-west-2", action="DescribeVolumes")


def samples(body):
    """{(name, sorted labels): value} of a text-format scrape."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(body) for s in f.samples}


def value(body, name, **labels):
    return samples(body).get((name, tuple(sorted(labels.items()))))


def build_info(body):
    return {k: v for k, v in samples(body).items() if k[0] == "boto_prom_build_info"}


def ready(proc):
    """(pid, server port) from a worker's ready line."""
    line = read_line(proc)
    assert line.startswith("ready "), line
    _, pid, port = line.split()
    return int(pid), int(port)


@needs_boto2
def test_four_workers_give_exactly_four_n(aws, tmp_path):
    """2 workers make N calls and exit, 2 new ones make N more: every scrape says exactly 4N."""
    path = str(tmp_path)
    env = child_env(PROMETHEUS_MULTIPROC_DIR=path)
    server = boto_prom.start_multiprocess_server(port=0, path=path)
    assert server.url.startswith("http://127.0.0.1:")

    first = [start_worker(aws.port, CALLS, "--wait", env=env) for _ in range(2)]
    first_pids = [ready(p)[0] for p in first]
    for proc, pid in zip(first, first_pids):
        finish(proc)
        mark_process_dead(pid, path)  # what gunicorn's child_exit hook does
    body = get(server.url)
    assert value(body, "boto_requests_total", status_code="200", **DESCRIBE) == 2 * CALLS
    assert build_info(body) == {}, "no live process, no build_info"

    second = [start_worker(aws.port, CALLS, "--wait", env=env),
              start_worker(aws.port, CALLS, "--wait", "--serve", env=env)]
    (_, _), (_, worker_port) = ready(second[0]), ready(second[1])
    try:
        for url in (server.url, f"http://127.0.0.1:{worker_port}/metrics"):
            body = get(url)
            assert value(body, "boto_requests_total", status_code="200",
                         **DESCRIBE) == 4 * CALLS, url
            assert value(body, "boto_request_duration_seconds_count", **DESCRIBE) == 4 * CALLS
            assert value(body, "boto_response_size_bytes_count", **DESCRIBE) == 4 * CALLS
            assert build_info(body) == {
                ("boto_prom_build_info", (("version", boto_prom.__version__),)): 1.0}
    finally:
        pids = []
        for proc in second:
            pids.append(proc.pid)
            finish(proc)
    for pid in pids:
        mark_process_dead(pid, path)
    body = get(server.url)
    assert value(body, "boto_requests_total", status_code="200", **DESCRIBE) == 4 * CALLS
    assert build_info(body) == {}


@needs_boto2
def test_second_server_in_multiprocess_mode_says_how_to_fix_it(aws, tmp_path):
    """A worker whose port another process holds is told to serve once, from one process."""
    server = boto_prom.start_multiprocess_server(port=0, path=str(tmp_path))
    env = child_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path),
                    BOTO_WORKER_METRICS_PORT=str(server.port))
    proc = start_worker(aws.port, 0, "--serve", env=env)
    line = read_line(proc)
    proc.communicate(timeout=30)
    assert line.startswith("error ") and "already in use" in line, line
    assert "start_server=False" in line and "start_multiprocess_server" in line


SERVE_ONCE = ("; in multiprocess mode one process serves every process's metrics, so start it "
              "once (boto_prom.start_multiprocess_server() in gunicorn's when_ready) and pass "
              "start_server=False to enable_metrics in workers.")


def test_multiprocess_busy_port_names_the_argument_and_advises_serving_once(tmp_path):
    """A taken port, from the API in multiprocess mode: the sentence names port= and ends with
    the advice to serve once; it stays about the port, so a caller naming it otherwise can."""
    with busy_port() as port:
        with pytest.raises(ConfigurationError) as raised:
            boto_prom.start_multiprocess_server(port, path=str(tmp_path))
    busy = (f"port {port} on 127.0.0.1 is already in use; pass a free port as {{0}}=N (or "
            f"BOTO_PROM_PORT=N), or {{0}}=0 to let the system pick one")
    assert str(raised.value) == busy.format("port") + SERVE_ONCE
    assert raised.value.setting == "port"
    assert raised.value.naming({"port": "--port"}) == busy.format("--port") + SERVE_ONCE
    assert get_server() is None


def test_multiprocess_bad_host_names_the_argument_and_advises_serving_once(tmp_path):
    """A host the API cannot bind in multiprocess mode: addr named, the advice added, and the
    error still about addr."""
    with pytest.raises(ConfigurationError) as raised:
        boto_prom.start_multiprocess_server(0, "no-such-host.invalid", path=str(tmp_path))
    assert str(raised.value) == (
        "addr 'no-such-host.invalid' is not an address or host name this machine can bind; "
        "pass one such as 127.0.0.1 or 0.0.0.0 (or set BOTO_PROM_ADDR)" + SERVE_ONCE)
    assert raised.value.setting == "addr"


def test_without_api_advice_the_error_is_the_servers_own(tmp_path):
    """serve(..., api_advice=False), as boto-prom run and serve call it: the bare sentence."""
    with busy_port() as port:
        with pytest.raises(ConfigurationError) as raised:
            serve(ServerSettings(port=port, multiprocess_dir=str(tmp_path)),
                  CollectorRegistry(), api_advice=False)
    assert "start_server=False" not in str(raised.value)
    assert raised.value.naming({"port": "--port"}).endswith(
        ", or --port=0 to let the system pick one.")


@needs_boto2
def test_bad_directory_is_one_sentence(aws, tmp_path):
    """A PROMETHEUS_MULTIPROC_DIR that does not exist fails enable_metrics with one sentence."""
    env = child_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "missing"))
    proc = start_worker(aws.port, 0, env=env)
    line = read_line(proc)
    proc.communicate(timeout=30)
    assert line.startswith("error ") and "is not a writable directory" in line, line


@needs_boto2
def test_directory_set_after_import_is_refused(aws, registry, tmp_path, monkeypatch):
    """Setting the variable after prometheus_client was imported is refused, not ignored."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    conn = aws.ec2()
    with pytest.raises(ConfigurationError, match="set after prometheus_client was imported"):
        boto_prom.enable_metrics(conn, registry=registry, start_server=False)
    assert conn.request_hook is None


def test_mountable_app_serves_the_directory(tmp_path):
    """make_multiprocess_app answers /metrics from the directory, and checks it at once."""
    from wsgiref.util import setup_testing_defaults

    with pytest.raises(ConfigurationError, match="not a directory"):
        make_multiprocess_app(str(tmp_path / "missing"))
    app = make_multiprocess_app(str(tmp_path))
    environ = {"PATH_INFO": "/metrics"}
    setup_testing_defaults(environ)
    status = []
    body = b"".join(app(environ, lambda s, h, e=None: status.append(s)))
    assert status == ["200 OK"] and body == b""
    assert list(multiprocess_registry(str(tmp_path)).collect()) == []


@pytest.mark.parametrize("read", [multiprocess_registry, make_multiprocess_app])
def test_reading_no_directory_says_which_to_set(monkeypatch, read):
    """With no path and no PROMETHEUS_MULTIPROC_DIR, reading every process's metrics says to
    set the variable, not that the directory None does not exist."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with pytest.raises(ConfigurationError, match="set PROMETHEUS_MULTIPROC_DIR") as raised:
        read()
    assert "None" not in str(raised.value)


def test_every_gauge_declares_a_multiprocess_mode(monkeypatch):
    """In multiprocess mode each Gauge of the contract has a live mode, never the 'all' default."""
    from boto_prom import metrics as metrics_module

    monkeypatch.setattr(metrics_module, "in_multiprocess_mode", lambda: True)
    metrics = metrics_module.PrometheusMetrics(CollectorRegistry())
    gauges = [m for m in vars(metrics).values() if isinstance(m, Gauge)]
    assert metrics.build_info in gauges
    for gauge in gauges:
        assert gauge._multiprocess_mode.startswith("live"), gauge._name
