"""The secrets scan: every feature runs with recognisable secrets, and no output holds one.

Each feature is one block below, registered with ``@feature``: it does real work with the
secrets and returns {where: text} of everything it produced that someone else could read (a
scrape, what a gateway holds, a child's stderr, a CSV file). boto-prom's own log records are
scanned for all of them. A new feature is one more block.
"""

from __future__ import annotations

import base64
import logging
import urllib.error
import urllib.request
from typing import Callable, Dict, List

import pytest

import boto_prom
from tests.conftest import HAS_BOTO2, require_binary
from tests.fault_server import closed_port
from tests.procs import child_env, get, read_line, start_pushgateway, start_worker, stop

pytestmark = pytest.mark.skipif(not HAS_BOTO2, reason="boto 2 needs Python 3.11 or older")

SECRETS = {
    "access_key": "AKIASCANSCANSCAN0042",
    "secret_key": "scanSECRETkey0042xyzXYZ",
    "session_token": "SCANsessionTOKEN0042abc",
    "bucket": "scan-secret-bucket-0042",
    "object_key": "scan-private-object-0042.csv",
    "tag_value": "scan-tag-value-0042",
    "metrics_password": "scan-metrics-password-0042",
    "gateway_password": "scan-gateway-password-0042",
}

Feature = Callable[["Scan"], Dict[str, str]]
FEATURES: List[Feature] = []


def feature(fn: Feature) -> Feature:
    FEATURES.append(fn)
    return fn


class Scan:
    """What every block gets: moto, a Pushgateway, a registry and a place for files."""

    def __init__(self, aws, gateway_url: str, registry, tmp_path) -> None:
        self.aws, self.gateway_url, self.registry, self.tmp_path = aws, gateway_url, registry, \
            tmp_path

    def connections(self):
        from boto.ec2.connection import EC2Connection
        from boto.ec2.regioninfo import RegionInfo
        from boto.s3.connection import OrdinaryCallingFormat, S3Connection

        creds = dict(aws_access_key_id=SECRETS["access_key"],
                     aws_secret_access_key=SECRETS["secret_key"],
                     security_token=SECRETS["session_token"], is_secure=False,
                     port=self.aws.port)
        ec2 = EC2Connection(region=RegionInfo(name="us-west-2", endpoint="127.0.0.1"), **creds)
        s3 = S3Connection(host="localhost", calling_format=OrdinaryCallingFormat(), **creds)
        for conn, service in ((ec2, "ec2"), (s3, "s3")):
            conn.auth_service_name, conn.auth_region_name = service, "us-west-2"
        return ec2, s3


