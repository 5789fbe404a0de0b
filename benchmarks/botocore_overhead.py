"""How much time boto-prom adds to a botocore call: beside its floor, and beside OpenTelemetry.

Six boto3 clients make the same EC2 ``DescribeRegions`` call, taking turns:

- ``uninstrumented``: the baseline every overhead is measured from.
- ``noop``: handlers that do nothing, on the events boto-prom listens on: what botocore's event
  dispatch alone costs.
- ``floor``: handlers on the same events (registered the same way) that make only the
  prometheus_client updates boto-prom makes for such a call with its default metrics, on
  children bound in advance, and nothing else: in flight up and down, the request counter, the
  per-action and per-service duration histograms, and the request- and response-size
  histograms with their one default bucket (the sizes are the call's own, fixed). No adapter
  recording these metrics can add less.
- ``boto_prom``: ``boto_prom.enable_metrics(client)``, with its defaults (exemplars included).
- ``boto_prom_no_request_id``: the same, reading no request id (so with no exemplar, as in
  multiprocess mode): what the exemplars cost, apart from the rest.
- ``opentelemetry``: ``opentelemetry-instrumentation-botocore`` with an SDK tracer provider and an
  in-memory span exporter. It patches botocore's classes; the other clients get botocore's
  unpatched methods bound on themselves, so all can take turns.

Two measurements, each against the same six clients:

- ``in_process``: a ``before-send`` handler on every client answers with a canned response, so
  a call is botocore's own work (serialise, sign, parse) and the handlers', with no socket.
  Batches of calls are timed in this thread's CPU time, which other processes on a shared
  machine do not inflate: the steadier figure, and the one the targets are read from.
- ``loopback``: a stdlib HTTP server in a child process (its work does not share this process's
  GIL) answers every call; each call is timed on its own, in wall time.

In each round every client makes ``--calls`` calls, the clients in a shuffled order at every
turn. A client's overhead is the median, over all turns, of its time minus the uninstrumented
client's time in the same turn (pairing cancels drift in load and clock speed; the median
ignores the long tail of calls on a shared machine). Targets (issue 9): boto-prom adds at most
1.2 times what the floor adds, and at most a third of what OpenTelemetry adds; (issue 11) with
its default metrics, at most 2% of a loopback call (``boto_prom_fraction_of_call``).

It also counts the lines of boto_prom one call executes (``sys.settrace``, ``line`` events in
frames of files inside the boto_prom package), on calls after the first of their label set, which
binds it: the most of three calls (whether an exemplar is due changes a line). Target: at most
70. ``--lines`` prints only that count (run it with ``PYTHONPATH``
pointing at another checkout to count an older version).

Usage::

    pip install -e '.[bench]'
    python benchmarks/botocore_overhead.py            # human-readable
    python benchmarks/botocore_overhead.py --json     # one JSON object
    python benchmarks/botocore_overhead.py --quick    # a smoke run, a few seconds
    python benchmarks/botocore_overhead.py --lines    # only the line count

It always exits 0 once it has measured; read the ``pass`` booleans.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from types import MethodType
from typing import Any, Dict, List, Optional, Tuple

TARGETS = {"over_floor": 1.2, "over_opentelemetry": 1 / 3, "lines_per_call": 70,
           "fraction_of_loopback_call": 0.02}

_RESPONSE = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
             b'<DescribeRegionsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
             b"<requestId>59dbff89-35bd-4eac-99ed-be587EXAMPLE</requestId><regionInfo><item>"
             b"<regionName>us-west-2</regionName><regionEndpoint>ec2.us-west-2.amazonaws.com"
             b"</regionEndpoint></item></regionInfo></DescribeRegionsResponse>")
_LABELS = ("ec2", "us-west-2", "DescribeRegions")


def serve() -> None:
    """The child process: answer every request with _RESPONSE; print the port, then serve."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else headers and body wait on delayed ACKs (40 ms)

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "text/xml;charset=UTF-8")
            self.send_header("Content-Length", str(len(_RESPONSE)))
            self.send_header("x-amzn-RequestId", "59dbff89-35bd-4eac-99ed-be587EXAMPLE")
            self.end_headers()
            self.wfile.write(_RESPONSE)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    print(httpd.server_port, flush=True)
    httpd.serve_forever()


