"""The recorder: filters decided once per label set, one bound handed out, CSV rows on top."""

from __future__ import annotations

import csv
import time

import pytest

import boto_prom
from boto_prom.csvlog import COLUMNS, CsvSink, csv_metrics_for, csv_writer_for
from boto_prom.metrics import OTHER, Bound, metrics_for
from boto_prom.record import RequestRecord
from boto_prom.recorder import Recorder
from boto_prom.settings import csv_settings
from tests.conftest import HAS_BOTO2
from tests.fakes import KeptRecords

needs_boto2 = pytest.mark.skipif(not HAS_BOTO2, reason="boto 2 needs Python 3.11 or older")

EC2 = ("ec2", "us-west-2", "DescribeVolumes")
EC2_LABELS = dict(aws_service="ec2", aws_region="us-west-2", action="DescribeVolumes")


class _Broken:
    """A sink whose every record fails."""

    def record(self, rec):
        raise RuntimeError("the sink is broken")


def label_sets(families, name):
    """The distinct (aws_service, aws_region, action) label sets of one family."""
    return {(s.labels["aws_service"], s.labels["aws_region"], s.labels["action"])
            for f in families if f.name == name for s in f.samples}


# --- bind -------------------------------------------------------------------------------------

def test_bind_returns_none_for_filtered_calls_and_the_same_bound_for_the_same_labels(registry):
    """Filtered-out services and ignored actions bind to None; a kept label set to one Bound."""
    recorder = Recorder(metrics_for(registry), allowed_services=frozenset({"ec2", "s3"}),
                        ignored_actions=frozenset({"HeadObject"}))
    assert recorder.bind("boto2", "iam", "us-east-1", "ListUsers") is None
    assert recorder.bind("botocore", "s3", "us-west-2", "HeadObject") is None
    bound = recorder.bind("boto2", *EC2)
    assert isinstance(bound, Bound) and bound.labels == EC2
    assert recorder.bind("boto2", *EC2) is bound
    assert recorder.bind("boto2", "s3", "us-west-2", "GetObject") is not bound
    assert label_sets(registry.collect(), "boto_requests") == set(), "binding counts nothing"


def test_without_filters_every_call_binds(registry):
    """A recorder with no allowed_services and no ignored_actions binds every label set."""
    recorder = Recorder(metrics_for(registry))
    assert recorder.bind("boto2", "iam", "us-east-1", "ListUsers") is not None
    assert recorder.bind("boto2", "s3", "us-west-2", "HeadObject") is not None


def test_only_a_botocore_bound_follows_attempts(registry):
    """A botocore bound holds the attempt (detailed metrics) and in-flight children; a boto 2
    one has none."""
    recorder = Recorder(metrics_for(registry, detailed=True))
    boto2 = recorder.bind("boto2", *EC2)
    assert boto2.attempt is None and boto2.in_flight is None
    botocore = recorder.bind("botocore", "s3", "us-west-2", "GetObject")
    assert botocore.attempt is not None and botocore.in_flight is not None


def test_by_default_a_botocore_bound_has_no_attempt_histogram(registry):
    """With the default metrics a botocore bound follows calls in flight, not attempt times."""
    bound = Recorder(metrics_for(registry)).bind("botocore", "s3", "us-west-2", "GetObject")
    assert bound.attempt is None and bound.in_flight is not None


def test_the_bound_records_into_the_recorders_registry(registry):
    """What a bound records is in the registry the recorder was built on."""
    recorder = Recorder(metrics_for(registry))
    assert recorder.registry is registry
    recorder.bind("boto2", *EC2).record("200", 0.25, 100, 42, None, False, None)
    assert registry.get_sample_value("boto_requests_total",
                                     dict(EC2_LABELS, status_code="200")) == 1
    assert registry.get_sample_value("boto_request_duration_seconds_sum", EC2_LABELS) == 0.25


# --- with a CSV file --------------------------------------------------------------------------

def test_a_csv_wrapped_bound_records_the_metrics_and_one_record(registry):
    """With a CSV sink the bound records the metrics and hands the sink one immutable record."""
    keep = KeptRecords()
    recorder = Recorder(metrics_for(registry), csv=keep)
    assert recorder.every_request_id
    bound = recorder.bind("boto2", *EC2)
    assert bound.labels == EC2 and bound.attempt is None and bound.in_flight is None
    assert recorder.bind("boto2", *EC2).bound is bound.bound is recorder.metrics.bound(EC2)
    before = time.time()
    bound.record("400", 0.25, 100, 42, "InvalidVolume.NotFound", False, "REQ-1")
    (rec,) = keep.records
    assert isinstance(rec, RequestRecord)
    assert rec == RequestRecord("boto2", *EC2, "400", 0.25, 100, 42, "InvalidVolume.NotFound",
                                False, "REQ-1", rec.timestamp, None, False)
    assert before <= rec.timestamp <= time.time()
    get = registry.get_sample_value
    assert get("boto_requests_total", dict(EC2_LABELS, status_code="400")) == 1
    assert get("boto_request_errors_total",
               dict(EC2_LABELS, error_type="InvalidVolume.NotFound")) == 1


