"""One AWS call as a plain, immutable record: what the CSV writer consumes.

The Prometheus metrics need no record: an adapter hands a call's values straight to the
label set's :class:`boto_prom.metrics.Bound`. A record is built only when a sink that keeps
whole calls (the CSV writer) is on.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

UNKNOWN = "unknown"
"""Label value used when a service, region or action cannot be read."""

NO_RESPONSE = "none"
"""``status_code`` of a call that got no HTTP response at all."""


class RequestRecord(NamedTuple):
    """What boto-prom knows about one finished AWS call.

    Every field is already safe to publish: no ids but the AWS request id, no bucket names,
    object keys, paths or credentials are ever put into a record.

    Attributes:
        sdk: ``"boto2"`` or ``"botocore"``.
        aws_service: short service name (``"ec2"``, ``"s3"``), or ``"unknown"``.
        aws_region: region name (``"us-west-2"``), or ``"unknown"``.
        action: operation name (``"DescribeVolumes"``, ``"PutObject"``), or a bounded fallback.
        status_code: the HTTP status as text (``"200"``), or ``"none"`` without a response.
        duration_seconds: how long the call took (see the README for what that covers), or
            None when it could not be measured.
        request_bytes: size of the request body, or None when unknown.
        response_bytes: the response's ``Content-Length``, or None when it had none.
        error_type: None for a success; else the AWS error code, the status code or
            ``"no_response"``.
        throttled: True when AWS asked the caller to slow down.
        request_id: the AWS request id from the response headers, when an adapter read it.
        timestamp: when the call finished, in seconds since the epoch.
        attempts: how many HTTP attempts the call made, or None when the SDK does not say
            (boto 2 retries out of sight of its hook).
        retries_exhausted: True when the call failed with an error the SDK retries, after
            using every attempt it allows.
    """

    sdk: str
    aws_service: str
    aws_region: str
    action: str
    status_code: str
    duration_seconds: Optional[float]
    request_bytes: Optional[int]
    response_bytes: Optional[int]
    error_type: Optional[str]
    throttled: bool
    request_id: Optional[str]
    timestamp: float
    attempts: Optional[int] = None
    retries_exhausted: bool = False
