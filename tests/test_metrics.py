"""The Prometheus sink: one Bound per label set records exactly, folding keeps series bounded."""

from __future__ import annotations

import threading
import urllib.request
from collections import defaultdict
from datetime import datetime

import pytest
from prometheus_client import generate_latest

import boto_prom
from boto_prom import ConfigurationError
from boto_prom.metrics import (DEFAULT_MAX_LABEL_SETS, EXEMPLAR_LABEL, MAX_ERROR_TYPES, OTHER,
                               Bound, metrics_for)
from tests.conftest import HAS_BOTO2

needs_boto2 = pytest.mark.skipif(not HAS_BOTO2, reason="boto 2 needs Python 3.11 or older")

S3 = ("s3", "us-west-2", "GetObject")
LABELS = dict(aws_service="s3", aws_region="us-west-2", action="GetObject")


def record(metrics, service="ec2", region="us-west-2", action="DescribeVolumes", status="200"):
    """One boto 2 call of 10 ms through the label set's bound."""
    metrics.bound((service, region, action)).record(
        status, 0.01, 100, 200, None if status < "400" else status, False, None)


def label_sets(families, name):
    """The distinct (aws_service, aws_region, action) label sets of one family."""
    return {(s.labels["aws_service"], s.labels["aws_region"], s.labels["action"])
            for f in families if f.name == name for s in f.samples}


def series_by_family(body):
    """{metric name: set of label strings} from a text-format scrape, without the parser."""
    series = defaultdict(set)
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, rest = line.partition("{")
            series[name].add(rest.rpartition("}")[0])
    return series


# --- one bound, every metric ------------------------------------------------------------------

def test_a_bound_records_every_metric_exactly(registry):
    """A success and a throttled, retried, exhausted failure land in each metric as given."""
    metrics = metrics_for(registry, duration_buckets=(0.1, 0.5, 1.0))
    bound = metrics.bound(S3)
    assert isinstance(bound, Bound) and bound.labels == S3
    bound.record("200", 0.3, 100, 2000, None, False, None)
    bound.record("503", 1.5, 50, None, "SlowDown", True, None, attempts=3, exhausted=True)
    get = registry.get_sample_value
    assert get("boto_requests_total", dict(LABELS, status_code="200")) == 1
    assert get("boto_requests_total", dict(LABELS, status_code="503")) == 1
    assert get("boto_request_duration_seconds_count", LABELS) == 2
    assert get("boto_request_duration_seconds_sum", LABELS) == pytest.approx(1.8)
    assert get("boto_request_duration_seconds_bucket", dict(LABELS, le="0.1")) == 0
    assert get("boto_request_duration_seconds_bucket", dict(LABELS, le="0.5")) == 1
    assert get("boto_request_duration_seconds_bucket", dict(LABELS, le="1.0")) == 1
    assert get("boto_request_duration_seconds_bucket", dict(LABELS, le="+Inf")) == 2
    assert get("boto_request_size_bytes_count", LABELS) == 2
    assert get("boto_request_size_bytes_sum", LABELS) == 150
    assert get("boto_response_size_bytes_count", LABELS) == 1
    assert get("boto_response_size_bytes_sum", LABELS) == 2000
    assert get("boto_request_errors_total", dict(LABELS, error_type="SlowDown")) == 1
    assert get("boto_throttled_requests_total", LABELS) == 1
    # A call reporting its attempts (botocore) had each one counted as it ended, by the adapter.
    assert get("boto_throttled_attempts_total", LABELS) is None
    assert get("boto_request_retries_total", LABELS) == 2
    assert get("boto_retries_exhausted_total", dict(LABELS, error_type="SlowDown")) == 1
    assert get("boto_prom_label_sets_folded_total") == 0
    # What only an adapter observes (attempts, in flight) is not touched by record().
    assert get("boto_attempt_duration_seconds_count", LABELS) is None
    assert get("boto_requests_in_flight", dict(aws_service="s3", aws_region="us-west-2")) is None


