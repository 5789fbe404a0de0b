"""enable_metrics' configuration: arguments, environment, and one-sentence errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

import boto_prom
from boto_prom import ConfigurationError
from tests.conftest import HAS_BOTO2


def test_import_does_not_import_boto():
    """import boto_prom loads neither boto nor botocore."""
    code = ("import sys, boto_prom; "
            "print(sorted(m for m in ('boto', 'botocore', 'moto') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_public_names():
    """The package's public face is its __all__."""
    for name in boto_prom.__all__:
        assert getattr(boto_prom, name) is not None
    with pytest.raises(AttributeError):
        boto_prom.no_such_name  # noqa: B018


def test_not_a_connection_is_one_sentence():
    """Passing something that is not a boto connection says so."""
    with pytest.raises(ConfigurationError, match="takes a boto 2 connection .* not str"):
        boto_prom.enable_metrics("ec2")


needs_boto2 = pytest.mark.skipif(not HAS_BOTO2, reason="boto 2 needs Python 3.11 or older")


@needs_boto2
@pytest.mark.parametrize("env, kwargs, match", [
    ({"BOTO_PROM_PORT": "nine"}, {}, "BOTO_PROM_PORT must be a port number"),
    ({"BOTO_PROM_PORT": "70000"}, {}, "BOTO_PROM_PORT must be a port number"),
    ({}, {"port": -1}, "port must be a port number"),
    ({}, {"port": "9875"}, "port must be a port number"),
    ({"BOTO_PROM_DISABLED": "maybe"}, {}, "BOTO_PROM_DISABLED must be one of"),
    ({}, {"buckets": [1, 0.5]}, "strictly increasing"),
    ({}, {"buckets": "fast"}, "list of numbers"),
    ({}, {"buckets": []}, "strictly increasing"),
    ({}, {"aws_service": "ec2/../x"}, "aws_service must be a short name"),
    ({}, {"aws_region": ""}, "aws_region must be a short name"),
    ({}, {"addr": 127}, "addr must be"),
    ({}, {"addr": "127.0.0.1\0"}, "addr must be"),
    ({}, {"allowed_services": [["s3"]]}, "allowed_services must hold short names"),
])
def test_bad_configuration_is_one_sentence(aws, registry, monkeypatch, env, kwargs, match):
    """Each bad setting fails enable_metrics with one sentence and leaves the connection alone."""
    for name, val in env.items():
        monkeypatch.setenv(name, val)
    conn = aws.ec2()
    with pytest.raises(ConfigurationError, match=match) as raised:
        boto_prom.enable_metrics(conn, registry=registry, **kwargs)
    assert "\n" not in str(raised.value)
    assert conn.request_hook is None


@needs_boto2
def test_different_buckets_on_one_registry_is_an_error(aws, registry):
    """A registry's buckets are set once; asking for others later says so."""
    boto_prom.enable_metrics(aws.ec2(), registry=registry, start_server=False, buckets=[1, 2])
    boto_prom.enable_metrics(aws.ec2(), registry=registry, start_server=False, buckets=[1, 2])
    with pytest.raises(ConfigurationError, match="differ from the buckets"):
        boto_prom.enable_metrics(aws.ec2(), registry=registry, start_server=False,
                                 buckets=[5, 10])


@needs_boto2
def test_registry_with_clashing_names_is_one_sentence(aws, registry):
    """A registry that already holds our metric names gives a ConfigurationError."""
    from prometheus_client import Counter

    Counter("boto_requests", "someone else's", registry=registry)
    with pytest.raises(ConfigurationError, match="already registered"):
        boto_prom.enable_metrics(aws.ec2(), registry=registry, start_server=False)


@needs_boto2
def test_disabled_by_environment(aws, registry, monkeypatch):
    """BOTO_PROM_DISABLED=1 makes enable_metrics a no-op returning None."""
    monkeypatch.setenv("BOTO_PROM_DISABLED", "1")
    conn = aws.ec2()
    assert boto_prom.enable_metrics(conn, registry=registry) is None
    assert conn.request_hook is None
    assert boto_prom.get_server() is None