@feature
def boto2_calls_and_the_scrape(scan: Scan) -> Dict[str, str]:
    """boto 2 calls carrying every secret, then a scrape of the bundled server."""
    from boto.exception import BotoServerError

    ec2, s3 = scan.connections()
    hook = boto_prom.enable_metrics(ec2, port=0, registry=scan.registry)
    boto_prom.enable_metrics(s3, port=hook.server.port, registry=scan.registry)
    ec2.get_all_volumes(filters={"tag:Name": SECRETS["tag_value"]})
    bucket = s3.create_bucket(SECRETS["bucket"], location="us-west-2")
    bucket.new_key(SECRETS["object_key"]).set_contents_from_string("data")
    bucket.get_key(SECRETS["object_key"]).get_contents_as_string()
    assert bucket.get_key(SECRETS["object_key"] + "-missing") is None
    with pytest.raises(BotoServerError):
        s3.get_bucket(SECRETS["bucket"] + "-missing")
    body = get(hook.server.url)
    openmetrics = urllib.request.Request(
        hook.server.url, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    with urllib.request.urlopen(openmetrics, timeout=10) as response:
        om_body = response.read().decode()
    assert 'action="PutObject"' in body and 'action="DescribeVolumes"' in body
    return {"scrape": body, "openmetrics scrape": om_body}


@feature
def basic_auth_refusals(scan: Scan) -> Dict[str, str]:
    """A server behind basic auth refuses a secret wrong password; its answer holds no secret."""
    import bcrypt

    hashed = bcrypt.hashpw(SECRETS["metrics_password"].encode(), bcrypt.gensalt(4)).decode()
    config = scan.tmp_path / "web.yml"
    config.write_text(f"basic_auth_users:\n  scanner: '{hashed}'\n")
    boto_prom.stop_server()
    ec2, _ = scan.connections()
    hook = boto_prom.enable_metrics(ec2, port=0, registry=scan.registry, web_config=str(config))
    ec2.get_all_volumes()
    answers = {}
    for name, password in (("refused", SECRETS["metrics_password"] + "-wrong"),
                           ("accepted", SECRETS["metrics_password"])):
        token = base64.b64encode(f"scanner:{password}".encode()).decode()
        request = urllib.request.Request(hook.server.url,
                                         headers={"Authorization": f"Basic {token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                answers[name] = f"{response.status} {response.headers}{response.read().decode()}"
        except urllib.error.HTTPError as exc:
            answers[name] = f"{exc.code} {exc.headers}{exc.read().decode()}"
    assert answers["refused"].startswith("401") and answers["accepted"].startswith("200")
    return {f"{name} answer": text for name, text in answers.items()}


@feature
def push_by_hand(scan: Scan) -> Dict[str, str]:
    """push_metrics() of the registry that saw every secret; then what the gateway holds."""
    boto_prom.push_metrics(scan.gateway_url, job="secrets-by-hand", registry=scan.registry)
    held = get(f"{scan.gateway_url}/metrics")
    assert 'job="secrets-by-hand"' in held
    return {"gateway after push_metrics": held}


@feature
def push_at_exit(scan: Scan) -> Dict[str, str]:
    """A batch job with the secrets as credentials, bucket and key pushes at exit; another,
    with a secret gateway password, finds the gateway down. Scans the gateway and both
    children's stderr."""
    outputs = {}
    common = dict(BOTO_WORKER_ACCESS_KEY=SECRETS["access_key"],
                  BOTO_WORKER_SECRET_KEY=SECRETS["secret_key"],
                  BOTO_WORKER_SESSION_TOKEN=SECRETS["session_token"],
                  BOTO_WORKER_KEY=SECRETS["object_key"],
                  BOTO_PROM_PUSHGATEWAY=scan.gateway_url)
    down = f"http://127.0.0.1:{closed_port()}"
    for job, extra in (("secrets-at-exit", {}),
                       ("secrets-gateway-down", dict(
                           BOTO_PROM_PUSHGATEWAY=down, BOTO_PROM_PUSH_TIMEOUT="1",
                           BOTO_PROM_PUSH_USERNAME="scanner",
                           BOTO_PROM_PUSH_PASSWORD=SECRETS["gateway_password"])),):
        env = child_env(**dict(common, BOTO_PROM_PUSH_JOB=job,
                               BOTO_WORKER_BUCKET=f"{SECRETS['bucket']}-{job}", **extra))
        proc = start_worker(scan.aws.port, 2, env=env)
        assert read_line(proc).startswith("ready ")
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        outputs[f"{job} stderr"] = err
    assert "failed" in outputs["secrets-gateway-down stderr"]
    held = get(f"{scan.gateway_url}/metrics")
    assert 'job="secrets-at-exit"' in held and 'action="PutObject"' in held
    outputs["gateway after exit pushes"] = held
    return outputs


@feature
def csv_rows(scan: Scan) -> Dict[str, str]:
    """boto 2 calls with every secret, written as rows in both CSV formats; then the files."""
    ec2, s3 = scan.connections()
    outputs = {}
    for fmt in ("csv", "requestlog"):
        path = scan.tmp_path / f"requests-{fmt}.log"
        boto_prom.enable_metrics(s3, registry=scan.registry, start_server=False,
                                 csv_path=str(path), csv_format=fmt)
        bucket = s3.create_bucket(f"{SECRETS['bucket']}-{fmt}", location="us-west-2")
        bucket.new_key(SECRETS["object_key"]).set_contents_from_string("data")
        assert bucket.get_key(SECRETS["object_key"] + "-missing") is None
        boto_prom.disable_metrics(s3)
        writer = boto_prom.get_csv_writer(str(path))
        writer.flush()
        text = path.read_text()
        assert "PutObject" in text and "HeadObject" in text
        outputs[f"{fmt} file"] = text
    return outputs


@feature
def boto3_calls(scan: Scan) -> Dict[str, str]:
    """boto3 clients with every secret as credentials, bucket, key and tag; then a scrape in
    both formats (OpenMetrics carries exemplars)."""
    import boto3
    from botocore.exceptions import ClientError
    from prometheus_client import generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as openmetrics

    session = boto3.Session(aws_access_key_id=SECRETS["access_key"],
                            aws_secret_access_key=SECRETS["secret_key"],
                            aws_session_token=SECRETS["session_token"],
                            region_name="us-west-2")
    boto_prom.enable_metrics(session, registry=scan.registry, start_server=False)
    endpoint = f"http://127.0.0.1:{scan.aws.port}"
    s3 = session.client("s3", endpoint_url=endpoint)
    ec2 = session.client("ec2", endpoint_url=endpoint)
    bucket = f"{SECRETS['bucket']}-boto3"
    s3.create_bucket(Bucket=bucket,
                     CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    s3.put_object(Bucket=bucket, Key=SECRETS["object_key"], Body=b"data")
    with pytest.raises(ClientError):
        s3.get_object(Bucket=bucket, Key=SECRETS["object_key"] + "-missing")
    ec2.describe_volumes(Filters=[{"Name": "tag:Name", "Values": [SECRETS["tag_value"]]}])
    boto_prom.disable_metrics(session)
    text = generate_latest(scan.registry).decode()
    assert 'action="PutObject"' in text and 'error_type="NoSuchKey"' in text
    return {"boto3 scrape": text, "boto3 openmetrics": openmetrics(scan.registry).decode()}


def test_no_secret_in_any_output(aws, registry, tmp_path, caplog):
    """No access key, secret key, token, bucket, object key or password reaches any output."""
    binary = require_binary("prometheus-pushgateway")
    proc, url = start_pushgateway(binary, str(tmp_path))
    outputs: Dict[str, str] = {}
    try:
        scan = Scan(aws, url, registry, tmp_path)
        with caplog.at_level(logging.DEBUG, logger="boto_prom"):
            for block in FEATURES:
                for where, text in block(scan).items():
                    outputs[f"{block.__name__}: {where}"] = text
    finally:
        stop(proc)
    outputs["boto_prom logs"] = "\n".join(
        f"{r.getMessage()} {r.exc_info}" for r in caplog.records if r.name.startswith("boto_prom"))
    assert len(outputs) >= 12
    leaks = [(name, where) for where, text in outputs.items()
             for name, secret in SECRETS.items() if secret in text]
    assert leaks == []


def test_the_scan_can_see_a_leak():
    """The scan's own check finds a secret when one is there (the test is not vacuous)."""
    text = f'boto_requests_total{{bucket="{SECRETS["bucket"]}"}} 1'
    assert [name for name, secret in SECRETS.items() if secret in text] == ["bucket"]
