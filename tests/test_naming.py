"""Label values read from hosts and requests: bounded, botocore-compatible, secret-free."""

import pytest

from boto_prom.naming import boto2_action, parse_host, s3_operation


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
