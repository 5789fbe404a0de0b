"""Multiprocess mode: worker processes record into one directory, one server serves the sum."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.multiprocess import mark_process_dead
from prometheus_client.parser import text_string_to_metric_families

import boto_prom
from boto_prom import ConfigurationError
from boto_prom.multiprocess import make_multiprocess_app, multiprocess_registry
from tests.conftest import HAS_BOTO2
from tests.procs import child_env, finish, get, read_line, start_worker

CALLS = 15
DESCRIBE = dict(aws_service="ec2", aws_region="us-west-2", action="DescribeVolumes")


def samples(body):
    """{(name, sorted labels): value} of a text-format scrape."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(body) for s in f.samples}


def value(body, name, **labels):
    return samples(body).get((name, tuple(sorted(labels.items()))))


def build_info(body):
    return {k: v for k, v in samples(body).items() if k[0] == "boto_prom_build_info"}


def ready(proc):
    """(pid, server port) from a worker's ready line."""
    line = read_line(proc)
    assert line.startswith("ready "), line
    _, pid, port = line.split()
    return int(pid), int(port)


@pytest.mark.skipif(not HAS_BOTO2, reason="boto 2 needs Python 3.11 or older")
def test_four_workers_give_exactly_four_n(aws, tmp_path):
    """2 workers make N calls and exit, 2 new ones make N more: every scrape says exactly 4N."""
    path = str(tmp_path)
    env = child_env(PROMETHEUS_MULTIPROC_DIR=path)
    server = boto_prom.start_multiprocess_server(port=0, path=path)
    assert server.url.startswith("http://127.0.0.1:")

    first = [start_worker(aws.port, CALLS, "--wait", env=env) for _ in range(2)]
    first_pids = [ready(p)[0] for p in first]
    for proc, pid in zip(first, first_pids):
        finish(proc)
        mark_process_dead(pid, path)  # what gunicorn's child_exit hook does
    body = get(server.url)
    assert value(body, "boto_requests_total", status_code="200", **DESCRIBE) == 2 * CALLS
    assert build_info(body) == {}, "no live process, no build_info"

    second = [start_worker(aws.port, CALLS, "--wait", env=env),
              start_worker(aws.port, CALLS, "--wait", "--serve", env=env)]
    (_, _), (_, worker_port) = ready(second[0]), ready(second[1])
    try:
        for url in (server.url, f"http://127.0.0.1:{worker_port}/metrics"):
            body = get(url)
            assert value(body, "boto_requests_total", status_code="200",
                         **DESCRIBE) == 4 * CALLS, url
            assert value(body, "boto_request_duration_seconds_count", **DESCRIBE) == 4 * CALLS
            assert value(body, "boto_response_size_bytes_count", **DESCRIBE) == 4 * CALLS
            assert build_info(body) == {
                ("boto_prom_build_info", (("version", boto_prom.__version__),)): 1.0}
    finally:
        pids = []
        for proc in second:
            pids.append(proc.pid)
            finish(proc)
    for pid in pids:
        mark_process_dead(pid, path)
    body = get(server.url)
    assert value(body, "boto_requests_total", status_code="200", **DESCRIBE) == 4 * CALLS
    assert build_info(body) == {}


@pytest.mark.skipif(not HAS_BOTO2, reason="boto 2 needs Python 3.11 or older")
def test_second_server_in_multiprocess_mode_says_how_to_fix_it(aws, tmp_path):
    """A worker whose port another process holds is told to serve once, from one process."""
    server = boto_prom.start_multiprocess_server(port=0, path=str(tmp_path))
    env = child_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path), BOTO_WORKER_METRICS_PORT=str(server.port))
    proc = start_worker(aws.port, 0, "--serve", env=env)
    line = read_line(proc)
    proc.communicate(timeout=30)
    assert line.startswith("error ") and "already in use" in line, line
    assert "start_server=False" in line and "start_multiprocess_server" in line


@pytest.mark.skipif(not HAS_BOTO2, reason="boto 2 needs Python 3.11 or older")
def test_bad_directory_is_one_sentence(aws, tmp_path):
    """A PROMETHEUS_MULTIPROC_DIR that does not exist fails enable_metrics with one sentence."""
    env = child_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "missing"))
    proc = start_worker(aws.port, 0, env=env)
    line = read_line(proc)
    proc.communicate(timeout=30)
    assert line.startswith("error ") and "is not a writable directory" in line, line


@pytest.mark.skipif(not HAS_BOTO2, reason="boto 2 needs Python 3.11 or older")
def test_directory_set_after_import_is_refused(aws, registry, tmp_path, monkeypatch):
    """Setting the variable after prometheus_client was imported is refused, not ignored."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    conn = aws.ec2()
    with pytest.raises(ConfigurationError, match="set after prometheus_client was imported"):
        boto_prom.enable_metrics(conn, registry=registry, start_server=False)
    assert conn.request_hook is None


def test_mountable_app_serves_the_directory(tmp_path):
    """make_multiprocess_app answers /metrics from the directory, and checks it at once."""
    from wsgiref.util import setup_testing_defaults

    with pytest.raises(ConfigurationError, match="not a directory"):
        make_multiprocess_app(str(tmp_path / "missing"))
    app = make_multiprocess_app(str(tmp_path))
    environ = {"PATH_INFO": "/metrics"}
    setup_testing_defaults(environ)
    status = []
    body = b"".join(app(environ, lambda s, h, e=None: status.append(s)))
    assert status == ["200 OK"] and body == b""
    assert list(multiprocess_registry(str(tmp_path)).collect()) == []


def test_every_gauge_declares_a_multiprocess_mode(registry, monkeypatch):
    """In multiprocess mode each Gauge of the contract has a live mode, never the 'all' default."""
    from boto_prom import metrics as metrics_module
    from boto_prom import multiprocess

    monkeypatch.setattr(multiprocess, "in_multiprocess_mode", lambda: True)
    metrics = metrics_module.PrometheusMetrics(CollectorRegistry())
    gauges = [m for m in vars(metrics).values() if isinstance(m, Gauge)]
    assert metrics.build_info in gauges
    for gauge in gauges:
        assert gauge._multiprocess_mode.startswith("live"), gauge._name
