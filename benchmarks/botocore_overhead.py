"""How much time boto-prom adds to a botocore call, beside OpenTelemetry's botocore instrumentation.

One loopback endpoint (a stdlib HTTP server in a child process, so its work does not share this
process's GIL) answers every call with the same small EC2 ``DescribeRegions`` response. Three
boto3 clients call it: one uninstrumented, one with ``boto_prom.enable_metrics(client)``, and
one under ``opentelemetry-instrumentation-botocore`` with an SDK tracer provider and an
in-memory span exporter. OpenTelemetry's instrumentation patches botocore's classes; the other two
clients get botocore's unpatched methods bound on themselves, so all three can take turns.

Each round makes ``--calls`` calls with each client, the three in a shuffled order for every
call, and times every call on its own. A client's per-call time is the median of all its calls
(loopback calls on a shared machine have long-tailed outliers: the median ignores them, a mean
would not); its overhead is that median minus the uninstrumented client's. Targets (issue 5):
boto-prom adds at most half of what OpenTelemetry adds, and at most 2% of the uninstrumented
call. Runs stop after ``--rounds`` rounds or ``--max-seconds``, whichever comes first (three
rounds at least); the defaults take about half a minute.

Usage::

    pip install -e '.[bench]'
    python benchmarks/botocore_overhead.py --json

It always exits 0 once it has measured; read the ``pass`` booleans.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import statistics
import subprocess
import sys
import time
from types import MethodType
from typing import Any, Dict, List

_RESPONSE = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
             b'<DescribeRegionsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
             b"<requestId>59dbff89-35bd-4eac-99ed-be587EXAMPLE</requestId><regionInfo><item>"
             b"<regionName>us-west-2</regionName><regionEndpoint>ec2.us-west-2.amazonaws.com"
             b"</regionEndpoint></item></regionInfo></DescribeRegionsResponse>")


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


def measure(url: str, calls: int, rounds: int, max_seconds: float) -> Dict[str, Any]:
    import boto_prom
    from botocore.client import BaseClient
    from botocore.endpoint import Endpoint
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from prometheus_client import CollectorRegistry

    plain, ours, otel = _client(url), _client(url), _client(url)
    registry = CollectorRegistry()
    boto_prom.enable_metrics(ours, registry=registry, start_server=False)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = BotocoreInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    # OpenTelemetry patches botocore's classes for every client; give the other two clients
    # botocore's own methods back, so that the three can take turns call by call.
    for client in (plain, ours):
        client._make_api_call = MethodType(BaseClient._make_api_call.__wrapped__, client)
        client._endpoint.prepare_request = MethodType(Endpoint.prepare_request.__wrapped__,
                                                      client._endpoint)

    clients = {"uninstrumented": plain, "boto_prom": ours, "opentelemetry": otel}
    names = list(clients)
    times: Dict[str, List[float]] = {name: [] for name in names}
    made = dict.fromkeys(names, 0)
    shuffle = random.Random(5).shuffle
    clock = time.perf_counter
    try:
        for name in names:  # warm up: connections, caches, lazy imports
            for _ in range(max(10, calls)):
                clients[name].describe_regions()
                made[name] += 1
        deadline = time.monotonic() + max_seconds
        done = 0
        while done < rounds and (done < 3 or time.monotonic() < deadline):
            gc.collect()
            for _ in range(calls):
                shuffle(names)
                for name in names:
                    call = clients[name].describe_regions
                    start = clock()
                    call()
                    times[name].append(clock() - start)
                    made[name] += 1
            done += 1
    finally:
        instrumentor.uninstrument()

    # Every client was instrumented as claimed, and only that one.
    counted = registry.get_sample_value("boto_requests_total", {
        "aws_service": "ec2", "aws_region": "us-west-2", "action": "DescribeRegions",
        "status_code": "200"})
    spans = len(exporter.get_finished_spans())
    median_call = {name: statistics.median(values) for name, values in times.items()}
    overhead = {name: median_call[name] - median_call["uninstrumented"]
                for name in ("boto_prom", "opentelemetry")}
    ours_over, otel_over = overhead["boto_prom"], overhead["opentelemetry"]
    return {
        "endpoint": "loopback stdlib HTTP server in a child process, fixed EC2 DescribeRegions",
        "calls_per_round": calls,
        "rounds": done,
        "median_call_seconds": median_call,
        "median_overhead_seconds": overhead,
        "boto_prom_over_opentelemetry": ours_over / otel_over if otel_over > 0 else None,
        "boto_prom_fraction_of_call": ours_over / median_call["uninstrumented"],
        "checks": {
            "boto_prom_counted_all_its_calls": counted == made["boto_prom"],
            "opentelemetry_traced_only_its_calls": spans == made["opentelemetry"],
        },
        "pass": {
            "at_most_half_of_opentelemetry": otel_over > 0 and ours_over <= otel_over / 2,
            "at_most_2_percent_of_call": ours_over <= 0.02 * median_call["uninstrumented"],
        },
        "versions": _versions(),
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


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--calls", type=int, default=100, help="calls per client per round")
    parser.add_argument("--rounds", type=int, default=30, help="rounds (at most)")
    parser.add_argument("--max-seconds", type=float, default=90.0,
                        help="stop starting rounds after this long (at least 3 rounds run)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return 0
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE,
                              text=True)
    try:
        port = int(server.stdout.readline())
        result = measure(f"http://127.0.0.1:{port}", args.calls, args.rounds, args.max_seconds)
    finally:
        server.terminate()
        server.wait(timeout=10)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        us = {k: round(v * 1e6, 1) for k, v in result["median_overhead_seconds"].items()}
        call = round(result["median_call_seconds"]["uninstrumented"] * 1e6, 1)
        print(f"uninstrumented call: {call} us; overhead: boto-prom {us['boto_prom']} us, "
              f"OpenTelemetry {us['opentelemetry']} us; pass: {result['pass']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
