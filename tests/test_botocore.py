"""The botocore adapter against real boto3 clients: moto on loopback and the fault server."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

import boto3
import botocore.session
import pytest
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)
from botocore.stub import Stubber
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

import boto_prom
from boto_prom import ConfigurationError, disable_metrics, enable_metrics
from boto_prom import boto2 as boto2_adapter
from boto_prom.botocore import (
    THROTTLING_CODES,
    BotocoreHook,
    _on_after_call,
    _on_after_call_error,
    _on_before_send,
    _on_request_created,
    _on_response_received,
    installed,
    instrument,
)
from boto_prom.metrics import EXEMPLAR_INTERVAL_SECONDS, metrics_for
from boto_prom.recorder import Recorder
from tests.conftest import HAS_BOTO2
from tests.fault_server import closed_port

CREDS = dict(aws_access_key_id="AKIATESTTESTTESTTEST", aws_secret_access_key="test-secret-key")
REGION = "us-west-2"


def value(registry, name, **labels):
    """A sample's value, 0.0 when the series does not exist."""
    return registry.get_sample_value(name, labels) or 0.0


def series(registry, family):
    """{labels-as-tuple: value} of a family's main samples (``_total`` for counters)."""
    out = {}
    for metric in registry.collect():
        if metric.name == family:
            for s in metric.samples:
                if s.name in (family, family + "_total"):
                    out[tuple(sorted(s.labels.items()))] = s.value
    return out


def hook_errors(registry):
    """The hook-error stages that counted a failure (known stages exist at zero)."""
    return {k: v for k, v in series(registry, "boto_prom_hook_errors").items() if v}


def wait_for(predicate, timeout=10.0):
    """Poll predicate until it holds; False when timeout seconds pass first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


@pytest.fixture(autouse=True)
def _no_aws_environment(monkeypatch, tmp_path):
    """No real credentials, profiles or instance metadata reach a test."""
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def no_backoff(monkeypatch):
    """botocore's standard retries without their backoff sleeps, so retry tests stay fast."""
    from botocore.retries import standard

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0.0)


def make_client(service, url, max_attempts=1, session=None, **config):
    """A boto3 client of url with fake credentials and standard retries, max_attempts in all."""
    session = session or boto3.session.Session()
    return session.client(
        service, endpoint_url=url, region_name=REGION,
        config=Config(retries={"total_max_attempts": max_attempts, "mode": "standard"},
                      **config),
        **CREDS,
    )


@pytest.fixture
def registry():
    """A registry of the test's own with the detailed metrics: most tests here check the
    per-attempt histogram, which only detailed_metrics=True exports (the default scrape is
    tested in tests/test_metrics.py, on both paths)."""
    registry = CollectorRegistry()
    metrics_for(registry, detailed=True)
    return registry


def fault_url(fault_server):
    return f"http://127.0.0.1:{fault_server.port}"


def retried_describe_regions(fault_server, registry, *answers):
    """One DescribeRegions call, enabled into registry, answered by the three answers given
    (up to 3 attempts); returns its labels."""
    fault_server.script(*answers)
    client = make_client("ec2", fault_url(fault_server), max_attempts=3)
    enable_metrics(client, registry=registry, start_server=False)
    client.describe_regions()
    assert len(fault_server.requests) == 3
    return dict(EC2, action="DescribeRegions")


EC2 = dict(aws_service="ec2", aws_region=REGION)


# --- moto: five services, exact values ---------------------------------------------------------

def test_ec2_calls_counted_with_exact_values(moto_url, registry):
    """Three DescribeInstances calls give count 3 everywhere, with sizes summed exactly."""
    client = make_client("ec2", moto_url)
    sent = []
    client.meta.events.register("before-send.ec2.DescribeInstances",
                                lambda request, **kw: sent.append(len(request.body)))
    hook = enable_metrics(client, registry=registry, start_server=False)
    assert isinstance(hook, boto_prom.botocore.BotocoreHook)
    received = [int(client.describe_instances()["ResponseMetadata"]["HTTPHeaders"]
                    ["content-length"]) for _ in range(3)]
    labels = dict(EC2, action="DescribeInstances")
    assert value(registry, "boto_requests_total", status_code="200", **labels) == 3
    assert value(registry, "boto_request_duration_seconds_count", **labels) == 3
    assert value(registry, "boto_attempt_duration_seconds_count", **labels) == 3
    assert value(registry, "boto_request_size_bytes_sum", **labels) == sum(sent) > 0
    assert value(registry, "boto_response_size_bytes_sum", **labels) == sum(received) > 0
    assert registry.get_sample_value("boto_request_retries_total", labels) is None
    assert series(registry, "boto_request_errors") == {}
    assert value(registry, "boto_requests_in_flight", **EC2) == 0
    assert hook_errors(registry) == {}


def test_s3_operations_statuses_and_error_codes(moto_url, registry):
    """S3 calls carry botocore's operation names, and a missing key is typed NoSuchKey."""
    client = make_client("s3", moto_url, s3={"addressing_style": "path"})
    enable_metrics(client, registry=registry, start_server=False)
    client.create_bucket(Bucket="bp-s3-bucket",
                         CreateBucketConfiguration={"LocationConstraint": REGION})
    client.put_object(Bucket="bp-s3-bucket", Key="dir/a.txt", Body=b"hello")
    assert client.get_object(Bucket="bp-s3-bucket", Key="dir/a.txt")["Body"].read() == b"hello"
    client.list_objects_v2(Bucket="bp-s3-bucket")
    with pytest.raises(ClientError) as missing:
        client.get_object(Bucket="bp-s3-bucket", Key="dir/missing")
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"
    with pytest.raises(ClientError):
        client.head_object(Bucket="bp-s3-bucket", Key="dir/missing")
    client.delete_object(Bucket="bp-s3-bucket", Key="dir/a.txt")
    s3 = dict(aws_service="s3", aws_region=REGION)
    for action, status in (("CreateBucket", "200"), ("PutObject", "200"), ("GetObject", "200"),
                           ("ListObjectsV2", "200"), ("GetObject", "404"),
                           ("HeadObject", "404"), ("DeleteObject", "204")):
        assert value(registry, "boto_requests_total", action=action, status_code=status,
                     **s3) == 1, (action, status)
    assert value(registry, "boto_request_errors_total", action="GetObject",
                 error_type="NoSuchKey", **s3) == 1
    assert value(registry, "boto_request_errors_total", action="HeadObject", error_type="404",
                 **s3) == 1
    assert value(registry, "boto_request_size_bytes_sum", action="PutObject", **s3) == 5
    text = generate_latest(registry).decode()
    assert "bp-s3-bucket" not in text and "dir/a.txt" not in text


