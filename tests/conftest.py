"""Shared fixtures: a fresh registry per test, real servers on loopback, real binaries."""

from __future__ import annotations

import os
import shutil
import sys

import pytest
from prometheus_client import CollectorRegistry

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
HAS_BOTO2 = sys.version_info < (3, 12)


def require_binary(name: str) -> str:
    """The path of a real binary the test needs; under CI=true a missing one fails the test,
    elsewhere it skips it (so a missing install step cannot hide in CI)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (run .ci/setup system)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def registry() -> CollectorRegistry:
    """A registry of the test's own, so tests never see each other's counts."""
    return CollectorRegistry()


@pytest.fixture(scope="session")
def aws():
    """moto's AWS-protocol server on loopback, with boto 2 connection factories."""
    if not HAS_BOTO2:
        pytest.skip("boto 2 needs Python 3.11 or older")
    from boto_prom.demo import LocalAWS

    with LocalAWS() as local:
        yield local


@pytest.fixture(scope="session")
def moto_url():
    """moto's AWS-protocol server on loopback, for boto3 clients (no boto 2 needed)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def fault_server():
    """A stdlib HTTP server on loopback that misbehaves on demand (5xx, resets, slowness)."""
    from tests.fault_server import FaultServer

    with FaultServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _no_leftover_server():
    """Stop the process-wide metrics server a test started, so the next test starts clean."""
    yield
    from boto_prom import stop_server

    stop_server()
