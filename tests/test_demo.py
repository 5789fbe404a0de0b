"""The demo's parts: the embedded AWS server, the workload, and the progress line it prints."""

from __future__ import annotations

import io
import re
import sys
import threading

import pytest
from prometheus_client import CollectorRegistry

from boto_prom.demo import (aiobotocore_imports, histogram_quantile, progress_line, run_demo,
                            sdks_line)
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


def test_first_line_names_the_sdks_driven():
    """The first line says which SDKs make the calls, and why boto 2 does not."""
    assert sdks_line(True, False) == "boto 2 and boto3 calls"
    assert sdks_line(True, True) == "boto 2, boto3 and aiobotocore calls"
    assert sdks_line(False, False) == "boto3 calls only (boto 2 does not import here)"
    assert sdks_line(False, True) == ("boto3 and aiobotocore calls only (boto 2 does not import "
                                      "here)")


class StopAtProgress(io.StringIO):
    """The demo's output, which sets stop at the first progress line (a second into the
    workload, however long the set-up took)."""

    def __init__(self, stop):
        super().__init__()
        self._stop = stop

    def write(self, text):
        if text.startswith("requests "):
            self._stop.set()
        return super().write(text)


@pytest.mark.parametrize("boto2", [
    pytest.param(True, marks=pytest.mark.skipif(not HAS_BOTO2, reason="boto 2 needs Python 3.11 "
                                                "or older")),
    False,
], ids=["boto2-and-boto3", "boto3-alone"])
def test_run_demo_records_five_services_and_stops_when_told(boto2, monkeypatch):
    """run_demo drives calls to five services into the registry given (through boto 2 and
    boto3, or boto3 alone where boto 2 does not import), says which in its first line, and ends
    when stop is set, with a final line whose totals match the registry's."""
    if not boto2:
        monkeypatch.setitem(sys.modules, "boto", None)  # import boto fails, as on Python 3.12
    registry = CollectorRegistry()
    stop = threading.Event()
    out = StopAtProgress(stop)
    steps = run_demo(port=0, registry=registry, rate=0, out=out, stop=stop)
    assert steps > 0
    first = out.getvalue().splitlines()[0]
    assert first.startswith(f"boto-prom demo: {sdks_line(boto2, aiobotocore_imports())} to moto ")
    final = re.search(r"done: requests (\d+) .*errors (\d+) ", out.getvalue())
    assert final, out.getvalue()
    samples = [s for f in registry.collect() if f.name == "boto_requests" for s in f.samples
               if s.name.endswith("_total")]
    errors = sum(s.value for f in registry.collect() if f.name == "boto_request_errors"
                 for s in f.samples if s.name.endswith("_total"))
    assert int(final.group(1)) == sum(s.value for s in samples) > int(final.group(2)) == errors > 0
    assert {s.labels["aws_service"] for s in samples} == {"ec2", "s3", "dynamodb", "iam", "sqs"}
