"""The demo's parts: the embedded AWS server, the workload, and the progress line it prints."""

from __future__ import annotations

import io
import re
import threading

import pytest
from prometheus_client import CollectorRegistry

from boto_prom.demo import histogram_quantile, progress_line, run_demo
from tests.conftest import HAS_BOTO2


def test_histogram_quantile_interpolates_as_prometheus_does():
    """The quantile of cumulative buckets interpolates linearly inside the bucket it falls in."""
    buckets = {0.1: 50.0, 0.2: 100.0, float("inf"): 100.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None
    assert histogram_quantile(0.99, {0.1: 0.0, float("inf"): 10.0}) == pytest.approx(0.1)


def test_progress_line_of_an_empty_registry():
    """With nothing recorded the progress line says zero requests and no percentiles."""
    line = progress_line(CollectorRegistry(), 1.0)
    assert line == "requests 0 (0.0/s)  errors 0 (0.0%)  p50 -  p99 -"


@pytest.mark.skipif(not HAS_BOTO2, reason="boto 2 needs Python 3.11 or older")
def test_run_demo_records_both_sdks_and_stops_when_told():
    """run_demo drives boto 2 and boto3 calls into the registry given and ends when stop is
    set, with a final line whose totals match the registry's."""
    registry = CollectorRegistry()
    out = io.StringIO()
    stop = threading.Event()
    timer = threading.Timer(3.0, stop.set)
    timer.start()
    try:
        steps = run_demo(port=0, registry=registry, rate=0, out=out, stop=stop)
    finally:
        timer.cancel()
    assert steps > 0
    final = re.search(r"done: requests (\d+) ", out.getvalue())
    assert final, out.getvalue()
    total = sum(s.value for f in registry.collect() if f.name == "boto_requests"
                for s in f.samples if s.name.endswith("_total"))
    assert int(final.group(1)) == total > 0
    services = {s.labels["aws_service"] for f in registry.collect() if f.name == "boto_requests"
                for s in f.samples}
    assert {"ec2", "s3", "dynamodb", "iam", "sqs"} <= services
