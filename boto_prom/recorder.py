"""The recorder: where adapters hand their records, and which feeds every sink behind a guard.

Adapters (the boto 2 hook, the botocore handlers) build one :class:`RequestRecord` per call and
call :meth:`Recorder.record`; the recorder passes it to each sink (the Prometheus metrics
always, the CSV writer when configured). A failing sink is counted and logged once; it never
stops the others, and never reaches the AWS call.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

from ._guard import Guard
from .metrics import PrometheusMetrics
from .record import RequestRecord


class Recorder:
    """Fans records out to sinks; shared by every adapter enabled with the same settings.

    Args:
        metrics: the Prometheus metrics of the registry (always a sink, and home of the
            ``boto_prom_hook_errors_total`` self-metric).
        sinks: further sinks, each with ``record(rec)`` and a ``stage`` name.
        accept: given (aws_service, action), False means the call reaches no sink (see
            :func:`boto_prom.cardinality.make_filter`); None keeps every record.
    """

    def __init__(self, metrics: PrometheusMetrics, sinks: Sequence[Any] = (),
                 accept: Optional[Callable[[str, str], bool]] = None) -> None:
        self.metrics = metrics
        self.accept = accept
        self.registry = metrics.registry
        self.sinks: Tuple[Any, ...] = (metrics,) + tuple(sinks)
        self.guard = Guard(metrics.hook_errors)
        # Reading the request id costs header lookups on every call: only when a sink uses it.
        self.wants_request_id = any(getattr(s, "wants_request_id", False) for s in self.sinks)

    def record(self, rec: RequestRecord, accepted: bool = False) -> None:
        """Give rec to every sink, unless the filters reject it. Never raises.

        Args:
            rec: the record.
            accepted: the adapter already applied the filters (to the labels as they were
                before the Prometheus sink folded them).
        """
        accept = self.accept
        if accept is not None and not accepted:
            try:
                if not accept(rec.aws_service, rec.action):
                    return
            except Exception:
                self.guard.failed("filter")
        for sink in self.sinks:
            try:
                sink.record(rec)
            except Exception:
                self.guard.failed(sink.stage)
