"""The guard around everything boto-prom does inside an SDK's call path.

A failure is counted in ``boto_prom_hook_errors_total{stage}``, logged once per stage (with its
traceback) and at debug level after that, and then swallowed: the user's AWS call goes on.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Optional, Set

log = logging.getLogger("boto_prom")


class Guard:
    """Counts and logs failures of one hook; shared by the hook's stages."""

    def __init__(self, hook_errors) -> None:  # hook_errors: the boto_prom_hook_errors Counter
        self._hook_errors = hook_errors
        self._seen: Set[str] = set()
        self._lock = threading.Lock()

    def failed(self, stage: str, detail: str = "") -> None:
        """Count one failure at stage; call it from an ``except`` block (or with a detail).

        Never raises, whatever state logging or the metrics are in.
        """
        try:
            self._hook_errors.labels(stage).inc()
            with self._lock:
                first = stage not in self._seen
                self._seen.add(stage)
            message = "boto-prom: %s failed%s; the AWS call is unaffected"
            suffix = f" ({detail})" if detail else ""
            if first:
                log.warning(message + " (further %s failures are logged at debug level)",
                            stage, suffix, stage, exc_info=not detail)
            else:
                log.debug(message, stage, suffix, exc_info=not detail)
        except Exception:  # pragma: no cover - the last line of defence
            pass

    def size(self, value: Any, stage: str) -> Optional[int]:
        """A byte count from a header value; None when absent (chunked, empty: not an error)
        or unusable (not a whole number of 0 or more: counted and logged at stage)."""
        if value is None:
            return None
        try:
            size = int(value)
        except (TypeError, ValueError):
            size = -1
        if size < 0:
            self.failed(stage, "unusable Content-Length")
            return None
        return size
