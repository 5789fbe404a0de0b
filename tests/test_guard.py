"""The guard: a failure inside boto-prom is counted, logged once loudly, and swallowed."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import Counter

from boto_prom.guard import Guard


@pytest.fixture
def hook_errors(registry):
    """The boto_prom_hook_errors counter, in the test's own registry."""
    return Counter("boto_prom_hook_errors", "failures", ("stage",), registry=registry)


def errors(registry, stage):
    return registry.get_sample_value("boto_prom_hook_errors_total", {"stage": stage})


def test_a_failure_is_counted_and_logged_once_as_a_warning(registry, hook_errors, caplog):
    """Each failure counts; the first of a stage is a warning with its traceback, later ones
    are debug lines."""
    guard = Guard(hook_errors)
    with caplog.at_level(logging.DEBUG, logger="boto_prom"):
        for _ in range(3):
            try:
                raise KeyError("boom")
            except KeyError:
                guard.failed("action")
        guard.failed("status", "a detail")
    assert errors(registry, "action") == 3 and errors(registry, "status") == 1
    levels = [(r.levelno, bool(r.exc_info)) for r in caplog.records]
    assert levels == [(logging.WARNING, True), (logging.DEBUG, True), (logging.DEBUG, True),
                      (logging.WARNING, False)]
    assert "action failed; the AWS call is unaffected" in caplog.records[0].getMessage()
    assert "(a detail)" in caplog.records[3].getMessage()


def test_failed_never_raises():
    """A guard whose counter itself fails still returns quietly."""

    class Broken:
        def labels(self, *values):
            raise RuntimeError("the metric is broken")

    Guard(Broken()).failed("record")


@pytest.mark.parametrize("header, size, counted", [
    (None, None, 0), ("0", 0, 0), ("42", 42, 0), (17, 17, 0),
    ("-1", None, 1), ("lots", None, 1), (b"\xff", None, 1), (object(), None, 1),
])
def test_size_reads_a_byte_count(registry, hook_errors, header, size, counted):
    """A header's byte count, None when absent; an unusable one is None and counted."""
    guard = Guard(hook_errors)
    assert guard.size(header, "response_size") == size
    assert (errors(registry, "response_size") or 0) == counted
