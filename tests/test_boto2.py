"""The boto 2 hook against real boto 2 connections: moto on loopback and the fault server."""

from __future__ import annotations

import json
import logging
import random
import threading
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import HAS_BOTO2

pytestmark = pytest.mark.skipif(not HAS_BOTO2, reason="boto 2 needs Python 3.11 or older")

if HAS_BOTO2:
    import boto
    from boto.ec2.connection import EC2Connection
    from boto.ec2.regioninfo import RegionInfo
    from boto.exception import BotoServerError, EC2ResponseError, S3ResponseError

    import boto_prom
    from boto_prom import BotoRequestHook, boto2, disable_metrics, enable_metrics

from tests.fakes import Bare as _Bare
from tests.fakes import FakeResponse as _Response
from tests.fault_server import closed_port


def value(registry, name, **labels):
    """A sample's value, 0.0 when the series does not exist."""
    return registry.get_sample_value(name, labels) or 0.0


class Capture:
    """A user's own request hook: remembers what boto handed it."""

    def __init__(self):
        self.calls = []

    def handle_request_data(self, request, response, error=False):
        self.calls.append((request, response, error,
                           request.headers.get("Content-Length"),
                           response.getheader("Content-Length") if response else None))


EC2 = dict(aws_service="ec2", aws_region="us-west-2")


# --- moto: the four services, exact values ---------------------------------------------------

def test_ec2_requests_counted_with_exact_values(aws, registry):
    """Three DescribeInstances calls give count 3 in every metric, sizes summed exactly."""
    conn = aws.ec2()
    capture = Capture()
    conn.set_request_hook(capture)
    hook = enable_metrics(conn, registry=registry, start_server=False)
    for _ in range(3):
        conn.get_all_instances()
    labels = dict(EC2, action="DescribeInstances")
    assert value(registry, "boto_requests_total", status_code="200", **labels) == 3
    assert value(registry, "boto_request_duration_seconds_count", **labels) == 3
    assert value(registry, "boto_request_duration_seconds_sum", **labels) > 0
    assert value(registry, "boto_request_size_bytes_sum", **labels) == sum(
        int(c[3]) for c in capture.calls)
    assert value(registry, "boto_response_size_bytes_sum", **labels) == sum(
        int(c[4]) for c in capture.calls)
    assert value(registry, "boto_response_size_bytes_count", **labels) == 3
    assert value(registry, "boto_throttled_requests_total", **labels) == 0
    assert registry.get_sample_value("boto_request_errors_total",
                                     dict(labels, error_type="200")) is None
    assert len(capture.calls) == 3, "the connection's own hook must still be called"
    assert hook.previous is capture
    assert registry.get_sample_value("boto_prom_hook_errors_total", {"stage": "record"}) == 0
    assert registry.get_sample_value("boto_prom_build_info",
                                     {"version": boto_prom.__version__}) == 1


def test_ec2_client_error_is_counted_and_reaches_the_user(aws, registry):
    """A 400 from EC2 counts as an error typed by its status and still raises to the caller."""
    conn = aws.ec2()
    enable_metrics(conn, registry=registry, start_server=False)
    with pytest.raises(EC2ResponseError):
        conn.get_all_instances(instance_ids=["i-00000000000000000"])
    labels = dict(EC2, action="DescribeInstances")
    assert value(registry, "boto_requests_total", status_code="400", **labels) == 1
    assert value(registry, "boto_request_errors_total", error_type="400", **labels) == 1
    assert value(registry, "boto_throttled_requests_total", **labels) == 0


def test_s3_operations_named_as_botocore_names_them(aws, registry):
    """Every S3 call gets botocore's operation name, with no bucket or key in any label."""
    import io

    conn = aws.s3()
    enable_metrics(conn, registry=registry, start_server=False)
    bucket = conn.create_bucket("naming-bucket", location="us-west-2")
    conn.get_all_buckets()
    bucket.get_location()
    key = bucket.new_key("dir/a.txt")
    key.set_contents_from_string("hello")
    bucket.get_key("dir/a.txt").get_contents_as_string()
    list(bucket.list())
    bucket.copy_key("dir/b.txt", "naming-bucket", "dir/a.txt")
    upload = bucket.initiate_multipart_upload("big")
    upload.upload_part_from_file(io.BytesIO(b"x" * 5 * 1024 * 1024), 1)
    upload.complete_upload()
    bucket.delete_keys(["dir/b.txt"])
    bucket.delete_key("dir/a.txt")
    assert bucket.get_key("dir/missing") is None
    with pytest.raises(S3ResponseError):
        conn.get_bucket("naming-no-such-bucket")

    counted = {}
    for family in registry.collect():
        if family.name == "boto_requests":
            for s in family.samples:
                if s.name.endswith("_total"):
                    assert s.labels["aws_service"] == "s3"
                    assert s.labels["aws_region"] == "us-west-2"
                    counted[(s.labels["action"], s.labels["status_code"])] = s.value
    for op in ("CreateBucket", "ListBuckets", "GetBucketLocation", "PutObject", "HeadObject",
               "GetObject", "ListObjects", "CopyObject", "CreateMultipartUpload",
               "UploadPart", "CompleteMultipartUpload", "DeleteObjects"):
        assert counted.get((op, "200"), 0) >= 1, op
    assert counted[("DeleteObject", "204")] == 1
    assert counted[("HeadObject", "404")] == 1
    assert counted[("HeadBucket", "404")] == 1
    assert value(registry, "boto_request_size_bytes_sum", aws_service="s3",
                 aws_region="us-west-2", action="UploadPart") == 5 * 1024 * 1024
    # A HEAD answer carries the object's Content-Length but no body: nothing was received.
    assert value(registry, "boto_response_size_bytes_sum", aws_service="s3",
                 aws_region="us-west-2", action="HeadObject") == 0
    assert value(registry, "boto_response_size_bytes_sum", aws_service="s3",
                 aws_region="us-west-2", action="GetObject") == len("hello")