def _client(url: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "ec2", endpoint_url=url, region_name="us-west-2",
        aws_access_key_id="AKIABENCHBENCHBENCH1", aws_secret_access_key="bench-secret",
        config=Config(retries={"total_max_attempts": 1}),
    )


class Floor:
    """Handlers that make only boto-prom's prometheus_client updates (default metrics), on
    children bound in advance: the least any adapter recording these metrics could add."""

    def __init__(self, registry: Any, request_bytes: int) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        from boto_prom import DEFAULT_DURATION_BUCKETS, DEFAULT_SIZE_BUCKETS
        from boto_prom.metrics import SERVICE_DURATION_BUCKETS

        names = ("aws_service", "aws_region", "action")
        self.requests = Counter("boto_requests", "", names + ("status_code",),
                                registry=registry).labels(*_LABELS, "200")
        self.duration = Histogram("boto_request_duration_seconds", "", names,
                                  buckets=DEFAULT_DURATION_BUCKETS,
                                  registry=registry).labels(*_LABELS)
        self.service_duration = Histogram("boto_service_request_duration_seconds", "",
                                          names[:2], buckets=SERVICE_DURATION_BUCKETS,
                                          registry=registry).labels(*_LABELS[:2])
        self.request_size = Histogram("boto_request_size_bytes", "", names,
                                      buckets=DEFAULT_SIZE_BUCKETS,
                                      registry=registry).labels(*_LABELS)
        self.response_size = Histogram("boto_response_size_bytes", "", names,
                                       buckets=DEFAULT_SIZE_BUCKETS,
                                       registry=registry).labels(*_LABELS)
        self.in_flight = Gauge("boto_requests_in_flight", "", names[:2],
                               registry=registry).labels(*_LABELS[:2])
        self.request_bytes = request_bytes
        self.response_bytes = len(_RESPONSE)

    def install(self, client: Any) -> None:
        events = client.meta.events
        events.register("before-call.*.*", self.before_call)
        events.register_last("before-send", self.before_send)
        events.register_first("response-received.*.*", self.response_received)
        events.register_first("after-call.*.*", self.after_call)
        events.register_first("after-call-error.*.*", self.after_call)

    def before_call(self, context: Any, **kwargs: Any) -> None:
        context["floor.start"] = time.perf_counter()

    def before_send(self, request: Any, **kwargs: Any) -> None:
        self.in_flight.inc()

    def response_received(self, context: Any, **kwargs: Any) -> None:
        pass  # default metrics observe nothing per attempt (a throttled one is counted)

    def after_call(self, context: Any, **kwargs: Any) -> None:
        self.in_flight.dec()
        self.requests.inc()
        duration = time.perf_counter() - context["floor.start"]
        self.duration.observe(duration)
        self.service_duration.observe(duration)
        self.request_size.observe(self.request_bytes)
        self.response_size.observe(self.response_bytes)


def _noop(**kwargs: Any) -> None:
    return None


def _install_noop(client: Any) -> None:
    events = client.meta.events
    events.register("before-call.*.*", _noop)
    events.register_last("before-send", _noop)
    events.register_first("response-received.*.*", _noop)
    events.register_first("after-call.*.*", _noop)
    events.register_first("after-call-error.*.*", _noop)


def _request_bytes(url: str) -> int:
    """The size of the DescribeRegions body botocore sends, as boto-prom measures it."""
    client = _client(url)
    sizes: List[int] = []
    client.meta.events.register_last("before-send",
                                     lambda request, **kw: sizes.append(len(request.body)))
    client.describe_regions()
    return sizes[-1]


