"""The CSV sink: real boto 2 calls against moto written to real files, and what goes wrong."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import HAS_BOTO2
from tests.fakes import FakeResponse as _Response

pytestmark = pytest.mark.skipif(not HAS_BOTO2, reason="boto 2 needs Python 3.11 or older")

if HAS_BOTO2:
    import boto

    import boto_prom
    from boto_prom import BotoRequestHook, ConfigurationError, csvlog, enable_metrics
    from boto_prom.csvlog import COLUMNS, CsvSink, csv_metrics_for, csv_writer_for
    from boto_prom.metrics import metrics_for
    from boto_prom.record import RequestRecord
    from boto_prom.recorder import Recorder
    from boto_prom.settings import csv_settings


EC2 = dict(aws_service="ec2", aws_region="us-west-2")
ISO_UTC_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(autouse=True)
def _close_writers():
    """Close every CSV writer a test started, so none outlives its test's files."""
    yield
    with csvlog._writers_lock:
        writers = list(csvlog._writers.values())
    for writer in writers:
        writer.close(timeout=10)


def value(registry, name, **labels):
    """A sample's value, 0.0 when the series does not exist."""
    return registry.get_sample_value(name, labels) or 0.0


def recorded(registry):
    """Requests the registry's hooks recorded, over every label set."""
    return sum(s.value for f in registry.collect() if f.name == "boto_requests"
               for s in f.samples if s.name.endswith("_total"))


def accounted(registry, writer):
    """written + dropped (every reason) + queued, the left side of the CSV invariant."""
    return (value(registry, "boto_prom_csv_rows_written_total")
            + sum(value(registry, "boto_prom_csv_rows_dropped_total", reason=reason)
                  for reason in ("queue_full", "write_error", "closed"))
            + writer.queued)


def rows(path):
    """The data rows of a csv-format file, after checking its one header."""
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    assert lines[0] == list(COLUMNS)
    assert list(COLUMNS) not in lines[1:], "the header appears once per file"
    return [dict(zip(COLUMNS, line)) for line in lines[1:]]


class Capture:
    """A user's own request hook: remembers the headers boto sent and got."""

    def __init__(self):
        self.calls = []

    def handle_request_data(self, request, response, error=False):
        self.calls.append({
            "request_bytes": str(request.headers.get("Content-Length")),
            "response_bytes": response.getheader("Content-Length"),
            "request_id": response.getheader("x-amzn-RequestId"),
            "status": str(response.status),
        })




class _Request:
    def __init__(self, params=None, start=None):
        self.host, self.method, self.path, self.auth_path = "ec2.amazonaws.com", "POST", "/", "/"
        self.params = {"Action": "DescribeVolumes"} if params is None else params
        self.headers = {"Content-Length": "100"}
        self.body = b""
        self.start_time = datetime.now() if start is None else start


def writer_for(path, queue_size=None, **options):
    """The writer of path (the running one, or a new one), options as csv_settings takes them."""
    settings = csv_settings(path, **options)
    if queue_size is None:
        return csv_writer_for(settings)
    return csv_writer_for(settings, queue_size=queue_size)


def csv_recorder(registry, path, **options):
    """A recorder on registry with path's CSV sink, as enable_metrics builds one."""
    sink = CsvSink(writer_for(path, **options), csv_metrics_for(registry))
    return Recorder(metrics_for(registry), csv=sink)


def _record(n):
    """A record whose request_bytes is n, to tell rows apart."""
    return RequestRecord("boto2", "ec2", "us-west-2", "DescribeVolumes", "200", 0.25, n, 42,
                         None, False, None, time.time())


# --- the csv format ---------------------------------------------------------------------------

