"""Batch jobs: push_metrics and the push at exit, against the real Pushgateway on loopback."""

from __future__ import annotations

import socketserver
import subprocess
import sys
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

import boto_prom
from boto_prom import ConfigurationError, push
from boto_prom.metrics import metrics_for
from boto_prom.recorder import Recorder
from tests.conftest import HAS_BOTO2, require_binary
from tests.fault_server import closed_port
from tests.procs import child_env, read_line, start_pushgateway, start_worker, stop

CALLS = 7
GATEWAY_USER, GATEWAY_PASSWORD = "pusher", "gateway-password-0042"
needs_boto2 = pytest.mark.skipif(not HAS_BOTO2, reason="boto 2 needs Python 3.11 or older")


@pytest.fixture
def gateway(tmp_path):
    """Start a real prometheus-pushgateway on loopback (with a web config if given); its URL."""
    binary = require_binary("prometheus-pushgateway")
    started = []

    def start(web_config_text=None):
        proc, url = start_pushgateway(binary, str(tmp_path), web_config_text)
        started.append(proc)
        return url

    yield start
    for proc in started:
        stop(proc)


@pytest.fixture(autouse=True)
def _no_exit_push():
    """Cancel any push at exit a test arranged in this process, so pytest's exit pushes none."""
    yield
    pending = push.pending_exit_push()
    if pending is not None:
        pending.cancel()


def record_calls(registry, calls):
    """calls S3 PutObject calls through the recorder, as the botocore adapter records them."""
    bound = Recorder(metrics_for(registry)).bind("botocore", "s3", "eu-west-1", "PutObject")
    for _ in range(calls):
        bound.record("200", 0.1, 10, 0, None, False, None)


def pushed(url, job, name="boto_requests_total", **labels):
    """The value the gateway holds for one series of a job, or None."""
    import urllib.request

    request = urllib.request.Request(f"{url}/metrics")
    if "auth" in labels:
        import base64

        user, password = labels.pop("auth")
        request.add_header("Authorization", "Basic " + base64.b64encode(
            f"{user}:{password}".encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read().decode()
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name == name and s.labels.get("job") == job and all(
                    s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def run_job(aws, calls, **env):
    """A child batch job: calls, exit; returns (seconds from its last call to its exit, stderr)."""
    proc = start_worker(aws.port, calls, env=child_env(**env))
    assert read_line(proc).startswith("ready ")
    done = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return time.monotonic() - done, err


def boto_prom_lines(stderr):
    return [line for line in stderr.splitlines() if line.strip()]


DESCRIBE = dict(aws_service="ec2", aws_region="us-west-2", action="DescribeVolumes",
                status_code="200")


@needs_boto2
def test_batch_job_pushes_its_calls_at_exit(aws, gateway):
    """A child makes N calls and exits; the gateway then holds exactly N under its job."""
    url = gateway()
    _, err = run_job(aws, CALLS, BOTO_PROM_PUSHGATEWAY=url, BOTO_PROM_PUSH_JOB="nightly",
                     BOTO_PROM_PUSH_GROUPING_KEY="instance=batch1,shard=2")
    assert boto_prom_lines(err) == [], "a successful push is silent"
    assert pushed(url, "nightly", instance="batch1", shard="2", **DESCRIBE) == CALLS
    assert pushed(url, "nightly", "push_failure_time_seconds", instance="batch1") == 0


@needs_boto2
def test_gateway_with_basic_auth(aws, gateway):
    """With the right password the push lands; a wrong one costs one log line and no data."""
    import bcrypt

    hashed = bcrypt.hashpw(GATEWAY_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    url = gateway(f"basic_auth_users:\n  {GATEWAY_USER}: '{hashed}'\n")
    auth = (GATEWAY_USER, GATEWAY_PASSWORD)
    env = dict(BOTO_PROM_PUSHGATEWAY=url, BOTO_PROM_PUSH_USERNAME=GATEWAY_USER)
    _, err = run_job(aws, CALLS, BOTO_PROM_PUSH_JOB="authed",
                     BOTO_PROM_PUSH_PASSWORD=GATEWAY_PASSWORD, **env)
    assert boto_prom_lines(err) == []
    assert pushed(url, "authed", auth=auth, **DESCRIBE) == CALLS
    _, err = run_job(aws, CALLS, BOTO_PROM_PUSH_JOB="refused",
                     BOTO_PROM_PUSH_PASSWORD="wrong-password-0042", **env)
    lines = boto_prom_lines(err)
    assert len(lines) == 1 and "failed (HTTP 401)" in lines[0], err
    assert "wrong-password-0042" not in err
    assert pushed(url, "refused", auth=auth, **DESCRIBE) is None


class _Silent(socketserver.BaseRequestHandler):
    """Accepts a connection and never answers, until the test ends."""

    release = threading.Event()

    def handle(self):
        self.release.wait(60)


@needs_boto2
@pytest.mark.parametrize("down", ["closed_port", "never_answers"])
def test_gateway_down_costs_a_bounded_timeout_and_one_line(aws, down):
    """A refused or silent gateway: exit within the timeout, one log line, no traceback."""
    timeout = 1.0
    server = None
    if down == "closed_port":
        port = closed_port()
    else:
        _Silent.release.clear()
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Silent)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]
    try:
        elapsed, err = run_job(aws, 2, BOTO_PROM_PUSHGATEWAY=f"http://127.0.0.1:{port}",
                               BOTO_PROM_PUSH_TIMEOUT=str(timeout))
    finally:
        if server is not None:
            _Silent.release.set()
            server.shutdown()
            server.server_close()
    lines = boto_prom_lines(err)
    assert len(lines) == 1, err
    assert lines[0].startswith("boto-prom: push of metrics to http://127.0.0.1:")
    assert "Traceback" not in err
    assert elapsed < timeout + 2.5, f"exit took {elapsed:.1f} s"
    if down == "never_answers":
        assert "timed out" in lines[0] or "did not finish" in lines[0], lines[0]
        assert elapsed >= timeout * 0.9, "the silent gateway was really waited for"
    else:
        assert "Connection refused" in lines[0], lines[0]


def test_push_metrics_by_hand(gateway, registry):
    """push_metrics() sends a registry under a job and grouping key; the gateway holds it."""
    record_calls(registry, 3)
    url = gateway()
    boto_prom.push_metrics(url, job="by-hand", grouping_key={"instance": "h1"},
                           registry=registry, timeout=5)
    assert pushed(url, "by-hand", instance="h1", aws_service="s3", action="PutObject") == 3
    with pytest.raises(OSError):
        boto_prom.push_metrics(f"http://127.0.0.1:{closed_port()}", job="x", registry=registry,
                               timeout=2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(gateway="http://u:p@127.0.0.1:9091"), "must not carry credentials"),
    (dict(gateway="ftp://127.0.0.1"), "http:// or https://"),
    (dict(gateway=""), "must be a URL"),
    (dict(job=""), "job must be a non-empty string"),
    (dict(grouping_key={"job": "x"}), "other than 'job'"),
    (dict(grouping_key={"bad-name": "x"}), "label names"),
    (dict(grouping_key={"instance": 3}), "must be a string"),
    (dict(timeout=0), "timeout must be a number of seconds above 0"),
    (dict(timeout=1e10), "at most 600"),
    (dict(gateway="http://[::1"), "malformed host or a port"),
    (dict(gateway="http://127.0.0.1:abc"), "malformed host or a port"),
    (dict(username="u"), "both username and password"),
])
def test_push_metrics_arguments_are_checked(registry, kwargs, match):
    """Each bad push_metrics argument is a ConfigurationError naming it, before any I/O."""
    args = dict(gateway="http://127.0.0.1:1", job="j")
    args.update(kwargs)
    with pytest.raises(ConfigurationError, match=match):
        boto_prom.push_metrics(args.pop("gateway"), registry=registry, **args)