def test_dynamodb_json_actions_from_the_target_header(aws, registry):
    """DynamoDB calls are named from X-Amz-Target: CreateTable, PutItem, GetItem."""
    conn = aws.dynamodb()
    enable_metrics(conn, registry=registry, start_server=False)
    conn.create_table(
        attribute_definitions=[{"AttributeName": "id", "AttributeType": "S"}],
        table_name="naming-table",
        key_schema=[{"AttributeName": "id", "KeyType": "HASH"}],
        provisioned_throughput={"ReadCapacityUnits": 1, "WriteCapacityUnits": 1},
    )
    conn.put_item("naming-table", {"id": {"S": "1"}})
    conn.put_item("naming-table", {"id": {"S": "2"}})
    conn.get_item("naming-table", {"id": {"S": "1"}})
    labels = dict(aws_service="dynamodb", aws_region="us-west-2")
    assert value(registry, "boto_requests_total", action="CreateTable", status_code="200",
                 **labels) == 1
    assert value(registry, "boto_requests_total", action="PutItem", status_code="200",
                 **labels) == 2
    assert value(registry, "boto_requests_total", action="GetItem", status_code="200",
                 **labels) == 1


def test_iam_query_actions_and_global_region(aws, registry):
    """IAM calls are named from the Action param, in us-east-1, with 404s as errors."""
    conn = aws.iam()
    enable_metrics(conn, registry=registry, start_server=False)
    conn.create_user("naming-user")
    conn.get_all_users()
    with pytest.raises(BotoServerError):
        conn.get_user("naming-no-such-user")
    labels = dict(aws_service="iam", aws_region="us-east-1")
    assert value(registry, "boto_requests_total", action="CreateUser", status_code="200",
                 **labels) == 1
    assert value(registry, "boto_requests_total", action="ListUsers", status_code="200",
                 **labels) == 1
    assert value(registry, "boto_request_errors_total", action="GetUser", error_type="404",
                 **labels) == 1


def test_overrides_win_over_the_connection(aws, registry):
    """aws_service= and aws_region= at enable time replace what the connection says."""
    conn = aws.ec2()
    enable_metrics(conn, registry=registry, start_server=False, aws_service="ec2",
                   aws_region="eu-north-1")
    conn.get_all_instances()
    assert value(registry, "boto_requests_total", aws_service="ec2", aws_region="eu-north-1",
                 action="DescribeInstances", status_code="200") == 1


def test_public_hook_reads_service_and_region_from_the_host(registry):
    """A hook set the way boto's docs teach labels requests from their AWS host."""
    hook = BotoRequestHook(registry=registry)
    request = _request(host="ec2.eu-west-1.amazonaws.com")
    hook.handle_request_data(request, _Response(200))
    hook.handle_request_data(_request(host="s3.amazonaws.com", params={},
                                      auth_path="/bucket/key", method="GET"), _Response(200))
    assert value(registry, "boto_requests_total", aws_service="ec2", aws_region="eu-west-1",
                 action="DescribeVolumes", status_code="200") == 1
    assert value(registry, "boto_requests_total", aws_service="s3", aws_region="us-east-1",
                 action="GetObject", status_code="200") == 1


# --- requests boto 2 ends by raising, where it never calls the hook -----------------------------

DYNAMODB = dict(aws_service="dynamodb", aws_region="us-west-2")


@pytest.fixture(params=["connection", "global"])
def instrumented(request, aws, registry):
    """Make boto 2 connections with metrics on: enable_metrics(conn) on each, or global mode
    (enable_metrics() with no argument, before the connection is made)."""
    if request.param == "global":
        enable_metrics(registry=registry, start_server=False)
        request.addfinalizer(disable_metrics)

    def make(factory):
        conn = factory()
        if request.param == "connection":
            enable_metrics(conn, registry=registry, start_server=False)
        return conn

    make.mode = request.param
    return make


def _table(conn, name):
    conn.create_table(
        attribute_definitions=[{"AttributeName": "id", "AttributeType": "S"}],
        table_name=name,
        key_schema=[{"AttributeName": "id", "KeyType": "HASH"}],
        provisioned_throughput={"ReadCapacityUnits": 1, "WriteCapacityUnits": 1},
    )


def _hook_errors(registry):
    return {s.labels["stage"]: s.value for f in registry.collect()
            if f.name == "boto_prom_hook_errors" for s in f.samples
            if s.name.endswith("_total") and s.value}


def test_dynamodb_errors_raised_past_the_hook_count_once_with_their_code(aws, registry,
                                                                       instrumented):
    """A missing table and a failed condition (raised by DynamoDB's retry handler, where boto
    never calls the hook) each count once, status 400, typed by their AWS error code; the
    successful calls beside them count once too."""
    from boto.dynamodb2.exceptions import ConditionalCheckFailedException
    from boto.exception import JSONResponseError

    conn = instrumented(aws.dynamodb)
    table = f"raised-{instrumented.mode}"
    _table(conn, table)
    conn.put_item(table, {"id": {"S": "1"}})
    with pytest.raises(ConditionalCheckFailedException):
        conn.put_item(table, {"id": {"S": "1"}}, expected={"id": {"Exists": False}})
    with pytest.raises(JSONResponseError) as missing:
        conn.describe_table(f"{table}-missing")
    assert missing.value.status == 400

    put, describe = (dict(DYNAMODB, action=action) for action in ("PutItem", "DescribeTable"))
    assert value(registry, "boto_requests_total", status_code="200", action="CreateTable",
                 **DYNAMODB) == 1
    assert value(registry, "boto_requests_total", status_code="200", **put) == 1
    assert value(registry, "boto_requests_total", status_code="400", **put) == 1
    assert value(registry, "boto_request_errors_total",
                 error_type="ConditionalCheckFailedException", **put) == 1
    assert value(registry, "boto_requests_total", status_code="400", **describe) == 1
    assert value(registry, "boto_request_errors_total", error_type="ResourceNotFoundException",
                 **describe) == 1
    assert value(registry, "boto_request_errors_total", error_type="400", **describe) == 0
    assert value(registry, "boto_request_duration_seconds_count", **put) == 2
    assert value(registry, "boto_request_duration_seconds_count", **describe) == 1
    # The retry handler read the body; its size comes from the response's Content-Length.
    assert value(registry, "boto_response_size_bytes_sum", **describe) == len(
        json.dumps(missing.value.body))
    assert value(registry, "boto_throttled_requests_total", **describe) == 0
    assert _hook_errors(registry) == {}


