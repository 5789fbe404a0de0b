"""Label values read from hosts and requests: bounded, botocore-compatible, secret-free."""

import datetime
import os
import subprocess
import sys
from urllib.parse import urlencode

import pytest

from boto_prom import _s3_model as generator
from boto_prom import _s3_operations
from boto_prom.naming import _HTTP_METHODS, boto2_action, parse_host, s3_operation
from tests.conftest import IN_CI


@pytest.mark.parametrize("host, expected", [
    ("ec2.us-west-2.amazonaws.com", ("ec2", "us-west-2")),
    ("ec2.us-west-2.amazonaws.com:443", ("ec2", "us-west-2")),
    ("s3.amazonaws.com", ("s3", "us-east-1")),
    ("s3-us-west-2.amazonaws.com", ("s3", "us-west-2")),
    ("s3.eu-central-1.amazonaws.com", ("s3", "eu-central-1")),
    ("my-secret-bucket.s3.amazonaws.com", ("s3", "us-east-1")),
    ("my.dotted.bucket.s3.eu-west-1.amazonaws.com", ("s3", "eu-west-1")),
    ("s3-external-1.amazonaws.com", ("s3", "us-east-1")),
    ("iam.amazonaws.com", ("iam", "us-east-1")),
    ("sts.amazonaws.com", ("sts", "us-east-1")),
    ("dynamodb.eu-west-1.amazonaws.com", ("dynamodb", "eu-west-1")),
    ("monitoring.us-east-1.amazonaws.com", ("cloudwatch", "us-east-1")),
    ("elasticloadbalancing.ap-southeast-2.amazonaws.com", ("elb", "ap-southeast-2")),
    ("queue.amazonaws.com", ("sqs", "us-east-1")),
    ("us-west-2.queue.amazonaws.com", ("sqs", "us-west-2")),
    ("ec2.cn-north-1.amazonaws.com.cn", ("ec2", "cn-north-1")),
    ("ec2.us-gov-west-1.amazonaws.com", ("ec2", "us-gov-west-1")),
    ("streams.dynamodb.us-east-1.amazonaws.com", ("dynamodbstreams", "us-east-1")),
    ("a1b2c3d4e5.execute-api.us-east-1.amazonaws.com", ("execute-api", "us-east-1")),
    ("vpce-0a1b2c3d4e5f67890-abcd1234.ec2.us-east-1.vpce.amazonaws.com", ("ec2", "us-east-1")),
    ("search-payroll-prod-x7k2q.us-east-1.es.amazonaws.com", ("es", "us-east-1")),
    ("a1b2c3-ats.iot.eu-west-1.amazonaws.com", ("iot", "eu-west-1")),
    ("123456789012.dkr.ecr.us-east-1.amazonaws.com", ("ecr", "us-east-1")),
    ("localhost", ("unknown", "unknown")),
    ("127.0.0.1:5000", ("unknown", "unknown")),
    ("minio.internal.example.com", ("unknown", "unknown")),
    (None, ("unknown", "unknown")),
    (b"ec2.us-west-2.amazonaws.com", ("unknown", "unknown")),
])
def test_parse_host(host, expected):
    """Each host gives the service and region botocore would name, never a bucket, an API id,
    a domain, a cluster or an endpoint name."""
    assert parse_host(host) == expected


