"""Bounded, secret-free label values: service and region from a host, action from a request.

Every helper here falls back to ``"unknown"`` (or another fixed name) instead of raising, and
never returns a path, a bucket name, an object key or an id, so the label sets stay bounded
whatever the SDK hands us.
"""

from __future__ import annotations

import re
from itertools import combinations
from typing import Mapping, Optional, Tuple

from . import _s3_operations
from .record import UNKNOWN

# Endpoint prefixes that differ from the service names botocore uses, so that boto 2 and
# boto3 traffic land in the same series.
_ENDPOINT_TO_SERVICE = {
    "monitoring": "cloudwatch",
    "elasticloadbalancing": "elb",
    "email": "ses",
    "queue": "sqs",
    "elasticmapreduce": "emr",
    "streams.dynamodb": "dynamodbstreams",
    "elasticbeanstalk": "elasticbeanstalk",
    "swf": "swf",
    "sdb": "sdb",
}

# Services with one global endpoint (no region in the host); AWS signs them for us-east-1.
_GLOBAL_SERVICES = frozenset({"iam", "sts", "route53", "cloudfront", "s3", "sqs", "importexport"})

# boto 2 module -> service, for connections to a host that does not name its service (a
# loopback test server, a VPC endpoint, a proxy).
BOTO2_MODULE_SERVICES = {
    "boto.ec2": "ec2", "boto.s3": "s3", "boto.dynamodb2": "dynamodb", "boto.dynamodb": "dynamodb",
    "boto.iam": "iam", "boto.sqs": "sqs", "boto.sns": "sns", "boto.sts": "sts",
    "boto.kinesis": "kinesis", "boto.logs": "logs", "boto.ec2.elb": "elb",
    "boto.ec2.cloudwatch": "cloudwatch", "boto.ec2.autoscale": "autoscaling",
    "boto.rds": "rds", "boto.rds2": "rds", "boto.route53": "route53", "boto.ses": "ses",
    "boto.glacier": "glacier", "boto.cloudformation": "cloudformation",
    "boto.cloudfront": "cloudfront", "boto.kms": "kms", "boto.emr": "emr",
    "boto.elasticache": "elasticache", "boto.awslambda": "lambda", "boto.swf": "swf",
}

_REGION_RE = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$")
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9+/=_-]{1,128}$")
_AWS_SUFFIXES = (".amazonaws.com", ".amazonaws.com.cn")


def is_region(value: object) -> bool:
    """True when value looks like an AWS region name (``us-west-2``, ``cn-north-1``)."""
    return isinstance(value, str) and bool(_REGION_RE.match(value))


_known_names: dict = {}
_KNOWN_NAMES_LIMIT = 4096


def safe_name(value: object) -> Optional[str]:
    """value when it is a short identifier fit for a label, else None."""
    # Action names repeat on every call: remember the good ones instead of matching each time.
    if type(value) is str and value in _known_names:
        return value  # type: ignore[return-value]
    if isinstance(value, str) and _NAME_RE.match(value):
        if len(_known_names) < _KNOWN_NAMES_LIMIT:
            _known_names[value] = True
        return value
    return None


def safe_request_id(value: object) -> Optional[str]:
    """value when it has the shape of an AWS request id (letters, digits, ``-+/=_``), else None."""
    if isinstance(value, str) and _REQUEST_ID_RE.match(value):
        return value
    return None


def service_from_endpoint_prefix(prefix: str) -> str:
    """The botocore service name for an endpoint prefix (``monitoring`` -> ``cloudwatch``)."""
    return _ENDPOINT_TO_SERVICE.get(prefix, prefix)


