"""Cardinality limits: the label-set cap with folding into action="_other", and the filters."""

from __future__ import annotations

import threading
import urllib.request
from collections import defaultdict
from datetime import datetime

import pytest

import boto_prom
from boto_prom import ConfigurationError
from boto_prom.metrics import DEFAULT_MAX_LABEL_SETS, OTHER, metrics_for
from boto_prom.record import RequestRecord
from tests.conftest import HAS_BOTO2

needs_boto2 = pytest.mark.skipif(not HAS_BOTO2, reason="boto 2 needs Python 3.11 or older")


def record(service="ec2", region="us-west-2", action="DescribeVolumes", status="200"):
    return RequestRecord("boto2", service, region, action, status, 0.01, 100, 200,
                         None if status < "400" else status, False, None, 0.0)


def label_sets(families, name):
    """The distinct (aws_service, aws_region, action) label sets of one family."""
    return {(s.labels["aws_service"], s.labels["aws_region"], s.labels["action"])
            for f in families if f.name == name for s in f.samples}


class _Request:
    """What boto 2 hands a hook for a Query API call, with a chosen action."""

    def __init__(self, action):
        self.host, self.method, self.path, self.auth_path = "127.0.0.1", "POST", "/", "/"
        self.params = {"Action": action}
        self.headers = {"Content-Length": "10"}
        self.body = b""
        self.start_time = datetime.now()


class _Response:
    status = 200

    def getheader(self, name, default=None):
        return "20" if name == "Content-Length" else default


def series_by_family(body):
    """{metric name: set of label strings} from a text-format scrape, without the parser."""
    series = defaultdict(set)
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, rest = line.partition("{")
            series[name].add(rest.rpartition("}")[0])
    return series


@needs_boto2
def test_ten_thousand_actions_keep_the_scrape_bounded(aws, registry):
    """10,000 distinct actions through the boto 2 hook: the cap plus _other series, none lost."""
    cap = 300
    hook = boto_prom.enable_metrics(aws.ec2(), port=0, registry=registry, max_label_sets=cap)
    response = _Response()
    for i in range(10_000):
        hook.handle_request_data(_Request(f"Action{i:05d}"), response)
    with urllib.request.urlopen(hook.server.url, timeout=30) as answer:
        body = answer.read().decode()
    series = series_by_family(body)
    assert len(series["boto_requests_total"]) == cap + 1
    assert len(series["boto_request_duration_seconds_count"]) == cap + 1
    assert len(series["boto_request_duration_seconds_bucket"]) == (cap + 1) * 17
    assert len(series["boto_response_size_bytes_count"]) == cap + 1
    assert len(series["boto_request_size_bytes_count"]) == cap + 1
    get = registry.get_sample_value
    base = dict(aws_service="ec2", aws_region="us-west-2", status_code="200")
    assert get("boto_requests_total", dict(base, action=OTHER)) == 10_000 - cap
    assert get("boto_prom_label_sets_folded_total") == 10_000 - cap
    assert get("boto_requests_total", dict(base, action="Action00000")) == 1
    assert get("boto_requests_total", dict(base, action="Action09999")) is None
    assert f'action="{OTHER}"' in body and "boto_prom_label_sets_folded_total 9700.0" in body


def test_default_cap(registry):
    """The default cap is 2,000 label sets per registry."""
    assert DEFAULT_MAX_LABEL_SETS == 2000
    assert metrics_for(registry).max_label_sets == 2000


def test_folded_label_sets_are_bounded_even_across_services(registry):
    """New services past the cap share at most 100 _other sets, then ("_other",)*3."""
    metrics = metrics_for(registry, max_label_sets=3)
    for i in range(300):
        metrics.record(record(service=f"svc{i}", action="Get"))
    sets = label_sets(registry.collect(), "boto_requests")
    assert len(sets) == 3 + 100 + 1
    assert (OTHER, OTHER, OTHER) in sets
    assert registry.get_sample_value("boto_requests_total", dict(
        aws_service=OTHER, aws_region=OTHER, action=OTHER, status_code="200")) == 300 - 103
    assert registry.get_sample_value("boto_prom_label_sets_folded_total") == 297


