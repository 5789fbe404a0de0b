"""The boto 2 adapter: a request hook that turns each finished request into one record.

boto 2 calls ``hook.handle_request_data(request, response, error=False)`` from
``AWSAuthConnection._mexe``: with ``error=False`` once a response other than a 5xx or a redirect
has arrived (4xx included), before its body is read; with ``error=True`` once retries are
exhausted, after the last backoff sleep, and with ``response=None`` when no HTTP response came
at all. Importing this module imports boto.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Dict, Optional, Sequence, Tuple

from ._naming import boto2_action, is_region, parse_host, safe_name, safe_request_id
from .record import NO_RESPONSE, UNKNOWN, RequestRecord

try:
    from boto.utils import RequestHook as _RequestHook
except ImportError:  # boto 2 cannot import (Python 3.12+): the class still works on its own
    _RequestHook = object  # type: ignore[misc,assignment]

# boto 2 only sees throttling as an HTTP status: 429, or 503 (EC2 RequestLimitExceeded and
# S3 SlowDown are both 503s).
THROTTLE_STATUSES = frozenset({429, 503})

_STATUS_TEXT = {code: str(code) for code in range(100, 600)}
_HOST_CACHE_LIMIT = 1024

# boto 2 module -> service, for connections to a host that does not name its service (a
# loopback test server, a VPC endpoint, a proxy).
_MODULE_SERVICE = {
    "boto.ec2": "ec2", "boto.s3": "s3", "boto.dynamodb2": "dynamodb", "boto.dynamodb": "dynamodb",
    "boto.iam": "iam", "boto.sqs": "sqs", "boto.sns": "sns", "boto.sts": "sts",
    "boto.kinesis": "kinesis", "boto.logs": "logs", "boto.ec2.elb": "elb",
    "boto.ec2.cloudwatch": "cloudwatch", "boto.ec2.autoscale": "autoscaling",
    "boto.rds": "rds", "boto.rds2": "rds", "boto.route53": "route53", "boto.ses": "ses",
    "boto.glacier": "glacier", "boto.cloudformation": "cloudformation",
    "boto.cloudfront": "cloudfront", "boto.kms": "kms", "boto.emr": "emr",
    "boto.elasticache": "elasticache", "boto.awslambda": "lambda", "boto.swf": "swf",
}


def connection_service(conn: Any) -> str:
    """The short service name of a boto 2 connection, or ``"unknown"``."""
    for attr in ("auth_service_name",):
        name = safe_name(getattr(conn, attr, None))
        if name:
            return name.lower()
    service, _ = parse_host(getattr(conn, "host", None))
    if service != UNKNOWN:
        return service
    module = type(conn).__module__ or ""
    while module:
        if module in _MODULE_SERVICE:
            return _MODULE_SERVICE[module]
        module = module.rpartition(".")[0]
    return UNKNOWN


def connection_region(conn: Any) -> str:
    """The region of a boto 2 connection, or ``"unknown"``."""
    candidates = (
        getattr(conn, "auth_region_name", None),
        getattr(getattr(conn, "region", None), "name", None),
    )
    for candidate in candidates:
        if is_region(candidate):
            return candidate  # type: ignore[return-value]
    _, region = parse_host(getattr(conn, "host", None))
    return region


class BotoRequestHook(_RequestHook):  # type: ignore[misc,valid-type]
    """A boto 2 request hook that records every request in Prometheus metrics (and other sinks).

    Most programs get one from :func:`boto_prom.enable_metrics`. It also works the way boto's
    docs teach: ``conn.set_request_hook(BotoRequestHook())`` reads the service and region of
    each request from its host (``ec2.us-west-2.amazonaws.com``, ``s3.amazonaws.com``).

    Args:
        registry: the prometheus_client registry to record into (the global one by default).
        aws_service: the service label for every request, instead of reading it per request.
        aws_region: the region label for every request, likewise.
        buckets: duration histogram buckets in seconds (see :func:`boto_prom.enable_metrics`).
        previous: a hook to call after recording, with the same arguments (the connection's
            earlier hook, so enabling metrics keeps it working).
        recorder: where records go (built by :func:`boto_prom.enable_metrics`); by default
            the registry's Prometheus metrics alone.

    Example:
        >>> conn.set_request_hook(BotoRequestHook())  # doctest: +SKIP
    """

    def __init__(
        self,
        registry: Any = None,
        *,
        aws_service: Optional[str] = None,
        aws_region: Optional[str] = None,
        buckets: Optional[Sequence[float]] = None,
        previous: Any = None,
        recorder: Any = None,
    ) -> None:
        if recorder is None:
            from .metrics import metrics_for
            from .recorder import Recorder

            recorder = Recorder(metrics_for(registry, buckets))
        self.recorder = recorder
        self.registry = recorder.registry
        self.aws_service = aws_service
        self.aws_region = aws_region
        self.previous = previous
        self.server: Any = None
        self._guard = recorder.guard
        self._hosts: Dict[Any, Tuple[str, str]] = {}

    active = True
    """False for a hook that no longer records (see boto_prom._global); enabling again
    replaces such a hook."""

    # The per-request path: reads, label lookups and inc/observe, nothing else.
    def handle_request_data(self, request: Any, response: Any, error: bool = False) -> None:
        """Record one request; called by boto 2. Never raises, whatever it is handed."""
        try:
            self.recorder.record(self._build(request, response, error))
        except Exception:
            self._guard.failed("record")
        previous = self.previous
        if previous is not None:
            # The user's own hook: its exceptions are theirs and reach them unchanged.
            previous.handle_request_data(request, response, error)

    def _service_region(self, request: Any) -> Tuple[str, str]:
        service, region = self.aws_service, self.aws_region
        if service is None or region is None:
            host = getattr(request, "host", None)
            parsed = self._hosts.get(host)
            if parsed is None:
                parsed = parse_host(host)
                if len(self._hosts) < _HOST_CACHE_LIMIT:
                    self._hosts[host] = parsed
            service = parsed[0] if service is None else service
            region = parsed[1] if region is None else region
        return service, region

    def _build(self, request: Any, response: Any, error: bool) -> RequestRecord:
        service, region = self._service_region(request)
        try:
            action = boto2_action(
                service,
                getattr(request, "method", None),
                getattr(request, "auth_path", None) or getattr(request, "path", None),
                getattr(request, "params", None),
                getattr(request, "headers", None),
            )
        except Exception:
            self._guard.failed("action")
            action = UNKNOWN

        duration = self._duration(request)
        request_bytes = self._request_bytes(request)

        response_bytes = None
        request_id = None
        if response is None:
            status_code = NO_RESPONSE
            error_type: Optional[str] = "no_response"
            throttled = False
        else:
            status = getattr(response, "status", None)
            status_code = _STATUS_TEXT.get(status) if type(status) is int else None
            if status_code is None:
                self._guard.failed("status", f"unusable response status {type(status).__name__}")
                status_code = UNKNOWN
                error_type = UNKNOWN if error else None
                throttled = False
            else:
                error_type = status_code if (status >= 400 or error) else None
                throttled = status in THROTTLE_STATUSES
                # A HEAD answer's Content-Length describes the object; no body came.
                if getattr(request, "method", None) == "HEAD":
                    response_bytes = 0
                else:
                    response_bytes = self._response_bytes(response)
                if self.recorder.wants_request_id:
                    request_id = _request_id(response, self._guard)
        return RequestRecord(
            "boto2", service, region, action, status_code, duration, request_bytes,
            response_bytes, error_type, throttled, request_id, time.time(),
        )

    def _duration(self, request: Any) -> Optional[float]:
        start = getattr(request, "start_time", None)
        if start is None:
            self._guard.failed("duration", "request has no start_time")
            return None
        try:
            # boto stamps start_time with naive local time: a clock step (NTP, DST on a
            # badly-set host) can make the difference negative, so clamp at zero.
            seconds = (datetime.now(start.tzinfo) - start).total_seconds()
        except Exception:
            self._guard.failed("duration")
            return None
        return seconds if seconds > 0.0 else 0.0

    def _request_bytes(self, request: Any) -> Optional[int]:
        headers = getattr(request, "headers", None)
        length = headers.get("Content-Length") if isinstance(headers, dict) else None
        if length is not None:
            return self._guard.size(length, "request_size")
        body = getattr(request, "body", None)
        if isinstance(body, (bytes, str)):
            return len(body)
        return None if body is not None else 0

    def _response_bytes(self, response: Any) -> Optional[int]:
        # http.client has already parsed Content-Length into .length; it is exact while the
        # body is unread (fp still open). Once read (a retry handler, error=True) it is 0.
        length = getattr(response, "length", None)
        if type(length) is int and getattr(response, "fp", None) is not None:
            return length
        try:
            length = response.getheader("Content-Length")
        except Exception:
            self._guard.failed("response_size")
            return None
        return self._guard.size(length, "response_size")


def _request_id(response: Any, guard: Any) -> Optional[str]:
    try:
        # http.client's parsed headers answer a lookup in about half the time getheader takes
        # (it collects and joins every value); this runs on every call when a CSV file is on.
        headers = getattr(response, "msg", None)
        get = headers.get if hasattr(headers, "get") else response.getheader
        for name in ("x-amz-request-id", "x-amzn-RequestId"):
            value = get(name)
            if value:
                return safe_request_id(value)
    except Exception:
        guard.failed("request_id")
    return None