def test_credentials_in_the_url_point_at_the_arguments(registry):
    """push_metrics with credentials in its URL says to pass username= and password= (its
    own arguments; the BOTO_PROM_PUSH_* variables are for the push at exit), secret unsaid."""
    with pytest.raises(ConfigurationError) as raised:
        boto_prom.push_metrics("http://u:secret@127.0.0.1:1", job="j", registry=registry)
    assert str(raised.value) == ("the Pushgateway URL (gateway) must not carry credentials; "
                                 "pass username= and password= instead.")
    assert raised.value.setting == "gateway"


@needs_boto2
@pytest.mark.parametrize("env, match", [
    ({"BOTO_PROM_PUSH_TIMEOUT": "soon"}, "BOTO_PROM_PUSH_TIMEOUT"),
    ({"BOTO_PROM_PUSH_GROUPING_KEY": "instance"}, "name=value pairs"),
    ({"BOTO_PROM_PUSH_USERNAME": "u"}, "set BOTO_PROM_PUSH_PASSWORD too"),
    ({"BOTO_PROM_PUSH_TIMEOUT": "1000"}, r"at most 600, not '1000'\.$"),
    ({"BOTO_PROM_PUSHGATEWAY": "http://u:secret@127.0.0.1:1"}, "must not carry credentials"),
])
def test_bad_push_environment_fails_enable(aws, registry, monkeypatch, env, match):
    """A bad push setting fails enable_metrics with one sentence and arranges no push."""
    monkeypatch.setenv("BOTO_PROM_PUSHGATEWAY", "http://127.0.0.1:1")
    for name, val in env.items():
        monkeypatch.setenv(name, val)
    with pytest.raises(ConfigurationError, match=match) as raised:
        boto_prom.enable_metrics(aws.ec2(), registry=registry, start_server=False)
    assert "\n" not in str(raised.value) and "secret" not in str(raised.value)
    assert push.pending_exit_push() is None