def test_s3_upload_error_raised_by_the_sender_counts_once(aws, registry, instrumented):
    """An S3 upload answered 404 (raised by boto's upload sender, where boto never calls the
    hook) counts once as PutObject, typed NoSuchBucket."""
    from boto.s3.bucket import Bucket

    conn = instrumented(aws.s3)
    with pytest.raises(S3ResponseError) as raised:
        Bucket(conn, f"raised-no-such-bucket-{instrumented.mode}").new_key(
            "k").set_contents_from_string("data")
    assert raised.value.status == 404
    labels = dict(aws_service="s3", aws_region="us-west-2", action="PutObject")
    assert value(registry, "boto_requests_total", status_code="404", **labels) == 1
    assert value(registry, "boto_request_errors_total", error_type="NoSuchBucket", **labels) == 1
    assert value(registry, "boto_request_size_bytes_sum", **labels) == len("data")
    assert _hook_errors(registry) == {}


def test_the_exception_reaching_the_caller_is_the_one_boto_raised(aws, registry):
    """The caller gets the very exception DynamoDB's retry handler raised, with no context
    added and boto's own raise still the innermost frame."""
    from boto.exception import JSONResponseError

    conn = aws.dynamodb()
    seen = []
    handler = conn._retry_handler

    def spy(*args):
        try:
            return handler(*args)
        except Exception as exc:
            seen.append(exc)
            raise

    conn._retry_handler = spy
    enable_metrics(conn, registry=registry, start_server=False)
    with pytest.raises(JSONResponseError) as raised:
        conn.describe_table("raised-identity-missing")
    assert raised.value is seen[0]
    assert raised.value.__context__ is None and raised.value.__cause__ is None
    tb = raised.value.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    assert tb.tb_frame.f_code.co_name == "_retry_handler"
    assert tb.tb_frame.f_code.co_filename.endswith("dynamodb2/layer1.py")
    assert value(registry, "boto_request_errors_total", error_type="ResourceNotFoundException",
                 action="DescribeTable", **DYNAMODB) == 1


def test_a_failing_sink_on_a_raised_request_still_lets_the_exception_through(aws, registry):
    """A sink that fails while a raised request is recorded is counted in the self-metric;
    the caller still gets boto's exception, and the metrics still count the request."""
    from boto.exception import JSONResponseError

    from boto_prom.metrics import metrics_for
    from boto_prom.recorder import Recorder
    from boto_prom.settings import resolve

    class Exploding:
        def record(self, rec):
            raise RuntimeError("disk on fire")

    conn = aws.dynamodb()
    boto2.install(conn, Recorder(metrics_for(registry), csv=Exploding()),
                  resolve(registry=registry, start_server=False))
    with pytest.raises(JSONResponseError):
        conn.describe_table("raised-sink-missing")
    assert value(registry, "boto_prom_hook_errors_total", stage="csv") == 1
    assert value(registry, "boto_request_errors_total", error_type="ResourceNotFoundException",
                 action="DescribeTable", **DYNAMODB) == 1


def test_a_bare_hook_without_enable_metrics_still_misses_raised_requests(aws, registry):
    """conn.set_request_hook(BotoRequestHook()) alone leaves boto's _mexe as it is, so an
    error the retry handler raises is not counted (the gap the README documents)."""
    from boto.exception import JSONResponseError

    conn = aws.dynamodb()
    conn.set_request_hook(BotoRequestHook(registry=registry, **DYNAMODB))
    with pytest.raises(JSONResponseError):
        conn.describe_table("raised-bare-missing")
    assert "_mexe" not in vars(conn)
    assert value(registry, "boto_requests_total", status_code="400", action="DescribeTable",
                 **DYNAMODB) == 0


def test_threads_sharing_one_connection_count_each_request_once(aws, registry):
    """8 threads on one DynamoDB connection, each alternating a found item and a missing
    table, count every success and every raised error exactly once."""
    from boto.exception import JSONResponseError

    conn = aws.dynamodb()
    enable_metrics(conn, registry=registry, start_server=False)
    _table(conn, "raised-threads")
    conn.put_item("raised-threads", {"id": {"S": "1"}})
    threads, rounds = 8, 10
    barrier = threading.Barrier(threads)
    errors = []

    def work():
        barrier.wait()
        for _ in range(rounds):
            try:
                conn.get_item("raised-threads", {"id": {"S": "1"}})
                conn.describe_table("raised-threads-missing")
            except JSONResponseError as exc:
                if exc.error_code != "ResourceNotFoundException":
                    errors.append(exc)
            else:
                errors.append("describe_table did not raise")

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors
    calls = threads * rounds
    assert value(registry, "boto_requests_total", status_code="200", action="GetItem",
                 **DYNAMODB) == calls
    describe = dict(DYNAMODB, action="DescribeTable")
    assert value(registry, "boto_requests_total", status_code="400", **describe) == calls
    assert value(registry, "boto_request_errors_total", error_type="ResourceNotFoundException",
                 **describe) == calls
    assert value(registry, "boto_request_duration_seconds_count", **describe) == calls