def test_known_label_sets_keep_counting_after_the_cap(registry):
    """A label set seen before the cap was reached still counts as itself after it."""
    metrics = metrics_for(registry, max_label_sets=2)
    for action in ("A", "B", "C", "A", "D", "B"):
        metrics.record(record(action=action))
    get = registry.get_sample_value
    base = dict(aws_service="ec2", aws_region="us-west-2", status_code="200")
    assert get("boto_requests_total", dict(base, action="A")) == 2
    assert get("boto_requests_total", dict(base, action="B")) == 2
    assert get("boto_requests_total", dict(base, action=OTHER)) == 2
    assert get("boto_prom_label_sets_folded_total") == 2


def test_racing_threads_never_pass_the_cap(registry):
    """8 threads recording 400 new actions each keep exactly the cap and lose no call."""
    metrics = metrics_for(registry, max_label_sets=100)
    barrier = threading.Barrier(8)

    def work(n):
        barrier.wait()
        for i in range(400):
            metrics.record(record(action=f"T{n}A{i}", status="503" if i % 7 == 0 else "200"))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    totals = defaultdict(float)
    for family in registry.collect():
        for s in family.samples:
            if s.name == "boto_requests_total":
                totals[s.labels["action"]] += s.value
    assert len(totals) == 101
    assert sum(totals.values()) == 3200
    assert totals[OTHER] == 3200 - 100
    assert registry.get_sample_value("boto_prom_label_sets_folded_total") == 3100


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


@needs_boto2
@pytest.mark.parametrize("env, kwargs, match", [
    ({}, {"allowed_services": "s3"}, "allowed_services must be a list of names"),
    ({}, {"allowed_services": ["s3", "bad/name"]}, "allowed_services must hold short names"),
    ({}, {"ignored_actions": 7}, "ignored_actions must be a list of names"),
    ({}, {"max_label_sets": 0}, "max_label_sets must be a whole number"),
    ({}, {"max_label_sets": "many"}, "max_label_sets must be a whole number"),
    ({"BOTO_PROM_MAX_LABEL_SETS": "lots"}, {}, "BOTO_PROM_MAX_LABEL_SETS must be a whole"),
])
def test_bad_limits_are_one_sentence(aws, registry, monkeypatch, env, kwargs, match):
    """Each bad filter or cap fails enable_metrics with one sentence, leaving the connection."""
    for name, val in env.items():
        monkeypatch.setenv(name, val)
    conn = aws.ec2()
    with pytest.raises(ConfigurationError, match=match) as raised:
        boto_prom.enable_metrics(conn, registry=registry, start_server=False, **kwargs)
    assert "\n" not in str(raised.value)
    assert conn.request_hook is None


@needs_boto2
def test_cap_from_environment_and_conflicting_caps(aws, registry, monkeypatch):
    """BOTO_PROM_MAX_LABEL_SETS sets the cap; a later call asking for another is an error."""
    monkeypatch.setenv("BOTO_PROM_MAX_LABEL_SETS", "5")
    hook = boto_prom.enable_metrics(aws.ec2(), registry=registry, start_server=False)
    assert hook.recorder.metrics.max_label_sets == 5
    monkeypatch.delenv("BOTO_PROM_MAX_LABEL_SETS")
    boto_prom.enable_metrics(aws.ec2(), registry=registry, start_server=False)
    with pytest.raises(ConfigurationError, match="differs from the cap"):
        boto_prom.enable_metrics(aws.ec2(), registry=registry, start_server=False,
                                 max_label_sets=6)


def test_error_types_per_label_set_are_bounded(registry):
    """A server inventing error codes cannot grow the error series past MAX_ERROR_TYPES."""
    from boto_prom.metrics import MAX_ERROR_TYPES, metrics_for
    from boto_prom.record import RequestRecord

    metrics = metrics_for(registry)
    for n in range(MAX_ERROR_TYPES + 25):
        metrics.record(RequestRecord("botocore", "s3", "us-west-2", "GetObject", "400", 0.01,
                                     0, 0, f"InventedCode{n}", False, None, 0.0))
    errors = {s.labels["error_type"]: s.value for f in registry.collect()
              if f.name == "boto_request_errors" for s in f.samples if s.name.endswith("_total")}
    assert len(errors) == MAX_ERROR_TYPES + 1
    assert errors["_other"] == 25
    assert sum(errors.values()) == MAX_ERROR_TYPES + 25
