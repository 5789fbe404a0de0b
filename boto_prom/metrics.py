"""The Prometheus sink: the metric contract, built once per registry, and one
:class:`Bound` per label set that records a call with label lookups and inc/observe only.

The metric and label names here are public API: the Grafana dashboard, the alert rules and
users' own queries depend on them. Renaming one is a changelog entry.
"""

from __future__ import annotations

import threading
import time
import weakref
from bisect import bisect_left
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.registry import Collector

from ._version import __version__
from .settings import (DETAILED_METRICS_ENV, ConfigurationError, detailed_metrics_from_env,
                       in_multiprocess_mode)

# Every series is paid for on every scrape, in every replica, by Prometheus: by default a label
# set (service, region, action) costs at most 24 series. The per-action duration histogram gets
# the buckets where AWS calls live, 5 ms to a few seconds, in 1-2.5-5 steps (so a percentile is
# off by at most one such step), and 30 s for backoff sleeps and slow transfers; the 1 s bucket
# is the latency alert's threshold. The high resolution lives in a histogram without the action
# label (SERVICE_DURATION_BUCKETS), whose series do not grow with the number of actions.
DEFAULT_DURATION_BUCKETS: Tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
# detailed_metrics=True: OpenTelemetry's HTTP-client advice (5 ms to 10 s), extended to a minute
# for slow S3 transfers and boto's backoff sleeps (the buckets of boto-prom 0.x).
DETAILED_DURATION_BUCKETS: Tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0,
)
# Per (service, region): 1 ms to a minute, no step wider than 2x below 5 s.
SERVICE_DURATION_BUCKETS: Tuple[float, ...] = (
    0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15,
    0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0,
)
# Request and response bodies, in bytes: a histogram in both modes, since a Pushgateway refuses
# a push whose metric has another type in any group it already holds (a detailed job's, or
# boto-prom 0.x's). By default one bucket, 1 MiB ("how many bodies are larger"), beside the
# count and sum the mean needs; with detailed_metrics=True 64 B to 1 GiB in powers of four.
DEFAULT_SIZE_BUCKETS: Tuple[float, ...] = (1024.0 * 1024,)
DETAILED_SIZE_BUCKETS: Tuple[float, ...] = tuple(float(64 * 4**i) for i in range(13))

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
# is all a scrape can see, and building one is dear next to an observe.
EXEMPLAR_INTERVAL_SECONDS = 1.0
_monotonic = time.monotonic