@needs_boto2
def test_port_and_addr_from_environment_and_arguments_win(aws, registry, monkeypatch):
    """BOTO_PROM_PORT/BOTO_PROM_ADDR apply when no argument is given; arguments win."""
    monkeypatch.setenv("BOTO_PROM_PORT", "0")
    monkeypatch.setenv("BOTO_PROM_ADDR", "127.0.0.1")
    hook = boto_prom.enable_metrics(aws.ec2(), registry=registry)
    assert hook.server.addr == "127.0.0.1" and hook.server.port > 0
    boto_prom.stop_server()
    monkeypatch.setenv("BOTO_PROM_ADDR", "no-such-host.invalid")
    hook = boto_prom.enable_metrics(aws.ec2(), registry=registry, addr="127.0.0.1")
    assert hook.server.addr == "127.0.0.1"


def test_default_port_avoids_the_usual_suspects():
    """The default port is none of Prometheus's, Pushgateway's, Grafana's or common app ports."""
    assert boto_prom.DEFAULT_PORT not in (9090, 9091, 9093, 9100, 3000, 8000, 8080, 5000, 9464)


@needs_boto2
def test_a_failed_enable_leaves_nothing_behind(aws, registry, tmp_path):
    """An enable that fails after its server started stops that server, and a busy port stops
    it before a CSV writer is made."""
    import socket

    from boto_prom import get_csv_writer, get_server

    boto_prom.enable_metrics(aws.ec2(), registry=registry, start_server=False, buckets=[1, 2])
    conn = aws.ec2()
    with pytest.raises(ConfigurationError, match="differ from the buckets"):
        boto_prom.enable_metrics(conn, registry=registry, port=0, buckets=[5, 10])
    assert get_server() is None and conn.request_hook is None
    path = tmp_path / "calls.csv"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        with pytest.raises(ConfigurationError, match="already in use"):
            boto_prom.enable_metrics(conn, registry=registry, csv_path=str(path),
                                     port=holder.getsockname()[1])
    assert get_csv_writer(str(path)) is None and not path.exists()
    assert conn.request_hook is None


@needs_boto2
def test_registry_that_is_not_a_registry_is_one_sentence(aws):
    """registry= of the wrong type fails enable_metrics with one sentence."""
    with pytest.raises(ConfigurationError, match="registry must be a prometheus_client"):
        boto_prom.enable_metrics(aws.ec2(), registry="default", start_server=False)


# --- re-enabling, and a failed enable leaves nothing behind ------------------------------------

@pytest.fixture
def client():
    """A botocore client (no call is made), disabled again after the test."""
    import botocore.session

    made = botocore.session.get_session().create_client(
        "sqs", region_name="us-west-2", endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="AKIAFAKEFAKEFAKEFAKE", aws_secret_access_key="fake")
    yield made
    boto_prom.disable_metrics(made)


@pytest.fixture(autouse=True)
def _no_exit_push():
    """Call off a push at exit a test arranged."""
    yield
    from boto_prom.push import pending_exit_push

    arranged = pending_exit_push()
    if arranged is not None:
        arranged.cancel()


def _installed(target):
    from boto_prom import botocore

    return botocore.installed(target)


def test_reenabling_with_the_same_settings_returns_the_same_hook(client, registry):
    """Enabling a client twice with the same settings returns the hook already on it."""
    hook = boto_prom.enable_metrics(client, registry=registry, start_server=False)
    assert boto_prom.enable_metrics(client, registry=registry, start_server=False) is hook