def test_enable_and_disable_put_the_connections_mexe_back_exactly(aws, registry):
    """enable_metrics gives the connection one _mexe of its own however often it is called;
    disable_metrics deletes it, so boto's class method shows through again, and later errors
    are not counted."""
    from boto.exception import JSONResponseError

    conn = aws.dynamodb()
    enable_metrics(conn, registry=registry, start_server=False)
    ours = vars(conn)["_mexe"]
    enable_metrics(conn, registry=registry, start_server=False)
    assert vars(conn)["_mexe"] is ours
    with pytest.raises(JSONResponseError):
        conn.describe_table("raised-undo-missing")
    assert disable_metrics(conn) is True
    assert "_mexe" not in vars(conn) and "__getstate__" not in vars(conn)
    assert conn._mexe.__func__ is type(conn)._mexe
    with pytest.raises(JSONResponseError):
        conn.describe_table("raised-undo-missing")
    assert value(registry, "boto_requests_total", status_code="400", action="DescribeTable",
                 **DYNAMODB) == 1


def test_a_copy_of_an_enabled_connection_calls_on_its_own_after_the_original_is_gone(
        aws, registry):
    """copy.copy of an enabled connection gets its state without our _mexe, so once the
    original is gone the copy's calls still go ahead, and its hook still counts them."""
    import copy
    import gc

    from boto.exception import JSONResponseError

    conn = aws.dynamodb()
    enable_metrics(conn, registry=registry, start_server=False)
    twin = copy.copy(conn)
    assert "_mexe" not in vars(twin) and "__getstate__" not in vars(twin)
    del conn
    gc.collect()
    twin.list_tables()
    with pytest.raises(JSONResponseError):
        twin.describe_table("raised-copy-missing")
    assert value(registry, "boto_requests_total", status_code="200", action="ListTables",
                 **DYNAMODB) == 1


def test_a_mexe_someone_set_before_us_is_kept_and_put_back(aws, registry):
    """An instance _mexe the connection already had (another library's wrapper) is called
    under ours and is the connection's _mexe again after disable_metrics."""
    conn = aws.dynamodb()
    calls = []
    boto_mexe = conn._mexe

    def theirs(*args, **kwargs):
        calls.append(args[0])
        return boto_mexe(*args, **kwargs)

    conn._mexe = theirs
    enable_metrics(conn, registry=registry, start_server=False)
    assert conn._mexe is not theirs
    conn.list_tables()
    assert len(calls) == 1
    disable_metrics(conn)
    assert conn._mexe is theirs
    assert value(registry, "boto_requests_total", status_code="200", action="ListTables",
                 **DYNAMODB) == 1


def test_global_mode_undo_puts_every_connections_mexe_back(aws, registry):
    """Connections made in global mode get our _mexe; disabling one connection takes its own
    off, and disable_metrics() takes off the others', but not that of a connection enabled on
    its own in between."""
    from boto.exception import JSONResponseError

    enable_metrics(registry=registry, start_server=False)
    try:
        first, second = aws.dynamodb(), aws.dynamodb()
        assert "_mexe" in vars(first) and "_mexe" in vars(second)
        assert disable_metrics(first) is True
        assert "_mexe" not in vars(first)
        enable_metrics(first, registry=registry, start_server=False)
    finally:
        assert disable_metrics() is True
    assert "_mexe" not in vars(second)
    assert "_mexe" not in vars(aws.dynamodb())
    with pytest.raises(JSONResponseError):
        first.describe_table("raised-global-undo-missing")
    assert value(registry, "boto_request_errors_total", error_type="ResourceNotFoundException",
                 action="DescribeTable", **DYNAMODB) == 1


@pytest.mark.parametrize("body, code", [
    ({"__type": "com.amazonaws.dynamodb.v20120810#ValidationException"}, "ValidationException"),
    ({"__type": "ValidationException"}, "ValidationException"),
    ("<Error><Code>NoSuchKey</Code></Error>", "NoSuchKey"),
    ({"__type": "#not a name"}, None),
    ({"__type": 42}, None),
    (None, None),
], ids=["type-after-hash", "type-alone", "xml-code", "unfit-name", "not-text", "no-body"])
def test_error_code_from_the_exception_or_its_body(body, code):
    """The AWS error code is the exception's error_code, else the part of the body's __type
    after '#'; anything not fit for a label gives None (the status stands in)."""
    assert boto2._error_code(BotoServerError(400, "Bad", body=body)) == code


# --- enable / disable / chaining -------------------------------------------------------------

def test_double_enable_never_double_counts(aws, registry):
    """Enabling twice returns the same hook and each request counts once."""
    conn = aws.ec2()
    first = enable_metrics(conn, registry=registry, start_server=False)
    second = enable_metrics(conn, registry=registry, start_server=False)
    assert first is second
    conn.get_all_volumes()
    assert value(registry, "boto_requests_total", action="DescribeVolumes", status_code="200",
                 **EC2) == 1


def test_disable_stops_counting_and_restores_the_previous_hook(aws, registry):
    """disable_metrics puts the user's own hook back, which keeps being called."""
    conn = aws.ec2()
    capture = Capture()
    conn.set_request_hook(capture)
    enable_metrics(conn, registry=registry, start_server=False)
    conn.get_all_volumes()
    assert disable_metrics(conn) is True
    assert conn.request_hook is capture
    conn.get_all_volumes()
    assert value(registry, "boto_requests_total", action="DescribeVolumes", status_code="200",
                 **EC2) == 1
    assert len(capture.calls) == 2
    assert disable_metrics(conn) is False


def test_disable_without_previous_hook_leaves_none(aws, registry):
    """A connection that had no hook has none again after disable."""
    conn = aws.ec2()
    enable_metrics(conn, registry=registry, start_server=False)
    disable_metrics(conn)
    assert conn.request_hook is None