def parse_host(host: object) -> Tuple[str, str]:
    """(service, region) read from an AWS host name, ``"unknown"`` for what it does not say.

    ``ec2.us-west-2.amazonaws.com`` -> ``("ec2", "us-west-2")``; ``s3.amazonaws.com`` ->
    ``("s3", "us-east-1")``; ``bucket.s3-eu-west-1.amazonaws.com`` -> ``("s3", "eu-west-1")``.
    Hosts outside AWS (a loopback test server, a proxy) give ``("unknown", "unknown")``.

    Args:
        host: the request's host, with or without a port.
    """
    if not isinstance(host, str):
        return UNKNOWN, UNKNOWN
    host = host.lower().rsplit(":", 1)[0] if host.count(":") == 1 else host.lower()
    for suffix in _AWS_SUFFIXES:
        if host.endswith(suffix):
            labels = host[: -len(suffix)].split(".")
            break
    else:
        return UNKNOWN, UNKNOWN
    # S3 hosts may carry a bucket name in front (virtual-hosted style): find the s3 label
    # itself so the bucket never becomes the service.
    for i, label in enumerate(labels):
        if label == "s3" or label.startswith("s3-") and not label.startswith("s3-external"):
            if label.startswith("s3-") and is_region(label[3:]):
                return "s3", label[3:]
            rest = labels[i + 1 :]
            for candidate in rest:
                if is_region(candidate):
                    return "s3", candidate
            return "s3", "us-east-1"
        if label.startswith("s3-external"):
            return "s3", "us-east-1"
    if labels[-1] == "vpce" and len(labels) >= 4 and is_region(labels[-2]):
        # An interface endpoint: vpce-<id>.<service>.<region>.vpce.amazonaws.com
        labels = [labels[-3], labels[-2]]
    region = UNKNOWN
    if len(labels) >= 2 and is_region(labels[-1]):
        region, prefix_labels = labels[-1], labels[:-1]  # ec2.us-west-2
    elif len(labels) >= 2 and is_region(labels[-2]):
        region, prefix_labels = labels[-2], labels[-1:]  # <domain>.us-east-1.es
    elif len(labels) >= 2 and is_region(labels[0]):
        region, prefix_labels = labels[0], labels[1:]  # old SQS: us-west-2.queue
    else:
        prefix_labels = labels
    prefix = ".".join(prefix_labels)
    if len(prefix_labels) > 1 and prefix not in _ENDPOINT_TO_SERVICE:
        # Anything in front of the service's own label is an account's: an API id, a domain,
        # a cluster or endpoint name. Never a label value.
        prefix = prefix_labels[-1]
    service = service_from_endpoint_prefix(prefix)
    if safe_name(service) is None:
        return UNKNOWN, region
    if region == UNKNOWN and service in _GLOBAL_SERVICES:
        region = "us-east-1"
    return service, region


# --- boto 2 actions -------------------------------------------------------------------------

_HTTP_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "HEAD", "PATCH", "OPTIONS"})


def _header(headers: object, name: str) -> Optional[str]:
    """A request header, looked up exactly first and then case-insensitively."""
    # type() first: the isinstance check against the Mapping ABC costs more than the lookup.
    if type(headers) is not dict and not isinstance(headers, Mapping):
        return None
    value = headers.get(name)
    if value is None:
        lower = name.lower()
        for key, candidate in headers.items():
            if isinstance(key, str) and key.lower() == lower:
                return candidate
    return value


def _s3_lookup(operations: tuple, shared: Mapping[str, str]) -> dict:
    """{(method, path template, query tokens): (name or None, ((headers, name), ...))}: what
    a request of that shape is named, and the headers that name it otherwise.

    Each operation is entered under its required tokens with every subset of the optional
    ones; where several meet under one key (``PUT`` on an object: ``PutObject``,
    ``CopyObject``), headers tell them apart and the operation requiring none is the default.
    A key with one operation ignores headers: its query already names it.
    """
    candidates: dict = {}
    for name, method, path, required, optional, headers in operations:
        if name in shared:
            continue  # a request of it is named after the current operation
        for n in range(len(optional) + 1):
            for extra in combinations(optional, n):
                key = (method, path, frozenset(required + extra))
                # An operation that requires the tokens comes before one that only accepts them.
                candidates.setdefault(key, []).append((len(extra), headers, name))
    lookup = {}
    for key, found in candidates.items():
        found.sort()
        if len(found) == 1:
            lookup[key] = (found[0][2], ())
            continue
        default = next((name for _, headers, name in found if not headers), None)
        checks = tuple((headers, name) for _, headers, name in
                       sorted(found, key=lambda f: -len(f[1])) if headers)
        lookup[key] = (default, checks)
    return lookup


