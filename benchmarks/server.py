"""Scrape latency and memory of boto-prom's metrics server under idle and abusive clients,
against prometheus_client's own ``start_http_server`` run the same way (the server users would
otherwise pick).

Each server runs in a process of its own (``tests/serve_child.py``, 20 label sets: a 130 kB
scrape), the clients in another (``tests/load_clients.py``), and this process scrapes: a new
connection per scrape, 2 s timeout, ten a second. Each server is run plain, then with TLS and
basic auth (a bcrypt hash of cost 12; prometheus_client has no basic auth, so it gets TLS only
and its "wrong password" clients are simply served). Rows:

- ``idle 0``, ``idle 100``, ``idle 1000``: that many connections that connect (and shake
  hands, over TLS) and say nothing; scrape latency p50/p99 and failures, and the server's RSS
  per idle connection;
- ``issue 12 load``: 1,000 idle, 200 slowloris, 16 stalled TLS handshakes and 32 clients
  asking for /metrics in a loop with a wrong password; then the RSS at the load's peak and
  ten seconds after the clients left, against the RSS before it.

    python benchmarks/server.py [--json] [--quick]

Loopback only; about four minutes (``--quick``: a third of the scrapes).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any, Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SERVE = os.path.join(ROOT, "tests", "serve_child.py")
LOAD = os.path.join(ROOT, "tests", "load_clients.py")
USER, PASSWORD = "prometheus", "right-password"
ISSUE_12 = ["--idle", "1000", "--slowloris", "200", "--stalled-tls", "16", "--wrong-password", "32"]
ROWS = [("idle 0", []), ("idle 100", ["--idle", "100"]), ("idle 1000", ["--idle", "1000"]),
        ("issue 12 load", ISSUE_12)]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=ROOT)


class Secured:
    """A web config with TLS and basic auth, and what a scraper needs to pass it."""

    def __init__(self, directory: str) -> None:
        import bcrypt

        from tests.pki import make_pki

        pki = make_pki(directory)
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt()).decode()
        self.web_config = os.path.join(directory, "web.yml")
        with open(self.web_config, "w") as f:
            f.write(f"tls_server_config:\n  cert_file: {pki['server_cert']}\n"
                    f"  key_file: {pki['server_key']}\n"
                    f"basic_auth_users:\n  {USER}: '{hashed}'\n")
        self.ca = pki["ca"]
        self.context = ssl.create_default_context(cafile=self.ca)
        self.headers = {"Authorization": "Basic " + base64.b64encode(
            f"{USER}:{PASSWORD}".encode()).decode()}


def scrapes(url: str, count: int, secured: Optional[Secured], pid: int) -> Dict[str, Any]:
    """count scrapes, ten a second: p50, p99, slowest, failures (errors or >= 2 s), and the
    server's highest RSS seen meanwhile."""
    times: List[float] = []
    failed = 0
    peak = 0.0
    for _ in range(count):
        started = time.monotonic()
        try:
            request = urllib.request.Request(url, headers=secured.headers if secured else {})
            with urllib.request.urlopen(request, timeout=2,
                                        context=secured.context if secured else None) as answer:
                answer.read()
            times.append(time.monotonic() - started)
        except Exception:
            failed += 1
        peak = max(peak, rss_mb(pid))
        time.sleep(max(0.0, 0.1 - (time.monotonic() - started)))
    times.sort()
    pick = (lambda q: round(times[min(len(times) - 1, int(q * len(times)))] * 1000, 1)
            if times else None)
    return {"p50_ms": pick(0.5), "p99_ms": pick(0.99),
            "max_ms": round(times[-1] * 1000, 1) if times else None, "failed": failed,
            "peak": peak}


def bench(kind: str, count: int, secured: Optional[Secured]) -> List[Dict[str, Any]]:
    server = child(SERVE, kind, *(["--web-config", secured.web_config] if secured else []))
    rows = []
    try:
        port = int(server.stdout.readline())
        url = f"{'https' if secured else 'http'}://127.0.0.1:{port}/metrics"
        scrapes(url, 5, secured, server.pid)  # warm up
        base = rss_mb(server.pid)
        for name, args in ROWS:
            load = None
            before = rss_mb(server.pid)
            if args:
                tls = ["--tls", secured.ca, "--user", USER] if secured else []
                load = child(LOAD, str(port), *args, *tls, "--seconds", "180")
                ready = []  # read in a thread: a load that cannot connect must not hang this
                reader = threading.Thread(target=lambda: ready.append(load.stdout.readline()),
                                          daemon=True)
                reader.start()
                reader.join(90)
                if not (ready and ready[0].strip() == "ready"):
                    # The server could not take every client's connection in 90 s; its
                    # scrapes are measured all the same.
                    name += " (not all connected)"
                time.sleep(1)
            held = rss_mb(server.pid)
            seen = scrapes(url, count, secured, server.pid)
            peak = seen.pop("peak")
            row = {"server": kind, "tls_and_auth": secured is not None, "clients": name,
                   **seen, "rss_mb": round(held, 1)}
            idle = int(args[1]) if args and args[0] == "--idle" else 0
            if idle and name.startswith("idle"):
                row["kb_per_idle_connection"] = round((held - base) * 1024 / idle, 1)
            if load is not None:
                load.stdin.close()
                load.wait(timeout=60)
            if args is ISSUE_12:
                time.sleep(10)  # the server gives memory back once a crowd has gone
                row.update(rss_before_mb=round(before, 1), rss_peak_mb=round(peak, 1),
                           rss_after_mb=round(rss_mb(server.pid), 1))
            else:
                time.sleep(1)
            rows.append(row)
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
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as directory:
        secured = Secured(directory)
        for kind in ("boto-prom", "prometheus_client"):
            rows += bench(kind, count, None) + bench(kind, count, secured)
    if args.json:
        print(json.dumps({"scrapes_per_row": count, "rows": rows}, indent=2))
        return
    print(f"{count} scrapes per row, a new connection each, 2 s timeout; prometheus_client "
          "has TLS but no basic auth\n")
    print(f"{'server':18} {'TLS+auth':8} {'clients':33} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8} {'failed':>6} {'RSS MB':>7} {'KB/idle':>8}  RSS before/peak/after")
    for row in rows:
        memory = ""
        if "rss_after_mb" in row:
            memory = f"  {row['rss_before_mb']} / {row['rss_peak_mb']} / {row['rss_after_mb']}"
        print(f"{row['server']:18} {'yes' if row['tls_and_auth'] else 'no':8} "
              f"{row['clients']:33} {row['p50_ms']!s:>8} {row['p99_ms']!s:>8} "
              f"{row['max_ms']!s:>8} {row['failed']:>6} {row['rss_mb']:>7} "
              f"{row.get('kb_per_idle_connection', ''):>8}{memory}")


if __name__ == "__main__":
    main()
