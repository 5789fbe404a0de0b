"""``boto-prom demo``: a realistic AWS workload against an embedded AWS-protocol server.

It starts moto's server in-process on loopback and points clients at it with
:func:`boto_prom.enable_metrics` on: boto 2 EC2, S3, DynamoDB and IAM connections beside boto3
SQS, S3 and DynamoDB clients where boto 2 imports (Python 3.11 and older), boto3 clients of all
five services where it does not, and aiobotocore S3 and DynamoDB clients where aiobotocore is
installed. It drives a mix of calls (about one in ten fails with a 4xx,
as real programs' calls do), serves ``/metrics``, and prints a progress line until its duration
is up or SIGINT or SIGTERM comes. Nothing leaves the machine; the credentials are fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, TextIO, Tuple

from prometheus_client import REGISTRY, CollectorRegistry

# Fake credentials for the embedded server; never real ones.
_ACCESS_KEY = "AKIADEMODEMODEMODEMO"
_SECRET_KEY = "demo-secret-key-not-a-real-one"
_REGION = "us-west-2"
_BUCKET = "boto-prom-demo"
_TABLE = "boto-prom-demo"


def boto2_imports() -> bool:
    """True when boto 2 imports here (it does not on Python 3.12 and newer)."""
    try:
        import boto  # noqa: F401
    except Exception:  # noqa: B902 - on 3.12 an ImportError from its vendored six
        return False
    return True


class LocalAWS:
    """moto's AWS-protocol server on loopback, and boto 2 connections pointed at it.

    Use as a context manager; ``ec2()``, ``s3()``, ``dynamodb()`` and ``iam()`` return new
    boto 2 connections that sign with SigV4 as moto needs (where boto 2 imports), ``url`` is
    the endpoint for boto3 clients.
    """

    def __init__(self, port: int = 0, retries: int = 0) -> None:
        self._port = port
        self._retries = retries
        self._server: Any = None
        self.host = "127.0.0.1"
        self.port = 0

    def __enter__(self) -> "LocalAWS":
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        # moto tells services apart by the SigV4 credential scope: make boto 2 sign with it.
        os.environ["EC2_USE_SIGV4"] = "1"
        os.environ["S3_USE_SIGV4"] = "1"
        os.environ.setdefault("AWS_DEFAULT_REGION", _REGION)
        if boto2_imports():
            import boto

            for section, option, value in (
                ("Boto", "num_retries", str(self._retries)),
                ("Boto", "metadata_service_num_attempts", "0"),
            ):
                if not boto.config.has_section(section):
                    boto.config.add_section(section)
                boto.config.set(section, option, value)
        self._server = ThreadedMotoServer(ip_address=self.host, port=self._port, verbose=False)
        self._server.start()
        self.host, self.port = self._server.get_host_and_port()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            # moto keeps its state in the process, not the server: forget it, so that a
            # second LocalAWS in the same process starts empty (the demo creates its bucket).
            import urllib.request

            try:
                urllib.request.urlopen(urllib.request.Request(
                    f"http://{self.host}:{self.port}/moto-api/reset", method="POST"), timeout=10)
            except OSError:
                pass
            self._server.stop()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _common(self) -> Dict[str, Any]:
        return dict(aws_access_key_id=_ACCESS_KEY, aws_secret_access_key=_SECRET_KEY,
                    is_secure=False, port=self.port)

    @staticmethod
    def _sign_as(conn: Any, service: str, region: str = _REGION) -> Any:
        conn.auth_service_name = service
        conn.auth_region_name = region
        return conn

    def ec2(self) -> Any:
        from boto.ec2.connection import EC2Connection
        from boto.ec2.regioninfo import RegionInfo

        region = RegionInfo(name=_REGION, endpoint=self.host)
        return self._sign_as(EC2Connection(region=region, **self._common()), "ec2")

    def s3(self) -> Any:
        from boto.s3.connection import OrdinaryCallingFormat, S3Connection

        # moto answers NoSuchBucket for 127.0.0.1 as an S3 host; "localhost" works.
        conn = S3Connection(host="localhost", calling_format=OrdinaryCallingFormat(),
                            **self._common())
        return self._sign_as(conn, "s3")

    def dynamodb(self) -> Any:
        from boto.dynamodb2.layer1 import DynamoDBConnection
        from boto.regioninfo import RegionInfo

        region = RegionInfo(name=_REGION, endpoint=self.host)
        conn = DynamoDBConnection(region=region, host=self.host, **self._common())
        conn.NumberRetries = 0  # its own retry loop sleeps
        return self._sign_as(conn, "dynamodb")

    def iam(self) -> Any:
        from boto.iam.connection import IAMConnection

        conn = IAMConnection(host=self.host, **self._common())
        return self._sign_as(conn, "iam", "us-east-1")


def aiobotocore_imports() -> bool:
    """True when aiobotocore (async botocore clients, under s3fs and aioboto3) imports."""
    try:
        import aiobotocore.session  # noqa: F401
    except ImportError:
        return False
    return True


def sdks_line(boto2: bool, aio: bool) -> str:
    """What the demo's first line says it drives."""
    names = (["boto 2"] if boto2 else []) + ["boto3"] + (["aiobotocore"] if aio else [])
    said = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
    return f"{said} calls" if boto2 else f"{said} calls only (boto 2 does not import here)"


