"""Async clients (aiobotocore, aioboto3, s3fs) against moto on loopback.

aiobotocore's clients and sessions subclass botocore's and emit the same events, so the botocore
adapter records them; these tests prove it with many coroutines on one client, and cover the
global mode, which must wrap aiobotocore's own ``_make_api_call``. They run in their own
environment (``.venv-aio``: aiobotocore pins botocore), which ``.ci/setup`` makes.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import inspect
import logging
import os
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import IN_CI


def _need(name):
    """Import a module the tests need: under CI=true a missing one fails, elsewhere it skips."""
    if IN_CI:
        return importlib.import_module(name)
    return pytest.importorskip(name, reason=f"{name} is not installed (.ci/setup makes .venv-aio)")


aiobotocore_session = _need("aiobotocore.session")
aioboto3 = _need("aioboto3")
s3fs = _need("s3fs")

from aiobotocore.client import AioBaseClient  # noqa: E402
from aiobotocore.config import AioConfig  # noqa: E402
from botocore.client import BaseClient  # noqa: E402

from boto_prom import disable_metrics, enable_metrics  # noqa: E402
from boto_prom.botocore import installed  # noqa: E402
from tests.fault_server import closed_port  # noqa: E402
from tests.procs import child_env, free_port, get, read_line  # noqa: E402
from tests.test_botocore import (  # noqa: E402,F401  (the fixture is used by name)
    CREDS,
    REGION,
    _no_aws_environment,
    hook_errors,
    series,
    value,
)

S3 = dict(aws_service="s3", aws_region=REGION)
BUCKET = "aio-bucket"
BUCKETS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


class _Gate:
    """WSGI middleware over moto: holds every GET of a key under ``slow/`` until released."""

    def __init__(self, app):
        self.app = app
        self.release = threading.Event()
        self.release.set()
        self.lock = threading.Lock()
        self.held = 0

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] == "GET" and "/slow/" in environ.get("PATH_INFO", ""):
            with self.lock:
                self.held += 1
            self.release.wait(30)
        return self.app(environ, start_response)


@pytest.fixture(scope="module")
def moto():
    """moto's AWS-protocol server on loopback behind a gate that can hold slow/ keys, with a
    bucket holding the objects fast/0 and slow/0."""
    from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    gate = _Gate(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, gate, threaded=True, request_handler=MotoRequestHandler)
    server.socket.listen(1024)  # room for every coroutine's connection at once
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    gate.url = "http://127.0.0.1:%d" % server.server_address[1]

    async def objects():
        async with _client(gate.url) as client:
            await client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={
                "LocationConstraint": REGION})
            for key in ("fast/0", "slow/0"):
                await client.put_object(Bucket=BUCKET, Key=key, Body=b"x" * 100)

    asyncio.run(objects())
    yield gate
    gate.release.set()
    server.shutdown()
    thread.join(10)


def _client(url, session=None, **config):
    """An aiobotocore S3 client context of url, with fake credentials, one attempt a call and
    a connection pool that never makes a coroutine wait for another's connection."""
    session = session or aiobotocore_session.get_session()
    return session.create_client(
        "s3", endpoint_url=url, region_name=REGION,
        config=AioConfig(retries={"total_max_attempts": 1, "mode": "standard"},
                         max_pool_connections=256, **config),
        **CREDS)


def _get(registry, action, status):
    return value(registry, "boto_requests_total", action=action, status_code=status, **S3)


@pytest.fixture
def global_mode():
    """disable_metrics() after the test, and botocore's and aiobotocore's own methods checked
    to be back."""
    sync, aio = BaseClient.__dict__["_make_api_call"], AioBaseClient.__dict__["_make_api_call"]
    yield
    disable_metrics()
    assert BaseClient.__dict__["_make_api_call"] is sync
    assert AioBaseClient.__dict__["_make_api_call"] is aio
    assert "__init_subclass__" not in BaseClient.__dict__


# --- many coroutines on one client -------------------------------------------------------------

