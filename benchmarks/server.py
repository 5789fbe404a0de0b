"""Scrape latency and memory of boto-prom's metrics server under idle and abusive clients,
against prometheus_client's own ``start_http_server`` run the same way (the server users would
otherwise pick).

Each server runs in a process of its own (``tests/serve_child.py``, 20 label sets: a 130 kB
scrape), the clients in another (``tests/load_clients.py``), and this process scrapes: a new
connection per scrape, 2 s timeout, ten a second. Rows:

- ``idle 0``, ``idle 100``, ``idle 1000``: that many connections that connect and say nothing;
  scrape latency p50/p99 and failures, and the server's RSS per idle connection;
- ``issue 12 load``: 1,000 idle, 200 slowloris, 16 stalled TLS handshakes and 32 clients
  asking for /metrics in a loop (with a wrong password, which a server without basic auth
  does not check).

    python benchmarks/server.py [--json] [--quick]

Loopback only; about two minutes (``--quick``: a third of the scrapes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from typing import Any, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVE = os.path.join(ROOT, "tests", "serve_child.py")
LOAD = os.path.join(ROOT, "tests", "load_clients.py")
ROWS = [("idle 0", []), ("idle 100", ["--idle", "100"]), ("idle 1000", ["--idle", "1000"]),
        ("issue 12 load", ["--idle", "1000", "--slowloris", "200", "--stalled-tls", "16",
                           "--wrong-password", "32"])]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)


def scrapes(url: str, count: int) -> Dict[str, Any]:
    """count scrapes, ten a second: p50, p99, slowest and failures (errors or >= 2 s)."""
    times: List[float] = []
    failed = 0
    for _ in range(count):
        started = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                response.read()
            times.append(time.monotonic() - started)
        except Exception:
            failed += 1
        time.sleep(max(0.0, 0.1 - (time.monotonic() - started)))
    times.sort()
    pick = (lambda q: round(times[min(len(times) - 1, int(q * len(times)))] * 1000, 1)
            if times else None)
    return {"p50_ms": pick(0.5), "p99_ms": pick(0.99),
            "max_ms": round(times[-1] * 1000, 1) if times else None, "failed": failed}


def bench(kind: str, count: int) -> List[Dict[str, Any]]:
    server = child(SERVE, kind)
    rows = []
    try:
        port = int(server.stdout.readline())
        url = f"http://127.0.0.1:{port}/metrics"
        scrapes(url, 5)  # warm up
        base = rss_mb(server.pid)
        for name, args in ROWS:
            load = None
            if args:
                load = child(LOAD, str(port), *args, "--seconds", "120")
                assert load.stdout.readline().strip() == "ready", f"{name}: load not ready"
                time.sleep(1)
            held = rss_mb(server.pid)
            row = {"server": kind, "clients": name, **scrapes(url, count),
                   "rss_mb": round(rss_mb(server.pid), 1)}
            idle = int(args[1]) if args and args[0] == "--idle" else 0
            if idle and name.startswith("idle"):
                row["kb_per_idle_connection"] = round((held - base) * 1024 / idle, 1)
            rows.append(row)
            if load is not None:
                load.stdin.close()
                load.wait(timeout=60)
                time.sleep(1)
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count = 30 if args.quick else 100
    rows = bench("boto-prom", count) + bench("prometheus_client", count)
    if args.json:
        print(json.dumps({"scrapes_per_row": count, "rows": rows}, indent=2))
        return
    print(f"{count} scrapes per row, a new connection each, 2 s timeout\n")
    print(f"{'server':18} {'clients':14} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'failed':>6} {'RSS MB':>7} {'KB/idle':>8}")
    for row in rows:
        print(f"{row['server']:18} {row['clients']:14} {row['p50_ms']!s:>8} "
              f"{row['p99_ms']!s:>8} {row['max_ms']!s:>8} {row['failed']:>6} "
              f"{row['rss_mb']:>7} {row.get('kb_per_idle_connection', ''):>8}")


if __name__ == "__main__":
    main()