@pytest.mark.parametrize("method, path, headers, expected", [
    ("GET", "/", {}, "ListBuckets"),
    ("PUT", "/b/", {}, "CreateBucket"),
    ("PUT", "/b", {}, "CreateBucket"),
    ("DELETE", "/b/", {}, "DeleteBucket"),
    ("HEAD", "/b/", {}, "HeadBucket"),
    ("GET", "/b/", {}, "ListObjects"),
    ("GET", "/b/?prefix=x&max-keys=5", {}, "ListObjects"),
    ("GET", "/b/?list-type=2&prefix=x", {}, "ListObjectsV2"),
    ("GET", "/b/?location", {}, "GetBucketLocation"),
    ("GET", "/b/?acl", {}, "GetBucketAcl"),
    ("PUT", "/b/?policy", {}, "PutBucketPolicy"),
    ("DELETE", "/b/?cors", {}, "DeleteBucketCors"),
    ("GET", "/b/?uploads", {}, "ListMultipartUploads"),
    ("GET", "/b/?versions", {}, "ListObjectVersions"),
    ("POST", "/b/?delete", {}, "DeleteObjects"),
    ("PUT", "/b/k", {}, "PutObject"),
    ("PUT", "/b/dir/k.txt", {"x-amz-copy-source": "b/other"}, "CopyObject"),
    ("PUT", "/b/dir/k.txt", {"X-Amz-Copy-Source": "b/other"}, "CopyObject"),
    ("GET", "/b/k", {}, "GetObject"),
    ("HEAD", "/b/k", {}, "HeadObject"),
    ("DELETE", "/b/k", {}, "DeleteObject"),
    ("GET", "/b/k?acl", {}, "GetObjectAcl"),
    ("PUT", "/b/k?acl", {}, "PutObjectAcl"),
    ("POST", "/b/k?uploads", {}, "CreateMultipartUpload"),
    ("PUT", "/b/k?partNumber=1&uploadId=abc", {}, "UploadPart"),
    ("PUT", "/b/k?uploadId=abc&partNumber=2", {"x-amz-copy-source": "b/o"}, "UploadPartCopy"),
    ("GET", "/b/k?uploadId=abc", {}, "ListParts"),
    ("POST", "/b/k?uploadId=abc", {}, "CompleteMultipartUpload"),
    ("DELETE", "/b/k?uploadId=abc", {}, "AbortMultipartUpload"),
    ("POST", "/b/k?restore", {}, "RestoreObject"),
    ("PUT", "/b?publicAccessBlock", {}, "PutPublicAccessBlock"),
    ("GET", "/b?object-lock", {}, "GetObjectLockConfiguration"),
    ("DELETE", "/b?ownershipControls", {}, "DeleteBucketOwnershipControls"),
    ("GET", "/b/k?attributes", {"x-amz-object-attributes": "ETag"}, "GetObjectAttributes"),
    ("GET", "/b/k?attributes", {}, "GetObjectAttributes"),
    ("PUT", "/b?metrics&id=x", {}, "PutBucketMetricsConfiguration"),
    ("GET", "/b?metrics", {}, "ListBucketMetricsConfigurations"),
    ("GET", "/b?metrics&id=x", {}, "GetBucketMetricsConfiguration"),
    ("GET", "/b/?lifecycle", {}, "GetBucketLifecycleConfiguration"),
    ("PUT", "/b/?notification", {}, "PutBucketNotificationConfiguration"),
    ("GET", "/b/k?partNumber=2&versionId=v", {}, "GetObject"),
    ("GET", "/b/?list-type=1", {}, "ListObjects"),
    ("POST", "/WriteGetObjectResponse", {"x-amz-request-route": "r"}, "WriteGetObjectResponse"),
    ("GET", "/WriteGetObjectResponse", {}, "ListObjects"),
    ("PUT", "/b/k?renameObject", {"x-amz-rename-source": "/b/o"}, "RenameObject"),
    ("PATCH", "/b/k", {}, "PATCH"),
    ("BREW", "/b/k", {}, "unknown"),
    (None, "/b/k", {}, "unknown"),
    ("GET", None, {}, "unknown"),
])
def test_s3_operation(method, path, headers, expected):
    """S3 REST requests get botocore's operation names from method, path shape and query."""
    assert s3_operation(method, path, None, headers) == expected


def test_s3_operation_reads_params_held_apart_from_the_path():
    """A sub-resource in params (as SigV4 signing may leave it) names the operation too."""
    assert s3_operation("GET", "/b/", {"location": ""}, {}) == "GetBucketLocation"
    assert s3_operation("GET", "/b/", {"list-type": 2, "prefix": "x"}, {}) == "ListObjectsV2"


@pytest.mark.parametrize("method, path", [
    ("POST", "/b/k"),  # a browser-form upload goes to the bucket; no operation sends this
    ("POST", "/b"),
    ("HEAD", "/"),
    ("PUT", "/"),
    ("GET", "/b/k?uploads"),  # uploads is a bucket's sub-resource for GET
    ("DELETE", "/b?publicAccessBlock&acl"),  # two sub-resources no operation sends together
    ("GET", "/b?id=x"),  # an id alone: no list or get sends it
    ("DELETE", "/b?analytics"),  # DeleteBucketAnalyticsConfiguration requires its id
    ("PUT", "/b/k?partNumber=1"),  # an upload part without its upload
    ("GET", "/b/k?acl&tagging"),
])
def test_s3_request_no_operation_sends_is_named_by_its_method(method, path):
    """A request shape no S3 operation sends gets its HTTP method, never another operation's
    name."""
    assert s3_operation(method, path, None, {"Content-Length": "0"}) == method