def test_200_concurrent_calls_on_one_client(moto, registry):
    """200 coroutines on one enabled client: exact counts per action and status, the in-flight
    gauge at the held calls' number while they are held and back to 0, and each call's
    duration its own: past the bucket every other call fits in fall exactly the 40 calls the
    server held."""
    fast = []  # each call not held: its duration as its caller saw it

    async def timed(call, held):
        start = time.perf_counter()
        try:
            response = await call
            if "Body" in response:
                await response["Body"].read()
        except Exception as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") != "404":
                raise
        if not held:
            fast.append(time.perf_counter() - start)

    async def run():
        async with _client(moto.url) as client:
            enable_metrics(client, registry=registry, start_server=False, buckets=BUCKETS,
                           detailed_metrics=True)
            calls = ([timed(client.get_object(Bucket=BUCKET, Key="slow/0"), True)
                      for _ in range(40)]
                     + [timed(client.get_object(Bucket=BUCKET, Key="fast/0"), False)
                        for _ in range(120)]
                     + [timed(client.head_object(Bucket=BUCKET, Key=f"missing/{i}"), False)
                        for i in range(20)]
                     + [timed(client.put_object(Bucket=BUCKET, Key=f"new/{i}", Body=b"y" * 10),
                              False) for i in range(20)])
            tasks = [asyncio.ensure_future(call) for call in calls]
            while len(fast) < 160 or moto.held < 40:
                await asyncio.sleep(0.01)
            # Every held call started before now, every other one has ended: the bucket their
            # durations fit in is known, and holding that long puts each held call past it.
            held_since = time.perf_counter()
            in_flight = value(registry, "boto_requests_in_flight", **S3)
            limit = min(b for b in BUCKETS if b >= max(fast))
            await asyncio.sleep(limit - (time.perf_counter() - held_since) + 0.05)
            moto.release.set()
            await asyncio.gather(*tasks)
            return in_flight, limit

    moto.held = 0
    moto.release.clear()
    try:
        in_flight, limit = asyncio.run(run())
    finally:
        moto.release.set()
    assert in_flight == 40
    assert _get(registry, "GetObject", "200") == 160
    assert _get(registry, "HeadObject", "404") == 20
    assert _get(registry, "PutObject", "200") == 20
    assert sum(series(registry, "boto_requests").values()) == 200
    assert value(registry, "boto_requests_in_flight", **S3) == 0
    for family in ("boto_request_duration_seconds", "boto_attempt_duration_seconds"):
        get = dict(action="GetObject", **S3)
        assert value(registry, family + "_bucket", le=str(limit), **get) == 120
        assert value(registry, family + "_bucket", le="+Inf", **get) == 160
        assert value(registry, family + "_sum", **get) > 40 * limit
        for action in ("HeadObject", "PutObject"):
            assert value(registry, family + "_bucket", le=str(limit), action=action,
                         **S3) == 20
    assert value(registry, "boto_response_size_bytes_sum", action="GetObject", **S3) == 16000
    assert value(registry, "boto_request_size_bytes_sum", action="PutObject", **S3) == 200
    assert hook_errors(registry) == {}


def test_calls_interleaved_between_request_and_send_keep_their_own_state(moto, registry):
    """An async before-send handler that lets other coroutines run between a request's creation
    and its sending does not mix calls up, where botocore hands the call from request-created
    to before-send (its prepared requests carry no context)."""
    async def yields(**kwargs):
        await asyncio.sleep(0)

    async def run():
        async with _client(moto.url) as client:
            enable_metrics(client, registry=registry, start_server=False,
                           detailed_metrics=True)
            client.meta.events.register_first("before-send.s3", yields)
            await asyncio.gather(*(client.head_object(Bucket=BUCKET, Key="fast/0")
                                   for _ in range(50)))

    asyncio.run(run())
    assert _get(registry, "HeadObject", "200") == 50
    assert value(registry, "boto_attempt_duration_seconds_count", action="HeadObject", **S3) == 50
    assert value(registry, "boto_requests_in_flight", **S3) == 0


def test_a_refused_connection_is_counted_as_on_botocore(registry):
    """A call to a port nothing listens on is counted once, with no status and its exception
    as error_type, and leaves the in-flight gauge."""
    async def run():
        async with _client(f"http://127.0.0.1:{closed_port()}") as client:
            enable_metrics(client, registry=registry, start_server=False)
            with pytest.raises(Exception):
                await client.head_object(Bucket=BUCKET, Key="k")

    asyncio.run(run())
    assert _get(registry, "HeadObject", "none") == 1
    errors = series(registry, "boto_request_errors")
    assert [dict(labels)["error_type"] for labels, n in errors.items() if n] == [
        "EndpointConnectionError"]
    assert value(registry, "boto_requests_in_flight", **S3) == 0