def test_users_own_hook_exception_reaches_the_user(aws, registry):
    """An exception from the user's chained hook is theirs: it propagates, after we count."""
    class Broken(Exception):
        pass

    class Raising:
        def handle_request_data(self, request, response, error=False):
            raise Broken()

    conn = aws.ec2()
    conn.set_request_hook(Raising())
    enable_metrics(conn, registry=registry, start_server=False)
    with pytest.raises(Broken):
        conn.get_all_volumes()
    assert value(registry, "boto_requests_total", action="DescribeVolumes", status_code="200",
                 **EC2) == 1


def test_failing_sink_does_not_break_the_call(aws, registry, caplog):
    """A sink that raises is counted under its stage; the AWS call returns normally."""
    from boto_prom.metrics import metrics_for
    from boto_prom.recorder import Recorder
    from boto_prom.settings import resolve

    class Exploding:
        def record(self, rec):
            raise RuntimeError("disk on fire")

    conn = aws.ec2()
    recorder = Recorder(metrics_for(registry), csv=Exploding())
    boto2.install(conn, recorder, resolve(registry=registry, start_server=False))
    with caplog.at_level(logging.DEBUG, logger="boto_prom"):
        assert conn.get_all_volumes() == []
        conn.get_all_volumes()
    assert value(registry, "boto_prom_hook_errors_total", stage="csv") == 2
    assert value(registry, "boto_requests_total", action="DescribeVolumes", status_code="200",
                 **EC2) == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "a kind of failure is logged once, then at debug"


def test_install_and_uninstall_keep_the_connections_own_hook(aws, registry):
    """install() chains the connection's hook and reports itself installed; uninstall() puts
    the connection's hook back and says whether ours was there."""
    from boto_prom.metrics import metrics_for
    from boto_prom.recorder import Recorder
    from boto_prom.settings import resolve

    conn = aws.ec2()
    capture = Capture()
    conn.set_request_hook(capture)
    settings = resolve(registry=registry, start_server=False)
    hook = boto2.install(conn, Recorder(metrics_for(registry)), settings)
    assert boto2.installed(conn) is hook and conn.request_hook is hook
    assert hook.previous is capture and hook.settings is settings and hook.active
    conn.get_all_volumes()
    assert boto2.uninstall(conn) is True and conn.request_hook is capture
    assert boto2.installed(conn) is None and boto2.uninstall(conn) is False
    conn.get_all_volumes()
    assert len(capture.calls) == 2
    assert value(registry, "boto_requests_total", action="DescribeVolumes", status_code="200",
                 **EC2) == 1


def test_reinstalling_over_an_inactive_hook_of_ours_replaces_it(aws, registry):
    """A connection left with an inert global-mode hook gets a fresh hook in its place, not
    one chained behind it, and each call counts once."""
    from boto_prom.metrics import metrics_for
    from boto_prom.recorder import Recorder
    from boto_prom.settings import resolve

    settings = resolve(registry=registry, start_server=False)
    recorder = Recorder(metrics_for(registry))
    assert boto2.install_global(recorder, settings) is True
    try:
        conn = aws.ec2()
    finally:
        boto2.uninstall_global()
    inert = conn.request_hook
    assert isinstance(inert, BotoRequestHook) and not inert.active
    assert boto2.installed(conn) is None
    conn.get_all_volumes()
    hook = boto2.install(conn, recorder, settings)
    assert conn.request_hook is hook and hook is not inert and hook.previous is None
    conn.get_all_volumes()
    assert value(registry, "boto_requests_total", action="DescribeVolumes", status_code="200",
                 **EC2) == 1


def test_global_hook_reads_labels_at_the_first_request(aws, registry):
    """A connection made in global mode is labelled from what it says at its first request,
    and uninstalling global mode puts boto's own constructor back."""
    from boto.connection import AWSAuthConnection

    from boto_prom.metrics import metrics_for
    from boto_prom.recorder import Recorder
    from boto_prom.settings import resolve

    original = AWSAuthConnection.__init__
    boto2.install_global(Recorder(metrics_for(registry)),
                         resolve(registry=registry, start_server=False))
    try:
        conn = aws.ec2()
        conn.auth_region_name = "eu-north-1"  # set after construction, as programs do
        assert boto2.installed(conn) is conn.request_hook
        conn.get_all_volumes()
    finally:
        boto2.uninstall_global()
    assert AWSAuthConnection.__init__ is original
    assert aws.ec2().request_hook is None
    conn.get_all_volumes()
    assert value(registry, "boto_requests_total", aws_service="ec2", aws_region="eu-north-1",
                 action="DescribeVolumes", status_code="200") == 1


def test_filtered_label_sets_are_not_recorded(aws, registry):
    """A service left out of allowed_services is dropped on every call, others still count."""
    from boto_prom.metrics import metrics_for
    from boto_prom.recorder import Recorder
    from boto_prom.settings import resolve

    recorder = Recorder(metrics_for(registry), allowed_services=frozenset({"iam"}))
    settings = resolve(registry=registry, start_server=False)
    ec2, iam = aws.ec2(), aws.iam()
    boto2.install(ec2, recorder, settings)
    boto2.install(iam, recorder, settings)
    for _ in range(3):
        ec2.get_all_volumes()
    iam.get_all_users()
    iam.get_all_users()
    assert value(registry, "boto_requests_total", action="DescribeVolumes", status_code="200",
                 **EC2) == 0
    assert value(registry, "boto_requests_total", aws_service="iam", aws_region="us-east-1",
                 action="ListUsers", status_code="200") == 2


