"""The record: one AWS call as a plain, immutable tuple, with the fields the CSV writer reads."""

from __future__ import annotations

import pytest

from boto_prom.record import NO_RESPONSE, UNKNOWN, RequestRecord

FIELDS = ("sdk", "aws_service", "aws_region", "action", "status_code", "duration_seconds",
          "request_bytes", "response_bytes", "error_type", "throttled", "request_id",
          "timestamp", "attempts", "retries_exhausted")


def make():
    """A boto 2 EC2 call that took a quarter second."""
    return RequestRecord("boto2", "ec2", "us-west-2", "DescribeVolumes", "200", 0.25, 100, 42,
                         None, False, "REQ-1", 1700000000.0)


def test_fields_keep_their_names_and_order():
    """The fields are the ones of the first version, in the same order, with the same defaults."""
    rec = make()
    assert RequestRecord._fields == FIELDS
    assert rec.attempts is None and rec.retries_exhausted is False
    assert tuple(rec) == ("boto2", "ec2", "us-west-2", "DescribeVolumes", "200", 0.25, 100, 42,
                          None, False, "REQ-1", 1700000000.0, None, False)


@pytest.mark.parametrize("field", FIELDS)
def test_the_record_is_immutable(field):
    """Assigning any field of a record raises; the record keeps its value."""
    rec = make()
    before = getattr(rec, field)
    with pytest.raises(AttributeError):
        setattr(rec, field, "changed")
    assert getattr(rec, field) == before


def test_a_changed_record_is_a_new_one():
    """_replace gives a new record and leaves the one a sink may still hold as it was."""
    rec = make()
    other = rec._replace(status_code="503")
    assert (rec.status_code, other.status_code) == ("200", "503")


def test_fallback_values():
    """What an unreadable label and a call without a response are recorded as."""
    assert (UNKNOWN, NO_RESPONSE) == ("unknown", "none")