class _Workload:
    """The calls the demo makes: mostly successes, some 4xx errors. Where boto 2 imports, over
    EC2, S3, DynamoDB and IAM through boto 2 and SQS, S3 and DynamoDB through boto3; where it
    does not, over all five through boto3. Where aiobotocore imports, S3 and DynamoDB calls
    through it too. What has to be closed (aiobotocore's clients and loop) goes on closing."""

    def __init__(self, aws: LocalAWS, enable: Callable[[Any], Any], boto2: bool, aio: bool,
                 closing: contextlib.ExitStack) -> None:
        from botocore.exceptions import ClientError

        self._rng = random.Random(7)
        self._expected: Tuple[type, ...] = (ClientError,)  # the 4xx share of the workload
        weighted = self._boto2_ops(aws, enable) if boto2 else []
        weighted += self._boto3_ops(aws, enable, alone=not boto2)
        if aio:
            weighted += self._aiobotocore_ops(aws, enable, closing)
        self._ops = [op for weight, op in weighted for _ in range(weight)]

    def _boto2_ops(self, aws: LocalAWS, enable: Callable[[Any], Any]) -> List[Tuple[int, Any]]:
        """boto 2 connections to four services, and the bucket, table, instances and user the
        calls of both SDKs use."""
        from boto.exception import BotoClientError, BotoServerError

        self._expected += (BotoServerError, BotoClientError)
        self.ec2 = aws.ec2()
        self.s3 = aws.s3()
        self.ddb = aws.dynamodb()
        self.iam = aws.iam()
        for conn in (self.ec2, self.s3, self.ddb, self.iam):
            enable(conn)
        self.bucket = self.s3.create_bucket(_BUCKET, location=_REGION)
        self.ddb.create_table(
            attribute_definitions=[{"AttributeName": "id", "AttributeType": "S"}],
            table_name=_TABLE,
            key_schema=[{"AttributeName": "id", "KeyType": "HASH"}],
            provisioned_throughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 5},
        )
        self.ec2.run_instances("ami-12c6146b", min_count=2, max_count=2)
        self.iam.create_user("boto-prom-demo")
        for n in range(50):
            self._put_object(n)
        return [
            (6, self.ec2.get_all_instances),
            (3, self.ec2.get_all_volumes),
            (1, lambda: self.ec2.get_all_instances(instance_ids=["i-00000000000000000"])),
            (5, self._put_object),
            (6, self._get_object),
            (2, lambda: self.bucket.get_all_keys(max_keys=20)),
            (1, lambda: self.bucket.get_key("missing/key")),  # HEAD -> 404
            (1, lambda: self.s3.get_bucket("boto-prom-no-such-bucket")),  # 404
            (5, self._put_item),
            (5, self._get_item),
            (2, self.iam.get_all_users),
            (1, lambda: self.iam.get_user("boto-prom-no-such-user")),  # 404
        ]

    def _boto3_ops(self, aws: LocalAWS, enable: Callable[[Any], Any],
                   alone: bool) -> List[Tuple[int, Any]]:
        """boto3 clients: beside the boto 2 connections SQS, S3 and DynamoDB (the same metric
        names from both SDKs, so the dashboard shows old and new code side by side); alone,
        also EC2 and IAM, the set-up, and the calls boto 2 would have made."""
        import boto3

        session = boto3.Session(aws_access_key_id=_ACCESS_KEY,
                                aws_secret_access_key=_SECRET_KEY, region_name=_REGION)
        enable(session)
        sqs, s3, ddb = (session.client(name, endpoint_url=aws.url)
                        for name in ("sqs", "s3", "dynamodb"))
        queue = sqs.create_queue(QueueName="boto-prom-demo")["QueueUrl"]

        def get_object() -> None:
            key = f"reports/{self._rng.randrange(50)}.json"
            s3.get_object(Bucket=_BUCKET, Key=key)["Body"].read()

        ops: List[Tuple[int, Any]] = [
            (3, lambda: sqs.send_message(QueueUrl=queue, MessageBody="hello")),
            (3, lambda: sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=5,
                                            WaitTimeSeconds=0)),
            (3, get_object),
            (1, lambda: s3.get_object(Bucket=_BUCKET, Key="missing/key")),  # NoSuchKey
            (3, lambda: ddb.get_item(TableName=_TABLE, Key={"id": {"S": "1"}})),
            (1, lambda: ddb.describe_table(TableName="boto-prom-no-such-table")),  # 400
        ]
        if not alone:
            return ops
        ec2, iam = (session.client(name, endpoint_url=aws.url) for name in ("ec2", "iam"))

        def put_object(n: Optional[int] = None) -> None:
            n = self._rng.randrange(50) if n is None else n
            s3.put_object(Bucket=_BUCKET, Key=f"reports/{n}.json",
                          Body=json.dumps({"n": self._rng.random()}) * self._rng.randrange(1, 40))

        s3.create_bucket(Bucket=_BUCKET,
                         CreateBucketConfiguration={"LocationConstraint": _REGION})
        ddb.create_table(
            TableName=_TABLE, AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 5})
        ec2.run_instances(ImageId="ami-12c6146b", MinCount=2, MaxCount=2)
        iam.create_user(UserName="boto-prom-demo")
        for n in range(50):
            put_object(n)
        return ops + [
            (6, ec2.describe_instances),
            (3, ec2.describe_volumes),
            (1, lambda: ec2.describe_instances(InstanceIds=["i-00000000000000000"])),  # 400
            (5, put_object),
            (3, get_object),
            (2, lambda: s3.list_objects_v2(Bucket=_BUCKET, MaxKeys=20)),
            (1, lambda: s3.head_object(Bucket=_BUCKET, Key="missing/key")),  # 404
            (1, lambda: s3.head_bucket(Bucket="boto-prom-no-such-bucket")),  # 404
            (5, lambda: ddb.put_item(TableName=_TABLE, Item={
                "id": {"S": str(self._rng.randrange(200))},
                "v": {"N": str(self._rng.randrange(10**6))}})),
            (2, lambda: ddb.get_item(TableName=_TABLE,
                                     Key={"id": {"S": str(self._rng.randrange(200))}})),
            (2, iam.list_users),
            (1, lambda: iam.get_user(UserName="boto-prom-no-such-user")),  # 404
        ]

    def _aiobotocore_ops(self, aws: LocalAWS, enable: Callable[[Any], Any],
                         closing: contextlib.ExitStack) -> List[Tuple[int, Any]]:
        """aiobotocore S3 and DynamoDB clients on an event loop of the demo's own, which runs
        each call to its end: the async clients' metrics beside the others'."""
        from aiobotocore.session import get_session

        loop = asyncio.new_event_loop()
        closing.callback(loop.close)
        session = get_session()
        clients = []
        for name in ("s3", "dynamodb"):
            context = session.create_client(
                name, region_name=_REGION, endpoint_url=aws.url, aws_access_key_id=_ACCESS_KEY,
                aws_secret_access_key=_SECRET_KEY)
            clients.append(loop.run_until_complete(context.__aenter__()))
            closing.callback(lambda context=context: loop.run_until_complete(
                context.__aexit__(None, None, None)))
            enable(clients[-1])
        s3, ddb = clients
        return [
            (2, lambda: loop.run_until_complete(s3.list_objects_v2(Bucket=_BUCKET, MaxKeys=20))),
            (1, lambda: loop.run_until_complete(  # 404
                s3.head_object(Bucket=_BUCKET, Key="missing/key"))),
            (2, lambda: loop.run_until_complete(ddb.get_item(
                TableName=_TABLE, Key={"id": {"S": str(self._rng.randrange(200))}}))),
        ]

    def _put_object(self, n: Optional[int] = None) -> None:
        n = self._rng.randrange(50) if n is None else n
        key = self.bucket.new_key(f"reports/{n}.json")
        key.set_contents_from_string(json.dumps({"n": self._rng.random()}) * self._rng.randrange(1, 40))

    def _get_object(self) -> None:
        key = self.bucket.get_key(f"reports/{self._rng.randrange(50)}.json")
        if key is not None:
            key.get_contents_as_string()

    def _put_item(self) -> None:
        self.ddb.put_item(_TABLE, {"id": {"S": str(self._rng.randrange(200))},
                                   "v": {"N": str(self._rng.randrange(10**6))}})

    def _get_item(self) -> None:
        self.ddb.get_item(_TABLE, {"id": {"S": str(self._rng.randrange(200))}})

    def step(self) -> None:
        """One operation; AWS errors are part of the workload, not failures of the demo."""
        try:
            self._rng.choice(self._ops)()
        except self._expected:
            pass


