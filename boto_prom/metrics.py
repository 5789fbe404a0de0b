"""The Prometheus sink: the metric contract, built once per registry, fed one record at a time.

The metric and label names here are public API: the Grafana dashboard, the alert rules and
users' own queries depend on them. Renaming one is a changelog entry.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
import weakref
from typing import Dict, List, Optional, Sequence, Tuple

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Info

from ._errors import ConfigurationError
from ._version import __version__
from .record import RequestRecord

# AWS API latency, in seconds: OpenTelemetry's HTTP-client advice (5 ms to 10 s), extended to a
# minute for slow S3 transfers and boto's backoff sleeps.
DEFAULT_DURATION_BUCKETS: Tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0,
)
# Request and response bodies, in bytes: 64 B to 1 GiB in powers of four.
DEFAULT_SIZE_BUCKETS: Tuple[float, ...] = tuple(float(64 * 4**i) for i in range(13))

LABELS = ("aws_service", "aws_region", "action")

# The stages of boto_prom_hook_errors_total that exist from the start (a sink or adapter may
# add its own on first failure).
HOOK_STAGES = ("record", "metrics", "action", "duration", "status", "request_size",
               "response_size")

DEFAULT_MAX_LABEL_SETS = 2000
"""Distinct (aws_service, aws_region, action) label sets kept before new ones are folded."""

OTHER = "_other"
"""The label value that folded label sets are counted under."""

MAX_ERROR_TYPES = 50
"""Distinct error_type values kept per label set; more are counted as error_type="_other"."""

# Past the cap, a new label set keeps its service and region and becomes action="_other";
# only this many such (service, region, "_other") sets are made, then everything else goes
# to ("_other", "_other", "_other"), so the total stays bounded whatever the labels are.
_FOLD_SETS = 100

# The exemplar's label name; prometheus_client allows 128 characters for names and values
# together, so longer request ids get no exemplar (a cut id would find nothing).
EXEMPLAR_LABEL = "aws_request_id"
_EXEMPLAR_MAX_ID = 128 - len(EXEMPLAR_LABEL)
# A bucket keeps only its latest exemplar until the next scrape, so one per bucket per second
# is all a scrape can see; building one per call cost about a fifth of the per-call overhead.
EXEMPLAR_INTERVAL_SECONDS = 1.0
_monotonic = time.monotonic


def validate_buckets(buckets: object, what: str) -> Tuple[float, ...]:
    """Buckets as a tuple of floats, or a ConfigurationError saying what is wrong with them."""
    try:
        values = tuple(float(b) for b in buckets)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"{what} must be a list of numbers in increasing order, not {buckets!r}."
        ) from None
    finite = [b for b in values if not math.isinf(b)]
    if not finite or any(b <= 0 or math.isnan(b) for b in finite) or any(
        a >= b for a, b in zip(finite, finite[1:])
    ):
        raise ConfigurationError(
            f"{what} must be positive numbers in strictly increasing order, not {buckets!r}."
        )
    return tuple(finite)


class _Children:
    """The label-bound children of one (service, region, action) label set."""

    __slots__ = ("labels", "duration", "request_size", "response_size", "throttled", "requests",
                 "errors", "retries", "exhausted", "exemplar_due", "folded")

    def __init__(self, metrics: "PrometheusMetrics", labels: Tuple[str, str, str]) -> None:
        self.labels = labels
        self.folded = False  # the label set calls past max_label_sets are counted under
        self.duration = metrics.duration.labels(*labels)
        self.request_size = metrics.request_size.labels(*labels)
        self.response_size = metrics.response_size.labels(*labels)
        self.throttled = metrics.throttled.labels(*labels)
        # Status codes and error types vary within a label set: bound lazily, per value.
        self.requests: Dict[str, object] = {}
        self.errors: Dict[str, object] = {}
        # Only botocore says how many attempts a call made: bound on its first retry, so boto 2
        # label sets get no always-zero series.
        self.retries: Optional[object] = None
        self.exhausted: Dict[str, object] = {}
        # Per duration bucket (+Inf last): when it may next take an exemplar.
        self.exemplar_due: List[float] = [0.0] * (len(metrics.duration_buckets) + 1)


class PrometheusMetrics:
    """The metric contract in one registry, and the sink that records into it.

    Build it with :func:`metrics_for`, which returns the one instance a registry has.
    """

    stage = "metrics"

    def __init__(
        self,
        registry: CollectorRegistry,
        duration_buckets: Sequence[float] = DEFAULT_DURATION_BUCKETS,
        size_buckets: Sequence[float] = DEFAULT_SIZE_BUCKETS,
        max_label_sets: int = DEFAULT_MAX_LABEL_SETS,
    ) -> None:
        self.registry = registry
        self.max_label_sets = max_label_sets
        self.duration_buckets = tuple(duration_buckets)
        self.size_buckets = tuple(size_buckets)
        self.requests = Counter(
            "boto_requests", "AWS API requests made through boto, by HTTP status.",
            LABELS + ("status_code",), registry=registry,
        )
        self.duration = Histogram(
            "boto_request_duration_seconds",
            "Duration of AWS API requests made through boto, in seconds.",
            LABELS, buckets=self.duration_buckets, registry=registry,
        )
        self.errors = Counter(
            "boto_request_errors",
            "AWS API requests that failed (HTTP status >= 400 or no response), by error type.",
            LABELS + ("error_type",), registry=registry,
        )
        self.throttled = Counter(
            "boto_throttled_requests", "AWS API requests that AWS throttled.",
            LABELS, registry=registry,
        )
        self.request_size = Histogram(
            "boto_request_size_bytes", "Size of AWS API request bodies, in bytes.",
            LABELS, buckets=self.size_buckets, registry=registry,
        )
        self.response_size = Histogram(
            "boto_response_size_bytes",
            "Size of AWS API response bodies (Content-Length), in bytes.",
            LABELS, buckets=self.size_buckets, registry=registry,
        )
        # What only botocore reports (boto 2 retries out of its hook's sight): each HTTP attempt,
        # retries, calls that ran out of attempts, and calls under way.
        self.attempt_duration = Histogram(
            "boto_attempt_duration_seconds",
            "Duration of each HTTP attempt of an AWS API request (botocore only), in seconds.",
            LABELS, buckets=self.duration_buckets, registry=registry,
        )
        self.retries = Counter(
            "boto_request_retries",
            "Retried HTTP attempts of AWS API requests (botocore only).",
            LABELS, registry=registry,
        )
        self.retries_exhausted = Counter(
            "boto_retries_exhausted",
            "AWS API requests that failed with a retryable error after their last allowed "
            "attempt (botocore only), by error type.",
            LABELS + ("error_type",), registry=registry,
        )
        self.in_flight = Gauge(
            "boto_requests_in_flight",
            "AWS API requests under way: first attempt sent, not yet finished (botocore only).",
            ("aws_service", "aws_region"), registry=registry, multiprocess_mode="livesum",
        )
        self.hook_errors = Counter(
            "boto_prom_hook_errors",
            "Failures inside boto-prom itself, by stage; the AWS call went ahead regardless.",
            ("stage",), registry=registry,
        )
        # Known stages start at zero, so rate() and alerts see a series before any failure.
        for stage in HOOK_STAGES:
            self.hook_errors.labels(stage)
        self.folded = Counter(
            "boto_prom_label_sets_folded",
            f'AWS calls counted under action="{OTHER}" because max_label_sets was reached.',
            registry=registry,
        )
        self.build_info = _build_info(registry)
        # Every label set recorded so far, folded ones included: bounded by max_label_sets
        # plus the fold sets, so it doubles as the cache of bound children.
        self._children: Dict[Tuple[str, str, str], _Children] = {}
        self._kept = 0
        self._fold_sets = 0
        self._new_lock = threading.Lock()
        # prometheus_client keeps no exemplars in multiprocess mode: skip building them there.
        from .multiprocess import in_multiprocess_mode

        self.exemplars = not in_multiprocess_mode()
        self.wants_request_id = self.exemplars

    def label_set(self, labels: Tuple[str, str, str]) -> Tuple[str, str, str]:
        """The label set a call with these labels is counted under (folded past the cap)."""
        return self._bound(labels).labels

    def _bound(self, labels: Tuple[str, str, str]) -> _Children:
        children = self._children.get(labels)
        if children is None:
            children = self._new_label_set(labels)
        return children

    def _new_label_set(self, labels: Tuple[str, str, str]) -> _Children:
        # The slow path, once per label set (and per call of a folded one): under a lock so
        # that racing threads cannot push the count past the cap.
        with self._new_lock:
            children = self._children.get(labels)
            if children is not None:
                return children
            if self._kept < self.max_label_sets:
                self._kept += 1
                children = self._children[labels] = _Children(self, labels)
                return children
            folded = (labels[0], labels[1], OTHER)
            children = self._children.get(folded)
            if children is None:
                if self._fold_sets >= _FOLD_SETS:
                    folded = (OTHER, OTHER, OTHER)
                    children = self._children.get(folded)
                if children is None:
                    self._fold_sets += 1
                    children = self._children[folded] = _Children(self, folded)
                    children.folded = True
            return children

    def record(self, rec: RequestRecord) -> None:
        """Count one finished call in every metric it belongs to."""
        children = self._bound((rec.aws_service, rec.aws_region, rec.action))
        labels = children.labels
        if children.folded:
            self.folded.inc()
        status = rec.status_code
        counter = children.requests.get(status)
        if counter is None:
            counter = children.requests[status] = self.requests.labels(*labels, status)
        counter.inc()  # type: ignore[attr-defined]
        duration = rec.duration_seconds
        if duration is not None:
            request_id = rec.request_id
            if request_id and self.exemplars and len(request_id) <= _EXEMPLAR_MAX_ID:
                bucket = bisect_left(self.duration_buckets, duration)
                now = _monotonic()
                if now >= children.exemplar_due[bucket]:
                    children.exemplar_due[bucket] = now + EXEMPLAR_INTERVAL_SECONDS
                    children.duration.observe(duration, {EXEMPLAR_LABEL: request_id})
                else:
                    children.duration.observe(duration)
            else:
                children.duration.observe(duration)
        if rec.request_bytes is not None:
            children.request_size.observe(rec.request_bytes)
        if rec.response_bytes is not None:
            children.response_size.observe(rec.response_bytes)
        error_type = rec.error_type
        if error_type is not None:
            counter = children.errors.get(error_type)
            if counter is None:
                if len(children.errors) >= MAX_ERROR_TYPES:
                    # Error codes come from the server: past a bound, fold them too.
                    error_type = OTHER
                    counter = children.errors.get(OTHER)
                if counter is None:
                    counter = children.errors[error_type] = self.errors.labels(*labels,
                                                                               error_type)
            counter.inc()  # type: ignore[attr-defined]
            if rec.throttled:
                children.throttled.inc()
            if rec.retries_exhausted:
                counter = children.exhausted.get(error_type)
                if counter is None:
                    counter = children.exhausted[error_type] = self.retries_exhausted.labels(
                        *labels, error_type)
                counter.inc()  # type: ignore[attr-defined]
        attempts = rec.attempts
        if attempts is not None and attempts > 1:
            retries = children.retries
            if retries is None:
                retries = children.retries = self.retries.labels(*labels)
            retries.inc(attempts - 1)  # type: ignore[attr-defined]


def _build_info(registry: CollectorRegistry) -> object:
    """``boto_prom_build_info{version}`` = 1, as an Info, or as a Gauge in multiprocess mode."""
    from .multiprocess import in_multiprocess_mode

    if not in_multiprocess_mode():
        info = Info("boto_prom_build", "boto-prom build information.", registry=registry)
        info.info({"version": __version__})
        return info
    # Info metrics live in process memory, which the multiprocess collector never reads; a
    # Gauge is written to the shared directory. Every Gauge needs a multiprocess_mode:
    # 'livemax' shows one series per version run by live processes (not one per pid, as
    # 'liveall' would). In-flight gauges want 'livesum'.
    gauge = Gauge("boto_prom_build_info", "boto-prom build information.", ("version",),
                  registry=registry, multiprocess_mode="livemax")
    gauge.labels(__version__).set(1)
    return gauge


_by_registry: "weakref.WeakKeyDictionary[CollectorRegistry, PrometheusMetrics]" = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def metrics_for(
    registry: Optional[CollectorRegistry] = None,
    duration_buckets: Optional[Sequence[float]] = None,
    max_label_sets: Optional[int] = None,
) -> PrometheusMetrics:
    """The metrics of one registry, created on first use and shared by every hook after.

    Args:
        registry: where the metrics live; the global ``prometheus_client.REGISTRY`` by default.
        duration_buckets: histogram buckets in seconds for ``boto_request_duration_seconds``;
            only the first caller per registry sets them, a later caller asking for others
            gets a ConfigurationError.
        max_label_sets: distinct (aws_service, aws_region, action) label sets to keep
            before new ones are counted under ``action="_other"`` (default 2000); set by
            the first caller per registry, like the buckets.
    """
    registry = REGISTRY if registry is None else registry
    wanted = None if duration_buckets is None else validate_buckets(duration_buckets, "buckets")
    with _lock:
        metrics = _by_registry.get(registry)
        if metrics is None:
            try:
                metrics = PrometheusMetrics(registry, wanted or DEFAULT_DURATION_BUCKETS,
                                            max_label_sets=max_label_sets
                                            or DEFAULT_MAX_LABEL_SETS)
            except ValueError as exc:
                raise ConfigurationError(
                    "boto-prom's metric names are already registered in this registry by "
                    f"something else ({exc}); pass registry= with a registry of its own."
                ) from None
            _by_registry[registry] = metrics
        elif wanted is not None and wanted != metrics.duration_buckets:
            raise ConfigurationError(
                f"buckets={list(wanted)} differ from the buckets this registry already uses "
                f"({list(metrics.duration_buckets)}); pass the same buckets or none."
            )
        elif max_label_sets is not None and max_label_sets != metrics.max_label_sets:
            raise ConfigurationError(
                f"max_label_sets={max_label_sets} differs from the cap this registry already "
                f"uses ({metrics.max_label_sets}); pass the same value or none."
            )
        return metrics