def _http_response(body=b"<ok/>", status=200, method="POST"):
    """boto's own HTTPResponse, parsed from the bytes an AWS answer carries, body unread."""
    import io

    from boto.connection import HTTPResponse

    raw = (f"HTTP/1.1 {status} X\r\nx-amzn-RequestId: 59dbff89-35bd-4eac-99ed\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    class Socket:
        def makefile(self, *args, **kwargs):
            return io.BytesIO(raw)

    response = HTTPResponse(Socket(), method=method)
    response.begin()
    return response


def test_hand_built_hook_keeps_hosts_apart_after_the_first_call(registry):
    """Repeated calls with one action to two AWS hosts each count in their own series."""
    hook = BotoRequestHook(registry=registry)
    for host in ("ec2.us-west-2.amazonaws.com", "ec2.eu-west-1.amazonaws.com") * 3:
        hook.handle_request_data(_request(host=host), _http_response(b"x" * 42))
    for region in ("us-west-2", "eu-west-1"):
        labels = dict(aws_service="ec2", aws_region=region, action="DescribeVolumes")
        assert value(registry, "boto_requests_total", status_code="200", **labels) == 3
        assert value(registry, "boto_request_size_bytes_sum", **labels) == 300
        assert value(registry, "boto_response_size_bytes_sum", **labels) == 126


def test_every_call_of_a_label_set_gives_the_same_record(registry):
    """The first call of a label set and the ones after it record the same values, request id
    included, for a success, a client error and an error boto gave up on."""
    from boto_prom.metrics import metrics_for
    from boto_prom.recorder import Recorder

    from tests.fakes import KeptRecords

    rows = KeptRecords()
    recorder = Recorder(metrics_for(registry), csv=rows)
    for status, error in ((200, False), (400, False), (503, True)):
        hook = BotoRequestHook(recorder=recorder, **EC2)
        del rows.records[:]
        for _ in range(3):
            hook.handle_request_data(_request(), _http_response(b"<r/>", status), error)
        fields = {rec[:5] + rec[6:11] for rec in rows.records}
        assert len(rows.records) == 3 and len(fields) == 1, fields
        assert fields.pop() == (
            "boto2", "ec2", "us-west-2", "DescribeVolumes", str(status), 100, 4,
            str(status) if status >= 400 else None, status == 503, "59dbff89-35bd-4eac-99ed")


# --- concurrency -----------------------------------------------------------------------------

def test_sixteen_threads_count_exactly(registry):
    """16 threads x 2,000 calls through one shared hook give exact totals."""
    hook = BotoRequestHook(registry=registry, **EC2)
    threads, per_thread = 16, 2000
    barrier = threading.Barrier(threads)

    def work(n):
        request = _request()
        ok, bad = _Response(200), _Response(503)
        barrier.wait()
        for i in range(per_thread):
            hook.handle_request_data(request, bad if i % 10 == 0 else ok, error=i % 10 == 0)

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    labels = dict(EC2, action="DescribeVolumes")
    total = threads * per_thread
    assert value(registry, "boto_requests_total", status_code="200", **labels) == total * 9 / 10
    assert value(registry, "boto_requests_total", status_code="503", **labels) == total / 10
    assert value(registry, "boto_throttled_requests_total", **labels) == total / 10
    assert value(registry, "boto_request_duration_seconds_count", **labels) == total
    assert value(registry, "boto_prom_hook_errors_total", stage="record") == 0


def test_sixteen_threads_on_real_connections(aws, registry):
    """16 threads, each with its own EC2 connection and one shared hook, count exactly."""
    hook = BotoRequestHook(registry=registry, **EC2)
    conns = [aws.ec2() for _ in range(16)]
    for conn in conns:
        conn.set_request_hook(hook)
    errors = []

    def work(conn):
        try:
            for _ in range(15):
                conn.get_all_volumes()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(c,)) for c in conns]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors
    assert value(registry, "boto_requests_total", action="DescribeVolumes", status_code="200",
                 **EC2) == 16 * 15


# --- the fault server: 5xx, resets, refusals, slowness -------------------------------------------

@pytest.fixture
def boto_retries(aws, monkeypatch):
    """Set boto's retry count for one test, with no backoff sleep between attempts."""
    monkeypatch.setattr(random, "random", lambda: 0.0)

    def set_retries(n):
        boto.config.set("Boto", "num_retries", str(n))

    yield set_retries
    boto.config.set("Boto", "num_retries", "0")


def _fault_ec2(port):
    conn = EC2Connection(region=RegionInfo(name="us-west-2", endpoint="127.0.0.1"), port=port,
                         is_secure=False, aws_access_key_id="AKIAFAULTFAULTFAULT1",
                         aws_secret_access_key="fault-secret")
    conn.auth_service_name, conn.auth_region_name = "ec2", "us-west-2"
    return conn


def test_503_burst_exhausting_retries_is_a_throttled_error(fault_server, registry, boto_retries):
    """Three 503s with two retries: one request, status 503, throttled, and the user's error."""
    boto_retries(2)
    fault_server.script(("status", 503))
    conn = _fault_ec2(fault_server.port)
    enable_metrics(conn, registry=registry, start_server=False)
    with pytest.raises(BotoServerError) as raised:
        conn.get_all_regions()
    assert raised.value.status == 503
    assert len(fault_server.requests) == 3
    labels = dict(EC2, action="DescribeRegions")
    assert value(registry, "boto_requests_total", status_code="503", **labels) == 1
    assert value(registry, "boto_request_errors_total", error_type="503", **labels) == 1
    assert value(registry, "boto_throttled_requests_total", **labels) == 1
    # boto 2's hook sees the last attempt only: one throttled attempt with the request.
    assert value(registry, "boto_throttled_attempts_total", **labels) == 1


def _fault_dynamodb(port, retries):
    from boto.dynamodb2.layer1 import DynamoDBConnection
    from boto.regioninfo import RegionInfo

    conn = DynamoDBConnection(region=RegionInfo(name="us-west-2", endpoint="127.0.0.1"),
                              host="127.0.0.1", port=port, is_secure=False,
                              aws_access_key_id="AKIAFAULTFAULTFAULT1",
                              aws_secret_access_key="fault-secret")
    conn.auth_service_name, conn.auth_region_name = "dynamodb", "us-west-2"
    conn.NumberRetries = retries
    return conn