def test_a_call_without_measurements_counts_only_its_status(registry):
    """No duration, no sizes, no error: only boto_requests_total moves."""
    metrics = metrics_for(registry)
    metrics.bound(S3).record("none", None, None, None, None, False, None)
    get = registry.get_sample_value
    assert get("boto_requests_total", dict(LABELS, status_code="none")) == 1
    assert get("boto_request_duration_seconds_count", LABELS) == 0
    assert get("boto_request_size_bytes_count", LABELS) == 0
    assert get("boto_response_size_bytes_count", LABELS) == 0
    assert get("boto_throttled_requests_total", LABELS) is None, "no always-zero series"
    assert get("boto_throttled_attempts_total", LABELS) is None, "no always-zero series"
    assert get("boto_request_retries_total", LABELS) is None, "no always-zero retry series"


def test_a_throttled_call_without_attempts_counts_one_throttled_attempt(registry):
    """A throttled call whose adapter reports no attempts (boto 2) is one throttled attempt."""
    bound = metrics_for(registry).bound(S3)
    bound.record("429", 0.1, None, None, "429", True, None)
    bound.count_throttled_attempt()
    assert registry.get_sample_value("boto_throttled_requests_total", LABELS) == 1
    assert registry.get_sample_value("boto_throttled_attempts_total", LABELS) == 2


def test_one_bound_per_label_set(registry):
    """The same labels give the same Bound; other labels another."""
    metrics = metrics_for(registry)
    assert metrics.bound(S3) is metrics.bound(tuple(S3))
    assert metrics.bound(("s3", "us-west-2", "PutObject")) is not metrics.bound(S3)


def test_follow_attempts_binds_the_attempt_children(registry):
    """A bound that follows attempts holds the attempt histogram (detailed metrics) and the
    in-flight gauge children."""
    bound = metrics_for(registry, detailed=True).bound(S3)
    assert bound.attempt is None and bound.in_flight is None
    assert bound.follow_attempts() is bound
    bound.attempt.observe(0.2)
    bound.in_flight.inc()
    get = registry.get_sample_value
    assert get("boto_attempt_duration_seconds_count", LABELS) == 1
    assert get("boto_requests_in_flight", dict(aws_service="s3", aws_region="us-west-2")) == 1


def test_request_id_becomes_the_durations_exemplar(registry):
    """A request id is kept as the duration bucket's exemplar; one too long for one is not."""
    metrics = metrics_for(registry)
    metrics.bound(S3).record("200", 0.02, None, None, None, False, "REQ0042")
    metrics.bound(("s3", "us-west-2", "PutObject")).record("200", 0.02, None, None, None,
                                                           False, "X" * 200)
    exemplars = {s.labels["action"]: s.exemplar for f in registry.collect()
                 if f.name == "boto_request_duration_seconds" for s in f.samples
                 if s.name.endswith("_bucket") and s.labels["le"] == "0.025"}
    assert exemplars["GetObject"].labels == {EXEMPLAR_LABEL: "REQ0042"}
    assert exemplars["GetObject"].value == 0.02
    assert exemplars["PutObject"] is None


def test_metrics_are_built_once_per_registry(registry):
    """metrics_for() returns a registry's one instance; other buckets later are an error."""
    first = metrics_for(registry, duration_buckets=(0.1, 1.0))
    assert metrics_for(registry) is first
    assert metrics_for(registry, duration_buckets=(0.1, 1.0)) is first
    with pytest.raises(ConfigurationError, match="differ from the buckets"):
        metrics_for(registry, duration_buckets=(0.2, 2.0))


# --- fold and cap (moved from test_cardinality.py) --------------------------------------------

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
    assert len(series["boto_request_duration_seconds_bucket"]) == (
        cap + 1) * (len(boto_prom.DEFAULT_DURATION_BUCKETS) + 1)
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
        record(metrics, service=f"svc{i}", action="Get")
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
        record(metrics, action=action)
    get = registry.get_sample_value
    base = dict(aws_service="ec2", aws_region="us-west-2", status_code="200")
    assert get("boto_requests_total", dict(base, action="A")) == 2
    assert get("boto_requests_total", dict(base, action="B")) == 2
    assert get("boto_requests_total", dict(base, action=OTHER)) == 2
    assert get("boto_prom_label_sets_folded_total") == 2
    assert metrics.bound(("ec2", "us-west-2", "C")).labels == ("ec2", "us-west-2", OTHER)


