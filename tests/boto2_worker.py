"""A child process for tests: real boto 2 calls against moto with metrics on, then an exit.

    python tests/boto2_worker.py MOTO_PORT CALLS [--serve] [--wait]

It enables metrics the way an application would (so the environment decides multiprocess
mode, the push at exit, the web config), makes CALLS EC2 DescribeVolumes calls and prints
``ready PID PORT`` (PORT is its metrics server's with --serve, else 0). With --wait it then stays
alive until its stdin is closed. Its server's port is BOTO_WORKER_METRICS_PORT (default 0). A ConfigurationError is printed as ``error MESSAGE`` (exit 3).
With BOTO_WORKER_BUCKET and BOTO_WORKER_KEY set it also puts and gets that S3 object.
Credentials come from BOTO_WORKER_ACCESS_KEY, BOTO_WORKER_SECRET_KEY and
BOTO_WORKER_SESSION_TOKEN when set.
"""

from __future__ import annotations

import os
import sys


def main(argv: list) -> int:
    port, calls = int(argv[0]), int(argv[1])
    serve, wait = "--serve" in argv, "--wait" in argv
    os.environ.setdefault("EC2_USE_SIGV4", "1")
    os.environ.setdefault("S3_USE_SIGV4", "1")
    import boto
    from boto.ec2.connection import EC2Connection
    from boto.ec2.regioninfo import RegionInfo

    import boto_prom

    if not boto.config.has_section("Boto"):
        boto.config.add_section("Boto")
    boto.config.set("Boto", "num_retries", "0")
    boto.config.set("Boto", "metadata_service_num_attempts", "0")
    creds = dict(
        aws_access_key_id=os.environ.get("BOTO_WORKER_ACCESS_KEY", "AKIAWORKERWORKER0001"),
        aws_secret_access_key=os.environ.get("BOTO_WORKER_SECRET_KEY", "worker-secret"),
        security_token=os.environ.get("BOTO_WORKER_SESSION_TOKEN"),
        is_secure=False, port=port,
    )
    conn = EC2Connection(region=RegionInfo(name="us-west-2", endpoint="127.0.0.1"), **creds)
    conn.auth_service_name, conn.auth_region_name = "ec2", "us-west-2"
    try:
        metrics_port = int(os.environ.get("BOTO_WORKER_METRICS_PORT", "0"))
        hook = boto_prom.enable_metrics(conn, port=metrics_port, start_server=serve)
    except boto_prom.ConfigurationError as exc:
        print(f"error {exc}", flush=True)
        return 3
    for _ in range(calls):
        conn.get_all_volumes()
    bucket, key = os.environ.get("BOTO_WORKER_BUCKET"), os.environ.get("BOTO_WORKER_KEY")
    if bucket and key:
        from boto.s3.connection import OrdinaryCallingFormat, S3Connection

        s3 = S3Connection(host="localhost", calling_format=OrdinaryCallingFormat(), **creds)
        s3.auth_service_name, s3.auth_region_name = "s3", "us-west-2"
        boto_prom.enable_metrics(s3, start_server=False)
        s3.create_bucket(bucket, location="us-west-2").new_key(key).set_contents_from_string("x")
        s3.get_bucket(bucket).get_key(key).get_contents_as_string()
    server_port = hook.server.port if hook.server is not None else 0
    print(f"ready {os.getpid()} {server_port}", flush=True)
    if wait:
        sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