def test_dynamodb_conditional_check_failure_is_its_error_code(moto_url, registry):
    """A failed condition is counted as ConditionalCheckFailedException, not as a bare 400."""
    client = make_client("dynamodb", moto_url)
    enable_metrics(client, registry=registry, start_server=False)
    client.create_table(
        TableName="bp-table", AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}], BillingMode="PAY_PER_REQUEST")
    client.put_item(TableName="bp-table", Item={"id": {"S": "1"}})
    with pytest.raises(client.exceptions.ConditionalCheckFailedException):
        client.put_item(TableName="bp-table", Item={"id": {"S": "1"}},
                        ConditionExpression="attribute_not_exists(id)")
    client.get_item(TableName="bp-table", Key={"id": {"S": "1"}})
    ddb = dict(aws_service="dynamodb", aws_region=REGION)
    assert value(registry, "boto_requests_total", action="CreateTable", status_code="200",
                 **ddb) == 1
    assert value(registry, "boto_requests_total", action="PutItem", status_code="200",
                 **ddb) == 1
    assert value(registry, "boto_requests_total", action="PutItem", status_code="400",
                 **ddb) == 1
    assert value(registry, "boto_request_errors_total", action="PutItem",
                 error_type="ConditionalCheckFailedException", **ddb) == 1
    assert value(registry, "boto_requests_total", action="GetItem", status_code="200",
                 **ddb) == 1
    assert value(registry, "boto_throttled_requests_total", action="PutItem", **ddb) == 0


def test_sqs_and_iam_in_the_clients_region(moto_url, registry):
    """SQS and IAM calls are named by operation and labelled with the client's region."""
    sqs = make_client("sqs", moto_url)
    iam = make_client("iam", moto_url)
    enable_metrics(sqs, registry=registry, start_server=False)
    enable_metrics(iam, registry=registry, start_server=False)
    url = sqs.create_queue(QueueName="bp-queue")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="hi")
    sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)
    iam.create_user(UserName="bp-user")
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_user(UserName="bp-no-such-user")
    for action in ("CreateQueue", "SendMessage", "ReceiveMessage"):
        assert value(registry, "boto_requests_total", aws_service="sqs", aws_region=REGION,
                     action=action, status_code="200") == 1, action
    assert value(registry, "boto_requests_total", aws_service="iam", aws_region=REGION,
                 action="CreateUser", status_code="200") == 1
    assert value(registry, "boto_request_errors_total", aws_service="iam", aws_region=REGION,
                 action="GetUser", error_type="NoSuchEntity") == 1


