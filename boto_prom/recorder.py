"""The recorder: what an adapter asks, once per label set, for the object that records it.

:meth:`Recorder.bind` applies the filters (``allowed_services``, ``ignored_actions``) and hands
back the label set's :class:`boto_prom.metrics.Bound`, folded past ``max_label_sets`` and with
its prometheus_client children bound; or None, when the filters drop such calls. Adapters cache
what it returns, so the per-call path is: read the call, look the bound up, inc and observe.

When a CSV file is on, the bound is wrapped so that each call also becomes one immutable
:class:`boto_prom.record.RequestRecord` for the writer's queue; without one no record is built.
"""

from __future__ import annotations

import time
from typing import Any, FrozenSet, Optional, Tuple

from .guard import Guard
from .metrics import Bound, PrometheusMetrics
from .record import RequestRecord


class Recorder:
    """Binds label sets for the adapters enabled with one set of settings.

    Args:
        metrics: the Prometheus metrics of the registry (home of the
            ``boto_prom_hook_errors_total`` self-metric, which the guard counts in).
        csv: the CSV sink when a CSV file is on, else None.
        allowed_services: record only these services; None records every one.
        ignored_actions: never record these actions.
    """

    def __init__(self, metrics: PrometheusMetrics, csv: Any = None,
                 allowed_services: Optional[FrozenSet[str]] = None,
                 ignored_actions: FrozenSet[str] = frozenset()) -> None:
        self.metrics = metrics
        self.registry = metrics.registry
        self.csv = csv
        self.guard = Guard(metrics.hook_errors)
        self._allowed = allowed_services
        self._ignored = ignored_actions
        # A sink that keeps every call's request id (the CSV file's csv format); else only an
        # exemplar uses one (see Bound.exemplar_due).
        self.every_request_id = bool(getattr(csv, "wants_request_id", False))

    def bind(self, sdk: str, aws_service: str, aws_region: str, action: str) -> Any:
        """What records the calls of one label set, or None when the filters drop them.

        Args:
            sdk: ``"boto2"`` or ``"botocore"`` (botocore's bound also follows attempts).
            aws_service: the call's service label.
            aws_region: its region label.
            action: its action label.

        Returns:
            A :class:`boto_prom.metrics.Bound` (or, with a CSV file, an object with the same
            ``record`` method that also queues a row), or None.
        """
        allowed = self._allowed
        if (allowed is not None and aws_service not in allowed) or action in self._ignored:
            return None
        bound = self.metrics.bound((aws_service, aws_region, action))
        if sdk == "botocore":
            bound.follow_attempts()
        if self.csv is None:
            return bound
        return _WithCsv(bound, self.csv, self.guard, (sdk, aws_service, aws_region, action))


class _WithCsv:
    """A bound that also hands each call to the CSV sink, as a record.

    The row keeps the call's own labels: the fold bounds the metrics' series, and a file has
    no such limit.
    """

    __slots__ = ("bound", "labels", "attempt", "in_flight", "exemplar_due",
                 "count_throttled_attempt", "_csv", "_guard", "_head")

    def __init__(self, bound: Bound, csv: Any, guard: Guard,
                 head: Tuple[str, str, str, str]) -> None:
        self.bound = bound
        self.labels = bound.labels
        self.attempt = bound.attempt
        self.in_flight = bound.in_flight
        self.exemplar_due = bound.exemplar_due
        self.count_throttled_attempt = bound.count_throttled_attempt
        self._csv = csv
        self._guard = guard
        self._head = head

    def record(self, status_code: str, duration: Optional[float],
               request_bytes: Optional[int], response_bytes: Optional[int],
               error_type: Optional[str], throttled: bool, request_id: Optional[str],
               attempts: Optional[int] = None, exhausted: bool = False) -> None:
        """As :meth:`boto_prom.metrics.Bound.record`, then one row for the CSV file."""
        self.bound.record(status_code, duration, request_bytes, response_bytes, error_type,
                          throttled, request_id, attempts, exhausted)
        try:
            self._csv.record(RequestRecord(*self._head, status_code, duration, request_bytes,
                                           response_bytes, error_type, throttled, request_id,
                                           time.time(), attempts, exhausted))
        except Exception:
            self._guard.failed("csv")