class Bound:
    """One (aws_service, aws_region, action) label set, ready to record a call.

    The label set is the one calls are counted under: folded into ``action="_other"`` once
    ``max_label_sets`` is reached. Its children are bound once; status codes and error types,
    which vary within a label set, are bound on their first use.

    Get one from :meth:`boto_prom.recorder.Recorder.bind`, which has applied the filters.
    """

    __slots__ = ("labels", "folded", "duration", "service_duration", "request_size",
                 "response_size", "throttled", "throttled_attempts", "requests", "errors",
                 "retries", "exhausted", "attempt", "in_flight", "_exemplar_at", "_metrics")

    def __init__(self, metrics: "PrometheusMetrics", labels: Tuple[str, str, str],
                 folded: bool) -> None:
        self._metrics = metrics
        self.labels = labels
        # Each call under a folded label set also counts in boto_prom_label_sets_folded_total.
        self.folded = metrics.folded if folded else None
        self.duration = metrics.duration.labels(*labels)
        self.service_duration = metrics.service_duration.labels(labels[0], labels[1])
        self.request_size = metrics.request_size.labels(*labels)
        self.response_size = metrics.response_size.labels(*labels)
        # Bound on first use, like the retries below: a series that stays at zero says nothing.
        self.throttled: Optional[object] = None
        self.throttled_attempts: Optional[object] = None
        self.requests: Dict[str, object] = {}
        self.errors: Dict[str, object] = {}
        # Only botocore says how many attempts a call made: bound on its first retry, so boto 2
        # label sets get no always-zero series.
        self.retries: Optional[object] = None
        self.exhausted: Dict[str, object] = {}
        # botocore's in-flight gauge, and with detailed metrics its attempt histogram: bound by
        # :meth:`follow_attempts`.
        self.attempt: Optional[object] = None
        self.in_flight: Optional[object] = None
        # Per duration bucket (+Inf last): when it may next take an exemplar.
        self._exemplar_at: List[float] = [0.0] * (len(metrics.duration_buckets) + 1)

    def follow_attempts(self) -> "Bound":
        """Bind the per-attempt children too (botocore sees attempts; boto 2 does not)."""
        if self.in_flight is None:
            metrics = self._metrics
            if metrics.attempt_duration is not None:
                self.attempt = metrics.attempt_duration.labels(*self.labels)
            self.in_flight = metrics.in_flight.labels(self.labels[0], self.labels[1])
        return self

    # The per-call path: label lookups and inc/observe, nothing else.
    def record(self, status_code: str, duration: Optional[float],
               request_bytes: Optional[int], response_bytes: Optional[int],
               error_type: Optional[str], throttled: bool, request_id: Optional[str],
               attempts: Optional[int] = None, exhausted: bool = False) -> None:
        """Count one finished call in every metric it belongs to (arguments as the fields of
        :class:`boto_prom.record.RequestRecord`)."""
        counter = self.requests.get(status_code)
        if counter is None:
            counter = self._child(self.requests, self._metrics.requests, status_code)
        counter.inc()  # type: ignore[attr-defined]
        if self.folded is not None:
            self.folded.inc()  # type: ignore[attr-defined]
        if duration is not None:
            if request_id is not None and self._metrics.exemplars:
                self._observe_with_exemplar(duration, request_id)
            else:
                self.duration.observe(duration)  # type: ignore[attr-defined]
            self.service_duration.observe(duration)  # type: ignore[attr-defined]
        if request_bytes is not None:
            self.request_size.observe(request_bytes)  # type: ignore[attr-defined]
        if response_bytes is not None:
            self.response_size.observe(response_bytes)  # type: ignore[attr-defined]
        if error_type is not None:
            self._error(error_type, throttled, exhausted, attempts is None)
        if attempts is not None and attempts > 1:
            retries = self.retries
            if retries is None:
                retries = self.retries = self._metrics.retries.labels(*self.labels)
            retries.inc(attempts - 1)  # type: ignore[attr-defined]

    def _child(self, children: Dict[str, object], family: object, value: str) -> object:
        child = children[value] = family.labels(*self.labels, value)  # type: ignore[attr-defined]
        return child

    def count_throttled_attempt(self) -> None:
        """Count one HTTP attempt AWS throttled (the adapter saw its answer: botocore's
        per-attempt event, or boto 2's hook, which sees one attempt per call)."""
        counter = self.throttled_attempts
        if counter is None:
            counter = self.throttled_attempts = (
                self._metrics.throttled_attempts.labels(*self.labels))
        counter.inc()  # type: ignore[attr-defined]

    def _error(self, error_type: str, throttled: bool, exhausted: bool,
               one_attempt: bool) -> None:
        counter = self.errors.get(error_type)
        if counter is None:
            if len(self.errors) >= MAX_ERROR_TYPES:
                # Error codes come from the server: past a bound, fold them too.
                error_type = OTHER
                counter = self.errors.get(OTHER)
            if counter is None:
                counter = self._child(self.errors, self._metrics.errors, error_type)
        counter.inc()  # type: ignore[attr-defined]
        if throttled:
            counter = self.throttled
            if counter is None:
                counter = self.throttled = self._metrics.throttled.labels(*self.labels)
            counter.inc()  # type: ignore[attr-defined]
            if one_attempt:
                # An adapter that reports no attempts (boto 2) saw only the attempt it
                # records; botocore counts each of its attempts as it ends.
                self.count_throttled_attempt()
        if exhausted:
            counter = self.exhausted.get(error_type)
            if counter is None:
                counter = self._child(self.exhausted, self._metrics.retries_exhausted,
                                      error_type)
            counter.inc()  # type: ignore[attr-defined]

    def exemplar_due(self, duration: float) -> bool:
        """True when a call of this duration would leave an exemplar: an adapter for which
        reading the request id costs header lookups reads it only then (or for the CSV file)."""
        at, buckets = self._exemplar_at, self._metrics.duration_buckets
        return self._metrics.exemplars and _monotonic() >= at[bisect_left(buckets, duration)]

    def _observe_with_exemplar(self, duration: float, request_id: str) -> None:
        # A bucket keeps only its latest exemplar until the next scrape: one per bucket per
        # interval is all a scrape can see, so the rest are observed without one.
        if len(request_id) > _EXEMPLAR_MAX_ID:
            self.duration.observe(duration)  # type: ignore[attr-defined]
            return
        bucket = bisect_left(self._metrics.duration_buckets, duration)
        now = _monotonic()
        if now >= self._exemplar_at[bucket]:
            self._exemplar_at[bucket] = now + EXEMPLAR_INTERVAL_SECONDS
            self.duration.observe(duration, {EXEMPLAR_LABEL: request_id})  # type: ignore
        else:
            self.duration.observe(duration)  # type: ignore[attr-defined]