def _totals(registry: CollectorRegistry) -> Tuple[float, float, Dict[float, float]]:
    """Requests, errors and the summed duration buckets, read back from the registry."""
    requests = errors = 0.0
    buckets: Dict[float, float] = {}
    for family in registry.collect():
        if family.name == "boto_requests":
            requests = sum(s.value for s in family.samples if s.name.endswith("_total"))
        elif family.name == "boto_request_errors":
            errors = sum(s.value for s in family.samples if s.name.endswith("_total"))
        elif family.name == "boto_request_duration_seconds":
            for s in family.samples:
                if s.name.endswith("_bucket"):
                    le = float(s.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + s.value
    return requests, errors, buckets


def histogram_quantile(q: float, buckets: Dict[float, float]) -> Optional[float]:
    """Prometheus's histogram_quantile over cumulative buckets {le: count}, in seconds."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] == 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * ((rank - below) / (count - below) if count > below else 0)
        lower, below = le, count
    return lower


def progress_line(registry: CollectorRegistry, elapsed: float, before: float = 0.0) -> str:
    """``requests 1234 (20.1/s)  errors 150 (12.2%)  p50 3.1 ms  p99 48.0 ms``.

    Totals are the registry's; the rate counts only the requests since ``before`` were
    counted (the set-up calls made before the clock started are not a rate)."""
    requests, errors, buckets = _totals(registry)
    p50, p99 = histogram_quantile(0.5, buckets), histogram_quantile(0.99, buckets)
    rate = (requests - before) / elapsed if elapsed > 0 else 0.0
    share = 100.0 * errors / requests if requests else 0.0

    def ms(v: Optional[float]) -> str:
        return "-" if v is None else f"{v * 1000:.1f} ms"

    return (f"requests {requests:.0f} ({rate:.1f}/s)  errors {errors:.0f} ({share:.1f}%)  "
            f"p50 {ms(p50)}  p99 {ms(p99)}")


def run_demo(
    port: Optional[int] = None,
    addr: Optional[str] = None,
    duration: float = 0.0,
    rate: float = 20.0,
    registry: Optional[CollectorRegistry] = None,
    out: TextIO = sys.stderr,
    stop: Optional[threading.Event] = None,
) -> int:
    """Run the demo until duration is up (0: until SIGINT, SIGTERM or stop is set).

    Called in the main thread, it stops on SIGINT (Ctrl-C) and SIGTERM, with handlers of its
    own: a process started in the background from a non-interactive shell inherits SIGINT as
    ignored, and would otherwise not stop on Ctrl-C or ``kill -INT``. Either signal ends the
    run with its summary line; the handlers there before are put back on return.

    Args:
        port: metrics port (default as for :func:`boto_prom.enable_metrics`).
        addr: metrics address.
        duration: seconds to run; 0 runs until stopped.
        rate: workload steps per second to aim for (a step is one or two AWS requests).
        registry: where to record (default: the global registry).
        out: where the progress line goes.
        stop: set it to end the run from another thread.

    Returns:
        The number of workload steps made.
    """
    registry = REGISTRY if registry is None else registry
    stop = stop or threading.Event()
    with _stopped_by_signals(stop):
        return _run(port, addr, duration, rate, registry, out, stop)


def _run(port: Optional[int], addr: Optional[str], duration: float, rate: float,
         registry: CollectorRegistry, out: TextIO, stop: threading.Event) -> int:
    from . import enable_metrics

    interactive = out.isatty()
    boto2, aio = boto2_imports(), aiobotocore_imports()
    with LocalAWS() as aws, contextlib.ExitStack() as closing:
        server_box: List[Any] = []

        def enable(conn: Any) -> Any:
            hook = enable_metrics(conn, port=port, addr=addr, registry=registry)
            if hook is not None and hook.server is not None and not server_box:
                server_box.append(hook.server)
            return hook

        workload = _Workload(aws, enable, boto2, aio, closing)
        where = server_box[0].url if server_box else "(metrics server disabled)"
        print(f"boto-prom demo: {sdks_line(boto2, aio)} to moto on {aws.url}, metrics on "
              f"{where}", file=out, flush=True)
        print("Ctrl-C to stop." if duration <= 0 else f"Running for {duration:g} s.",
              file=out, flush=True)
        before = _totals(registry)[0]
        start = time.monotonic()
        next_report = start + 1.0
        interval = 1.0 / rate if rate > 0 else 0.0
        steps = 0
        while not stop.is_set():
            now = time.monotonic()
            if duration > 0 and now - start >= duration:
                break
            workload.step()
            steps += 1
            if now >= next_report:
                line = progress_line(registry, now - start, before)
                print(("\r" + line + "  ") if interactive else line,
                      end="" if interactive else "\n", file=out, flush=True)
                next_report = now + (1.0 if interactive else 5.0)
            if interval:
                delay = start + steps * interval - time.monotonic()
                if delay > 0:
                    stop.wait(delay)
        if interactive:
            print(file=out)
        print("done: " + progress_line(registry, time.monotonic() - start, before), file=out,
              flush=True)
    return steps


@contextlib.contextmanager
def _stopped_by_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set stop while the block runs, when this is the main thread (only
    it may set handlers); a second signal while the demo sums up changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, lambda *_: stop.set())
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            # None: a handler set outside Python, which cannot be put back from here.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
