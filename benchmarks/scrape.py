"""Scrape cost of boto-prom's metrics: series and bytes per label set, and scrape time.

    python benchmarks/scrape.py [--json] [--budget SECONDS]

For 10, 100, 1,000 and 10,000 label sets (distinct actions, each with one successful botocore
call recorded: every per-call metric filled in, as real traffic leaves them), default and
detailed metrics (``detailed_metrics=True``), it measures on loopback:

- series and bytes per label set: the text-format lines carrying one label set's ``action``
  (targets, default: at most 24 and 3,000), and the whole scrape divided by the label sets;
- ours: a real HTTP GET of /metrics on boto-prom's MetricsServer (connect, serve, read), versus
  ``prometheus_client.generate_latest`` on the same registry; target ratio <= 1.1;
- per series: ``generate_latest`` through boto-prom's collector (which leaves out ``_created``)
  versus the same metric objects registered directly (``_created`` included), each time
  divided by the series it wrote; target ratio <= 1.1;
- basic auth on versus off, with the credential cache warm (bcrypt at its default cost of 12
  is paid once, by a request before the timing); target ratio <= 1.1;
- multiprocess versus single-process: the same label sets recorded by a child process into a
  PROMETHEUS_MULTIPROC_DIR and served through MultiProcessCollector (reported, no target).

Then, at 1,000 label sets, the scrape beside boto-prom 0.x's (its metric shape, built here with
prometheus_client as 4ac039c built it), and the caller's p99: a loopback botocore call (stdlib
HTTP server in a child process) made in a loop while another process scrapes the 1,000-label-set
registry every second, against the same loop with no scraping; target ratio <= 1.2.

Times are the best of a few runs (as timeit advises: the minimum is the least disturbed),
medians are reported too. The run is bounded: past the budget (default 150 s), measurements
that would not fit are skipped and reported as such. Exit status 0, pass booleans in the
output. Needs bcrypt, PyYAML (the production extra) and boto3.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional

SIZES = (10, 100, 1000, 10_000)
REPEATS = {10: 40, 100: 12, 1000: 3, 10_000: 1}
TARGET = 1.1
TARGET_SERIES, TARGET_BYTES, TARGET_P99 = 24, 3000, 1.2
PASSWORD = "benchmark-password"
LABEL_SET = "Action00000"

_POPULATE = r"""
import sys
from prometheus_client import REGISTRY
from boto_prom.metrics import metrics_for
n = int(sys.argv[1])
detailed = sys.argv[2] == "detailed"
metrics = metrics_for(REGISTRY, max_label_sets=n + 1, detailed=detailed)
for i in range(n):
    # One successful botocore call: its attempt (detailed), then the call.
    bound = metrics.bound(("ec2", "us-west-2", f"Action{i:05d}")).follow_attempts()
    if bound.attempt is not None:
        bound.attempt.observe(0.003 * (i % 50))
    bound.record("200", 0.003 * (i % 50), 120 + i, 4000 + i, None, False, None, 1)
"""


def populate(registry: Any, n: int, detailed: bool = False) -> None:
    """n label sets of per-call metrics, as the benchmark's child process records them."""
    exec(compile(_POPULATE.replace("REGISTRY", "registry").replace(
        "from prometheus_client import registry\n", "").replace("sys.argv[1]", str(n)).replace(
        'sys.argv[2] == "detailed"', str(detailed)), "<populate>", "exec"),
        {"registry": registry})