class PrometheusMetrics:
    """The metric contract in one registry, and the bound label sets that record into it.

    Build it with :func:`metrics_for`, which returns the one instance a registry has. Its
    families reach the registry through one collector of ours, which leaves out the
    ``_created`` samples: a creation time per series says nothing an operator asks about, and
    prometheus_client's own switch for them (``disable_created_metrics``) would drop them from
    the program's own metrics too.

    Args:
        registry: where the metrics are exposed.
        duration_buckets: the per-action duration buckets (default: DEFAULT_DURATION_BUCKETS,
            or DETAILED_DURATION_BUCKETS with ``detailed``).
        size_buckets: the size histograms' buckets (default: DEFAULT_SIZE_BUCKETS, or
            DETAILED_SIZE_BUCKETS with ``detailed``).
        max_label_sets: label sets kept before new ones are folded.
        detailed: also export the per-attempt durations, and use the finer per-action
            duration buckets and the full size buckets.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        duration_buckets: Optional[Sequence[float]] = None,
        size_buckets: Optional[Sequence[float]] = None,
        max_label_sets: int = DEFAULT_MAX_LABEL_SETS,
        detailed: bool = False,
    ) -> None:
        self.registry = registry
        self.max_label_sets = max_label_sets
        self.detailed = detailed
        if duration_buckets is None:
            duration_buckets = DETAILED_DURATION_BUCKETS if detailed else DEFAULT_DURATION_BUCKETS
        self.duration_buckets = tuple(duration_buckets)
        if size_buckets is None:
            size_buckets = DETAILED_SIZE_BUCKETS if detailed else DEFAULT_SIZE_BUCKETS
        self.size_buckets = tuple(size_buckets)
        self.requests = Counter(
            "boto_requests", "AWS API requests made through boto, by HTTP status.",
            LABELS + ("status_code",), registry=None,
        )
        self.duration = Histogram(
            "boto_request_duration_seconds",
            "Duration of AWS API requests made through boto, in seconds.",
            LABELS, buckets=self.duration_buckets, registry=None,
        )
        self.service_duration = Histogram(
            "boto_service_request_duration_seconds",
            "Duration of AWS API requests made through boto, per service and region (every "
            "action together), in finer buckets, in seconds.",
            LABELS[:2], buckets=SERVICE_DURATION_BUCKETS, registry=None,
        )
        self.errors = Counter(
            "boto_request_errors",
            "AWS API requests that failed (HTTP status >= 400 or no response), by error type.",
            LABELS + ("error_type",), registry=None,
        )
        self.throttled = Counter(
            "boto_throttled_requests",
            "AWS API requests whose final answer was AWS throttling them.",
            LABELS, registry=None,
        )
        self.throttled_attempts = Counter(
            "boto_throttled_attempts",
            "HTTP attempts of AWS API requests that AWS throttled, those retries absorbed "
            "included.",
            LABELS, registry=None,
        )
        self.request_size = Histogram(
            "boto_request_size_bytes", "Size of AWS API request bodies, in bytes.",
            LABELS, buckets=self.size_buckets, registry=None,
        )
        self.response_size = Histogram(
            "boto_response_size_bytes",
            "Size of AWS API response bodies (Content-Length), in bytes.",
            LABELS, buckets=self.size_buckets, registry=None,
        )
        # What only botocore reports (boto 2 retries out of its hook's sight): each HTTP attempt
        # (detailed only), retries, calls that ran out of attempts, and calls under way.
        self.attempt_duration: Optional[Histogram] = None
        if detailed:
            self.attempt_duration = Histogram(
                "boto_attempt_duration_seconds",
                "Duration of each HTTP attempt of an AWS API request (botocore only), in "
                "seconds.",
                LABELS, buckets=self.duration_buckets, registry=None,
            )
        self.retries = Counter(
            "boto_request_retries",
            "Retried HTTP attempts of AWS API requests (botocore only).",
            LABELS, registry=None,
        )
        self.retries_exhausted = Counter(
            "boto_retries_exhausted",
            "AWS API requests that failed with a retryable error after their last allowed "
            "attempt (botocore only), by error type.",
            LABELS + ("error_type",), registry=None,
        )
        self.in_flight = Gauge(
            "boto_requests_in_flight",
            "AWS API requests under way: first attempt sent, not yet finished (botocore only).",
            ("aws_service", "aws_region"), registry=None, multiprocess_mode="livesum",
        )
        self.hook_errors = Counter(
            "boto_prom_hook_errors",
            "Failures inside boto-prom itself, by stage; the AWS call went ahead regardless.",
            ("stage",), registry=None,
        )
        # Known stages start at zero, so rate() and alerts see a series before any failure.
        for stage in HOOK_STAGES:
            self.hook_errors.labels(stage)
        self.folded = Counter(
            "boto_prom_label_sets_folded",
            f'AWS calls counted under action="{OTHER}" because max_label_sets was reached.',
            registry=None,
        )
        self.build_info = _build_info()
        families = [self.requests, self.duration, self.service_duration, self.errors,
                    self.throttled, self.throttled_attempts, self.request_size,
                    self.response_size, self.attempt_duration, self.retries,
                    self.retries_exhausted, self.in_flight, self.hook_errors, self.folded,
                    self.build_info]
        # Registered at once, or not at all when a name is taken (ValueError).
        registry.register(WithoutCreated([f for f in families if f is not None]))
        # Every label set recorded so far, folded ones included: bounded by max_label_sets
        # plus the fold sets.
        self._bound: Dict[Tuple[str, str, str], Bound] = {}
        self._kept = 0
        self._fold_sets = 0
        self._new_lock = threading.Lock()
        # prometheus_client keeps no exemplars in multiprocess mode: skip building them there.
        self.exemplars = not in_multiprocess_mode()

    def bound(self, labels: Tuple[str, str, str]) -> Bound:
        """The bound label set calls with these labels are counted under (folded past the
        cap). Once per label set and adapter: adapters cache what it returns."""
        bound = self._bound.get(labels)
        if bound is not None:
            return bound
        # Under a lock, so that racing threads cannot push the count past the cap.
        with self._new_lock:
            bound = self._bound.get(labels)
            if bound is not None:
                return bound
            if self._kept < self.max_label_sets:
                self._kept += 1
                bound = self._bound[labels] = Bound(self, labels, folded=False)
                return bound
            folded = (labels[0], labels[1], OTHER)
            bound = self._bound.get(folded)
            if bound is None:
                if self._fold_sets >= _FOLD_SETS:
                    folded = (OTHER, OTHER, OTHER)
                    bound = self._bound.get(folded)
                if bound is None:
                    self._fold_sets += 1
                    bound = self._bound[folded] = Bound(self, folded, folded=True)
            return bound


class WithoutCreated(Collector):
    """Exposes metrics as their own ``collect`` gives them, less the ``_created`` samples.

    A collector of ours rather than prometheus_client's ``disable_created_metrics()``, which
    would change every metric of the process, the program's own included.

    Args:
        metrics: prometheus_client metrics built with ``registry=None``.
    """

    def __init__(self, metrics: Sequence[object]) -> None:
        self._metrics = tuple(metrics)

    def describe(self) -> List[object]:
        """The families, without samples (what the registry checks names with)."""
        return [family for metric in self._metrics
                for family in metric.describe()]  # type: ignore[attr-defined]

    def collect(self) -> Iterable[object]:
        """Each metric's families, ``_created`` samples left out."""
        for metric in self._metrics:
            for family in metric.collect():  # type: ignore[attr-defined]
                created = family.name + "_created"
                samples = family.samples
                family.samples = [s for s in samples if s.name != created]
                yield family


