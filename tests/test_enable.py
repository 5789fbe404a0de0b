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