def test_sixteen_threads_on_one_client_count_exactly(moto_url, registry):
    """16 threads sharing one client, 10 calls each, give exact totals and no call in flight."""
    client = make_client("ec2", moto_url, max_pool_connections=16)
    enable_metrics(client, registry=registry, start_server=False)
    errors = []

    def work():
        try:
            for _ in range(10):
                client.describe_volumes()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    pool = [threading.Thread(target=work) for _ in range(16)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors
    labels = dict(EC2, action="DescribeVolumes")
    assert value(registry, "boto_requests_total", status_code="200", **labels) == 160
    assert value(registry, "boto_attempt_duration_seconds_count", **labels) == 160
    assert value(registry, "boto_requests_in_flight", **EC2) == 0


class _GatedServer:
    """A loopback EC2 endpoint that holds every answer until ``gate`` is set, with a listen
    backlog deep enough for a few hundred connections at once."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        gate = self.gate = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                gate.wait(60)
                body = b"<DescribeRegionsResponse><regionInfo/></DescribeRegionsResponse>"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 512

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def test_two_hundred_concurrent_calls_count_exactly(registry):
    """200 threads with a call each under way at once show 200 in flight, then exact totals."""
    server = _GatedServer()
    client = make_client("ec2", server.url, max_pool_connections=200, read_timeout=60)
    enable_metrics(client, registry=registry, start_server=False)
    errors = []

    def work():
        try:
            client.describe_regions()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    pool = [threading.Thread(target=work) for _ in range(200)]
    try:
        for t in pool:
            t.start()
        assert wait_for(lambda: value(registry, "boto_requests_in_flight", **EC2) == 200,
                        timeout=30)
    finally:
        server.gate.set()
        for t in pool:
            t.join()
        server.close()
    assert not errors, errors[:1]
    labels = dict(EC2, action="DescribeRegions")
    assert value(registry, "boto_requests_total", status_code="200", **labels) == 200
    assert value(registry, "boto_request_duration_seconds_count", **labels) == 200
    assert value(registry, "boto_attempt_duration_seconds_count", **labels) == 200
    assert registry.get_sample_value("boto_request_retries_total", labels) is None
    assert value(registry, "boto_requests_in_flight", **EC2) == 0
    assert hook_errors(registry) == {}


# --- the fault server: retries, exhaustion, no response ------------------------------------------

def test_503_twice_then_200_is_one_request_of_three_attempts(fault_server, registry,
                                                              no_backoff):
    """Two 503s and a 200 record 3 attempts, 2 retries, 1 request and one 200."""
    labels = retried_describe_regions(fault_server, registry, ("status", 503), ("status", 503),
                                      ("status", 200))
    assert value(registry, "boto_attempt_duration_seconds_count", **labels) == 3
    assert value(registry, "boto_request_retries_total", **labels) == 2
    assert value(registry, "boto_request_duration_seconds_count", **labels) == 1
    assert series(registry, "boto_requests") == {
        tuple(sorted(dict(labels, status_code="200").items())): 1.0}
    assert series(registry, "boto_request_errors") == {}
    assert series(registry, "boto_retries_exhausted") == {}
    assert value(registry, "boto_requests_in_flight", **EC2) == 0


def test_older_botocore_hand_off_counts_the_same(fault_server, registry, no_backoff,
                                                 monkeypatch):
    """Where prepared requests carry no context, request-created hands the call to before-send."""
    from boto_prom import botocore as adapter

    monkeypatch.setattr(adapter, "_FOLLOWERS", adapter._followers(prepared_has_context=False))
    fault_server.script(("status", 503), ("status", 503), ("status", 200))
    client = make_client("ec2", fault_url(fault_server), max_attempts=3)
    sent = []
    client.meta.events.register("before-send.ec2.DescribeRegions",
                                lambda request, **kw: sent.append(len(request.body)))
    enable_metrics(client, registry=registry, start_server=False)
    client.describe_regions()
    labels = dict(EC2, action="DescribeRegions")
    assert value(registry, "boto_attempt_duration_seconds_count", **labels) == 3
    assert value(registry, "boto_request_retries_total", **labels) == 2
    assert value(registry, "boto_requests_total", status_code="200", **labels) == 1
    assert value(registry, "boto_request_size_bytes_sum", **labels) == sent[-1] > 0
    assert value(registry, "boto_requests_in_flight", **EC2) == 0


@pytest.mark.parametrize("behaviour, error_type, throttled", [
    (("error", 503, "RequestLimitExceeded"), "RequestLimitExceeded", 1),
    (("error", 400, "ThrottlingException"), "ThrottlingException", 1),
    (("status", 500), "500", 0),
])
def test_exhausted_retries_are_counted_with_the_error_code(behaviour, error_type, throttled,
                                                           fault_server, registry, no_backoff):
    """A call failing on all 3 attempts counts once in boto_retries_exhausted_total, by code."""
    fault_server.script(behaviour)
    client = make_client("ec2", fault_url(fault_server), max_attempts=3)
    enable_metrics(client, registry=registry, start_server=False)
    with pytest.raises(ClientError) as raised:
        client.describe_regions()
    assert raised.value.response["Error"]["Code"] == error_type
    assert len(fault_server.requests) == 3
    labels = dict(EC2, action="DescribeRegions")
    status = str(behaviour[1])
    assert value(registry, "boto_retries_exhausted_total", error_type=error_type, **labels) == 1
    assert value(registry, "boto_request_retries_total", **labels) == 2
    assert value(registry, "boto_attempt_duration_seconds_count", **labels) == 3
    assert value(registry, "boto_requests_total", status_code=status, **labels) == 1
    assert value(registry, "boto_request_errors_total", error_type=error_type, **labels) == 1
    assert value(registry, "boto_throttled_requests_total", **labels) == throttled
    assert value(registry, "boto_throttled_attempts_total", **labels) == 3 * throttled
    assert value(registry, "boto_requests_in_flight", **EC2) == 0


@pytest.mark.parametrize("throttling", [("error", 400, "ThrottlingException"), ("status", 429),
                                        ("error", 503, "SlowDown")])
def test_throttled_attempts_absorbed_by_retries_are_counted(throttling, fault_server, registry,
                                                            no_backoff):
    """Two throttled attempts then a 200 give 2 throttled attempts and 0 throttled requests."""
    labels = retried_describe_regions(fault_server, registry, throttling, throttling,
                                      ("status", 200))
    assert value(registry, "boto_throttled_attempts_total", **labels) == 2
    assert registry.get_sample_value("boto_throttled_requests_total", labels) is None
    assert value(registry, "boto_requests_total", status_code="200", **labels) == 1
    assert value(registry, "boto_request_retries_total", **labels) == 2
    assert hook_errors(registry) == {}


def test_attempts_that_are_not_throttling_count_no_throttled_attempt(fault_server, registry,
                                                                     no_backoff):
    """A 500 and a 503 ServiceUnavailable before a 200 leave no throttled-attempt series."""
    labels = retried_describe_regions(fault_server, registry, ("status", 500),
                                      ("error", 503, "ServiceUnavailable"), ("status", 200))
    assert value(registry, "boto_request_retries_total", **labels) == 2
    assert registry.get_sample_value("boto_throttled_attempts_total", labels) is None


def test_failure_not_retried_for_lack_of_retry_quota_is_not_exhausted(fault_server, registry,
                                                                      no_backoff):
    """Once botocore's retry quota is spent, a failed first attempt is not exhausted retries."""
    fault_server.script(("status", 503))
    client = make_client("ec2", fault_url(fault_server), max_attempts=2)
    enable_metrics(client, registry=registry, start_server=False)
    calls = 0
    while calls < 300:
        before = len(fault_server.requests)
        calls += 1
        with pytest.raises(ClientError):
            client.describe_regions()
        if len(fault_server.requests) - before == 1:
            break  # the quota is spent: botocore did not retry this call
    labels = dict(EC2, action="DescribeRegions")
    assert 1 < calls < 300
    assert value(registry, "boto_retries_exhausted_total", error_type="503", **labels) == calls - 1
    assert value(registry, "boto_request_retries_total", **labels) == calls - 1
    assert value(registry, "boto_requests_total", status_code="503", **labels) == calls


def test_throttling_codes_match_botocores_retry_handler():
    """boto-prom's throttling codes are exactly those botocore's standard retries throttle on."""
    from botocore.retries.standard import ThrottledRetryableChecker

    assert THROTTLING_CODES == frozenset(ThrottledRetryableChecker._THROTTLED_ERROR_CODES)


def test_error_that_is_not_retried_does_not_exhaust_retries(fault_server, registry,
                                                           no_backoff):
    """A 400 botocore does not retry is one attempt, an error, and no exhausted retries."""
    fault_server.script(("error", 400, "InvalidParameterValue"))
    client = make_client("ec2", fault_url(fault_server), max_attempts=3)
    enable_metrics(client, registry=registry, start_server=False)
    with pytest.raises(ClientError):
        client.describe_regions()
    labels = dict(EC2, action="DescribeRegions")
    assert len(fault_server.requests) == 1
    assert value(registry, "boto_request_errors_total", error_type="InvalidParameterValue",
                 **labels) == 1
    assert series(registry, "boto_retries_exhausted") == {}
    assert series(registry, "boto_request_retries") == {}


def test_connection_refused_is_endpoint_connection_error(registry, no_backoff):
    """A refused connection reaches the user as EndpointConnectionError and is typed so."""
    client = make_client("ec2", f"http://127.0.0.1:{closed_port()}", max_attempts=2)
    enable_metrics(client, registry=registry, start_server=False)
    with pytest.raises(EndpointConnectionError):
        client.describe_regions()
    labels = dict(EC2, action="DescribeRegions")
    assert value(registry, "boto_requests_total", status_code="none", **labels) == 1
    assert value(registry, "boto_request_errors_total", error_type="EndpointConnectionError",
                 **labels) == 1
    assert value(registry, "boto_attempt_duration_seconds_count", **labels) == 2
    assert value(registry, "boto_request_retries_total", **labels) == 1
    assert value(registry, "boto_retries_exhausted_total", error_type="EndpointConnectionError",
                 **labels) == 1
    assert value(registry, "boto_response_size_bytes_count", **labels) == 0
    assert value(registry, "boto_requests_in_flight", **EC2) == 0


def test_read_timeout_is_typed_by_its_exception(fault_server, registry):
    """An answer slower than the read timeout counts as ReadTimeoutError with no status."""
    fault_server.script(("slow", 1.0, 200))
    client = make_client("ec2", fault_url(fault_server), read_timeout=0.2)
    enable_metrics(client, registry=registry, start_server=False)
    with pytest.raises(ReadTimeoutError):
        client.describe_regions()
    labels = dict(EC2, action="DescribeRegions")
    assert value(registry, "boto_request_errors_total", error_type="ReadTimeoutError",
                 **labels) == 1
    assert value(registry, "boto_requests_total", status_code="none", **labels) == 1


def test_reset_connection_is_typed_by_the_exception_the_user_gets(fault_server, registry):
    """A reset connection is counted under the class name of the exception raised."""
    fault_server.script(("reset",))
    client = make_client("ec2", fault_url(fault_server))
    enable_metrics(client, registry=registry, start_server=False)
    with pytest.raises(Exception) as raised:
        client.describe_regions()
    assert value(registry, "boto_request_errors_total", action="DescribeRegions",
                 error_type=type(raised.value).__name__, **EC2) == 1


def test_slow_answer_lands_in_the_right_buckets(fault_server, registry):
    """A 0.3 s answer is above the 0.25 s bucket and within 0.5 s, for call and attempt."""
    fault_server.script(("slow", 0.3, 200))
    client = make_client("ec2", fault_url(fault_server))
    enable_metrics(client, registry=registry, start_server=False)
    client.describe_regions()
    labels = dict(EC2, action="DescribeRegions")
    for family in ("boto_request_duration_seconds", "boto_attempt_duration_seconds"):
        assert value(registry, family + "_bucket", le="0.25", **labels) == 0, family
        assert value(registry, family + "_bucket", le="0.5", **labels) == 1, family


# --- the user's exceptions and calls that never reach AWS ----------------------------------------

def test_client_error_reaches_the_user_unchanged(fault_server, registry):
    """An instrumented client raises the same ClientError as an uninstrumented one."""
    fault_server.script(("error", 400, "InvalidParameterValue"))
    plain = make_client("ec2", fault_url(fault_server))
    instrumented = make_client("ec2", fault_url(fault_server))
    enable_metrics(instrumented, registry=registry, start_server=False)
    raised = []
    for client in (plain, instrumented):
        with pytest.raises(ClientError) as info:
            client.describe_regions()
        raised.append(info.value)
    assert type(raised[0]) is type(raised[1])
    assert str(raised[0]) == str(raised[1])
    assert raised[0].response["Error"] == raised[1].response["Error"]
    assert "boto_prom.call" not in str(raised[1].response)


def test_param_validation_error_reaches_the_user_and_counts_nothing(registry):
    """A bad parameter raises ParamValidationError before any request, and nothing is counted."""
    client = make_client("ec2", f"http://127.0.0.1:{closed_port()}")
    enable_metrics(client, registry=registry, start_server=False)
    with pytest.raises(ParamValidationError):
        client.describe_instances(InstanceIds="i-not-a-list")
    assert series(registry, "boto_requests") == {}
    assert hook_errors(registry) == {}


def test_missing_credentials_are_an_error_before_any_attempt(registry):
    """NoCredentialsError reaches the user and counts as an error with no attempt."""
    client = boto3.session.Session().client(
        "ec2", endpoint_url=f"http://127.0.0.1:{closed_port()}", region_name=REGION)
    enable_metrics(client, registry=registry, start_server=False)
    with pytest.raises(NoCredentialsError):
        client.describe_regions()
    labels = dict(EC2, action="DescribeRegions")
    assert value(registry, "boto_request_errors_total", error_type="NoCredentialsError",
                 **labels) == 1
    assert value(registry, "boto_requests_total", status_code="none", **labels) == 1
    assert value(registry, "boto_attempt_duration_seconds_count", **labels) == 0
    assert value(registry, "boto_requests_in_flight", **EC2) == 0


def test_stubbed_calls_are_not_counted(registry):
    """A call answered by botocore's Stubber makes no HTTP attempt and is not an AWS request."""
    client = make_client("ec2", f"http://127.0.0.1:{closed_port()}")
    enable_metrics(client, registry=registry, start_server=False)
    with Stubber(client) as stubber:
        stubber.add_response("describe_regions", {"Regions": []})
        assert client.describe_regions()["Regions"] == []
    assert series(registry, "boto_requests") == {}
    assert value(registry, "boto_requests_in_flight", **EC2) == 0


def test_users_failing_after_call_handler_still_leaves_a_clean_count(fault_server, registry):
    """A user's after-call handler that raises reaches the user; the call is still recorded."""
    class Broken(Exception):
        pass

    def explode(**kwargs):
        raise Broken()

    client = make_client("ec2", fault_url(fault_server))
    client.meta.events.register("after-call.*.*", explode)  # before ours, in the same place
    enable_metrics(client, registry=registry, start_server=False)
    with pytest.raises(Broken):
        client.describe_regions()
    assert value(registry, "boto_requests_total", action="DescribeRegions", status_code="200",
                 **EC2) == 1
    assert value(registry, "boto_requests_in_flight", **EC2) == 0


# --- in flight ------------------------------------------------------------------------------------

def test_in_flight_counts_concurrent_calls_and_returns_to_zero(fault_server, registry):
    """Eight calls held by the server show 8 in flight, and 0 once they are answered."""
    fault_server.script(("gate", 200))
    client = make_client("ec2", fault_url(fault_server))
    enable_metrics(client, registry=registry, start_server=False)
    pool = [threading.Thread(target=client.describe_regions) for _ in range(8)]
    for t in pool:
        t.start()
    try:
        assert wait_for(lambda: value(registry, "boto_requests_in_flight", **EC2) == 8)
    finally:
        fault_server.gate.set()
        for t in pool:
            t.join()
    assert value(registry, "boto_requests_in_flight", **EC2) == 0
    assert value(registry, "boto_requests_total", action="DescribeRegions", status_code="200",
                 **EC2) == 8


def test_disable_during_a_call_still_finishes_it(fault_server, registry):
    """A call under way when metrics are disabled is recorded and leaves the in-flight gauge."""
    fault_server.script(("gate", 200))
    client = make_client("ec2", fault_url(fault_server))
    enable_metrics(client, registry=registry, start_server=False)
    thread = threading.Thread(target=client.describe_regions)
    thread.start()
    try:
        assert wait_for(lambda: value(registry, "boto_requests_in_flight", **EC2) == 1)
        assert disable_metrics(client) is True
    finally:
        fault_server.gate.set()
        thread.join()
    client.describe_regions()
    assert value(registry, "boto_requests_in_flight", **EC2) == 0
    assert value(registry, "boto_requests_total", action="DescribeRegions", status_code="200",
                 **EC2) == 1


# --- enable / disable -----------------------------------------------------------------------------

def test_double_enable_never_double_counts(fault_server, registry):
    """Enabling a client twice returns the same hook and each call counts once."""
    client = make_client("ec2", fault_url(fault_server))
    first = enable_metrics(client, registry=registry, start_server=False)
    second = enable_metrics(client, registry=registry, start_server=False)
    assert first is second
    client.describe_regions()
    assert value(registry, "boto_requests_total", action="DescribeRegions", status_code="200",
                 **EC2) == 1
    assert value(registry, "boto_attempt_duration_seconds_count", action="DescribeRegions",
                 **EC2) == 1


def test_disable_stops_counting_and_enable_again_resumes(fault_server, registry):
    """disable_metrics stops a client's counting, says whether it was on, and can be undone."""
    client = make_client("ec2", fault_url(fault_server))
    enable_metrics(client, registry=registry, start_server=False)
    client.describe_regions()
    assert disable_metrics(client) is True
    client.describe_regions()
    assert disable_metrics(client) is False
    labels = dict(EC2, action="DescribeRegions", status_code="200")
    assert value(registry, "boto_requests_total", **labels) == 1
    enable_metrics(client, registry=registry, start_server=False)
    client.describe_regions()
    assert value(registry, "boto_requests_total", **labels) == 2


@pytest.mark.parametrize("kind", ["boto3", "botocore"])
def test_session_instruments_clients_created_afterwards(kind, fault_server, registry):
    """Enabling a session covers its later clients, not earlier ones; disabling stops them all."""
    session = boto3.session.Session() if kind == "boto3" else botocore.session.Session()

    create = session.client if kind == "boto3" else session.create_client

    def client():
        return create(
            "ec2", endpoint_url=fault_url(fault_server), region_name=REGION,
            config=Config(retries={"total_max_attempts": 1}), **CREDS)

    earlier = client()
    hook = enable_metrics(session, registry=registry, start_server=False)
    later = client()
    assert enable_metrics(later, registry=registry, start_server=False) is hook
    earlier.describe_regions()
    later.describe_regions()
    labels = dict(EC2, action="DescribeRegions", status_code="200")
    assert value(registry, "boto_requests_total", **labels) == 1
    assert disable_metrics(session) is True
    later.describe_regions()
    client().describe_regions()
    assert value(registry, "boto_requests_total", **labels) == 1
    assert disable_metrics(later) is False


def test_one_client_of_an_enabled_session_can_be_disabled(fault_server, registry):
    """Disabling one client of an enabled session stops that client only."""
    session = boto3.session.Session()
    enable_metrics(session, registry=registry, start_server=False)
    one, two = (make_client("ec2", fault_url(fault_server), session=session) for _ in range(2))
    assert disable_metrics(one) is True
    one.describe_regions()
    two.describe_regions()
    assert value(registry, "boto_requests_total", action="DescribeRegions", status_code="200",
                 **EC2) == 1


def test_overrides_label_a_client(fault_server, registry):
    """aws_service= and aws_region= at enable time replace what the client says."""
    client = make_client("ec2", fault_url(fault_server))
    enable_metrics(client, registry=registry, start_server=False, aws_service="ec2-fleet",
                   aws_region="eu-north-1")
    client.describe_regions()
    assert value(registry, "boto_requests_total", aws_service="ec2-fleet",
                 aws_region="eu-north-1", action="DescribeRegions", status_code="200") == 1


@pytest.mark.parametrize("target", ["session", "global"])
def test_overrides_are_refused_for_many_clients(target, registry):
    """aws_service= on a session or on everything is a one-sentence ConfigurationError."""
    arg = boto3.session.Session() if target == "session" else None
    with pytest.raises(ConfigurationError, match="label one client or connection"):
        enable_metrics(arg, registry=registry, start_server=False, aws_service="ec2")


def test_enable_starts_the_metrics_server_for_a_client(fault_server, registry):
    """A client enabled with port=0 gets the process's metrics server, serving its calls."""
    import urllib.request

    client = make_client("ec2", fault_url(fault_server))
    hook = enable_metrics(client, registry=registry, port=0)
    client.describe_regions()
    body = urllib.request.urlopen(hook.server.url, timeout=5).read().decode()
    assert 'boto_requests_total{action="DescribeRegions",aws_region="us-west-2"' in body


# --- global mode, and boto 2 beside boto3 ---------------------------------------------------------

@pytest.fixture
def default_session(monkeypatch, moto_url):
    """boto3's default session, fresh for the test, with fake credentials in the environment;
    global metrics are disabled afterwards, and botocore is checked to be as it was."""
    original = BaseClient.__dict__["_make_api_call"]
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDS["aws_secret_access_key"])
    yield
    disable_metrics()
    assert BaseClient.__dict__["_make_api_call"] is original
    BaseClient._make_api_call = original