def test_racing_threads_never_pass_the_cap(registry):
    """8 threads recording 400 new actions each keep exactly the cap and lose no call."""
    metrics = metrics_for(registry, max_label_sets=100)
    barrier = threading.Barrier(8)

    def work(n):
        barrier.wait()
        for i in range(400):
            record(metrics, action=f"T{n}A{i}", status="503" if i % 7 == 0 else "200")

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


def test_error_types_per_label_set_are_bounded(registry):
    """A server inventing error codes cannot grow the error series past MAX_ERROR_TYPES."""
    bound = metrics_for(registry).bound(("s3", "us-west-2", "GetObject"))
    for n in range(MAX_ERROR_TYPES + 25):
        bound.record("400", 0.01, 0, 0, f"InventedCode{n}", False, None)
    errors = {s.labels["error_type"]: s.value for f in registry.collect()
              if f.name == "boto_request_errors" for s in f.samples if s.name.endswith("_total")}
    assert len(errors) == MAX_ERROR_TYPES + 1
    assert errors["_other"] == 25
    assert sum(errors.values()) == MAX_ERROR_TYPES + 25


# --- what a scrape costs per label set (issue 11) ---------------------------------------------

MAX_SERIES_PER_LABEL_SET = 24
MAX_BYTES_PER_LABEL_SET = 3000
# Every histogram of boto-prom 0.x, which detailed_metrics=True gives back.
DETAILED_HISTOGRAMS = {"boto_request_duration_seconds", "boto_request_size_bytes",
                       "boto_response_size_bytes", "boto_attempt_duration_seconds"}


def scrape_cost(registry, action):
    """(lines, bytes) of the text-format scrape that carry action="<action>"."""
    body = generate_latest(registry).decode()
    lines = [line for line in body.splitlines() if f'action="{action}"' in line]
    return len(lines), sum(len(line) + 1 for line in lines)


def family_types(registry):
    """{family name: type} of the families that have samples."""
    return {f.name: f.type for f in registry.collect() if f.samples}


def _boto2_calls(aws, registry, detailed):
    conn = aws.ec2()
    boto_prom.enable_metrics(conn, registry=registry, start_server=False,
                             detailed_metrics=detailed)
    for _ in range(3):
        conn.get_all_regions()
    return "DescribeRegions"