def test_failing_thread_join_at_exit_is_one_line_not_a_traceback():
    """A push at exit whose wait itself raises (a timer overflow) logs one line and no traceback."""
    code = f"""if True:
        from prometheus_client import CollectorRegistry
        from boto_prom import push
        from boto_prom.settings import PushSettings
        # Past what resolve_push allows: thread.join overflows at exit.
        push.push_at_exit(PushSettings("http://127.0.0.1:{closed_port()}", "job",
                                       timeout=1e10), CollectorRegistry())
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=child_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    lines = boto_prom_lines(done.stderr)
    assert len(lines) == 1 and "at exit failed" in lines[0], done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


MP_RECORD = """if True:
    import sys
    from prometheus_client import CollectorRegistry
    from boto_prom import ConfigurationError, settings
    from boto_prom.metrics import metrics_for
    from boto_prom.recorder import Recorder
    try:
        settings.resolve(start_server=False)
    except ConfigurationError as exc:
        print("refused:", exc)
    bound = Recorder(metrics_for(CollectorRegistry())).bind("botocore", "s3", "eu-west-1",
                                                            "PutObject")
    for _ in range(int(sys.argv[1])):
        bound.record("200", 0.1, 10, 0, None, False, None)
"""


def test_push_at_exit_is_refused_in_multiprocess_mode(tmp_path):
    """With PROMETHEUS_MULTIPROC_DIR and BOTO_PROM_PUSHGATEWAY set, the check says what to do."""
    env = child_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path),
                    BOTO_PROM_PUSHGATEWAY="http://127.0.0.1:9091")
    out = subprocess.run([sys.executable, "-c", MP_RECORD, "0"], capture_output=True,
                         text=True, env=env, timeout=60, check=True).stdout
    assert out.startswith("refused: BOTO_PROM_PUSHGATEWAY (push at exit) is not available in "
                          "multiprocess mode"), out
    assert "multiprocess_registry()" in out and out.count("\n") == 1


def test_multiprocess_metrics_pushed_from_one_process_add_up(tmp_path, gateway):
    """What the refusal suggests works: one push of multiprocess_registry() holds every
    worker's calls."""
    url = gateway()
    mp_dir = tmp_path / "mp"
    mp_dir.mkdir()
    env = child_env(PROMETHEUS_MULTIPROC_DIR=str(mp_dir))
    for calls in (3, 4):
        subprocess.run([sys.executable, "-c", MP_RECORD, str(calls)], env=env, timeout=60,
                       check=True)
    code = f"""if True:
        import boto_prom
        boto_prom.push_metrics({url!r}, job="workers",
                               registry=boto_prom.multiprocess_registry())
    """
    subprocess.run([sys.executable, "-c", code], env=env, timeout=60, check=True)
    assert pushed(url, "workers", aws_service="s3", action="PutObject", status_code="200") == 7


@needs_boto2
def test_one_registry_is_pushed_at_exit(aws, registry, monkeypatch):
    """The push at exit is arranged once; enabling with another registry is an error."""
    from prometheus_client import CollectorRegistry

    monkeypatch.setenv("BOTO_PROM_PUSHGATEWAY", "http://127.0.0.1:1")
    monkeypatch.setenv("BOTO_PROM_PUSH_JOB", "one")
    boto_prom.enable_metrics(aws.ec2(), registry=registry, start_server=False)
    boto_prom.enable_metrics(aws.ec2(), registry=registry, start_server=False)
    pending = push.pending_exit_push()
    assert pending.registry is registry and pending.settings.job == "one"
    with pytest.raises(ConfigurationError, match="pushes one registry"):
        boto_prom.enable_metrics(aws.ec2(), registry=CollectorRegistry(), start_server=False)


@pytest.mark.parametrize("first, second", [(False, True), (True, False)])
def test_default_and_detailed_groups_share_one_gateway(gateway, first, second):
    """A default group and a detailed group (either first) both land on one real gateway: the
    sizes are a histogram in both modes, so the gateway finds no type clash between groups."""
    from prometheus_client import CollectorRegistry

    url = gateway()
    for job, detailed in (("first", first), ("second", second)):
        registry = CollectorRegistry()
        bound = Recorder(metrics_for(registry, detailed=detailed)).bind(
            "botocore", "s3", "eu-west-1", "PutObject")
        bound.record("200", 0.1, 10, 2 * 1024 * 1024, None, False, None)
        boto_prom.push_metrics(url, job=job, registry=registry, timeout=5)
    import urllib.request

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        body = response.read().decode()
    buckets = {(s.labels["job"], float(s.labels["le"])): s.value
               for family in text_string_to_metric_families(body)
               for s in family.samples if s.name == "boto_response_size_bytes_bucket"}
    for job in ("first", "second"):
        assert pushed(url, job, aws_service="s3", action="PutObject") == 1
        # The 2 MiB body: above the 1 MiB bucket both modes have, inside +Inf.
        assert buckets[job, 1024.0 * 1024] == 0
        assert buckets[job, float("inf")] == 1