# --- every operation of botocore's S3 model ----------------------------------------------


def _load_s3_model():
    """botocore's S3 model, or None where botocore is not installed (see s3_model)."""
    try:
        return generator.load_model()[0]
    except ImportError:
        return None


_MODEL = _load_s3_model()
_OPERATION_NAMES = (sorted(_MODEL.operation_names) if _MODEL is not None
                    else [row[0] for row in _s3_operations.OPERATIONS])


@pytest.fixture
def s3_model():
    """botocore's S3 model; under CI=true a missing botocore fails the test, else it skips."""
    if _MODEL is None:
        if IN_CI:
            pytest.fail("botocore is not installed (run .ci/setup python)")
        pytest.skip("botocore is not installed")
    return _MODEL


def _example(shape, everything, depth=0):
    """A value botocore serializes for shape: its required members only, or every member."""
    kind = shape.type_name
    if kind == "structure":
        names = shape.members if everything else shape.required_members
        return {name: _example(shape.members[name], everything, depth + 1) for name in names
                if depth < 4 or name in shape.required_members}
    if kind == "list":
        return [_example(shape.member, everything, depth + 1)]
    if kind == "map":
        return {"k": _example(shape.value, everything, depth + 1)}
    if kind == "string":
        return shape.enum[0] if shape.enum else "x"
    if kind in ("integer", "long"):
        return 1
    if kind in ("double", "float"):
        return 1.0
    if kind == "boolean":
        return True
    if kind == "timestamp":
        return datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone.utc)
    return b"x"  # blob


def _boto2_requests(model, name, everything):
    """The (method, path, params, headers) boto 2's hook would see for operation name, as
    botocore serializes it: query in the path (boto 2's S3Connection), and held apart."""
    from botocore.serialize import create_serializer

    operation = model.operation_model(name)
    shape = operation.input_shape
    params = _example(shape, everything) if shape is not None else {}
    for member, value in (("Bucket", "secret-bucket"), ("Key", "photos/2024/uploads")):
        if shape is not None and member in shape.members:
            params[member] = value
    request = create_serializer("rest-xml", include_validation=False).serialize_to_request(
        params, operation)
    method, path, query = request["method"], request["url_path"], request["query_string"]
    headers = dict(request["headers"])
    in_path = path
    if query:
        in_path += ("&" if "?" in path else "?") + urlencode(query, doseq=True)
    return [(method, in_path, {}, headers), (method, path, dict(query), headers)]


@pytest.mark.parametrize("everything", [False, True], ids=["required", "every-member"])
@pytest.mark.parametrize("name", _OPERATION_NAMES)
def test_every_s3_operation_gets_its_own_name(s3_model, name, everything):
    """Each operation of botocore's S3 model, serialized by botocore (with its required
    members, or with every member), is named as botocore names it on the boto 2 path; a
    request two operations send alike gets the current one's name."""
    expected = _s3_operations.SHARED.get(name, name)
    for method, path, params, headers in _boto2_requests(s3_model, name, everything):
        assert s3_operation(method, path, params, headers) == expected, (method, path)
        assert boto2_action("s3", method, path, params, headers) == expected


def test_shipped_s3_table_matches_the_installed_botocore(s3_model):
    """The table shipped in boto_prom/_s3_operations.py is what the installed botocore's S3
    model gives, byte for byte (else: python -m boto_prom._s3_model)."""
    rows, shared = generator.derive(s3_model)
    stale = "boto_prom/_s3_operations.py is stale: run python -m boto_prom._s3_model"
    assert rows == _s3_operations.OPERATIONS, stale
    assert shared == _s3_operations.SHARED, stale
    text = generator.render(rows, shared, s3_model, _s3_operations.BOTOCORE_VERSION)
    with open(_s3_operations.__file__, encoding="utf-8") as shipped:
        assert shipped.read() == text, stale


def test_shared_s3_requests_name_the_current_operation(s3_model):
    """Each request two operations send alike is named after one that is not deprecated."""
    assert _s3_operations.SHARED  # the lifecycle and notification pairs, at least
    for name, winner in _s3_operations.SHARED.items():
        assert not s3_model.operation_model(winner).deprecated, winner
        assert winner not in _s3_operations.SHARED