def count_lines(url: str, calls: int = 3, global_mode: bool = False) -> Dict[str, Any]:
    """Lines of boto_prom one call executes, after the first call of its label set: the most
    of a few calls (whether an exemplar is due changes a line or two). global_mode: the
    client is recorded by ``enable_metrics()`` with no argument, not enabled on its own."""
    import boto_prom
    from prometheus_client import CollectorRegistry

    package = os.path.dirname(os.path.abspath(boto_prom.__file__)) + os.sep
    client = _client(url)
    boto_prom.enable_metrics(None if global_mode else client, registry=CollectorRegistry(),
                             start_server=False)
    try:
        client.describe_regions()  # the first call of the label set binds it
        counts = _count_calls(client, package, calls)
    finally:
        if global_mode:
            boto_prom.disable_metrics()
    most = max(counts, key=lambda count: count["lines"])
    return dict(most, each_call=[count["lines"] for count in counts], package=package)


def _count_calls(client: Any, package: str, calls: int) -> List[Dict[str, Any]]:
    counts = []
    for _ in range(calls):
        lines: Dict[str, int] = collections.Counter()
        functions: Dict[str, int] = collections.Counter()

        def local(frame: Any, event: str, arg: Any) -> Any:
            if event == "line":
                code = frame.f_code
                lines[f"{os.path.basename(code.co_filename)}:{code.co_name}"] += 1
            return local

        def trace(frame: Any, event: str, arg: Any) -> Any:
            code = frame.f_code
            if code.co_filename.startswith(package):
                functions[f"{os.path.basename(code.co_filename)}:{code.co_name}"] += 1
                return local
            return None

        gc.collect()
        sys.settrace(trace)
        try:
            client.describe_regions()
        finally:
            sys.settrace(None)
        counts.append({"lines": sum(lines.values()), "calls": sum(functions.values()),
                       "lines_by_function": dict(sorted(lines.items()))})
    return counts


class _Raw:
    """The raw body of a canned response, as botocore reads it."""

    def stream(self, **kwargs: Any) -> Any:
        yield _RESPONSE


_HEADERS = {"Content-Type": "text/xml;charset=UTF-8", "Content-Length": str(len(_RESPONSE)),
            "x-amzn-RequestId": "59dbff89-35bd-4eac-99ed-be587EXAMPLE"}


def _canned(request: Any, **kwargs: Any) -> Any:
    """A before-send handler answering every request itself: no socket, no server."""
    from botocore.awsrequest import AWSResponse

    return AWSResponse(request.url, 200, _HEADERS, _Raw())


def _clients(url: str, in_process: bool) -> Tuple[Dict[str, Any], Any]:
    """The five clients, instrumented, and boto-prom's registry; in_process: each client is
    answered by _canned, not by the server."""
    import boto_prom
    from prometheus_client import CollectorRegistry

    clients = {name: _client(url) for name in
               ("uninstrumented", "noop", "floor", "boto_prom", "boto_prom_no_request_id",
                "opentelemetry")}
    if in_process:
        for client in clients.values():
            # Registered before the others' last handlers, which botocore still calls.
            client.meta.events.register("before-send", _canned)
    _install_noop(clients["noop"])
    Floor(CollectorRegistry(), _request_bytes(url)).install(clients["floor"])
    registry = CollectorRegistry()
    boto_prom.enable_metrics(clients["boto_prom"], registry=registry, start_server=False)
    # The same without exemplars, as in multiprocess mode: no request id is ever read. Shows
    # what the exemplars cost apart from the rest.
    boto_prom.enable_metrics(clients["boto_prom_no_request_id"], registry=CollectorRegistry(),
                             start_server=False).recorder.metrics.exemplars = False
    return clients, registry


def _otel() -> Any:
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = BotocoreInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    return instrumentor, exporter