@pytest.mark.parametrize("second", [
    {"registry": "other"},
    {"csv_path": "calls.csv"},
    {"buckets": [1, 2]},
    {"allowed_services": ["s3"]},
])
def test_reenabling_with_other_settings_says_to_disable_first(client, registry, tmp_path,
                                                              second):
    """Re-enabling a target with another registry, CSV file, buckets or filters is one
    sentence saying to disable first, and the first hook keeps recording."""
    from prometheus_client import CollectorRegistry

    hook = boto_prom.enable_metrics(client, registry=registry, start_server=False)
    kwargs = {"registry": registry, "start_server": False, **second}
    if kwargs["registry"] == "other":
        kwargs["registry"] = CollectorRegistry()
    if "csv_path" in kwargs:
        kwargs["csv_path"] = str(tmp_path / kwargs["csv_path"])
    with pytest.raises(ConfigurationError, match="disable_metrics") as raised:
        boto_prom.enable_metrics(client, **kwargs)
    assert "\n" not in str(raised.value)
    assert _installed(client) is hook and hook.active
    assert boto_prom.get_csv_writer(str(tmp_path / "calls.csv")) is None


def test_reenabling_with_another_csv_option_or_port_says_so(client, registry, tmp_path):
    """Re-enabling with the same CSV file but another csv_format, or asking for another port,
    is one sentence, not the first hook silently kept with the old settings."""
    path = str(tmp_path / "calls.csv")
    hook = boto_prom.enable_metrics(client, registry=registry, port=0, csv_path=path)
    try:
        with pytest.raises(ConfigurationError, match="another csv_format"):
            boto_prom.enable_metrics(client, registry=registry, csv_path=path,
                                     csv_format="requestlog")
        other = hook.server.port + 1 if hook.server.port < 65535 else hook.server.port - 1
        with pytest.raises(ConfigurationError, match="already runs on port"):
            boto_prom.enable_metrics(client, registry=registry, csv_path=path, port=other)
        assert boto_prom.enable_metrics(client, registry=registry, csv_path=path) is hook
    finally:
        boto_prom.disable_metrics(client)
        boto_prom.get_csv_writer(path).close()


def test_reenabling_with_filters_left_unset_returns_the_same_hook(client, registry):
    """A setting left unset on the second call agrees with the first call's."""
    hook = boto_prom.enable_metrics(client, registry=registry, start_server=False,
                                    allowed_services=["sqs"], ignored_actions=["ListQueues"])
    assert boto_prom.enable_metrics(client, registry=registry, start_server=False) is hook
    with pytest.raises(ConfigurationError, match="other allowed_services"):
        boto_prom.enable_metrics(client, registry=registry, start_server=False,
                                 allowed_services=["s3"])


def test_reenabling_with_a_push_set_keeps_the_first_hook(client, registry, monkeypatch):
    """With BOTO_PROM_PUSHGATEWAY set, re-enabling with another registry raises one sentence
    and leaves the first hook on and active."""
    from prometheus_client import CollectorRegistry

    monkeypatch.setenv("BOTO_PROM_PUSHGATEWAY", "http://127.0.0.1:9")
    hook = boto_prom.enable_metrics(client, registry=registry, start_server=False)
    assert boto_prom.enable_metrics(client, registry=registry, start_server=False) is hook
    with pytest.raises(ConfigurationError, match="disable_metrics"):
        boto_prom.enable_metrics(client, registry=CollectorRegistry(), start_server=False)
    assert _installed(client) is hook and hook.active


def test_failed_enable_closes_the_csv_writer_it_opened(client, registry, tmp_path):
    """A registry holding the CSV self-metrics fails the enable after the writer was opened:
    the writer is closed, and a corrected retry with other CSV options is not refused."""
    from prometheus_client import CollectorRegistry, Counter

    Counter("boto_prom_csv_rows_written", "someone else's", registry=registry)
    path = str(tmp_path / "calls.csv")
    with pytest.raises(ConfigurationError, match="already registered"):
        boto_prom.enable_metrics(client, registry=registry, start_server=False, csv_path=path)
    assert boto_prom.get_csv_writer(path) is None and _installed(client) is None
    boto_prom.enable_metrics(client, registry=CollectorRegistry(), start_server=False,
                             csv_path=path, csv_format="requestlog")
    writer = boto_prom.get_csv_writer(path)
    assert writer is not None and writer.format == "requestlog"
    boto_prom.disable_metrics(client)
    writer.close()