def test_a_csv_wrapped_bound_queues_one_row(registry, tmp_path):
    """Through the real CSV sink, one recorded call is one row in the file, counted written."""
    path = tmp_path / "bound.csv"
    writer = csv_writer_for(csv_settings(path))
    try:
        recorder = Recorder(metrics_for(registry),
                            csv=CsvSink(writer, csv_metrics_for(registry)))
        recorder.bind("botocore", "s3", "us-west-2", "GetObject").record(
            "200", 0.125, 0, 5, None, False, "REQ-2", attempts=1)
        assert writer.flush(timeout=10)
    finally:
        writer.close(timeout=10)
    assert registry.get_sample_value("boto_prom_csv_rows_written_total") == 1
    for reason in ("queue_full", "write_error", "closed"):
        assert registry.get_sample_value("boto_prom_csv_rows_dropped_total",
                                         {"reason": reason}) == 0
    with open(path, newline="") as f:
        header, *lines = list(csv.reader(f))
    assert header == list(COLUMNS)
    (row,) = [dict(zip(COLUMNS, line)) for line in lines]
    assert (row["aws_service"], row["aws_region"], row["action"], row["status_code"]) == (
        "s3", "us-west-2", "GetObject", "200")
    assert (row["duration_seconds"], row["request_bytes"], row["response_bytes"],
            row["error_type"], row["request_id"]) == ("0.125", "0", "5", "", "REQ-2")


def test_a_csv_row_keeps_the_labels_the_metrics_fold(registry):
    """Past the cap the metrics count action="_other", but the record keeps the real action."""
    keep = KeptRecords()
    recorder = Recorder(metrics_for(registry, max_label_sets=1), csv=keep)
    recorder.bind("boto2", *EC2).record("200", 0.1, None, None, None, False, None)
    folded = recorder.bind("boto2", "ec2", "us-west-2", "DescribeImages")
    assert folded.labels == ("ec2", "us-west-2", OTHER)
    folded.record("200", 0.1, None, None, None, False, None)
    assert [r.action for r in keep.records] == ["DescribeVolumes", "DescribeImages"]
    assert registry.get_sample_value("boto_requests_total", dict(
        aws_service="ec2", aws_region="us-west-2", action=OTHER, status_code="200")) == 1


def test_a_failing_csv_sink_is_counted_and_the_metrics_still_record(registry):
    """A sink that raises is counted at stage "csv"; the call is still in the metrics."""
    recorder = Recorder(metrics_for(registry), csv=_Broken())
    recorder.bind("boto2", *EC2).record("200", 0.1, None, None, None, False, None)
    get = registry.get_sample_value
    assert get("boto_prom_hook_errors_total", {"stage": "csv"}) == 1
    assert get("boto_requests_total", dict(EC2_LABELS, status_code="200")) == 1


# --- the filters end to end (moved from test_cardinality.py) ----------------------------------

@needs_boto2
def test_allowed_services_drop_other_services(aws, registry):
    """With allowed_services=["s3"], EC2 calls are not recorded and S3 calls are."""
    ec2, s3 = aws.ec2(), aws.s3()
    boto_prom.enable_metrics(ec2, registry=registry, start_server=False,
                             allowed_services=["s3"])
    boto_prom.enable_metrics(s3, registry=registry, start_server=False,
                             allowed_services=("s3",))
    ec2.get_all_instances()
    s3.get_all_buckets()
    families = list(registry.collect())
    assert label_sets(families, "boto_requests") == {("s3", "us-west-2", "ListBuckets")}


@needs_boto2
def test_ignored_actions_are_not_recorded(aws, registry):
    """ignored_actions=["HeadObject"] drops HEADs of keys while PutObject is still counted."""
    s3 = aws.s3()
    boto_prom.enable_metrics(s3, registry=registry, start_server=False,
                             ignored_actions={"HeadObject", "CreateBucket"})
    bucket = s3.create_bucket("cardinality-bucket", location="us-west-2")
    bucket.new_key("k").set_contents_from_string("v")
    bucket.get_key("k")
    bucket.get_key("missing")
    actions = {a for _, _, a in label_sets(registry.collect(), "boto_requests")}
    assert actions == {"PutObject"}