def test_s3_names_are_operation_names_or_methods():
    """Whatever the request, an S3 name is an operation of the table or an HTTP method: never
    a bucket, a key or a query value."""
    names = {row[0] for row in _s3_operations.OPERATIONS} | _HTTP_METHODS | {"unknown"}
    for method in ("GET", "PUT", "POST", "DELETE", "HEAD"):
        for path in ("/secret-bucket", "/secret-bucket/secret/key?acl", "/GetObject/ListParts",
                     "/b?secret-token=1&uploads", "/b/k?uploadId=secret&partNumber=secret"):
            assert s3_operation(method, path, None, {"x-amz-copy-source": "/b/o"}) in names


def test_s3_naming_needs_no_botocore():
    """The boto 2 path names S3 requests from the shipped table where botocore cannot import."""
    code = ("import sys; sys.modules['botocore'] = None\n"
            "from boto_prom.naming import s3_operation\n"
            "print(s3_operation('PUT', '/b?publicAccessBlock'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.stdout.strip() == "PutPublicAccessBlock", out.stderr


@pytest.mark.parametrize("service, method, path, params, headers, expected", [
    ("ec2", "POST", "/", {"Action": "DescribeVolumes", "Version": "2014"}, {}, "DescribeVolumes"),
    ("dynamodb", "POST", "/", {}, {"X-Amz-Target": "DynamoDB_20120810.PutItem"}, "PutItem"),
    ("kinesis", "POST", "/", {}, {"x-amz-target": b"Kinesis_20131202.PutRecord"}, "PutRecord"),
    ("s3", "GET", "/b/k", {}, {}, "GetObject"),
    ("route53", "GET", "/2013-04-01/hostedzone/Z123/rrset", {}, {}, "GET"),
    ("glacier", "POST", "/-/vaults/v/archives", None, None, "POST"),
    ("ec2", "POST", "/", {"Action": "Describe/../../etc"}, {}, "unknown"),
    ("ec2", "POST", "/", {"Action": "x" * 200}, {}, "unknown"),
    ("ec2", "POST", "/", "Action=Foo", "not headers", "POST"),
    ("unknown", None, None, None, None, "unknown"),
])
def test_boto2_action(service, method, path, params, headers, expected):
    """Query, JSON and REST requests each give a bounded action, never a path."""
    assert boto2_action(service, method, path, params, headers) == expected


def test_unhashable_action_is_unknown():
    """An Action that is not a string (a list, say) gives "unknown", not a TypeError."""
    assert boto2_action("ec2", "POST", "/", {"Action": ["Describe"]}, {}) == "unknown"


def test_readme_names_the_botocore_the_s3_table_came_from():
    """README's "Action names" says which botocore the shipped S3 table was generated from."""
    readme = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")
    with open(readme, encoding="utf-8") as text:
        assert f"botocore {_s3_operations.BOTOCORE_VERSION} " in text.read()


class _FakeOperation:
    def __init__(self, method, uri, deprecated=False):
        self.http = {"method": method, "requestUri": uri}
        self.input_shape = None
        self.deprecated = deprecated


class _FakeModel:
    """The little of botocore's ServiceModel the generator reads."""

    def __init__(self, **operations):
        self._operations = operations
        self.operation_names = list(operations)

    def operation_model(self, name):
        return self._operations[name]


def test_generator_settles_a_shared_request_by_deprecation_and_stops_on_a_new_tie():
    """Two operations sending one request: the deprecated one is named after the other; two
    current ones stop the generator with a sentence, so a new tie gets a decision."""
    _, shared = generator.derive(_FakeModel(
        GetThing=_FakeOperation("GET", "/{Bucket}?thing", deprecated=True),
        GetThingConfiguration=_FakeOperation("GET", "/{Bucket}?thing")))
    assert shared == {"GetThing": "GetThingConfiguration"}
    with pytest.raises(ValueError, match="send the same request"):
        generator.derive(_FakeModel(GetA=_FakeOperation("GET", "/{Bucket}?thing"),
                                    GetB=_FakeOperation("GET", "/{Bucket}?thing")))
    with pytest.raises(ValueError, match="cannot read"):
        generator.derive(_FakeModel(GetC=_FakeOperation("GET", "/{Bucket}/{Id}/x")))