def test_dynamodb_500s_exhausting_retries_count_once(fault_server, registry, boto_retries):
    """DynamoDB 500s until retries run out: boto calls the hook (error=True) and then raises
    from _mexe itself, past the watched retry handler, so the request counts once."""
    fault_server.script(("status", 500))
    conn = _fault_dynamodb(fault_server.port, retries=1)
    enable_metrics(conn, registry=registry, start_server=False)
    with pytest.raises(BotoServerError) as raised:
        conn.list_tables()
    assert raised.value.status == 500 and len(fault_server.requests) == 2
    labels = dict(DYNAMODB, action="ListTables")
    assert value(registry, "boto_requests_total", status_code="500", **labels) == 1
    assert value(registry, "boto_request_errors_total", error_type="500", **labels) == 1
    assert value(registry, "boto_request_duration_seconds_count", **labels) == 1


def test_a_retry_handler_raising_something_else_is_not_counted(fault_server, registry,
                                                              boto_retries):
    """A 400 whose body is not DynamoDB's JSON makes the retry handler raise a ValueError: it
    reaches the caller as it is, and is not counted (a gap the README documents)."""
    fault_server.script(("status", 400))
    conn = _fault_dynamodb(fault_server.port, retries=0)
    enable_metrics(conn, registry=registry, start_server=False)
    with pytest.raises(ValueError):
        conn.list_tables()
    assert value(registry, "boto_requests_total", status_code="400", action="ListTables",
                 **DYNAMODB) == 0
    assert _hook_errors(registry) == {}


def test_503_then_success_counts_one_success(fault_server, registry, boto_retries):
    """boto 2 retries 503s itself; the hook sees only the final 200."""
    boto_retries(2)
    fault_server.script(("status", 503), ("status", 503), ("status", 200))
    conn = _fault_ec2(fault_server.port)
    enable_metrics(conn, registry=registry, start_server=False)
    conn.get_all_regions()
    labels = dict(EC2, action="DescribeRegions")
    assert value(registry, "boto_requests_total", status_code="200", **labels) == 1
    assert value(registry, "boto_requests_total", status_code="503", **labels) == 0


def test_429_is_throttling(fault_server, registry, boto_retries):
    """A 429 answer counts as throttled."""
    fault_server.script(("status", 429))
    conn = _fault_ec2(fault_server.port)
    enable_metrics(conn, registry=registry, start_server=False)
    with pytest.raises(BotoServerError):
        conn.get_all_regions()
    labels = dict(EC2, action="DescribeRegions")
    assert value(registry, "boto_throttled_requests_total", **labels) == 1
    assert value(registry, "boto_request_errors_total", error_type="429", **labels) == 1
    assert value(registry, "boto_throttled_attempts_total", **labels) == 1


@pytest.mark.parametrize("fault", ["reset", "refused"])
def test_no_response_is_status_none(fault, fault_server, registry, boto_retries):
    """A reset or refused connection counts with status "none" and error "no_response"."""
    boto_retries(1)
    fault_server.script(("reset",))
    port = fault_server.port if fault == "reset" else closed_port()
    conn = _fault_ec2(port)
    enable_metrics(conn, registry=registry, start_server=False)
    with pytest.raises(OSError):
        conn.get_all_regions()
    labels = dict(EC2, action="DescribeRegions")
    assert value(registry, "boto_requests_total", status_code="none", **labels) == 1
    assert value(registry, "boto_request_errors_total", error_type="no_response", **labels) == 1
    assert value(registry, "boto_response_size_bytes_count", **labels) == 0
    assert value(registry, "boto_prom_hook_errors_total", stage="record") == 0


def test_slow_answer_lands_in_the_right_bucket(fault_server, registry, boto_retries):
    """A 0.3 s answer is counted above the 0.25 s bucket and within the 0.5 s one."""
    fault_server.script(("slow", 0.3, 200))
    conn = _fault_ec2(fault_server.port)
    enable_metrics(conn, registry=registry, start_server=False)
    conn.get_all_regions()
    labels = dict(EC2, action="DescribeRegions")
    assert value(registry, "boto_request_duration_seconds_bucket", le="0.25", **labels) == 0
    assert value(registry, "boto_request_duration_seconds_bucket", le="0.5", **labels) == 1


def test_custom_buckets(fault_server, registry, boto_retries):
    """buckets= at enable time become the duration histogram's buckets."""
    conn = _fault_ec2(fault_server.port)
    enable_metrics(conn, registry=registry, start_server=False, buckets=[0.1, 1, 3])
    conn.get_all_regions()
    labels = dict(EC2, action="DescribeRegions")
    assert value(registry, "boto_request_duration_seconds_bucket", le="3.0", **labels) == 1
    assert registry.get_sample_value("boto_request_duration_seconds_bucket",
                                     dict(labels, le="0.005")) is None


def test_missing_response_content_length_is_not_an_error(fault_server, registry, boto_retries):
    """An answer without Content-Length is counted, with no size and no hook error."""
    fault_server.script(("headers", 200, {"Content-Length": None, "Connection": "close"}))
    conn = _fault_ec2(fault_server.port)
    enable_metrics(conn, registry=registry, start_server=False)
    conn.get_all_regions()
    labels = dict(EC2, action="DescribeRegions")
    assert value(registry, "boto_requests_total", status_code="200", **labels) == 1
    assert value(registry, "boto_response_size_bytes_count", **labels) == 0
    assert value(registry, "boto_prom_hook_errors_total", stage="response_size") == 0