def _ec2(url, session=None):
    """An EC2 client of url from session: a new boto3 Session's, a botocore session's (made
    with create_client), or boto3's default one (session "default")."""
    args = dict(endpoint_url=url, region_name=REGION,
                config=Config(retries={"total_max_attempts": 1}), **CREDS)
    if session == "default":
        return boto3.client("ec2", **args)
    if isinstance(session, botocore.session.Session):
        return session.create_client("ec2", **args)
    return (session or boto3.session.Session()).client("ec2", **args)


REGIONS = dict(EC2, action="DescribeRegions")


def test_global_enable_instruments_later_default_session_clients(default_session, moto_url,
                                                                 registry):
    """enable_metrics() covers boto3.client() made afterwards, and disable_metrics() ends it."""
    hook = enable_metrics(registry=registry, start_server=False)
    assert enable_metrics(registry=registry, start_server=False) is hook
    assert hook.boto2 is HAS_BOTO2
    client = boto3.client("ec2", endpoint_url=moto_url, region_name=REGION)
    client.describe_instances()
    labels = dict(EC2, action="DescribeInstances", status_code="200")
    assert value(registry, "boto_requests_total", **labels) == 1
    assert disable_metrics() is True
    assert disable_metrics() is False
    client.describe_instances()
    boto3.client("ec2", endpoint_url=moto_url, region_name=REGION).describe_instances()
    assert value(registry, "boto_requests_total", **labels) == 1


