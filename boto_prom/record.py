"""One AWS call as a plain record: what every SDK adapter produces and every sink consumes."""

from __future__ import annotations

from typing import Optional

UNKNOWN = "unknown"
"""Label value used when a service, region or action cannot be read."""

NO_RESPONSE = "none"
"""``status_code`` of a call that got no HTTP response at all."""


class RequestRecord:
    """What boto-prom knows about one finished AWS call.

    Adapters build one per call; sinks (Prometheus metrics, the CSV writer) read it and must
    not change it. Every field is already safe to publish: no ids, bucket names, object keys,
    paths or credentials are ever put into a record.

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

    __slots__ = (
        "sdk",
        "aws_service",
        "aws_region",
        "action",
        "status_code",
        "duration_seconds",
        "request_bytes",
        "response_bytes",
        "error_type",
        "throttled",
        "request_id",
        "timestamp",
        "attempts",
        "retries_exhausted",
    )

    def __init__(
        self,
        sdk: str,
        aws_service: str,
        aws_region: str,
        action: str,
        status_code: str,
        duration_seconds: Optional[float],
        request_bytes: Optional[int],
        response_bytes: Optional[int],
        error_type: Optional[str],
        throttled: bool,
        request_id: Optional[str],
        timestamp: float,
        attempts: Optional[int] = None,
        retries_exhausted: bool = False,
    ) -> None:
        self.sdk = sdk
        self.aws_service = aws_service
        self.aws_region = aws_region
        self.action = action
        self.status_code = status_code
        self.duration_seconds = duration_seconds
        self.request_bytes = request_bytes
        self.response_bytes = response_bytes
        self.error_type = error_type
        self.throttled = throttled
        self.request_id = request_id
        self.timestamp = timestamp
        self.attempts = attempts
        self.retries_exhausted = retries_exhausted

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"RequestRecord({fields})"
