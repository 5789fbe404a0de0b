"""Bounded, secret-free label values: service and region from a host, action from a request.

Every helper here falls back to ``"unknown"`` (or another fixed name) instead of raising, and
never returns a path, a bucket name, an object key or an id, so the label sets stay bounded
whatever the SDK hands us.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional, Tuple

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

# S3 sub-resources (query keys) that name an operation, per method, for a bucket and for an
# object. Names are botocore's operation names so boto 2 and boto3 traffic share series.
_S3_BUCKET_SUBRESOURCES = {
    "GET": {
        "location": "GetBucketLocation",
        "acl": "GetBucketAcl",
        "policy": "GetBucketPolicy",
        "cors": "GetBucketCors",
        "lifecycle": "GetBucketLifecycleConfiguration",
        "versioning": "GetBucketVersioning",
        "tagging": "GetBucketTagging",
        "website": "GetBucketWebsite",
        "logging": "GetBucketLogging",
        "notification": "GetBucketNotificationConfiguration",
        "requestPayment": "GetBucketRequestPayment",
        "replication": "GetBucketReplication",
        "encryption": "GetBucketEncryption",
        "accelerate": "GetBucketAccelerateConfiguration",
        "uploads": "ListMultipartUploads",
        "versions": "ListObjectVersions",
    },
    "PUT": {
        "acl": "PutBucketAcl",
        "policy": "PutBucketPolicy",
        "cors": "PutBucketCors",
        "lifecycle": "PutBucketLifecycleConfiguration",
        "versioning": "PutBucketVersioning",
        "tagging": "PutBucketTagging",
        "website": "PutBucketWebsite",
        "logging": "PutBucketLogging",
        "notification": "PutBucketNotificationConfiguration",
        "requestPayment": "PutBucketRequestPayment",
        "replication": "PutBucketReplication",
        "encryption": "PutBucketEncryption",
        "accelerate": "PutBucketAccelerateConfiguration",
    },
    "DELETE": {
        "policy": "DeleteBucketPolicy",
        "cors": "DeleteBucketCors",
        "lifecycle": "DeleteBucketLifecycle",
        "tagging": "DeleteBucketTagging",
        "website": "DeleteBucketWebsite",
        "replication": "DeleteBucketReplication",
        "encryption": "DeleteBucketEncryption",
    },
    "POST": {"delete": "DeleteObjects"},
}
_S3_BUCKET_DEFAULT = {
    "GET": "ListObjects",
    "PUT": "CreateBucket",
    "DELETE": "DeleteBucket",
    "HEAD": "HeadBucket",
}
_S3_OBJECT_SUBRESOURCES = {
    "GET": {
        "acl": "GetObjectAcl",
        "uploadId": "ListParts",
        "tagging": "GetObjectTagging",
        "torrent": "GetObjectTorrent",
        "retention": "GetObjectRetention",
        "legal-hold": "GetObjectLegalHold",
    },
    "PUT": {
        "acl": "PutObjectAcl",
        "tagging": "PutObjectTagging",
        "retention": "PutObjectRetention",
        "legal-hold": "PutObjectLegalHold",
    },
    "POST": {"uploads": "CreateMultipartUpload", "uploadId": "CompleteMultipartUpload",
             "restore": "RestoreObject", "select": "SelectObjectContent"},
    "DELETE": {"uploadId": "AbortMultipartUpload", "tagging": "DeleteObjectTagging"},
}
_S3_OBJECT_DEFAULT = {
    "GET": "GetObject",
    "PUT": "PutObject",
    "DELETE": "DeleteObject",
    "HEAD": "HeadObject",
    "POST": "PostObject",
}


def _query_keys(query: str) -> frozenset:
    return frozenset(part.split("=", 1)[0] for part in query.split("&") if part)


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


def s3_operation(method: object, path: object, params: object = None,
                 headers: object = None) -> str:
    """The botocore name of an S3 REST request, from its method, path, query and headers.

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
    keys = _query_keys(query)
    if isinstance(params, Mapping) and params:
        keys = keys | frozenset(k for k in params if isinstance(k, str))
    bucket, _, key = path.lstrip("/").partition("/")
    if not bucket:
        return "ListBuckets" if method == "GET" else _fallback(method)
    if not key:
        for sub, name in _S3_BUCKET_SUBRESOURCES.get(method, {}).items():
            if sub in keys:
                return name
        if method == "GET" and query:
            if "list-type=2" in query.split("&"):
                return "ListObjectsV2"
        return _S3_BUCKET_DEFAULT.get(method) or _fallback(method)
    if method == "PUT" and "uploadId" in keys and "partNumber" in keys:
        if _header(headers, "x-amz-copy-source") is not None:
            return "UploadPartCopy"
        return "UploadPart"
    for sub, name in _S3_OBJECT_SUBRESOURCES.get(method, {}).items():
        if sub in keys:
            return name
    if method == "PUT" and _header(headers, "x-amz-copy-source") is not None:
        return "CopyObject"
    return _S3_OBJECT_DEFAULT.get(method) or _fallback(method)


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