def _botocore_calls(moto_url, registry, detailed):
    import boto3

    client = boto3.session.Session().client(
        "ec2", endpoint_url=moto_url, region_name="us-west-2", aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret")
    boto_prom.enable_metrics(client, registry=registry, start_server=False,
                             detailed_metrics=detailed)
    for _ in range(3):
        client.describe_regions()
    return "DescribeRegions"


def _calls(path, request):
    if path == "boto2":
        if not HAS_BOTO2:
            pytest.skip("boto 2 needs Python 3.11 or older")
        return lambda registry, detailed: _boto2_calls(request.getfixturevalue("aws"),
                                                       registry, detailed)
    return lambda registry, detailed: _botocore_calls(request.getfixturevalue("moto_url"),
                                                      registry, detailed)


@pytest.mark.parametrize("path", ["boto2", "botocore"])
def test_a_label_set_costs_at_most_24_series_and_3000_bytes_by_default(path, request, registry):
    """Successful calls of one label set, against moto, leave at most 24 scrape lines carrying
    its action, 3,000 bytes in all, none of them _created, throttle or retry series."""
    action = _calls(path, request)(registry, None)
    lines, size = scrape_cost(registry, action)
    assert lines <= MAX_SERIES_PER_LABEL_SET, lines
    assert size <= MAX_BYTES_PER_LABEL_SET, size
    body = generate_latest(registry).decode()
    assert "_created" not in body
    for absent in ("boto_throttled_requests_total{", "boto_throttled_attempts_total{",
                   "boto_request_retries_total{", "boto_request_errors_total{",
                   "boto_attempt_duration_seconds"):
        assert absent not in body, absent
    types = family_types(registry)
    assert types["boto_request_size_bytes"] == types["boto_response_size_bytes"] == "histogram"
    assert types["boto_request_duration_seconds"] == "histogram"
    assert types["boto_service_request_duration_seconds"] == "histogram"
    labels = dict(aws_service="ec2", aws_region="us-west-2", action=action)
    get = registry.get_sample_value
    assert get("boto_requests_total", dict(labels, status_code="200")) == 3
    assert get("boto_request_size_bytes_count", labels) == 3
    assert get("boto_response_size_bytes_sum", labels) > 0
    # One finite size bucket by default: the bodies up to 1 MiB (all of these).
    assert get("boto_response_size_bytes_bucket", dict(labels, le="1.048576e+06")) == 3
    assert get("boto_response_size_bytes_bucket", dict(labels, le="65536.0")) is None
    assert get("boto_service_request_duration_seconds_count",
               dict(aws_service="ec2", aws_region="us-west-2")) == 3


@pytest.mark.parametrize("path", ["boto2", "botocore"])
def test_detailed_metrics_give_back_every_histogram(path, request, registry):
    """detailed_metrics=True exports the size histograms with their buckets, the finer duration
    buckets and, on botocore, the per-attempt histogram: every histogram of boto-prom 0.x."""
    action = _calls(path, request)(registry, True)
    types = family_types(registry)
    wanted = DETAILED_HISTOGRAMS - ({"boto_attempt_duration_seconds"} if path == "boto2"
                                    else set())
    assert {name for name in wanted if types.get(name) == "histogram"} == wanted
    labels = dict(aws_service="ec2", aws_region="us-west-2", action=action)
    get = registry.get_sample_value
    assert get("boto_request_size_bytes_bucket", dict(labels, le="+Inf")) == 3
    assert get("boto_request_size_bytes_bucket", dict(labels, le="64.0")) is not None
    assert get("boto_request_duration_seconds_bucket", dict(labels, le="0.075")) is not None
    if path == "botocore":
        assert get("boto_attempt_duration_seconds_count", labels) == 3
    assert "_created" not in generate_latest(registry).decode()


def test_the_programs_own_metrics_keep_their_created_samples(registry):
    """Leaving out our _created samples does not touch a metric of the program's own."""
    from prometheus_client import Counter

    metrics_for(registry).bound(S3).record("200", 0.01, 1, 1, None, False, None)
    Counter("app_jobs", "The program's own counter.", registry=registry).inc()
    assert registry.get_sample_value("app_jobs_created") is not None
    assert registry.get_sample_value("boto_requests_created",
                                     dict(LABELS, status_code="200")) is None


def test_detailed_metrics_are_set_once_per_registry(registry):
    """A registry built without detailed metrics refuses a later detailed_metrics=True."""
    assert metrics_for(registry).detailed is False
    assert metrics_for(registry, detailed=False) is metrics_for(registry)
    with pytest.raises(ConfigurationError, match="detailed_metrics=True differs"):
        metrics_for(registry, detailed=True)
    assert metrics_for(registry).duration_buckets == boto_prom.DEFAULT_DURATION_BUCKETS
    assert metrics_for(type(registry)(), detailed=True).duration_buckets == (
        boto_prom.metrics.DETAILED_DURATION_BUCKETS)


def test_names_taken_by_something_else_register_nothing(registry):
    """A registry where one of our names is taken gets none of our metrics, and one sentence."""
    from prometheus_client import Counter

    Counter("boto_request_retries", "someone else's", registry=registry)
    with pytest.raises(ConfigurationError, match="already registered"):
        metrics_for(registry)
    assert {f.name for f in registry.collect()} == {"boto_request_retries"}