def test_csv_rows_of_real_ec2_calls_have_the_records_values(aws, registry, tmp_path):
    """Three EC2 calls and a 400 give four rows with exactly the values boto saw."""
    path = tmp_path / "requests.csv"
    conn = aws.ec2()
    capture = Capture()
    conn.set_request_hook(capture)
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    enable_metrics(conn, registry=registry, start_server=False, csv_path=str(path))
    for _ in range(3):
        conn.get_all_instances()
    with pytest.raises(boto.exception.EC2ResponseError):
        conn.get_all_instances(instance_ids=["i-00000000000000000"])
    assert boto_prom.get_csv_writer(path).flush(timeout=10)
    after = datetime.now(timezone.utc) + timedelta(seconds=1)

    got = rows(path)
    assert len(got) == 4
    for row, seen in zip(got, capture.calls):
        assert ISO_UTC_MS.match(row["timestamp"]), row["timestamp"]
        stamp = datetime.strptime(row["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
        assert before <= stamp.replace(tzinfo=timezone.utc) <= after
        assert (row["aws_service"], row["aws_region"]) == ("ec2", "us-west-2")
        assert row["action"] == "DescribeInstances"
        assert row["status_code"] == seen["status"]
        assert 0 < float(row["duration_seconds"]) < 10
        assert row["request_bytes"] == seen["request_bytes"]
        assert row["response_bytes"] == seen["response_bytes"]
        assert row["request_id"] == seen["request_id"] and row["request_id"]
    assert [r["error_type"] for r in got] == ["", "", "", "400"]
    assert value(registry, "boto_prom_csv_rows_written_total") == 4
    for reason in ("queue_full", "write_error", "closed"):
        assert registry.get_sample_value("boto_prom_csv_rows_dropped_total",
                                         {"reason": reason}) == 0
    assert recorded(registry) == 4
    assert value(registry, "boto_prom_hook_errors_total", stage="csv") == 0


def test_request_id_from_a_response_with_only_getheader(registry, tmp_path):
    """A response object without http.client's parsed headers still gives its request id."""
    path = tmp_path / "ids.csv"
    hook = BotoRequestHook(recorder=csv_recorder(registry, path), **EC2)
    hook.handle_request_data(_Request(), _Response(200, {"x-amz-request-id": "4442587FB7D0A2F9"}))
    hook.handle_request_data(_Request(), _Response(200, {"x-amz-request-id": "not an id!"}))
    boto_prom.get_csv_writer(path).flush(timeout=10)
    assert [r["request_id"] for r in rows(path)] == ["4442587FB7D0A2F9", ""]


def test_csv_self_metrics_are_served_with_the_hooks_metrics(aws, registry, tmp_path):
    """With the server on, /metrics shows the CSV self-metrics next to the request metrics."""
    from urllib.request import urlopen

    path = tmp_path / "served.csv"
    hook = enable_metrics(aws.ec2(), registry=registry, port=0, csv_path=path)
    text = urlopen(hook.server.url, timeout=10).read().decode()
    assert "boto_prom_csv_rows_written_total 0.0" in text
    assert 'boto_prom_csv_rows_dropped_total{reason="queue_full"} 0.0' in text


def test_csv_self_metrics_have_no_created_samples(registry, tmp_path):
    """The CSV counters, like every other boto-prom metric, export no _created samples, and a
    second lookup in the same registry registers nothing twice."""
    from prometheus_client import generate_latest

    metrics = csv_metrics_for(registry)
    assert csv_metrics_for(registry) is metrics
    sink = CsvSink(writer_for(tmp_path / "created.csv"), metrics)
    sink.record(_record(1))
    sink.writer.flush(timeout=10)
    metrics.closed.inc()
    assert value(registry, "boto_prom_csv_rows_written_total") == 1
    assert value(registry, "boto_prom_csv_rows_dropped_total", reason="closed") == 1
    text = generate_latest(registry).decode()
    assert "boto_prom_csv_rows_written_total" in text
    assert "_created" not in text


def test_existing_file_is_appended_to_never_truncated(aws, registry, tmp_path):
    """A second run appends below the first run's rows, without a second header."""
    path = tmp_path / "runs.csv"
    enable_metrics(aws.ec2(), registry=registry, start_server=False, csv_path=path)
    conn = aws.ec2()
    enable_metrics(conn, registry=registry, start_server=False, csv_path=path)
    conn.get_all_volumes()
    assert boto_prom.get_csv_writer(path).close(timeout=10)
    first = path.read_text()

    conn = aws.ec2()
    enable_metrics(conn, registry=registry, start_server=False, csv_path=path)
    conn.get_all_volumes()
    conn.get_all_volumes()
    boto_prom.get_csv_writer(path).flush(timeout=10)
    text = path.read_text()
    assert text.startswith(first)
    assert [r["action"] for r in rows(path)] == ["DescribeVolumes"] * 3


def test_non_empty_file_without_header_gets_none(registry, tmp_path):
    """Rows are appended to a file that already has content, which is kept as it was."""
    path = tmp_path / "mine.csv"
    path.write_text("my own first line\n")
    sink = CsvSink(writer_for(path), csv_metrics_for(registry))
    sink.record(_record(1))
    sink.writer.flush(timeout=10)
    lines = path.read_text().splitlines()
    assert lines[0] == "my own first line"
    assert len(lines) == 2 and lines[1].split(",")[6] == "1"


def test_rotation_keeps_backups_each_with_a_header(registry, tmp_path):
    """Past csv_max_bytes the file moves to .1, .1 to .2, and the oldest beyond is removed."""
    path = tmp_path / "rot.csv"
    writer = writer_for(path, max_bytes=600, backups=2)
    sink = CsvSink(writer, csv_metrics_for(registry))
    for n in range(40):
        sink.record(_record(n))
        if n % 7 == 0:
            writer.flush(timeout=10)  # rotation also happens between batches
    writer.flush(timeout=10)
    files = [tmp_path / "rot.csv.2", tmp_path / "rot.csv.1", path]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rot.csv", "rot.csv.1", "rot.csv.2"]
    numbers = []
    for f in files:
        assert f.stat().st_size < 600
        numbers += [int(r["request_bytes"]) for r in rows(f)]
    assert numbers == list(range(40 - len(numbers), 40)), "the newest rows, in order"
    assert len(numbers) < 40
    assert value(registry, "boto_prom_csv_rows_written_total") == 40


def test_a_row_longer_than_max_bytes_is_still_written(registry, tmp_path):
    """A file holding only its header takes a row even when the row alone is too big."""
    path = tmp_path / "tiny.csv"
    writer = writer_for(path, max_bytes=10, backups=1)
    sink = CsvSink(writer, csv_metrics_for(registry))
    for n in range(3):
        sink.record(_record(n))
    writer.flush(timeout=10)
    assert [r["request_bytes"] for r in rows(path)] == ["2"]
    assert [r["request_bytes"] for r in rows(tmp_path / "tiny.csv.1")] == ["1"]
    assert value(registry, "boto_prom_csv_rows_written_total") == 3


# --- the requestlog format --------------------------------------------------------------------

class _FrozenDatetime(datetime):
    """datetime whose now() is a fixed local time, for boto's and our hook alike."""

    frozen = datetime(2014, 2, 26, 21, 38, 27, 654321)

    @classmethod
    def now(cls, tz=None):
        return cls.frozen if tz is None else cls.frozen.astimezone(tz)


def _boto_request_logger():
    """boto's own RequestLogger, from boto's installed source, with only `import Queue`
    made Python 3's `import queue as Queue`; its worker thread is not started."""
    import queue
    import types

    source_path = os.path.join(os.path.dirname(boto.__file__), "requestlog.py")
    with open(source_path) as f:
        source = f.read()
    assert "import Queue\n" in source
    module = types.ModuleType("boto_requestlog_py3")
    exec(compile(source.replace("import Queue\n", "import queue as Queue\n"), source_path,
                 "exec"), module.__dict__)
    module.datetime = _FrozenDatetime
    logger = module.RequestLogger.__new__(module.RequestLogger)
    logger.request_log_queue = queue.Queue()
    return logger


@pytest.mark.parametrize("response, error", [
    (_Response(200, {"Content-Length": "592"}), False),
    (_Response(404, {"Content-Length": "311"}), False),
    (_Response(200, {}), False),  # no Content-Length: boto wrote 'None'
    (_Response(503, {"Content-Length": "99"}), True),  # retries exhausted: boto wrote 0
    (_Response(500, {"Content-Length": "12"}), True),
])
@pytest.mark.parametrize("ago", [
    timedelta(microseconds=791542), timedelta(seconds=12, microseconds=5),
    timedelta(days=1, seconds=3), timedelta(microseconds=7),
])
def test_requestlog_line_is_byte_for_byte_botos(registry, tmp_path, monkeypatch, response,
                                                error, ago):
    """The requestlog row equals the line boto's own RequestLogger code builds, byte for byte."""
    from boto_prom import boto2

    boto_logger = _boto_request_logger()
    monkeypatch.setattr(boto2, "datetime", _FrozenDatetime)
    monkeypatch.setattr(time, "time", lambda: _FrozenDatetime.frozen.timestamp())
    path = tmp_path / "request_log.csv"
    hook = BotoRequestHook(recorder=csv_recorder(registry, path, format="requestlog"), **EC2)
    request = _Request(start=_FrozenDatetime.frozen - ago)
    hook.handle_request_data(request, response, error)
    boto_logger.handle_request_data(request, response, error)
    boto_prom.get_csv_writer(path).flush(timeout=10)
    expected = boto_logger.request_log_queue.get_nowait()
    assert path.read_bytes() == expected.encode()


def test_requestlog_rows_where_boto_crashed(registry, tmp_path):
    """No response, or no Action (S3, DynamoDB): the row is written with what is known."""
    path = tmp_path / "request_log.csv"
    recorder = csv_recorder(registry, path, format="requestlog")
    start = datetime.now() - timedelta(seconds=2)
    hook = BotoRequestHook(recorder=recorder, **EC2)
    hook.handle_request_data(_Request(start=start), None, error=True)
    s3 = BotoRequestHook(recorder=recorder, aws_service="s3", aws_region="us-west-2")
    request = _Request(params={}, start=start)
    request.method, request.auth_path = "GET", "/bucket/key"
    s3.handle_request_data(request, _Response(200, {"Content-Length": "5"}))
    boto_prom.get_csv_writer(path).flush(timeout=10)
    line = r"^'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d', '%s', '2\.\d+', '%s', '%s'$"
    first, second = path.read_text().splitlines()
    assert re.match(line % ("none", "0", "DescribeVolumes"), first), first
    assert re.match(line % ("200", "5", "GetObject"), second), second


def test_requestlog_rows_of_real_calls_are_in_local_time(aws, registry, tmp_path):
    """Real EC2 calls in requestlog format: boto's quoting, local time, no header."""
    path = tmp_path / "request_log.csv"
    conn = aws.ec2()
    enable_metrics(conn, registry=registry, start_server=False, csv_path=path,
                   csv_format="requestlog")
    conn.get_all_instances()
    boto_prom.get_csv_writer(path).flush(timeout=10)
    (line,) = path.read_text().splitlines()
    match = re.match(r"^'([^']+)', '200', '[0-9.e-]+', '\d+', 'DescribeInstances'$", line)
    assert match, line
    when = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")
    assert abs((datetime.now() - when).total_seconds()) < 60


# --- sharing, configuration -------------------------------------------------------------------

def test_one_writer_per_path_shared_by_connections(aws, registry, tmp_path, monkeypatch):
    """Connections naming one file (by any spelling) share its writer and its rows."""
    path = tmp_path / "shared.csv"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link").symlink_to(tmp_path)
    ec2, iam = aws.ec2(), aws.iam()
    first = enable_metrics(ec2, registry=registry, start_server=False, csv_path=str(path))
    second = enable_metrics(iam, registry=registry, start_server=False,
                            csv_path="link/shared.csv", csv_max_bytes=csvlog.DEFAULT_MAX_BYTES)
    ec2.get_all_volumes()
    iam.get_all_users()
    writer = boto_prom.get_csv_writer("shared.csv")
    assert writer is not None
    assert first.recorder.csv.writer is writer is second.recorder.csv.writer
    writer.flush(timeout=10)
    assert sorted((r["aws_service"], r["action"]) for r in rows(path)) == [
        ("ec2", "DescribeVolumes"), ("iam", "ListUsers")]


@pytest.mark.parametrize("kwargs, match", [
    ({"csv_format": "requestlog"}, "already written by boto-prom with csv_format='csv'"),
    ({"csv_max_bytes": 1000}, "already written by boto-prom"),
    ({"csv_backups": 9}, "already written by boto-prom"),
])
def test_other_options_for_a_running_path_are_an_error(aws, registry, tmp_path, kwargs, match):
    """A path's writer has one set of options; asking for others later says so in a sentence."""
    path = tmp_path / "opts.csv"
    enable_metrics(aws.ec2(), registry=registry, start_server=False, csv_path=path)
    conn = aws.ec2()
    with pytest.raises(ConfigurationError, match=match) as raised:
        enable_metrics(conn, registry=registry, start_server=False, csv_path=path, **kwargs)
    assert "\n" not in str(raised.value)
    assert conn.request_hook is None


def test_environment_gives_the_path_and_the_argument_wins(aws, registry, tmp_path,
                                                          monkeypatch):
    """BOTO_PROM_CSV names the file when csv_path is not given; csv_path= wins over it."""
    monkeypatch.setenv("BOTO_PROM_CSV", str(tmp_path / "env.csv"))
    from_env, from_arg = aws.ec2(), aws.iam()
    enable_metrics(from_env, registry=registry, start_server=False)
    enable_metrics(from_arg, registry=registry, start_server=False,
                   csv_path=tmp_path / "arg.csv")
    from_env.get_all_volumes()
    from_arg.get_all_users()
    for name in ("env.csv", "arg.csv"):
        boto_prom.get_csv_writer(tmp_path / name).flush(timeout=10)
    assert [r["action"] for r in rows(tmp_path / "env.csv")] == ["DescribeVolumes"]
    assert [r["action"] for r in rows(tmp_path / "arg.csv")] == ["ListUsers"]


@pytest.mark.parametrize("make_path, kwargs, match", [
    (lambda d: d / "missing" / "r.csv", {}, r"directory of csv_path, .*missing, does not exist"),
    (lambda d: d / "afile" / "r.csv", {}, r"afile, is not a directory"),
    (lambda d: d, {}, "is a directory; pass the path of a file"),
    (lambda d: "/sys/boto-prom-test.csv", {}, r"cannot be written \(permission denied\)"),
    (lambda d: "/proc/boto-prom-test.csv", {}, "cannot be written"),
    (lambda d: "", {}, "csv_path must be a file path"),
    (lambda d: 42, {}, "csv_path must be a file path"),
    (lambda d: d / "r.csv", {"csv_format": "json"}, "csv_format must be 'csv' or 'requestlog'"),
    (lambda d: d / "r.csv", {"csv_max_bytes": -1}, "csv_max_bytes must be a whole number"),
    (lambda d: d / "r.csv", {"csv_backups": 1.5}, "csv_backups must be a whole number"),
    (lambda d: d / "r.csv", {"csv_backups": 0}, "csv_backups must be 1 or more"),
    (lambda d: None, {"csv_format": "csv"}, "pass csv_path= .*too"),
])
def test_bad_csv_configuration_is_one_sentence(aws, registry, tmp_path, make_path, kwargs,
                                               match):
    """Each bad CSV setting fails enable_metrics with one sentence and installs nothing."""
    (tmp_path / "afile").write_text("not a directory")
    conn = aws.ec2()
    with pytest.raises(ConfigurationError, match=match) as raised:
        enable_metrics(conn, registry=registry, start_server=False,
                       csv_path=make_path(tmp_path), **kwargs)
    assert "\n" not in str(raised.value) and str(raised.value).endswith(".")
    assert conn.request_hook is None
    assert csvlog._writers == {}


# --- lifecycle --------------------------------------------------------------------------------

def test_disable_does_not_close_the_shared_writer(aws, registry, tmp_path):
    """Disabling one connection leaves the writer running for the others."""
    path = tmp_path / "shared.csv"
    one, two = aws.ec2(), aws.ec2()
    enable_metrics(one, registry=registry, start_server=False, csv_path=path)
    enable_metrics(two, registry=registry, start_server=False, csv_path=path)
    writer = boto_prom.get_csv_writer(path)
    boto_prom.disable_metrics(one)
    one.get_all_volumes()
    two.get_all_volumes()
    assert boto_prom.get_csv_writer(path) is writer and not writer.closed
    writer.flush(timeout=10)
    assert len(rows(path)) == 1


def test_close_flushes_stops_and_a_later_enable_starts_anew(aws, registry, tmp_path):
    """close() writes what is queued and stops; later calls still work, their rows dropped."""
    path = tmp_path / "closing.csv"
    conn = aws.ec2()
    enable_metrics(conn, registry=registry, start_server=False, csv_path=path)
    for _ in range(3):
        conn.get_all_volumes()
    writer = boto_prom.get_csv_writer(path)
    assert writer.close(timeout=10) is True
    assert writer.closed and boto_prom.get_csv_writer(path) is None
    assert not writer._thread.is_alive()
    assert len(rows(path)) == 3
    assert conn.get_all_volumes() == []
    assert writer.queued == 0
    assert value(registry, "boto_prom_csv_rows_dropped_total", reason="closed") == 1
    assert accounted(registry, writer) == recorded(registry) == 4
    assert writer.close(timeout=1) is True, "closing twice is harmless"

    again = aws.ec2()
    enable_metrics(again, registry=registry, start_server=False, csv_path=path)
    again.get_all_volumes()
    boto_prom.get_csv_writer(path).flush(timeout=10)
    assert len(rows(path)) == 4


CHILD = textwrap.dedent("""
    import atexit, os, sys, threading
    os.environ["EC2_USE_SIGV4"] = "1"
    import boto
    from boto.ec2.connection import EC2Connection
    from boto.ec2.regioninfo import RegionInfo
    import boto_prom

    port, path, calls, hold = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    conn = EC2Connection(region=RegionInfo(name="us-west-2", endpoint="127.0.0.1"), port=port,
                         is_secure=False, aws_access_key_id="AKIACHILDCHILDCHILD1",
                         aws_secret_access_key="child-secret")
    conn.auth_service_name, conn.auth_region_name = "ec2", "us-west-2"
    boto_prom.enable_metrics(conn, start_server=False, csv_path=path)
    writer = boto_prom.get_csv_writer(path)
    if hold == "hold":
        # Keep every row queued until the interpreter exits: atexit runs last-registered
        # first, so this releases the file just before boto-prom's own exit flush.
        release = threading.Event()
        append = writer._file._append
        writer._file._append = lambda lines: (release.wait(), append(lines))
        atexit.register(release.set)
    for _ in range(calls):
        conn.get_all_volumes()
    print(writer.queued)
""")


@pytest.mark.parametrize("hold", ["hold", "free"])
def test_rows_queued_at_exit_are_written(aws, tmp_path, hold):
    """A child process makes N calls and exits normally; the file has exactly N rows."""
    path = tmp_path / "child.csv"
    calls = 25
    done = subprocess.run([sys.executable, "-c", CHILD, str(aws.port), str(path), str(calls),
                           hold], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    if hold == "hold":
        assert done.stdout.split() == [str(calls)], "every row was still queued at exit"
    got = rows(path)
    assert len(got) == calls
    assert {r["action"] for r in got} == {"DescribeVolumes"}


def _bounded(call, seconds=10):
    """call() in a daemon thread: its result, or a failure when it is still waiting."""
    result = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "still waiting"
    return result[0]


def test_rows_after_close_are_refused_and_counted_closed(registry, tmp_path):
    """After close() a row is counted dropped as closed, not queued, and flush() returns."""
    path = tmp_path / "closed.csv"
    writer = writer_for(path)
    sink = CsvSink(writer, csv_metrics_for(registry))
    sink.record(_record(1))
    assert writer.close(timeout=10)
    sink.record(_record(2))
    sink.record(_record(3))
    assert writer.queued == 0
    assert value(registry, "boto_prom_csv_rows_dropped_total", reason="closed") == 2
    assert value(registry, "boto_prom_csv_rows_written_total") == 1
    assert _bounded(writer.flush) is True
    assert [r["request_bytes"] for r in rows(path)] == ["1"]


def test_flush_does_not_wait_on_a_writer_closed_while_stuck(registry, tmp_path, monkeypatch):
    """A writer whose close() gave up on a blocked file: flush() with no timeout returns False."""
    path = tmp_path / "stuck.csv"
    writer = writer_for(path)
    entered, release = threading.Event(), threading.Event()
    append = writer._file._append
    monkeypatch.setattr(writer._file, "_append",
                        lambda lines: (entered.set(), release.wait(60), append(lines)))
    sink = CsvSink(writer, csv_metrics_for(registry))
    sink.record(_record(1))
    waiting = threading.Thread(target=writer.flush, daemon=True)
    try:
        assert entered.wait(10)
        waiting.start()
        assert writer.close(timeout=0.1) is False
        assert _bounded(writer.flush) is False
        waiting.join(10)
        assert not waiting.is_alive(), "a flush() waiting when close() gave up returned too"
        assert writer.queued == 1 and accounted(registry, writer) == 1
    finally:
        release.set()
    writer._thread.join(10)
    assert writer.queued == 0 and accounted(registry, writer) == 1


AT_EXIT = textwrap.dedent("""
    import atexit, sys, time
    from prometheus_client import CollectorRegistry

    @atexit.register  # before boto_prom is imported, so it runs after boto-prom's exit flush
    def late_call():
        sink.record(RequestRecord("boto2", "ec2", "us-west-2", "DescribeVolumes", "200", 0.25,
                                  2, 42, None, False, None, time.time()))
        written = registry.get_sample_value("boto_prom_csv_rows_written_total")
        closed = registry.get_sample_value("boto_prom_csv_rows_dropped_total",
                                           {"reason": "closed"})
        print(int(written), int(closed), sink.writer.queued, sink.writer.flush(), flush=True)

    from boto_prom.csvlog import CsvSink, csv_metrics_for, csv_writer_for
    from boto_prom.record import RequestRecord
    from boto_prom.settings import csv_settings

    registry = CollectorRegistry()
    sink = CsvSink(csv_writer_for(csv_settings(sys.argv[1])), csv_metrics_for(registry))
    sink.record(RequestRecord("boto2", "ec2", "us-west-2", "DescribeVolumes", "200", 0.25, 1,
                              42, None, False, None, time.time()))
""")


def test_a_row_recorded_after_the_exit_flush_is_counted_closed(tmp_path):
    """An atexit handler that runs after boto-prom's exit flush has its row counted closed."""
    path = tmp_path / "exit.csv"
    done = subprocess.run([sys.executable, "-c", AT_EXIT, str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "1", "0", "True"], "written, closed, queued, flushed"
    assert [r["request_bytes"] for r in rows(path)] == ["1"]


def test_exit_is_bounded_when_the_file_blocks(aws, tmp_path):
    """A writer stuck on a FIFO nobody reads delays exit by the exit timeout, not forever."""
    fifo = tmp_path / "blocked.fifo"
    os.mkfifo(fifo)
    code = CHILD.replace("import boto_prom\n", "import boto_prom\n"
                         "boto_prom.csvlog.EXIT_TIMEOUT = 0.5\n")
    done = subprocess.run([sys.executable, "-c", code, str(aws.port), str(fifo), "3", "free"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "did not finish within 0.5 s; 3 rows were not written" in done.stderr


# --- fork ----------------------------------------------------------------------------------

def _in_child(body, seconds=10):
    """Run body() in a forked child that an alarm kills after seconds; what body returned."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            os.close(read)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(seconds)
            try:
                result = {"ok": body()}
            except BaseException:
                result = {"error": traceback.format_exc()}
            os.write(write, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        sent = pipe.read()  # until the child exits, or its alarm kills it
    _, status = os.waitpid(pid, 0)
    assert not os.WIFSIGNALED(status), f"the child hung: killed by signal {os.WTERMSIG(status)}"
    result = json.loads(sent)
    assert "error" not in result, result.get("error")
    return result["ok"]


def test_a_forked_child_writes_its_own_rows(registry, tmp_path, monkeypatch):
    """A child forked while the writer is busy writes the rows it records, and only those."""
    path = tmp_path / "forked.csv"
    writer = writer_for(path)
    sink = CsvSink(writer, csv_metrics_for(registry))
    sink.record(_record(1))
    assert writer.flush(timeout=10)
    parent, entered, release = os.getpid(), threading.Event(), threading.Event()
    append = writer._file._append

    def stalled_in_parent(lines):
        if os.getpid() == parent:
            entered.set()
            release.wait(30)
        append(lines)

    monkeypatch.setattr(writer._file, "_append", stalled_in_parent)
    sink.record(_record(2))
    assert entered.wait(10), "row 2 is being written when the process forks"
    sink.record(_record(3))  # and row 3 is queued

    def child():
        queued_at_fork = writer.queued
        for n in (11, 12, 13):
            sink.record(_record(n))
        return [queued_at_fork, writer.flush(timeout=5), writer.queued,
                value(registry, "boto_prom_csv_rows_written_total")]

    try:
        got = _in_child(child)
    finally:
        release.set()
    assert got == [0, True, 0, 1 + 3], "queued at fork, flushed, queued, written"
    assert writer.flush(timeout=10)
    assert value(registry, "boto_prom_csv_rows_written_total") == 3
    assert sorted(int(r["request_bytes"]) for r in rows(path)) == [1, 2, 3, 11, 12, 13]


def test_a_fork_while_a_thread_holds_the_queue_lock_does_not_deadlock(registry, tmp_path):
    """Forking while another thread holds the writer's lock waits for it; the child records."""
    path = tmp_path / "locked.csv"
    writer = writer_for(path)
    sink = CsvSink(writer, csv_metrics_for(registry))
    held = threading.Event()

    def holder():  # as the writer thread inside get_batch() or done()
        with writer._queue.mutex:
            held.set()
            time.sleep(0.3)

    thread = threading.Thread(target=holder, daemon=True)
    thread.start()
    assert held.wait(10)

    def child():
        sink.record(_record(7))
        return [writer.flush(timeout=5), value(registry, "boto_prom_csv_rows_written_total")]

    assert _in_child(child, seconds=5) == [True, 1]
    thread.join(10)
    assert [r["request_bytes"] for r in rows(path)] == ["7"]
    assert writer.queued == 0 and value(registry, "boto_prom_csv_rows_written_total") == 0


# --- load, stalls and write failures ---------------------------------------------------------

def test_invariant_holds_under_load_with_a_stalled_writer(registry, tmp_path, monkeypatch):
    """Callers never wait for a stalled writer, and written + dropped + queued == recorded."""
    path = tmp_path / "stalled.csv"
    writer = writer_for(path, queue_size=100)
    entered, release = threading.Event(), threading.Event()
    append = writer._file._append

    def stalled(lines):
        entered.set()
        release.wait(60)
        append(lines)

    monkeypatch.setattr(writer._file, "_append", stalled)
    hook = BotoRequestHook(recorder=Recorder(metrics_for(registry), csv=CsvSink(
        writer, csv_metrics_for(registry))), **EC2)
    request, ok = _Request(), _Response(200)
    hook.handle_request_data(request, ok)
    assert entered.wait(10), "the writer took the first row and is now stuck writing it"

    def load(calls):
        # Daemon threads: should a caller block on the writer, the test fails, not hangs.
        threads = [threading.Thread(target=lambda: [hook.handle_request_data(request, ok)
                                                    for _ in range(calls)], daemon=True)
                   for _ in range(16)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in threads), "a caller waited for the writer"

    try:
        load(500)
        assert recorded(registry) == 1 + 16 * 500
        assert writer.queued == 1 + 100, "one row being written, a full queue behind it"
        assert value(registry, "boto_prom_csv_rows_dropped_total", reason="queue_full") == (
            16 * 500 - 100)
        assert accounted(registry, writer) == recorded(registry)
    finally:
        release.set()
    assert writer.flush(timeout=30)
    assert writer.queued == 0
    assert value(registry, "boto_prom_csv_rows_written_total") == 101
    assert accounted(registry, writer) == recorded(registry)

    load(50)  # a running writer, callers racing it
    assert writer.flush(timeout=30)
    assert accounted(registry, writer) == recorded(registry) == 1 + 16 * 550
    assert len(rows(path)) == value(registry, "boto_prom_csv_rows_written_total")


def test_disk_full_is_counted_logged_once_and_calls_go_on(aws, registry, caplog):
    """Writing to /dev/full drops every row as write_error, warns once, and the calls succeed."""
    conn = aws.ec2()
    with caplog.at_level(logging.DEBUG, logger="boto_prom"):
        enable_metrics(conn, registry=registry, start_server=False, csv_path="/dev/full")
        writer = boto_prom.get_csv_writer("/dev/full")
        for _ in range(3):
            assert conn.get_all_volumes() == []
            assert writer.flush(timeout=10)
    assert value(registry, "boto_prom_csv_rows_dropped_total", reason="write_error") == 3
    assert value(registry, "boto_prom_csv_rows_written_total") == 0
    assert value(registry, "boto_requests_total", action="DescribeVolumes", status_code="200",
                 **EC2) == 3
    assert value(registry, "boto_prom_hook_errors_total", stage="csv") == 0
    mine = [r for r in caplog.records if "CSV rows to /dev/full failed" in r.getMessage()]
    assert [r.levelno for r in mine] == [logging.WARNING] + [logging.DEBUG] * 2
    assert "No space left on device" in mine[0].getMessage()


PARTIAL = textwrap.dedent("""
    import os, resource, signal, sys, threading
    from prometheus_client import CollectorRegistry
    from boto_prom.csvlog import CsvSink, csv_metrics_for, csv_writer_for
    from boto_prom.record import RequestRecord
    from boto_prom.settings import csv_settings

    path, cut = sys.argv[1], sys.argv[2]
    if cut == "fails":
        def refuse(fd, length):
            raise PermissionError(1, "Operation not permitted")  # as on a chattr +a file
        os.ftruncate = refuse

    def record(n):
        sink.record(RequestRecord("boto2", "ec2", "us-west-2", "DescribeVolumes", "200", 0.25,
                                  n, 42, None, False, None, 1700000000.0))

    registry = CollectorRegistry()
    writer = csv_writer_for(csv_settings(path, max_bytes=0))
    sink = CsvSink(writer, csv_metrics_for(registry))
    # Row 1 is a batch of its own; rows 2 to 5 gather behind it and go in one write.
    entered, gate, append = threading.Event(), threading.Event(), writer._file._append
    writer._file._append = lambda lines: (entered.set(), gate.wait(10), append(lines))
    header = len(writer._file.header)
    row = len(writer._lines([(RequestRecord("boto2", "ec2", "us-west-2", "DescribeVolumes",
                                            "200", 0.25, 1, 42, None, False, None,
                                            1700000000.0), None)])[0])
    # A file size limit fails writes as a full disk does: room for rows 1 and 2 and half of 3.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (header + 2 * row + row // 2, hard))
    record(1)
    assert entered.wait(10)
    for n in range(2, 6):
        record(n)
    gate.set()
    assert writer.flush(10)
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # the disk has room again
    record(6)
    record(7)
    assert writer.flush(10)
    print(int(registry.get_sample_value("boto_prom_csv_rows_written_total")),
          int(registry.get_sample_value("boto_prom_csv_rows_dropped_total",
                                        {"reason": "write_error"})))
""")


def test_a_partial_write_is_cut_off_and_counted_exactly(tmp_path):
    """A write stopped part-way by a file size limit leaves whole rows only, none of its own."""
    path = tmp_path / "partial.csv"
    done = subprocess.run([sys.executable, "-c", PARTIAL, str(path), "works"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3", "4"], "written, write_error"
    assert "File too large" in done.stderr
    assert [r["request_bytes"] for r in rows(path)] == ["1", "6", "7"]
    assert path.read_text().endswith("\n")


def test_a_partial_row_that_cannot_be_cut_off_ends_its_line(tmp_path):
    """When truncating fails too, the next row still starts on a line of its own."""
    path = tmp_path / "partial.csv"
    done = subprocess.run([sys.executable, "-c", PARTIAL, str(path), "fails"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3", "4"], "written, write_error"
    header, *lines = path.read_text().split("\n")
    assert header == ",".join(COLUMNS) and lines[-1] == ""
    whole = [line.split(",") for line in lines[:-1]]
    assert [r[6] for r in whole if len(r) == len(COLUMNS)] == ["1", "2", "6", "7"]
    (part,) = [line for line in lines[:-1] if line.count(",") < len(COLUMNS) - 1]
    assert lines.index(part) == 2, "part of row 3 after rows 1 and 2, then row 6 on its own line"
    assert 0 < len(part) < len(lines[1]) and lines[1].startswith(part)


def test_file_deleted_or_moved_away_is_reopened(aws, registry, tmp_path, caplog):
    """Rows after the file is deleted or renamed go to a new file at the path, with a header."""
    path = tmp_path / "moving.csv"
    conn = aws.ec2()
    with caplog.at_level(logging.DEBUG, logger="boto_prom"):
        enable_metrics(conn, registry=registry, start_server=False, csv_path=path)
        writer = boto_prom.get_csv_writer(path)
        conn.get_all_volumes()
        writer.flush(timeout=10)
        path.rename(tmp_path / "moving.csv.old")  # logrotate without copytruncate
        conn.get_all_volumes()
        conn.get_all_volumes()
        writer.flush(timeout=10)
        moved = len(rows(tmp_path / "moving.csv.old"))
        path.unlink()
        conn.get_all_volumes()
        writer.flush(timeout=10)
    assert moved == 1
    assert len(rows(path)) == 1
    assert value(registry, "boto_prom_csv_rows_written_total") == 4
    mine = [r for r in caplog.records if "was deleted or moved away" in r.getMessage()]
    assert [r.levelno for r in mine] == [logging.WARNING, logging.DEBUG]


def test_directory_removed_underneath_counts_write_errors_until_it_returns(
        aws, registry, tmp_path, caplog):
    """With its directory gone rows are dropped as write_error; once it is back they land."""
    directory = tmp_path / "logs"
    directory.mkdir()
    path = directory / "r.csv"
    conn = aws.ec2()
    with caplog.at_level(logging.DEBUG, logger="boto_prom"):
        enable_metrics(conn, registry=registry, start_server=False, csv_path=path)
        writer = boto_prom.get_csv_writer(path)
        conn.get_all_volumes()
        writer.flush(timeout=10)
        path.unlink()
        directory.rmdir()
        conn.get_all_volumes()
        conn.get_all_volumes()
        writer.flush(timeout=10)
        directory.mkdir()
        conn.get_all_volumes()
        writer.flush(timeout=10)
    assert value(registry, "boto_prom_csv_rows_dropped_total", reason="write_error") == 2
    assert value(registry, "boto_prom_csv_rows_written_total") == 2
    assert len(rows(path)) == 1
    assert accounted(registry, writer) == recorded(registry) == 4
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("No such file or directory" in r.getMessage() for r in warnings)
    assert len([r for r in warnings if "CSV rows to" in r.getMessage()]) == 1


# --- secrets ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["csv", "requestlog"])
def test_no_bucket_key_or_secret_in_rows(aws, registry, tmp_path, fmt):
    """S3 calls with recognisable names leave no bucket, key or credential in the file."""
    from boto.s3.connection import OrdinaryCallingFormat, S3Connection

    secrets = ["AKIACSVSECRETKEY0042", "wJalrCSVsecretSECRETkey0042", "CSVsessionTOKEN0042",
               f"csv-secret-bucket-0042-{fmt}", "csv-private-object-key-0042"]
    conn = S3Connection(host="localhost", port=aws.port, is_secure=False,
                        calling_format=OrdinaryCallingFormat(),
                        aws_access_key_id=secrets[0], aws_secret_access_key=secrets[1],
                        security_token=secrets[2])
    conn.auth_service_name, conn.auth_region_name = "s3", "us-west-2"
    path = tmp_path / f"s3.{fmt}"
    enable_metrics(conn, registry=registry, start_server=False, csv_path=path, csv_format=fmt)
    bucket = conn.create_bucket(secrets[3], location="us-west-2")
    bucket.new_key(f"dir/{secrets[4]}").set_contents_from_string("data")
    bucket.get_key(f"dir/{secrets[4]}").get_contents_as_string()
    bucket.get_key(f"{secrets[4]}-missing")
    boto_prom.get_csv_writer(path).flush(timeout=10)
    text = path.read_text()
    assert "PutObject" in text and "GetObject" in text and "HeadObject" in text
    for secret in secrets:
        assert secret not in text