def test_global_enable_counts_every_session_once(default_session, moto_url, registry):
    """A client made before enable_metrics(), one of a new boto3 Session, one of
    botocore.session.get_session() and one of the default session are each counted once."""
    before = _ec2(moto_url)
    hook = enable_metrics(registry=registry, start_server=False)
    clients = [before, _ec2(moto_url), _ec2(moto_url, botocore.session.get_session()),
               _ec2(moto_url, "default")]
    for client in clients:
        assert installed(client) is None  # covered at its first call, not before
        client.describe_regions()
        assert installed(client) is hook.botocore
    before.describe_regions()
    assert value(registry, "boto_requests_total", status_code="200", **REGIONS) == 5
    assert value(registry, "boto_attempt_duration_seconds_count", **REGIONS) == 5
    assert value(registry, "boto_request_duration_seconds_count", **REGIONS) == 5
    assert value(registry, "boto_requests_in_flight", **EC2) == 0
    assert hook_errors(registry) == {}


def test_global_enable_counts_concurrent_first_calls_once(default_session, moto_url,
                                                          registry):
    """Sixteen threads making a client's first calls at once under global mode: one
    registers the handlers, and each call counts once."""
    client = _ec2(moto_url)
    enable_metrics(registry=registry, start_server=False)
    barrier = threading.Barrier(16)

    def call():
        barrier.wait()
        client.describe_regions()

    threads = [threading.Thread(target=call) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert value(registry, "boto_requests_total", status_code="200", **REGIONS) == 16
    assert value(registry, "boto_attempt_duration_seconds_count", **REGIONS) == 16


def test_a_client_or_session_enabled_on_its_own_keeps_its_hook(default_session, moto_url,
                                                               registry):
    """Under global mode, a client enabled on its own (before or after its first call) and a
    client of an enabled session are counted once, by their own hook and into its registry."""
    from prometheus_client import CollectorRegistry

    elsewhere = CollectorRegistry()
    metrics_for(elsewhere, detailed=True)
    own = _ec2(moto_url)
    mine = enable_metrics(own, registry=elsewhere, start_server=False)
    session = boto3.session.Session()
    theirs = enable_metrics(session, registry=elsewhere, start_server=False)
    of_session = _ec2(moto_url, session)
    everything = enable_metrics(registry=registry, start_server=False)
    later = _ec2(moto_url)
    later.describe_regions()
    assert enable_metrics(later, registry=registry, start_server=False) is everything.botocore
    for client in (own, of_session, later):
        client.describe_regions()
    assert installed(own) is mine and installed(of_session) is theirs
    assert value(elsewhere, "boto_requests_total", status_code="200", **REGIONS) == 2
    assert value(registry, "boto_requests_total", status_code="200", **REGIONS) == 2
    assert value(elsewhere, "boto_attempt_duration_seconds_count", **REGIONS) == 2
    assert value(registry, "boto_attempt_duration_seconds_count", **REGIONS) == 2
    assert disable_metrics() is True
    assert installed(own) is mine and installed(of_session) is theirs
    own.describe_regions()
    later.describe_regions()
    assert value(elsewhere, "boto_requests_total", status_code="200", **REGIONS) == 3
    assert value(registry, "boto_requests_total", status_code="200", **REGIONS) == 2


def test_one_client_can_be_disabled_under_global_mode(default_session, moto_url, registry):
    """disable_metrics(client) stops one client global mode covered, and it stays off while
    the others go on being counted."""
    one, two = _ec2(moto_url), _ec2(moto_url)
    enable_metrics(registry=registry, start_server=False)
    one.describe_regions()
    assert disable_metrics(one) is True
    one.describe_regions()
    two.describe_regions()
    assert installed(one) is None
    assert value(registry, "boto_requests_total", status_code="200", **REGIONS) == 2


def test_global_disable_puts_botocore_back(default_session, moto_url, registry):
    """disable_metrics() puts botocore's own _make_api_call back, takes the hook off every
    client it covered, and a second enable covers them again."""
    original = BaseClient.__dict__["_make_api_call"]
    client = _ec2(moto_url)
    enable_metrics(registry=registry, start_server=False)
    assert BaseClient.__dict__["_make_api_call"] is not original
    client.describe_regions()
    assert disable_metrics() is True
    assert BaseClient.__dict__["_make_api_call"] is original
    assert installed(client) is None and "_boto_prom_global" not in vars(client)
    client.describe_regions()
    _ec2(moto_url).describe_regions()
    assert value(registry, "boto_requests_total", status_code="200", **REGIONS) == 1
    again = enable_metrics(registry=registry, start_server=False)
    client.describe_regions()
    assert installed(client) is again.botocore
    assert value(registry, "boto_requests_total", status_code="200", **REGIONS) == 2


def test_global_disable_keeps_a_wrapper_put_over_botocores(default_session, moto_url,
                                                          registry):
    """A wrapper another library put over _make_api_call after ours stays when metrics are
    disabled, and ours under it records nothing more."""
    import functools

    original = BaseClient.__dict__["_make_api_call"]
    enable_metrics(registry=registry, start_server=False)
    ours = BaseClient.__dict__["_make_api_call"]
    seen = []

    @functools.wraps(ours)
    def theirs(self, operation_name, api_params):
        seen.append(operation_name)
        return ours(self, operation_name, api_params)

    BaseClient._make_api_call = theirs
    try:
        assert disable_metrics() is True
        assert BaseClient.__dict__["_make_api_call"] is theirs
        _ec2(moto_url).describe_regions()
        assert seen == ["DescribeRegions"]
        assert value(registry, "boto_requests_total", status_code="200", **REGIONS) == 0
    finally:
        BaseClient._make_api_call = original


def test_a_failure_covering_a_client_does_not_break_its_calls(default_session, moto_url,
                                                              monkeypatch, registry):
    """When registering the handlers on a client fails, its calls go ahead uncounted, and the
    failure is counted once, at stage global."""
    from boto_prom import botocore as adapter

    def broken(*args):
        raise RuntimeError("no events today")

    monkeypatch.setattr(adapter, "_register", broken)
    enable_metrics(registry=registry, start_server=False)
    client = _ec2(moto_url)
    assert "Regions" in client.describe_regions()
    client.describe_regions()
    assert value(registry, "boto_requests_total", status_code="200", **REGIONS) == 0
    assert hook_errors(registry) == {(("stage", "global"),): 1.0}


@pytest.mark.skipif(not HAS_BOTO2, reason="boto 2 needs Python 3.11 or older")
def test_boto2_and_boto3_land_in_the_same_series(default_session, aws, moto_url, registry):
    """Under enable_metrics(), a boto 2 and a boto3 DescribeInstances share one series."""
    from boto.connection import AWSAuthConnection

    original_init = AWSAuthConnection.__init__
    hook = enable_metrics(registry=registry, start_server=False)
    assert AWSAuthConnection.__init__ is not original_init
    conn = aws.ec2()  # created after enabling: instrumented without a call of its own
    assert enable_metrics(conn, registry=registry, start_server=False) is conn.request_hook
    conn.get_all_instances()
    boto3.client("ec2", endpoint_url=moto_url, region_name=REGION).describe_instances()
    assert value(registry, "boto_requests_total", action="DescribeInstances",
                 status_code="200", **EC2) == 2
    assert value(registry, "boto_request_duration_seconds_count", action="DescribeInstances",
                 **EC2) == 2
    families = {m.name for m in registry.collect() if m.samples}
    assert {"boto_requests", "boto_request_duration_seconds", "boto_request_size_bytes",
            "boto_response_size_bytes"} <= families
    assert disable_metrics() is True
    assert AWSAuthConnection.__init__ is original_init
    conn.get_all_instances()
    aws.ec2().get_all_instances()
    assert value(registry, "boto_requests_total", action="DescribeInstances",
                 status_code="200", **EC2) == 2
    assert hook.active is False


def test_global_enable_reads_no_aws_config(default_session, monkeypatch, registry):
    """enable_metrics() makes no session, so a missing AWS_PROFILE is the program's own
    error when it makes one, as without boto-prom; the enable itself succeeds."""
    from botocore.exceptions import ProfileNotFound

    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    assert enable_metrics(registry=registry, start_server=False).active
    assert boto3.DEFAULT_SESSION is None
    with pytest.raises(ProfileNotFound):
        boto3.client("ec2", region_name=REGION)


def test_failing_boto2_patch_leaves_botocore_as_it_was(default_session, monkeypatch, moto_url,
                                                       registry):
    """When patching boto 2 fails after botocore was patched, botocore is put back too."""
    def broken(recorder, settings):
        raise RuntimeError("boto 2 patch failed")

    original = BaseClient.__dict__["_make_api_call"]
    monkeypatch.setattr(boto2_adapter, "install_global", broken)
    with pytest.raises(RuntimeError, match="boto 2 patch failed"):
        enable_metrics(registry=registry, start_server=False)
    assert BaseClient.__dict__["_make_api_call"] is original
    assert boto3.DEFAULT_SESSION is None and disable_metrics() is False
    client = boto3.client("ec2", endpoint_url=moto_url, region_name=REGION)
    client.describe_instances()
    assert installed(client) is None
    assert value(registry, "boto_requests_total", action="DescribeInstances", status_code="200",
                 **EC2) == 0


def test_failed_global_enable_keeps_a_hook_enabled_on_the_default_session(default_session,
                                                                          monkeypatch,
                                                                          registry):
    """A failing global enable does not take out a hook the user put on the default session."""
    boto3.setup_default_session()
    mine = enable_metrics(boto3.DEFAULT_SESSION, registry=registry, start_server=False)
    monkeypatch.setattr(boto2_adapter, "install_global", lambda recorder, settings: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        enable_metrics(registry=registry, start_server=False)
    assert installed(boto3.DEFAULT_SESSION) is mine and mine.active


def test_global_enable_failing_at_its_last_step_puts_botocore_back(default_session,
                                                                   monkeypatch, registry):
    """A global enable that fails at its last step (a push of another registry already
    arranged) leaves botocore as it was, as a failure at any earlier step does."""
    from prometheus_client import CollectorRegistry

    from boto_prom.push import pending_exit_push

    original = BaseClient.__dict__["_make_api_call"]
    monkeypatch.setenv("BOTO_PROM_PUSHGATEWAY", "http://127.0.0.1:9")
    client = boto3.session.Session().client("sqs", region_name=REGION, **CREDS)
    enable_metrics(client, registry=registry, start_server=False)
    try:
        with pytest.raises(ConfigurationError, match="pushes one registry"):
            enable_metrics(registry=CollectorRegistry(), start_server=False)
        assert BaseClient.__dict__["_make_api_call"] is original
        assert boto3.DEFAULT_SESSION is None and disable_metrics() is False
    finally:
        disable_metrics(client)
        pending_exit_push().cancel()


def _started_call(registry):
    """A hook's before-call handler called by hand for an EC2 DescribeRegions call: the hook,
    and the call's context dict for the handlers that follow."""
    from botocore.model import ServiceModel

    model = ServiceModel({"metadata": {"endpointPrefix": "ec2", "protocol": "ec2"},
                          "operations": {"DescribeRegions": {"name": "DescribeRegions"}},
                          "shapes": {}}, "ec2").operation_model("DescribeRegions")
    hook = BotocoreHook(Recorder(metrics_for(registry)))
    context = {"client_region": REGION}
    hook.before_call(model=model, context=context)
    return hook, context


def test_a_body_that_cannot_be_measured_still_counts_the_call(registry):
    """A before-send whose request body and headers cannot be read is counted at stage
    request_size; the call is still counted and leaves the in-flight gauge."""
    hook, context = _started_call(registry)

    class Request:
        body, headers = "h\u00e9llo", None  # a text body not ASCII, headers unreadable

    request = Request()
    request.context = context

    class Http:
        status_code = 200
        headers = {"content-length": "2"}

    _on_before_send(request=request)
    _on_after_call(http_response=Http(), parsed={"ResponseMetadata": {"HTTPHeaders": {}}},
                   context=context)
    assert value(registry, "boto_requests_in_flight", **EC2) == 0
    assert value(registry, "boto_requests_total", action="DescribeRegions", status_code="200",
                 **EC2) == 1
    assert value(registry, "boto_prom_hook_errors_total", stage="request_size") == 1


def test_service_names_agree_between_sdks():
    """Each service boto 2 knows has, from its AWS host, the name botocore gives it."""
    from boto_prom.naming import BOTO2_MODULE_SERVICES, parse_host

    session = botocore.session.Session()
    for name in sorted(set(BOTO2_MODULE_SERVICES.values())):
        model = session.get_service_model(name)
        assert model.service_name == name
        assert parse_host(f"{model.endpoint_prefix}.{REGION}.amazonaws.com")[0] == name, name


def test_import_and_botocore_path_work_without_boto2():
    """With boto 2 unimportable, boto_prom and its botocore path import and record."""
    code = """
import sys
sys.modules["boto"] = None  # as on Python 3.12+, where boto 2 cannot import
import boto3, boto_prom
from botocore.stub import Stubber
from prometheus_client import CollectorRegistry
registry = CollectorRegistry()
client = boto3.session.Session().client("ec2", region_name="us-west-2",
    aws_access_key_id="AKIATESTTESTTESTTEST", aws_secret_access_key="x")
hook = boto_prom.enable_metrics(client, registry=registry, start_server=False)
everything = boto_prom.enable_metrics(registry=registry, start_server=False)
print(type(hook).__name__, everything.boto2, sys.modules["boto"])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["BotocoreHook", "False", "None"]


# --- exemplars --------------------------------------------------------------------------------------

def test_exemplar_carries_the_request_id_in_openmetrics(moto_url, registry):
    """The duration histogram has the AWS request id as an exemplar, in OpenMetrics only."""
    client = make_client("ec2", moto_url)
    enable_metrics(client, registry=registry, start_server=False)
    request_id = client.describe_instances()["ResponseMetadata"]["RequestId"]
    assert request_id
    text = openmetrics_latest(registry).decode()
    lines = [line for line in text.splitlines() if f'# {{aws_request_id="{request_id}"}}' in line]
    assert len(lines) == 1
    assert lines[0].startswith("boto_request_duration_seconds_bucket{")
    assert "aws_request_id" not in generate_latest(registry).decode()


def test_no_exemplars_in_multiprocess_mode(tmp_path):
    """In multiprocess mode the sink neither reads request ids nor adds exemplars."""
    code = """if True:
        from prometheus_client import CollectorRegistry
        from prometheus_client.openmetrics.exposition import generate_latest
        from boto_prom.metrics import metrics_for
        from boto_prom.recorder import Recorder
        recorder = Recorder(metrics_for(CollectorRegistry()))
        bound = recorder.bind("botocore", "ec2", "us-west-2", "DescribeRegions")
        print(recorder.metrics.exemplars, bound.exemplar_due(0.01))
        bound.record("200", 0.01, 1, 1, None, False, "req-1", 1)
        print("req-1" in generate_latest(recorder.registry).decode())
    """
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout
    assert out.split() == ["False", "False", "False"]


def test_too_long_request_id_gets_no_exemplar_but_is_counted(registry):
    """A request id past the exemplar length limit is left out; the call is still observed."""
    bound = _bound(registry)
    _record(bound, request_id="r" * 115)
    _record(bound, request_id="s" * 114)
    text = openmetrics_latest(registry).decode()
    assert "r" * 115 not in text and "s" * 114 in text
    assert value(registry, "boto_request_duration_seconds_count", action="DescribeRegions",
                 **EC2) == 2


def test_one_exemplar_per_bucket_per_interval(registry):
    """Within a second a bucket keeps its first request id; after it, the next one replaces it."""
    bound = _bound(registry)
    _record(bound, request_id="first-id")
    _record(bound, request_id="second-id")
    _record(bound, request_id="slow-id", duration=3.0)
    text = openmetrics_latest(registry).decode()
    assert "first-id" in text and "second-id" not in text and "slow-id" in text
    time.sleep(EXEMPLAR_INTERVAL_SECONDS + 0.05)
    _record(bound, request_id="third-id")
    text = openmetrics_latest(registry).decode()
    assert "third-id" in text and "first-id" not in text
    assert value(registry, "boto_request_duration_seconds_count", action="DescribeRegions",
                 **EC2) == 4


def _bound(registry):
    """The bound label set a botocore DescribeRegions call in us-west-2 is recorded with."""
    return Recorder(metrics_for(registry)).bind("botocore", "ec2", REGION, "DescribeRegions")


def _record(bound, request_id=None, duration=0.01):
    """One successful call of one attempt, recorded as the botocore adapter records it."""
    bound.record("200", duration, 10, 20, None, False, request_id, 1)


# --- the guard: malformed input, failing sinks ----------------------------------------------------

class _Bare:
    """An object with nothing botocore would hand a handler."""


def test_handlers_never_raise_on_malformed_input(registry, caplog):
    """Each handler given garbage returns None without raising, counting what it could not do."""
    hook = BotocoreHook(Recorder(metrics_for(registry)))
    with caplog.at_level(logging.DEBUG, logger="boto_prom"):
        assert hook.before_call(model=None, context=None) is None
        assert hook.before_call(model=[], context={}) is None
        for handler in (_on_request_created, _on_before_send):
            assert handler(request=None) is None
            assert handler(request=_Bare()) is None
        for handler in (_on_response_received, _on_after_call, _on_after_call_error):
            assert handler(context=None) is None
            assert handler(context="context") is None
            assert handler(context={"boto_prom.call": None}) is None
    # model=None with context=None fails; a model of the wrong type only gets "unknown" labels.
    assert hook_errors(registry) == {
        (("stage", "before_call"),): 1.0}
    assert series(registry, "boto_requests") == {}
    assert [r.levelno for r in caplog.records].count(logging.WARNING) == 1


class _Headers(dict):
    def get(self, name, default=None):
        raise RuntimeError("broken headers")


class _Http:
    def __init__(self, status, headers=None):
        self.status_code = status
        self.headers = {"content-length": "42"} if headers is None else headers


@pytest.mark.parametrize("http, parsed, status, stage", [
    (_Http(200), {}, "200", None),
    (_Http("200"), {}, "unknown", "status"),
    (_Http(None), None, "unknown", "status"),
    (_Bare(), None, "unknown", "status"),
    (_Http(200, {"content-length": "lots"}), {}, "200", "response_size"),
    (_Http(200, _Headers()), {}, "200", "response_size"),
    (_Http(400), {"Error": "not a dict"}, "400", None),
    (_Http(400), {"Error": {"Code": "../../etc"}}, "400", None),
    (_Http(200), {"ResponseMetadata": {"RequestId": "bad id with spaces"}}, "200", None),
])
def test_malformed_responses_are_recorded_as_far_as_they_can_be(http, parsed, status, stage,
                                                                registry):
    """A call ending with a malformed response is counted under the status it could read."""
    hook, context = _started_call(registry)
    request = _Bare()
    request.context, request.body, request.headers = context, b"abc", {}
    if not boto_prom.botocore._PREPARED_HAS_CONTEXT:
        _on_request_created(request=request)
    _on_before_send(request=request)
    _on_response_received(context=context)
    _on_after_call(http_response=http, parsed=parsed, context=context)
    assert "boto_prom.call" not in context
    assert series(registry, "boto_requests") == {
        tuple(sorted(dict(EC2, action="DescribeRegions", status_code=status).items())): 1.0}
    errors = series(registry, "boto_request_errors")
    if status == "400":
        assert errors == {tuple(sorted(dict(EC2, action="DescribeRegions",
                                            error_type="400").items())): 1.0}
    assert hook_errors(registry) == (
        {(("stage", stage),): 1.0} if stage else {})
    assert "etc" not in generate_latest(registry).decode()
    assert "spaces" not in openmetrics_latest(registry).decode()


def test_failing_sink_does_not_break_the_call(fault_server, registry):
    """A sink that raises is counted under its stage; the AWS call returns normally."""
    class Exploding:
        def record(self, rec):
            raise RuntimeError("disk on fire")

    client = make_client("ec2", fault_url(fault_server))
    instrument(client, Recorder(metrics_for(registry), csv=Exploding()), None)
    assert client.describe_regions()["Regions"] == []
    assert value(registry, "boto_prom_hook_errors_total", stage="csv") == 1
    assert value(registry, "boto_requests_total", action="DescribeRegions", status_code="200",
                 **EC2) == 1


# --- cardinality limits on the botocore path --------------------------------------------------

def test_filters_skip_calls_entirely(moto_url, registry):
    """A filtered-out service or action leaves no series at all: no request, attempt or
    in-flight sample."""
    ec2 = make_client("ec2", moto_url)
    iam = make_client("iam", moto_url)
    for client in (ec2, iam):
        enable_metrics(client, registry=registry, start_server=False,
                       allowed_services=["ec2"], ignored_actions=["DescribeVolumes"])
    ec2.describe_instances()
    ec2.describe_volumes()
    iam.list_users()
    assert {dict(k)["action"] for k in series(registry, "boto_requests")} == {
        "DescribeInstances"}
    attempts = {dict(s.labels)["action"] for f in registry.collect()
                if f.name == "boto_attempt_duration_seconds" for s in f.samples
                if s.name.endswith("_count")}
    assert attempts == {"DescribeInstances"}
    in_flight = {dict(k)["aws_service"] for k in series(registry, "boto_requests_in_flight")}
    assert in_flight == {"ec2"}


def test_attempts_fold_with_the_label_set_cap(moto_url):
    """Past max_label_sets, the attempt histogram counts under action="_other" like the rest."""
    client, registry = make_client("ec2", moto_url), CollectorRegistry()
    enable_metrics(client, registry=registry, start_server=False, max_label_sets=1,
                   detailed_metrics=True)
    client.describe_instances()
    client.describe_volumes()
    attempts = {dict(s.labels)["action"]: s.value for f in registry.collect()
                if f.name == "boto_attempt_duration_seconds" for s in f.samples
                if s.name.endswith("_count")}
    assert attempts == {"DescribeInstances": 1.0, "_other": 1.0}
    assert value(registry, "boto_prom_label_sets_folded_total") == 1


# --- what a review found: interrupted calls, client churn, global re-enabling -------------------

def test_interrupted_call_leaves_the_in_flight_gauge(fault_server, registry):
    """A call ended by a BaseException (Ctrl-C while waiting for the answer), which botocore
    never reports to after-call handlers, still leaves the in-flight gauge."""
    import gc
    import signal

    fault_server.script(("slow", 2.0, 200), ("status", 200))
    client = make_client("ec2", fault_url(fault_server))
    enable_metrics(client, registry=registry, start_server=False)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        client.describe_regions()
    except KeyboardInterrupt:
        pass
    else:  # pragma: no cover - reported below
        pytest.fail("the interrupt did not reach the caller")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    gc.collect()
    assert value(registry, "boto_requests_in_flight", **EC2) == 0
    client.describe_regions()
    assert value(registry, "boto_requests_in_flight", **EC2) == 0


def test_a_client_per_call_keeps_one_cache_entry(moto_url, registry):
    """Clients made one per call from an enabled session share one bound label set, so their
    models are not kept alive by the hook."""
    import gc
    import weakref

    session = boto3.session.Session()
    enable_metrics(session, registry=registry, start_server=False)
    models = []
    for _ in range(5):
        client = make_client("ec2", moto_url, session=session)
        client.describe_regions()
        models.append(weakref.ref(client.meta.service_model.operation_model("DescribeRegions")))
        del client
    gc.collect()
    assert [ref() for ref in models] == [None] * 5
    assert value(registry, "boto_requests_total", action="DescribeRegions",
                 status_code="200", **EC2) == 5


def test_folded_calls_are_counted_per_call(moto_url):
    """boto_prom_label_sets_folded_total counts every call folded, on the botocore path too."""
    client, registry = make_client("ec2", moto_url), CollectorRegistry()
    enable_metrics(client, registry=registry, start_server=False, max_label_sets=1,
                   detailed_metrics=True)
    client.describe_regions()
    for _ in range(3):
        client.describe_volumes()
    assert value(registry, "boto_prom_label_sets_folded_total") == 3
    assert value(registry, "boto_requests_total", action="_other", status_code="200",
                 **EC2) == 3


@pytest.mark.skipif(not HAS_BOTO2, reason="boto 2 needs Python 3.11 or older")
def test_global_disable_keeps_a_later_wrapper_and_allows_re_enabling(default_session, aws,
                                                                     registry):
    """disable_metrics() leaves a wrapper another library put over boto 2's constructor, and a
    connection made while global metrics were on can be enabled on its own afterwards."""
    import functools

    from boto.connection import AWSAuthConnection

    original = AWSAuthConnection.__init__
    enable_metrics(registry=registry, start_server=False)
    conn = aws.ec2()
    ours = AWSAuthConnection.__init__
    seen = []

    @functools.wraps(ours)
    def theirs(self, *args, **kwargs):
        seen.append(type(self).__name__)
        ours(self, *args, **kwargs)

    AWSAuthConnection.__init__ = theirs
    try:
        assert disable_metrics() is True
        assert AWSAuthConnection.__init__ is theirs
        aws.ec2()
        assert seen == ["EC2Connection"]
    finally:
        AWSAuthConnection.__init__ = original
    hook = enable_metrics(conn, registry=registry, start_server=False)
    assert hook.active and hook is conn.request_hook
    conn.get_all_regions()
    assert value(registry, "boto_requests_total", action="DescribeRegions",
                 status_code="200", **EC2) == 1