def test_bad_push_setting_opens_no_csv_writer(client, registry, tmp_path, monkeypatch):
    """A bad push setting fails the enable before any CSV writer is opened; fixed, the
    retry with other CSV options works."""
    monkeypatch.setenv("BOTO_PROM_PUSHGATEWAY", "http://127.0.0.1:9")
    monkeypatch.setenv("BOTO_PROM_PUSH_TIMEOUT", "soon")
    path = str(tmp_path / "calls.csv")
    with pytest.raises(ConfigurationError, match="BOTO_PROM_PUSH_TIMEOUT"):
        boto_prom.enable_metrics(client, registry=registry, start_server=False, csv_path=path)
    assert boto_prom.get_csv_writer(path) is None and _installed(client) is None
    monkeypatch.setenv("BOTO_PROM_PUSH_TIMEOUT", "2")
    boto_prom.enable_metrics(client, registry=registry, start_server=False, csv_path=path,
                             csv_max_bytes=0)
    writer = boto_prom.get_csv_writer(path)
    assert writer is not None and writer.max_bytes == 0
    boto_prom.disable_metrics(client)
    writer.close()


def test_push_conflict_undoes_the_whole_enable(client, registry, tmp_path, monkeypatch):
    """When the last step (the push at exit) fails, the hook, the CSV writer and the server
    that enable made are all taken out again."""
    import botocore.session
    from prometheus_client import CollectorRegistry

    monkeypatch.setenv("BOTO_PROM_PUSHGATEWAY", "http://127.0.0.1:9")
    boto_prom.enable_metrics(client, registry=registry, start_server=False)
    other = botocore.session.get_session().create_client(
        "sqs", region_name="us-west-2", endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="AKIAFAKEFAKEFAKEFAKE", aws_secret_access_key="fake")
    path = str(tmp_path / "calls.csv")
    with pytest.raises(ConfigurationError, match="pushes one registry"):
        boto_prom.enable_metrics(other, registry=CollectorRegistry(), port=0, csv_path=path)
    assert _installed(other) is None
    assert boto_prom.get_csv_writer(path) is None and boto_prom.get_server() is None


@pytest.mark.parametrize("kwargs, match", [
    ({"csv_path": "calls\0.csv"}, "csv_path must be a file path"),
    ({"web_config": "web\0.yml"}, "web_config must be a file path"),
])
def test_nul_byte_in_a_path_is_one_sentence(client, registry, kwargs, match):
    """A NUL byte in csv_path or web_config is a ConfigurationError, not a ValueError from
    deep inside."""
    with pytest.raises(ConfigurationError, match=match) as raised:
        boto_prom.enable_metrics(client, registry=registry, **kwargs)
    assert "\n" not in str(raised.value) and raised.value.__cause__ is None
    assert _installed(client) is None


@needs_boto2
def test_reenabling_a_connection_with_another_registry_says_to_disable_first(aws, registry):
    """A boto 2 connection enabled with one registry is not silently kept on it when asked
    for another."""
    from prometheus_client import CollectorRegistry

    conn = aws.ec2()
    hook = boto_prom.enable_metrics(conn, registry=registry, start_server=False)
    assert boto_prom.enable_metrics(conn, registry=registry, start_server=False) is hook
    with pytest.raises(ConfigurationError, match="disable_metrics"):
        boto_prom.enable_metrics(conn, registry=CollectorRegistry(), start_server=False)
    assert conn.request_hook is hook and hook.active
    assert boto_prom.disable_metrics(conn)
    other = CollectorRegistry()
    assert boto_prom.enable_metrics(conn, registry=other, start_server=False).registry is other


# --- what enable_metrics and disable_metrics take --------------------------------------------