# Built once at import from the table derived from botocore's model (see _s3_model.py); a
# request then costs a split of its query and a dict lookup.
_S3_LOOKUP = _s3_lookup(_s3_operations.OPERATIONS, _s3_operations.SHARED)
# The query tokens that tell operations apart; any other (prefix, versionId...) is an option.
_S3_TOKENS = frozenset(token for key in _S3_LOOKUP for token in key[2])
# Paths that are an operation's own, not a bucket (POST /WriteGetObjectResponse).
_S3_FIXED_PATHS = frozenset(key[1] for key in _S3_LOOKUP if "{" not in key[1] and key[1] != "/")


def _s3_tokens(query: str, params: object) -> frozenset:
    """The query tokens of a request that tell S3 operations apart, from its query string and
    from params held apart; options (prefix, versionId...) are left out."""
    tokens = []
    if query:
        for part in query.split("&"):
            if part in _S3_TOKENS:  # a whole key=value: list-type=2
                tokens.append(part)
            else:
                key = part.partition("=")[0]
                if key in _S3_TOKENS:
                    tokens.append(key)
    if (type(params) is dict or isinstance(params, Mapping)) and params:
        for key, value in params.items():  # type: ignore[union-attr]
            if key in _S3_TOKENS:
                tokens.append(key)
            elif isinstance(key, str) and f"{key}={value}" in _S3_TOKENS:
                tokens.append(f"{key}={value}")
    return frozenset(tokens)


def s3_operation(method: object, path: object, params: object = None,
                 headers: object = None) -> str:
    """The botocore name of an S3 REST request, from its method, path, query and headers.

    A request no operation of botocore's S3 model sends is named by its HTTP method. Requests
    two operations send alike get the current operation's name (``GetBucketLifecycle`` and
    ``GetBucketLifecycleConfiguration`` both send ``GET /bucket?lifecycle``).

    Args:
        method: the HTTP method.
        path: the path-style resource, ``/bucket/key?query`` (boto 2's ``auth_path``).
        params: query parameters held apart from the path, if any.
        headers: the request headers (``x-amz-copy-source`` marks a copy).

    >>> s3_operation("PUT", "/photos/cat.jpg?partNumber=1&uploadId=x")
    'UploadPart'
    """
    if not isinstance(method, str) or not isinstance(path, str):
        return UNKNOWN
    method = method.upper()
    path, _, query = path.partition("?")
    tokens = _s3_tokens(query, params)
    bucket, _, key = path.lstrip("/").partition("/")
    found = None
    if not bucket:
        template = "/"
    elif key:
        template = "/{Bucket}/{Key+}"
    else:
        template = "/{Bucket}"
        if "/" + bucket in _S3_FIXED_PATHS:
            found = _S3_LOOKUP.get((method, "/" + bucket, tokens))
    if found is None:
        found = _S3_LOOKUP.get((method, template, tokens))
        if found is None:
            return _fallback(method)
    name, checks = found
    for required, other in checks:
        if all(_header(headers, header) is not None for header in required):
            return other
    return name or _fallback(method)


def _fallback(method: str) -> str:
    """The bounded name of a REST request we cannot name: its HTTP method, never its path."""
    return method if method in _HTTP_METHODS else UNKNOWN


def boto2_action(service: str, method: object, path: object, params: object,
                 headers: object) -> str:
    """The action of a boto 2 request, for any of the three protocols boto 2 speaks.

    Query APIs carry ``Action`` in the params, JSON APIs carry ``X-Amz-Target``, and REST
    APIs carry neither (S3 is named from the request shape, others fall back to the HTTP
    method).

    Args:
        service: the service already resolved for the request (``"s3"`` turns on S3 naming).
        method: ``request.method``.
        path: ``request.auth_path`` or ``request.path``.
        params: ``request.params``.
        headers: ``request.headers``.
    """
    if type(params) is dict or isinstance(params, Mapping):
        action = params.get("Action")  # type: ignore[union-attr]
        if action is not None:
            return safe_name(action) or UNKNOWN
    target = _header(headers, "X-Amz-Target")
    if target is not None:
        if isinstance(target, bytes):
            target = target.decode("ascii", "replace")
        return safe_name(str(target).rpartition(".")[2]) or UNKNOWN
    if service == "s3":
        return s3_operation(method, path, params, headers)
    return _fallback(method.upper()) if isinstance(method, str) else UNKNOWN