def _build_info() -> object:
    """``boto_prom_build_info{version}`` = 1, as an Info, or as a Gauge in multiprocess mode."""
    if not in_multiprocess_mode():
        info = Info("boto_prom_build", "boto-prom build information.", registry=None)
        info.info({"version": __version__})
        return info
    # Info metrics live in process memory, which the multiprocess collector never reads; a
    # Gauge is written to the shared directory. Every Gauge needs a multiprocess_mode:
    # 'livemax' shows one series per version run by live processes (not one per pid, as
    # 'liveall' would). In-flight gauges want 'livesum'.
    gauge = Gauge("boto_prom_build_info", "boto-prom build information.", ("version",),
                  registry=None, multiprocess_mode="livemax")
    gauge.labels(__version__).set(1)
    return gauge


_by_registry: "weakref.WeakKeyDictionary[CollectorRegistry, PrometheusMetrics]" = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def metrics_for(
    registry: CollectorRegistry,
    duration_buckets: Optional[Sequence[float]] = None,
    max_label_sets: Optional[int] = None,
    detailed: Optional[bool] = None,
) -> PrometheusMetrics:
    """The metrics of one registry, created on first use and shared by every hook after.

    Args:
        registry: where the metrics live.
        duration_buckets: histogram buckets in seconds for ``boto_request_duration_seconds``,
            as :func:`boto_prom.settings.check_buckets` returns them;
            only the first caller per registry sets them, a later caller asking for others
            gets a ConfigurationError.
        max_label_sets: distinct (aws_service, aws_region, action) label sets to keep
            before new ones are counted under ``action="_other"`` (default 2000); set by
            the first caller per registry, like the buckets.
        detailed: the detailed metrics (all size buckets, per-attempt durations, finer
            per-action buckets); set by the first caller per registry, like the buckets.
    """
    wanted = None if duration_buckets is None else tuple(duration_buckets)
    with _lock:
        metrics = _by_registry.get(registry)
        if metrics is None:
            try:
                metrics = PrometheusMetrics(registry, wanted,
                                            max_label_sets=max_label_sets
                                            or DEFAULT_MAX_LABEL_SETS,
                                            detailed=bool(detailed))
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
        elif detailed is not None and detailed != metrics.detailed:
            raise _detailed_differs(detailed, metrics.detailed)
        return metrics


def _detailed_differs(wanted: bool, in_effect: bool) -> ConfigurationError:
    """The error for asking a registry for other detailed metrics than it exports, naming the
    variable when that may be where the value came from."""
    if detailed_metrics_from_env() is wanted:
        return ConfigurationError(
            f"detailed_metrics={wanted} (the argument, or {DETAILED_METRICS_ENV} when none is "
            f"passed) differs from what this registry already exports "
            f"(detailed_metrics={in_effect}); pass detailed_metrics={in_effect}, or unset "
            f"{DETAILED_METRICS_ENV} if that is where it came from.")
    return ConfigurationError(
        f"detailed_metrics={wanted} differs from what this registry already exports "
        f"(detailed_metrics={in_effect}); pass the same value or none.")