@pytest.fixture(scope="module")
def moto_url():
    """moto's AWS-protocol server on loopback (the demo's), for boto3 clients and resources."""
    from boto_prom.demo import LocalAWS

    with LocalAWS() as local:
        yield local.url


def _session(**kwargs):
    import boto3

    return boto3.session.Session(aws_access_key_id="AKIAFAKEFAKEFAKEFAKE",
                                 aws_secret_access_key="fake", region_name="us-west-2", **kwargs)


def _calls(registry):
    """Requests counted, by action."""
    out = {}
    for family in registry.collect():
        if family.name == "boto_requests":
            for s in family.samples:
                if s.name.endswith("_total"):
                    out[s.labels["action"]] = out.get(s.labels["action"], 0) + s.value
    return out


def test_a_boto3_resource_is_enabled_and_disabled_through_its_client(moto_url, registry):
    """enable_metrics(boto3 resource) records the calls of the resource and its sub-resources
    (its meta.client makes them), and disable_metrics(resource) stops it."""
    s3 = _session().resource("s3", endpoint_url=moto_url)
    hook = boto_prom.enable_metrics(s3, registry=registry, start_server=False)
    assert _installed(s3.meta.client) is hook
    bucket = s3.create_bucket(Bucket="boto-prom-resource",
                              CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    bucket.put_object(Key="k", Body=b"x")
    assert [o.key for o in bucket.objects.all()] == ["k"]
    assert boto_prom.enable_metrics(bucket, registry=registry, start_server=False) is hook
    assert _calls(registry) == {"CreateBucket": 1, "PutObject": 1, "ListObjects": 1}
    assert boto_prom.disable_metrics(bucket) is True
    bucket.Object("k").delete()
    assert _calls(registry) == {"CreateBucket": 1, "PutObject": 1, "ListObjects": 1}
    assert boto_prom.disable_metrics(s3) is False


@pytest.mark.parametrize("made_by", ["boto3.session.Session", "over a botocore session",
                                     "boto3.setup_default_session"])
def test_a_boto3_session_is_taken_whatever_made_it(moto_url, registry, monkeypatch, made_by):
    """A boto3 session, made directly, over a botocore session, or as boto3's default one,
    covers the clients and resources made from it; disable_metrics(session) ends that."""
    import boto3
    import botocore.session

    if made_by == "boto3.session.Session":
        session = _session()
    elif made_by == "over a botocore session":
        session = _session(botocore_session=botocore.session.get_session())
    else:
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
        boto3.setup_default_session(aws_access_key_id="AKIAFAKEFAKEFAKEFAKE",
                                    aws_secret_access_key="fake", region_name="us-west-2")
        session = boto3.DEFAULT_SESSION
    boto_prom.enable_metrics(session, registry=registry, start_server=False)
    try:
        sqs = session.resource("sqs", endpoint_url=moto_url)
        sqs.create_queue(QueueName="boto-prom-session")
        session.client("sqs", endpoint_url=moto_url).list_queues()
        assert _calls(registry) == {"CreateQueue": 1, "ListQueues": 1}
    finally:
        assert boto_prom.disable_metrics(session) is True


@pytest.mark.parametrize("target", ["s3", 42, object()], ids=["str", "int", "object"])
def test_what_neither_takes_is_the_same_one_sentence(target):
    """enable_metrics and disable_metrics refuse what they cannot take with the same sentence,
    naming themselves; disable_metrics no longer returns False for it."""
    name = type(target).__name__
    with pytest.raises(ConfigurationError) as enabling:
        boto_prom.enable_metrics(target, start_server=False)
    with pytest.raises(ConfigurationError) as disabling:
        boto_prom.disable_metrics(target)
    expected = ("takes a boto 2 connection (boto.connection.AWSAuthConnection), a boto3/botocore "
                f"client, resource or session, or nothing (for every AWS call), not {name}.")
    assert str(enabling.value) == "enable_metrics() " + expected
    assert str(disabling.value) == "disable_metrics() " + expected
