"""A metrics server in a process of its own, so a test or benchmark can load it and read its
memory: prints the port, then serves until stdin closes.

    python tests/serve_child.py boto-prom|prometheus_client [--web-config FILE] [--label-sets N]

prometheus_client's ``start_http_server`` takes the web config's certificate and key only: it
has no basic auth.
"""

from __future__ import annotations

import argparse
import os
import sys

from prometheus_client import CollectorRegistry


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["boto-prom", "prometheus_client"])
    parser.add_argument("--web-config")
    parser.add_argument("--label-sets", type=int, default=20)
    args = parser.parse_args()
    registry = CollectorRegistry()
    from boto_prom.metrics import metrics_for

    metrics = metrics_for(registry, max_label_sets=args.label_sets + 1)
    for i in range(args.label_sets):  # a scrape the size of a small program's
        metrics.bound(("ec2", "us-west-2", f"Action{i:05d}")).record(
            "200", 0.003 * (i % 50), 120 + i, 4000 + i, None, False, None)
    if args.kind == "boto-prom":
        from boto_prom.exposition import MetricsServer
        from boto_prom.webconfig import load_web_config

        config = load_web_config(args.web_config) if args.web_config else None
        port = MetricsServer("127.0.0.1", 0, registry, web_config=config).port
    else:
        import yaml
        from prometheus_client import start_http_server

        tls = {}
        if args.web_config:
            with open(args.web_config) as f:
                files = yaml.safe_load(f)["tls_server_config"]
            here = os.path.dirname(os.path.abspath(args.web_config))  # as the config's paths
            tls = {"certfile": os.path.join(here, files["cert_file"]),
                   "keyfile": os.path.join(here, files["key_file"])}
        server, _ = start_http_server(0, "127.0.0.1", registry, **tls)
        port = server.server_port
    print(port, flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