def populate_0x(registry: Any, n: int) -> None:
    """n label sets in boto-prom 0.x's shape (4ac039c): four histograms, a throttle counter
    at zero and ``_created`` beside every counter and histogram, registered directly."""
    from prometheus_client import Counter, Gauge, Histogram, Info

    labels = ("aws_service", "aws_region", "action")
    durations = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                 10.0, 30.0, 60.0)
    sizes = tuple(float(64 * 4**i) for i in range(13))
    requests = Counter("boto_requests", "", labels + ("status_code",), registry=registry)
    duration = Histogram("boto_request_duration_seconds", "", labels, buckets=durations,
                         registry=registry)
    Counter("boto_request_errors", "", labels + ("error_type",), registry=registry)
    throttled = Counter("boto_throttled_requests", "", labels, registry=registry)
    request_size = Histogram("boto_request_size_bytes", "", labels, buckets=sizes,
                             registry=registry)
    response_size = Histogram("boto_response_size_bytes", "", labels, buckets=sizes,
                              registry=registry)
    attempt = Histogram("boto_attempt_duration_seconds", "", labels, buckets=durations,
                        registry=registry)
    Counter("boto_request_retries", "", labels, registry=registry)
    Counter("boto_retries_exhausted", "", labels + ("error_type",), registry=registry)
    in_flight = Gauge("boto_requests_in_flight", "", labels[:2], registry=registry)
    hook_errors = Counter("boto_prom_hook_errors", "", ("stage",), registry=registry)
    for stage in ("record", "metrics", "action", "duration", "status", "request_size",
                  "response_size"):
        hook_errors.labels(stage)
    Counter("boto_prom_label_sets_folded", "", registry=registry)
    Info("boto_prom_build", "", registry=registry).info({"version": "0.x"})
    in_flight.labels("ec2", "us-west-2")
    for i in range(n):
        values = ("ec2", "us-west-2", f"Action{i:05d}")
        requests.labels(*values, "200").inc()
        duration.labels(*values).observe(0.003 * (i % 50))
        attempt.labels(*values).observe(0.003 * (i % 50))
        request_size.labels(*values).observe(120 + i)
        response_size.labels(*values).observe(4000 + i)
        throttled.labels(*values)


def per_label_set(body: bytes, n: int) -> Dict[str, Any]:
    """Lines and bytes carrying one label set's action; the whole scrape over n."""
    mark = f'action="{LABEL_SET}"'.encode()
    lines = [line for line in body.split(b"\n") if mark in line]
    series = sum(1 for line in body.split(b"\n") if line and not line.startswith(b"#"))
    return {"series": len(lines), "bytes": sum(len(line) + 1 for line in lines),
            "scrape_series": series, "scrape_bytes": len(body),
            "scrape_bytes_per_label_set": len(body) / n}


def timed(fn: Callable[[], Any], repeats: int) -> Dict[str, float]:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return {"best_s": min(runs), "median_s": statistics.median(runs)}


# The scraper is another process, as Prometheus is: a client in this process would fight the
# server for the GIL and bill its own reading time to the server.
_CLIENT = r"""
import http.client, json, os, sys, time, urllib.parse
url, repeats = sys.argv[1], int(sys.argv[2])
parts = urllib.parse.urlsplit(url)
headers = json.loads(os.environ.get("BENCH_HEADERS", "{}"))
runs = []
for _ in range(repeats):
    start = time.perf_counter()
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    connection.request("GET", parts.path, headers=headers)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    runs.append(time.perf_counter() - start)
    if response.status != 200:
        sys.exit(f"GET {url}: HTTP {response.status}")
print(json.dumps({"runs": runs, "bytes": len(body), "lines": body.count(b"\n")}))
"""


def http_gets(url: str, repeats: int, headers: Optional[Dict[str, str]] = None
              ) -> Dict[str, Any]:
    """repeats GETs of url from a client process, each on a fresh connection."""
    env = dict(os.environ, BENCH_HEADERS=json.dumps(headers or {}))
    out = subprocess.run([sys.executable, "-c", _CLIENT, url, str(repeats)], env=env,
                         check=True, capture_output=True, text=True, timeout=600).stdout
    result = json.loads(out)
    runs = result.pop("runs")
    result.update(best_s=min(runs), median_s=statistics.median(runs))
    return result


class Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.skipped: List[str] = []

    def allows(self, what: str, estimate: float) -> bool:
        if time.monotonic() + estimate <= self.deadline:
            return True
        self.skipped.append(f"{what} (needs ~{estimate:.0f} s, budget left "
                            f"{max(0.0, self.deadline - time.monotonic()):.0f} s)")
        return False


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--budget", type=float, default=150.0,
                        help="seconds the measurements may take (default 150)")
    parser.add_argument("--p99-seconds", type=float, default=10.0,
                        help="seconds of calls with and without scraping (default 10 each)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="label-set counts to measure, comma-separated (default all)")
    args = parser.parse_args(argv)

    import bcrypt
    import prometheus_client
    from prometheus_client import CollectorRegistry

    from boto_prom.exposition import MetricsServer, make_multiprocess_app
    from boto_prom.webconfig import load_web_config

    started = time.monotonic()
    budget = Budget(args.budget)
    workdir = tempfile.mkdtemp(prefix="boto-prom-bench-")
    config_path = os.path.join(workdir, "web.yml")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt()).decode()
    with open(config_path, "w") as f:
        f.write(f"basic_auth_users:\n  bench: '{hashed}'\n")
    web_config = load_web_config(config_path)
    import base64

    auth = {"Authorization": "Basic " + base64.b64encode(f"bench:{PASSWORD}".encode()).decode()}

    # The cost of one credential check, cold (bcrypt) and warm (the cache).
    start = time.perf_counter()
    assert web_config.check(auth["Authorization"])
    cold = time.perf_counter() - start
    warm = timed(lambda: web_config.check(auth["Authorization"]), 1000)["best_s"]

    # First guesses of the cost of one label set per scrape, by mode; refined as sizes go up.
    per_set_s = {False: 0.0005, True: 0.002}
    results: List[Dict[str, Any]] = []
    try:
        for size in (int(n) for n in args.sizes.split(",") if n):
            for detailed in (False, True):
                repeats = REPEATS.get(size, 1)
                row: Dict[str, Any] = {"label_sets": size,
                                       "metrics": "detailed" if detailed else "default"}
                results.append(row)
                if not budget.allows(f"{size} label sets, {row['metrics']}",
                                     per_set_s[detailed] * size * (3 * repeats + 1)):
                    continue
                registry = CollectorRegistry()
                populate(registry, size, detailed)
                per_set_s[detailed] = measure_registry(
                    row, registry, size, repeats, budget, MetricsServer, web_config, auth)
                if not detailed and size <= 1000 and budget.allows(
                        f"multiprocess at {size}", per_set_s[False] * size * (repeats + 30)):
                    row["multiprocess"] = multiprocess(size, repeats, workdir,
                                                       row["http_get"]["best_s"],
                                                       make_multiprocess_app, MetricsServer)
        then = {"label_sets": 1000, "metrics": "boto-prom 0.x (4ac039c)"}
        if budget.allows("0.x at 1000", per_set_s[True] * 1000 * 7):
            registry = CollectorRegistry()
            populate_0x(registry, 1000)
            measure_registry(then, registry, 1000, REPEATS[1000], budget, MetricsServer, None,
                             None, direct=False)
        p99 = caller_p99(args.p99_seconds, MetricsServer) if budget.allows(
            "caller p99", 2 * args.p99_seconds + 10) else None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    now = next((r for r in results if r["label_sets"] == 1000 and r["metrics"] == "default"
                and "generate_latest" in r), None)
    defaults = [r for r in results if r["metrics"] == "default" and "series" in r]
    measured = [r for r in results if "ratio" in r]
    per_series = [r for r in results if "per_series_ratio" in r]
    with_auth = [r for r in results if "auth_ratio" in r]
    report = {
        "benchmark": "scrape",
        "python": platform.python_version(),
        "prometheus_client": getattr(prometheus_client, "__version__", None) or _version(),
        "cpus": os.cpu_count(),
        "targets": {"ratio": TARGET, "series_per_label_set": TARGET_SERIES,
                    "bytes_per_label_set": TARGET_BYTES, "caller_p99_ratio": TARGET_P99},
        "credential_check_s": {"bcrypt_cold": cold, "cached": warm},
        "results": results,
        "at_1000_default_vs_0x": {
            "default_generate_latest_s": now["generate_latest"]["best_s"] if now else None,
            "0x_generate_latest_s": then.get("generate_latest", {}).get("best_s"),
            "default_http_get_s": now["http_get"]["best_s"] if now else None,
            "0x_http_get_s": then.get("http_get", {}).get("best_s"),
            "0x": then,
        },
        "caller_p99": p99,
        "pass": {
            "series_per_label_set": bool(defaults) and all(
                r["series"] <= TARGET_SERIES for r in defaults),
            "bytes_per_label_set": bool(defaults) and all(
                r["bytes"] <= TARGET_BYTES for r in defaults),
            "ours_vs_generate_latest": bool(measured) and all(r["ratio_pass"] for r in measured),
            "per_series_vs_direct": bool(per_series) and all(
                r["per_series_ratio"] <= TARGET for r in per_series),
            "basic_auth_on_vs_off": bool(with_auth) and all(r["auth_pass"] for r in with_auth),
            "caller_p99": p99 is not None and p99["ratio"] <= TARGET_P99,
        },
        "skipped": budget.skipped,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_table(report)
    return 0


def measure_registry(row: Dict[str, Any], registry: Any, size: int, repeats: int,
                     budget: Budget, MetricsServer: Any, web_config: Any,
                     auth: Optional[Dict[str, str]], direct: bool = True) -> float:
    """Fill row with one registry's figures; returns the seconds per label set per scrape."""
    from prometheus_client import generate_latest

    body = generate_latest(registry)
    row.update(per_label_set(body, size))
    plain = MetricsServer("127.0.0.1", 0, registry)
    secured = (MetricsServer("127.0.0.1", 0, registry, web_config=web_config)
               if web_config is not None else None)
    try:
        gen = timed(lambda: generate_latest(registry), repeats)
        ours = http_gets(plain.url, repeats)
        del ours["bytes"], ours["lines"]
        row["generate_latest"] = gen
        row["http_get"] = ours
        row["ratio"] = ours["best_s"] / gen["best_s"]
        row["ratio_pass"] = row["ratio"] <= TARGET
        per_set_s = gen["best_s"] / size
        if direct:
            row.update(per_series_vs_direct(registry, repeats, gen["best_s"],
                                            row["scrape_series"]))
        if secured is not None and budget.allows(f"basic auth at {size}",
                                                 per_set_s * size * repeats):
            # Warm the credential cache with a cheap page: bcrypt is paid here, untimed.
            http_gets(secured.url.replace("/metrics", "/healthz"), 1, auth)
            with_auth = http_gets(secured.url, repeats, auth)
            del with_auth["bytes"], with_auth["lines"]
            row["http_get_basic_auth"] = with_auth
            row["auth_ratio"] = with_auth["best_s"] / ours["best_s"]
            row["auth_pass"] = row["auth_ratio"] <= TARGET
    finally:
        plain.shutdown()
        if secured is not None:
            secured.shutdown()
    return per_set_s


def per_series_vs_direct(registry: Any, repeats: int, ours_s: float,
                         ours_series: int) -> Dict[str, Any]:
    """generate_latest per series through our collector (no _created) against the same metric
    objects registered directly in a registry of their own (_created included)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from boto_prom.metrics import WithoutCreated

    direct = CollectorRegistry()
    for collector in list(registry._collector_to_names):  # what the registry holds
        if isinstance(collector, WithoutCreated):
            for metric in collector._metrics:
                direct.register(metric)
    body = generate_latest(direct)
    series = sum(1 for line in body.split(b"\n") if line and not line.startswith(b"#"))
    gen = timed(lambda: generate_latest(direct), repeats)
    ours, theirs = ours_s / ours_series, gen["best_s"] / series
    return {"direct_generate_latest": gen, "direct_series": series,
            "per_series_s": ours, "direct_per_series_s": theirs,
            "per_series_ratio": ours / theirs}


_SCRAPER = r"""
import sys, time, urllib.request
url, seconds = sys.argv[1], float(sys.argv[2])
end = time.monotonic() + seconds
while time.monotonic() < end:
    started = time.monotonic()
    urllib.request.urlopen(url, timeout=60).read()
    time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
"""


def caller_p99(seconds: float, MetricsServer: Any) -> Dict[str, Any]:
    """p99 of a loopback botocore call, with a 1,000-label-set registry scraped every second
    by another process, against no scraping; the same client and registry in both."""
    from prometheus_client import CollectorRegistry

    import boto_prom
    from botocore_overhead import _client

    registry = CollectorRegistry()
    populate(registry, 1000)
    server = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__),
                                                            "botocore_overhead.py"), "--serve"],
                              stdout=subprocess.PIPE, text=True)
    metrics = MetricsServer("127.0.0.1", 0, registry)
    try:
        client = _client(f"http://127.0.0.1:{int(server.stdout.readline())}")
        boto_prom.enable_metrics(client, registry=registry, start_server=False)
        for _ in range(20):
            client.describe_regions()

        def calls(times: List[float], window: float) -> None:
            end = time.monotonic() + window
            while time.monotonic() < end:
                start = time.perf_counter()
                client.describe_regions()
                times.append(time.perf_counter() - start)

        # Quiet and scraped windows take turns, so that a change in the machine's load
        # weighs on both alike.
        quiet: List[float] = []
        scraped: List[float] = []
        window = 3.0
        for _ in range(max(1, round(seconds / window))):
            calls(quiet, window)
            scraper = subprocess.Popen([sys.executable, "-c", _SCRAPER, metrics.url,
                                        str(window + 2)])
            try:
                time.sleep(0.5)  # the scraper started, its first scrape under way
                calls(scraped, window)
            finally:
                scraper.terminate()
                scraper.wait(timeout=30)
    finally:
        metrics.shutdown()
        server.terminate()
        server.wait(timeout=10)

    def p99(times: List[float]) -> float:
        return sorted(times)[int(len(times) * 0.99)]

    return {"calls_quiet": len(quiet), "calls_scraped": len(scraped),
            "p99_quiet_s": p99(quiet), "p99_scraped_s": p99(scraped),
            "median_quiet_s": statistics.median(quiet),
            "median_scraped_s": statistics.median(scraped),
            "ratio": p99(scraped) / p99(quiet)}


def multiprocess(size: int, repeats: int, workdir: str, single_s: float,
                 make_multiprocess_app: Any, MetricsServer: Any) -> Dict[str, Any]:
    """The same label sets recorded by a child into a multiprocess directory, then served."""
    from prometheus_client import CollectorRegistry

    directory = os.path.join(workdir, f"mp-{size}")
    os.mkdir(directory)
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=directory)
    subprocess.run([sys.executable, "-c", _POPULATE, str(size), "default"], env=env, check=True,
                   timeout=120)
    server = MetricsServer("127.0.0.1", 0, CollectorRegistry(),
                           app=make_multiprocess_app(directory))
    try:
        served = http_gets(server.url, repeats)
    finally:
        server.shutdown()
    size = served.pop("bytes")
    del served["lines"]
    return {"http_get": served, "response_bytes": size,
            "vs_single_process": served["best_s"] / single_s}


def _version() -> Optional[str]:
    try:
        from importlib.metadata import version

        return version("prometheus_client")
    except Exception:
        return None


def _print_table(report: Dict[str, Any]) -> None:
    print(f"boto-prom scrape benchmark (Python {report['python']}, prometheus_client "
          f"{report['prometheus_client']}, {report['cpus']} CPUs); best-of-N seconds")
    print(f"{'sets':>6} {'metrics':>8} {'series':>6} {'bytes':>6} {'scrape B':>10} "
          f"{'generate':>9} {'ours':>9} {'ratio':>6} {'/series':>7} {'auth':>6} {'mp':>9}")
    for r in report["results"]:
        def s(key: str, sub: str = "best_s", row: Dict[str, Any] = r) -> str:
            value = row.get(key)
            return f"{value[sub]:9.4f}" if isinstance(value, dict) else f"{'-':>9}"

        mp = r.get("multiprocess") or {}
        print(f"{r['label_sets']:>6} {r['metrics']:>8} {r.get('series', '-'):>6} "
              f"{r.get('bytes', '-'):>6} {r.get('scrape_bytes', '-'):>10} "
              f"{s('generate_latest')} {s('http_get')} {r.get('ratio', float('nan')):6.2f} "
              f"{r.get('per_series_ratio', float('nan')):7.2f} "
              f"{r.get('auth_ratio', float('nan')):6.2f} {s('http_get', row=mp)}")
    then = report["at_1000_default_vs_0x"]
    print(f"1,000 label sets: generate_latest {_s(then['default_generate_latest_s'])} now, "
          f"{_s(then['0x_generate_latest_s'])} in 0.x ({then['0x'].get('series', '-')} series, "
          f"{then['0x'].get('bytes', '-')} bytes per label set); HTTP GET "
          f"{_s(then['default_http_get_s'])} now, {_s(then['0x_http_get_s'])} in 0.x")
    p99 = report["caller_p99"]
    if p99:
        print(f"caller p99 (loopback botocore call): {p99['p99_quiet_s'] * 1000:.2f} ms quiet, "
              f"{p99['p99_scraped_s'] * 1000:.2f} ms with a 1,000-label-set scrape every "
              f"second: ratio {p99['ratio']:.2f} (target <= {TARGET_P99})")
    check = report["credential_check_s"]
    print(f"credential check: bcrypt {check['bcrypt_cold'] * 1000:.0f} ms cold, "
          f"{check['cached'] * 1e6:.1f} us cached")
    print(f"pass: {report['pass']}; skipped: {report['skipped'] or 'none'}; "
          f"{report['elapsed_s']} s")


def _s(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f} s"


if __name__ == "__main__":
    sys.exit(main())