def test_bad_response_content_length_is_counted(fault_server, registry, boto_retries):
    """A non-numeric Content-Length is a hook error; the request is still counted."""
    fault_server.script(("headers", 200, {"Content-Length": "lots", "Connection": "close"}))
    conn = _fault_ec2(fault_server.port)
    enable_metrics(conn, registry=registry, start_server=False)
    conn.get_all_regions()
    labels = dict(EC2, action="DescribeRegions")
    assert value(registry, "boto_requests_total", status_code="200", **labels) == 1
    assert value(registry, "boto_prom_hook_errors_total", stage="response_size") == 1


# --- malformed input handed straight to the hook ------------------------------------------------



def _request(host="ec2.us-west-2.amazonaws.com", params=None, auth_path="/", method="POST",
             start=None, headers=None):
    req = _Bare()
    req.host, req.method, req.path, req.auth_path = host, method, "/", auth_path
    req.params = {"Action": "DescribeVolumes"} if params is None else params
    req.headers = {"Content-Length": "100"} if headers is None else headers
    req.body = b""
    req.start_time = datetime.now() if start is None else start
    return req


class _RaisingResponse:
    status = 200

    def getheader(self, name, default=None):
        raise RuntimeError("broken response object")


@pytest.mark.parametrize("request_, response, error, status, stage", [
    (_Bare(), _Response(200), False, "200", "duration"),
    (_request(start=datetime.now() + timedelta(hours=1)), _Response(200), False, "200", None),
    (_request(start=datetime.now(timezone.utc)), _Response(200), False, "200", None),
    (_request(start="yesterday"), _Response(200), False, "200", "duration"),
    (_request(headers={"Content-Length": "many"}), _Response(200), False, "200", "request_size"),
    (_request(headers=None), _Response(200, {}), False, "200", None),
    (_request(params="Action=Foo"), _Response(200), False, "200", None),
    (_request(), _Response("200"), False, "unknown", "status"),
    (_request(), _Response(None), True, "unknown", "status"),
    (_request(), _Response(200, {"Content-Length": "-5"}), False, "200", "response_size"),
    (_request(), _RaisingResponse(), False, "200", ("response_size", "request_id")),
    (_request(), _Bare(), False, "unknown", "status"),
    (_request(), None, True, "none", None),
    (None, None, True, "none", "duration"),
])
def test_malformed_input_never_raises_and_is_still_counted(request_, response, error, status,
                                                           stage, registry):
    """Each malformed request or response is recorded as far as it can be, without raising."""
    hook = BotoRequestHook(registry=registry, **EC2)
    hook.handle_request_data(request_, response, error)
    total = sum(s.value for f in registry.collect() if f.name == "boto_requests"
                for s in f.samples if s.name.endswith("_total")
                and s.labels["status_code"] == status)
    assert total == 1
    errors = {s.labels["stage"]: s.value for f in registry.collect()
              if f.name == "boto_prom_hook_errors" for s in f.samples
              if s.name.endswith("_total") and s.value}
    stages = (stage,) if isinstance(stage, str) else stage or ()
    assert errors == {s: 1.0 for s in stages}


def test_clock_jump_backwards_clamps_duration_at_zero(registry):
    """A start_time in the future (the clock stepped back) records 0 s, not a negative."""
    hook = BotoRequestHook(registry=registry, **EC2)
    hook.handle_request_data(_request(start=datetime.now() + timedelta(minutes=5)),
                             _Response(200))
    labels = dict(EC2, action="DescribeVolumes")
    assert value(registry, "boto_request_duration_seconds_sum", **labels) == 0
    assert value(registry, "boto_request_duration_seconds_bucket", le="0.005", **labels) == 1


def test_malformed_input_is_logged_once_per_stage(registry, caplog):
    """The first failure of a stage is a warning; repeats go to debug."""
    hook = BotoRequestHook(registry=registry, **EC2)
    with caplog.at_level(logging.DEBUG, logger="boto_prom"):
        for _ in range(5):
            hook.handle_request_data(_request(), _Response(200, {"Content-Length": "x"}))
    levels = [r.levelno for r in caplog.records]
    assert levels.count(logging.WARNING) == 1
    assert levels.count(logging.DEBUG) == 4


# --- secrets ---------------------------------------------------------------------------------

def test_no_secret_bucket_or_key_in_metrics_or_logs(aws, registry, caplog):
    """Credentials, session tokens, bucket names and object keys never reach output."""
    from boto.s3.connection import OrdinaryCallingFormat, S3Connection
    from prometheus_client import generate_latest

    secrets = ["AKIASECRETKEYID00042", "wJalrSECRETsecretSECRETkey0042", "SESSIONtoken0042xyz",
               "secret-bucket-0042", "private-object-key-0042"]
    conn = S3Connection(host="localhost", port=aws.port, is_secure=False,
                        calling_format=OrdinaryCallingFormat(),
                        aws_access_key_id=secrets[0], aws_secret_access_key=secrets[1],
                        security_token=secrets[2])
    conn.auth_service_name, conn.auth_region_name = "s3", "us-west-2"
    with caplog.at_level(logging.DEBUG, logger="boto_prom"):
        enable_metrics(conn, registry=registry, start_server=False)
        bucket = conn.create_bucket(secrets[3], location="us-west-2")
        bucket.new_key(f"dir/{secrets[4]}").set_contents_from_string("data")
        bucket.get_key(f"dir/{secrets[4]}")
        bucket.get_key(f"{secrets[4]}-missing")
        hook = BotoRequestHook(registry=registry)
        hook.handle_request_data(_request(host=f"{secrets[3]}.s3.amazonaws.com",
                                          auth_path=f"/{secrets[3]}/{secrets[4]}",
                                          params={}, method="GET"), _Response("bad"))
    text = generate_latest(registry).decode()
    logs = "\n".join(r.getMessage() + str(r.exc_info) for r in caplog.records)
    assert "PutObject" in text
    for secret in secrets:
        assert secret not in text
        assert secret not in logs