def test_a_cancelled_call_leaves_the_in_flight_gauge(moto, registry):
    """A call cancelled while the server holds it is not counted (botocore sends no event for
    it, as for Ctrl-C on a botocore call) and leaves the in-flight gauge once its task is
    gone."""
    async def run():
        async with _client(moto.url) as client:
            enable_metrics(client, registry=registry, start_server=False)
            task = asyncio.ensure_future(client.get_object(Bucket=BUCKET, Key="slow/0"))
            while moto.held < 1:
                await asyncio.sleep(0.01)
            in_flight = value(registry, "boto_requests_in_flight", **S3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            del task
            gc.collect()
            return in_flight

    moto.held = 0
    moto.release.clear()
    try:
        assert asyncio.run(run()) == 1
    finally:
        moto.release.set()
    gc.collect()
    assert value(registry, "boto_requests_in_flight", **S3) == 0
    assert sum(series(registry, "boto_requests").values()) == 0


# --- sessions: aiobotocore's, aioboto3's, s3fs's ------------------------------------------------

def test_an_aiosession_records_the_clients_made_from_it(moto, registry):
    """enable_metrics(AioSession) records its clients made afterwards with the same metrics as a
    botocore session's, and disable_metrics(session) stops them."""
    session = aiobotocore_session.get_session()
    hook = enable_metrics(session, registry=registry, start_server=False)
    assert enable_metrics(session, registry=registry, start_server=False) is hook

    async def run():
        async with _client(moto.url, session) as client:
            assert installed(client) is hook
            await client.head_object(Bucket=BUCKET, Key="fast/0")
            await client.put_object(Bucket=BUCKET, Key="session/0", Body=b"z" * 7)
            assert disable_metrics(session) is True
            await client.head_object(Bucket=BUCKET, Key="fast/0")

    asyncio.run(run())
    assert _get(registry, "HeadObject", "200") == 1
    assert _get(registry, "PutObject", "200") == 1
    assert value(registry, "boto_request_size_bytes_sum", action="PutObject", **S3) == 7
    assert value(registry, "boto_request_duration_seconds_count", action="HeadObject", **S3) == 1
    assert hook_errors(registry) == {}


def test_an_aioboto3_session_records_its_clients_and_resources(moto, registry):
    """enable_metrics(aioboto3.Session()) records the calls of its clients and of its
    resources' clients."""
    session = aioboto3.Session(region_name=REGION, **CREDS)
    hook = enable_metrics(session, registry=registry, start_server=False)
    config = AioConfig(retries={"total_max_attempts": 1, "mode": "standard"})

    async def run():
        async with session.client("s3", endpoint_url=moto.url, config=config) as client:
            assert installed(client) is hook
            await client.head_object(Bucket=BUCKET, Key="fast/0")
        async with session.resource("s3", endpoint_url=moto.url, config=config) as s3:
            obj = await s3.Object(BUCKET, "fast/0")
            await obj.load()

    asyncio.run(run())
    assert _get(registry, "HeadObject", "200") == 2
    assert disable_metrics(session) is True


def _s3fs(url, **kwargs):
    """An s3fs filesystem of url with fake credentials, not shared with other tests."""
    return s3fs.S3FileSystem(key=CREDS["aws_access_key_id"],
                             secret=CREDS["aws_secret_access_key"],
                             client_kwargs={"endpoint_url": url, "region_name": REGION},
                             skip_instance_cache=True, **kwargs)


def _write_and_read(fs, key):
    data = b"s3fs" * 25
    fs.pipe_file(f"{BUCKET}/{key}", data)
    assert fs.cat_file(f"{BUCKET}/{key}") == data


def test_s3fs_with_an_enabled_session(moto, registry):
    """An s3fs write and read through the AioSession s3fs is given (its ``session=``) are
    counted: one PutObject, one GetObject, with their sizes."""
    session = aiobotocore_session.get_session()
    enable_metrics(session, registry=registry, start_server=False)
    _write_and_read(_s3fs(moto.url, session=session), "s3fs/session")
    assert _get(registry, "PutObject", "200") == 1
    assert _get(registry, "GetObject", "200") == 1
    assert value(registry, "boto_request_size_bytes_sum", action="PutObject", **S3) == 100
    assert value(registry, "boto_response_size_bytes_sum", action="GetObject", **S3) == 100
    assert value(registry, "boto_requests_in_flight", **S3) == 0


# --- global mode --------------------------------------------------------------------------------

def test_global_mode_covers_aiobotocore_aioboto3_and_s3fs(moto, registry, global_mode):
    """enable_metrics() with no argument covers aiobotocore clients made before it or after,
    an aioboto3 session's, and the session s3fs makes itself, each call counted once; a
    client enabled on its own keeps its hook; disable_metrics() puts aiobotocore back."""
    from prometheus_client import CollectorRegistry

    elsewhere = CollectorRegistry()

    async def run():
        async with _client(moto.url) as before, _client(moto.url) as own:
            mine = enable_metrics(own, registry=elsewhere, start_server=False)
            hook = enable_metrics(registry=registry, start_server=False)
            assert inspect.iscoroutinefunction(AioBaseClient._make_api_call)
            async with _client(moto.url) as after, \
                    aioboto3.Session(region_name=REGION, **CREDS).client(
                        "s3", endpoint_url=moto.url) as of_aioboto3:
                for client in (before, own, after, of_aioboto3):
                    await client.head_object(Bucket=BUCKET, Key="fast/0")
                for client in (before, after, of_aioboto3):
                    assert installed(client) is hook.botocore
            assert installed(own) is mine
            await before.head_object(Bucket=BUCKET, Key="fast/0")
            assert disable_metrics() is True
            await before.head_object(Bucket=BUCKET, Key="fast/0")

    asyncio.run(run())
    assert _get(registry, "HeadObject", "200") == 4
    assert value(elsewhere, "boto_requests_total", action="HeadObject", status_code="200",
                 **S3) == 1
    assert hook_errors(registry) == {}


def test_global_mode_counts_s3fs(moto, registry, global_mode):
    """Under enable_metrics(), an s3fs write and read, through the AioSession s3fs makes on its
    own, are counted once each."""
    enable_metrics(registry=registry, start_server=False)
    _write_and_read(_s3fs(moto.url), "s3fs/global")
    assert _get(registry, "PutObject", "200") == 1
    assert _get(registry, "GetObject", "200") == 1
    assert value(registry, "boto_requests_in_flight", **S3) == 0


# An unchanged aiobotocore (or s3fs) program: its first import is argv[2], then 3 calls, "ready",
# and it waits for stdin to close. Importing aiobotocore.client first imports botocore in the
# middle of it: boto-prom run enables metrics then, before AioBaseClient exists.
AIO_PROGRAM = """
import asyncio, importlib, sys
importlib.import_module(sys.argv[2])
from aiobotocore.session import get_session

async def main(url):
    async with get_session().create_client(
            "s3", endpoint_url=url, region_name="us-west-2",
            aws_access_key_id="AKIATESTTESTTESTTEST", aws_secret_access_key="x") as s3:
        await asyncio.gather(*(s3.list_buckets() for _ in range(3)))

if sys.argv[2] == "s3fs":
    import s3fs
    fs = s3fs.S3FileSystem(key="AKIATESTTESTTESTTEST", secret="x", client_kwargs={
        "endpoint_url": sys.argv[1], "region_name": "us-west-2"})
    for _ in range(3):
        fs.ls("aio-bucket", refresh=True)
else:
    asyncio.run(main(sys.argv[1]))
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("first, action", [("aiobotocore.client", "ListBuckets"),
                                           ("s3fs", "ListObjectsV2")])
def test_boto_prom_run_records_an_unchanged_async_program(moto, tmp_path, first, action):
    """Under boto-prom run, an aiobotocore program whose first import is aiobotocore.client,
    and an s3fs program, have their calls served."""
    program = tmp_path / "program.py"
    program.write_text(AIO_PROGRAM)
    port = free_port()
    proc = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "boto-prom"), "run", "--port", str(port),
         "--", sys.executable, str(program), moto.url, first],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=child_env())
    try:
        assert read_line(proc, 60) == "ready"
        body = get(f"http://127.0.0.1:{port}/metrics")
    finally:
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and err == "", err
    assert (f'boto_requests_total{{action="{action}",aws_region="us-west-2",aws_service="s3",'
            f'status_code="200"}} 3.0') in body


def test_a_client_class_defined_after_enabling_is_wrapped(global_mode, registry):
    """A client class with its own _make_api_call defined after enable_metrics() (aiobotocore
    imported later) gets a coroutine wrapper as it is defined, and its own method back on
    disable_metrics(); classes that only inherit it are left alone."""
    enable_metrics(registry=registry, start_server=False)

    class Later(AioBaseClient):
        async def _make_api_call(self, operation_name, api_params):
            return operation_name

    class Service(Later):
        pass

    wrapper = Later.__dict__["_make_api_call"]
    assert inspect.iscoroutinefunction(wrapper)
    assert "_make_api_call" not in Service.__dict__
    disable_metrics()
    assert Later.__dict__["_make_api_call"] is wrapper._boto_prom_original