def _unpatch(clients: Dict[str, Any]) -> None:
    """OpenTelemetry patches botocore's classes for every client; give the others botocore's
    own methods back, so that all can take turns call by call."""
    from botocore.client import BaseClient
    from botocore.endpoint import Endpoint

    for name, client in clients.items():
        if name != "opentelemetry":
            client._make_api_call = MethodType(BaseClient._make_api_call.__wrapped__, client)
            client._endpoint.prepare_request = MethodType(
                Endpoint.prepare_request.__wrapped__, client._endpoint)


def measure(url: str, in_process: bool, calls: int, rounds: int,
            max_seconds: float) -> Dict[str, Any]:
    """Time the five clients taking turns; overheads are medians of paired differences."""
    clients, registry = _clients(url, in_process)
    instrumentor, exporter = _otel()
    _unpatch(clients)
    names = list(clients)
    times: Dict[str, List[float]] = {name: [] for name in names}
    made = dict.fromkeys(names, 0)
    shuffle = random.Random(9).shuffle
    # In process a call is all CPU and short: time batches of calls, one batch per turn, in
    # this thread's CPU time, which other processes on a shared machine do not inflate. Over
    # a socket, the wall time of each call.
    clock = time.thread_time if in_process else time.perf_counter
    batch = 10 if in_process else 1
    try:
        for name in names:  # warm up: connections, caches, lazy imports
            for _ in range(max(10, calls)):
                clients[name].describe_regions()
                made[name] += 1
        deadline = time.monotonic() + max_seconds
        done = 0
        while done < rounds and (done < 3 or time.monotonic() < deadline):
            gc.collect()
            for _ in range(calls // batch):
                shuffle(names)
                for name in names:
                    call = clients[name].describe_regions
                    start = clock()
                    for _ in range(batch):
                        call()
                    times[name].append((clock() - start) / batch)
                    made[name] += batch
            done += 1
    finally:
        instrumentor.uninstrument()

    counted = registry.get_sample_value("boto_requests_total", dict(
        zip(("aws_service", "aws_region", "action"), _LABELS), status_code="200"))
    hook_errors = sum(s.value for m in registry.collect() if m.name == "boto_prom_hook_errors"
                      for s in m.samples if s.name.endswith("_total"))
    base = times["uninstrumented"]
    overhead = {name: statistics.median(t - b for t, b in zip(times[name], base))
                for name in names if name != "uninstrumented"}
    ours_over, floor_over, otel = (overhead["boto_prom"], overhead["floor"],
                                   overhead["opentelemetry"])
    over_floor = ours_over / floor_over if floor_over > 0 else None
    no_rid = overhead["boto_prom_no_request_id"]
    over_otel = ours_over / otel if otel > 0 else None
    return {
        "endpoint": ("in process: a before-send handler answers a fixed EC2 DescribeRegions"
                     if in_process else
                     "loopback stdlib HTTP server in a child process, fixed EC2 DescribeRegions"),
        "calls_per_round": calls,
        "rounds": done,
        "median_call_seconds": {name: statistics.median(t) for name, t in times.items()},
        "median_overhead_seconds": overhead,
        "boto_prom_over_floor": over_floor,
        "boto_prom_no_request_id_over_floor": no_rid / floor_over if floor_over > 0 else None,
        "boto_prom_over_opentelemetry": over_otel,
        "boto_prom_fraction_of_call": ours_over / statistics.median(base),
        "floor_fraction_of_call": floor_over / statistics.median(base),
        "checks": {
            "boto_prom_counted_all_its_calls": counted == made["boto_prom"],
            "boto_prom_hook_errors": hook_errors,
            "opentelemetry_traced_only_its_calls": (len(exporter.get_finished_spans())
                                                    == made["opentelemetry"]),
        },
        "pass": {
            "over_floor": over_floor is not None and over_floor <= TARGETS["over_floor"],
            "over_opentelemetry": (over_otel is not None
                                   and over_otel <= TARGETS["over_opentelemetry"]),
        },
    }


def _versions() -> Dict[str, str]:
    from importlib.metadata import version

    out = {"python": platform.python_version()}
    for dist in ("boto-prom", "botocore", "boto3", "prometheus_client",
                 "opentelemetry-sdk", "opentelemetry-instrumentation-botocore"):
        try:
            out[dist] = version(dist)
        except Exception:
            out[dist] = "unknown"
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="a smoke run: a few rounds")
    parser.add_argument("--lines", action="store_true", help="only count the lines per call")
    parser.add_argument("--calls", type=int, default=100, help="calls per client per round")
    parser.add_argument("--rounds", type=int, default=40, help="rounds (at most)")
    parser.add_argument("--max-seconds", type=float, default=30.0,
                        help="per measurement, stop starting rounds after this long "
                             "(at least 3 rounds run)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return 0
    if args.quick:
        args.rounds, args.max_seconds = 3, 3.0
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE,
                              text=True)
    try:
        url = f"http://127.0.0.1:{int(server.stdout.readline())}"
        lines = count_lines(url)
        lines_global = count_lines(url, global_mode=True)
        if args.lines:
            print(json.dumps(dict(lines, global_mode=lines_global), indent=2) if args.json else
                  f"boto_prom lines per call: {lines['lines']} in {lines['calls']} calls, "
                  f"{lines_global['lines']} under global mode ({lines['package']})")
            return 0
        result: Dict[str, Any] = {
            "in_process": measure(url, True, args.calls, args.rounds, args.max_seconds),
            "loopback": measure(url, False, args.calls, args.rounds, args.max_seconds),
        }
    finally:
        server.terminate()
        server.wait(timeout=10)
    result.update(lines_per_call=lines["lines"], calls_per_call=lines["calls"],
                  lines_by_function=lines["lines_by_function"],
                  lines_per_call_global_mode=lines_global["lines"], targets=TARGETS,
                  versions=_versions())
    result["pass"] = dict(result["in_process"]["pass"],
                          lines_per_call=lines["lines"] <= TARGETS["lines_per_call"],
                          fraction_of_loopback_call=(
                              result["loopback"]["boto_prom_fraction_of_call"]
                              <= TARGETS["fraction_of_loopback_call"]))
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return 0
    for kind in ("in_process", "loopback"):
        part = result[kind]
        us = {k: round(v * 1e6, 1) for k, v in part["median_overhead_seconds"].items()}
        call = round(part["median_call_seconds"]["uninstrumented"] * 1e6, 1)
        print(f"{kind}: uninstrumented call {call} us ({part['rounds']} rounds of "
              f"{part['calls_per_round']} calls per client)")
        print(f"  added: no-op handlers {us['noop']} us, floor {us['floor']} us, "
              f"boto-prom {us['boto_prom']} us (without request ids "
              f"{us['boto_prom_no_request_id']} us), OpenTelemetry {us['opentelemetry']} us")
        print(f"  boto-prom / floor: {_ratio(part['boto_prom_over_floor'])} (target <= "
              f"{TARGETS['over_floor']}; without request ids "
              f"{_ratio(part['boto_prom_no_request_id_over_floor'])}); boto-prom / OpenTelemetry: "
              f"{_ratio(part['boto_prom_over_opentelemetry'])} (target <= 0.33)")
        print(f"  boto-prom adds {part['boto_prom_fraction_of_call']:.2%} of the call (floor "
              f"{part['floor_fraction_of_call']:.2%}; target on loopback <= "
              f"{TARGETS['fraction_of_loopback_call']:.0%})")
        print(f"  checks: {part['checks']}")
    print(f"boto_prom lines per call: {lines['lines']} in {lines['calls']} calls "
          f"(target <= {TARGETS['lines_per_call']}); under enable_metrics() with no argument "
          f"{lines_global['lines']} in {lines_global['calls']} calls")
    print(f"pass: {result['pass']} (loopback: {result['loopback']['pass']})")
    return 0


def _ratio(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    sys.exit(main())
