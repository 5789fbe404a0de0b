"""The CSV sink: every request as a row in a file, for hosts no Prometheus scrapes.

The caller's side only enqueues: :meth:`CsvSink.record` puts the record on a bounded queue
without waiting, and when the queue is full the row is dropped and counted. A daemon thread per
file takes rows off the queue in batches, formats them (the ``csv`` module, or boto's
``RequestLogger`` line) and appends them to the file through the stdlib's
``RotatingFileHandler`` (append mode, size rotation with numbered backups). Rows still queued at
a normal interpreter exit are written first (``atexit``).

Every row is accounted for: in the registry of the hook that recorded it,
``boto_prom_csv_rows_written_total + boto_prom_csv_rows_dropped_total + queued`` equals the rows
recorded, ``queued`` being :attr:`CsvWriter.queued`. A row recorded once its writer is closed
(by an ``atexit`` handler that runs after the exit flush, say) is refused and counted dropped.

A process forked from one with writers (a pre-fork server's worker) gets a writer thread of its
own for each, which appends the rows recorded in that process; rows queued at the fork are
the parent's to write.
"""

from __future__ import annotations

import atexit
import csv
import errno
import logging
import os
import queue
import stat
import threading
import time
import weakref
from logging.handlers import RotatingFileHandler
from typing import Any, Dict, List, Optional, Sequence, Tuple

from prometheus_client import CollectorRegistry, Counter

from .metrics import WithoutCreated
from .record import RequestRecord
from .settings import (CSV_FORMATS, DEFAULT_CSV_BACKUPS, DEFAULT_CSV_MAX_BYTES, ConfigurationError,
                       CsvSettings, csv_real_path)

log = logging.getLogger("boto_prom")

FORMATS = CSV_FORMATS
COLUMNS = ("timestamp", "aws_service", "aws_region", "action", "status_code",
           "duration_seconds", "request_bytes", "response_bytes", "error_type", "request_id")
"""The columns of the ``csv`` format, in order."""

DEFAULT_MAX_BYTES = DEFAULT_CSV_MAX_BYTES
DEFAULT_BACKUPS = DEFAULT_CSV_BACKUPS

QUEUE_SIZE = 10_000
"""Rows that may wait for the writer before new ones are dropped (a few MB at most)."""

EXIT_TIMEOUT = 10.0
"""Seconds the interpreter's exit waits, in all, for the writers to flush their queues."""

_BATCH = 1024  # rows per write() and flush(): one syscall per batch, not per row
# After a batch smaller than _BATCH the writer waits this long (unless flushed or closed) so
# that rows gather: waking for every row would take the GIL from the callers once per row.
_LINGER = 0.05

# boto 2 calls its hook with error=True (and RequestLogger wrote 0 as the length) only after
# retrying these statuses, or when no response came; the record keeps the status, not the flag.
_BOTO_RETRIED_STATUSES = frozenset({"500", "502", "503", "504", "none"})


# --- self-metrics, one set per registry --------------------------------------------------------

class CsvMetrics:
    """The CSV self-metrics of one registry, shared by every writer its hooks feed.

    They reach the registry through the request metrics' collector, so, like those, they
    export no ``_created`` samples.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.written = Counter(
            "boto_prom_csv_rows_written", "Rows the CSV writer appended to its file.",
            registry=None,
        )
        dropped = Counter(
            "boto_prom_csv_rows_dropped",
            "Rows the CSV writer dropped, by reason: queue_full (the writer was behind and the "
            "queue was full), write_error (the file could not be written) or closed (the row "
            "came after the writer was closed).",
            ("reason",), registry=None,
        )
        registry.register(WithoutCreated([self.written, dropped]))
        self.queue_full = dropped.labels("queue_full")
        self.write_error = dropped.labels("write_error")
        self.closed = dropped.labels("closed")


_metrics_by_registry: "weakref.WeakKeyDictionary[CollectorRegistry, CsvMetrics]" = (
    weakref.WeakKeyDictionary()
)
_metrics_lock = threading.Lock()


def csv_metrics_for(registry: CollectorRegistry) -> CsvMetrics:
    """The CSV self-metrics of registry, created on first use."""
    with _metrics_lock:
        metrics = _metrics_by_registry.get(registry)
        if metrics is None:
            try:
                metrics = CsvMetrics(registry)
            except ValueError as exc:
                raise ConfigurationError(
                    "boto-prom's CSV metric names are already registered in this registry by "
                    f"something else ({exc}); pass registry= with a registry of its own."
                ) from None
            _metrics_by_registry[registry] = metrics
        return metrics


# --- the queue -----------------------------------------------------------------------------------

class _RowQueue(queue.Queue):
    """A bounded queue whose producers never wait and whose consumer takes rows in batches.

    A row stays counted in ``unfinished_tasks`` from :meth:`offer` until the writer has counted
    it written or dropped (:meth:`done`, under the queue's lock), so :attr:`CsvWriter.queued`
    never misses a row the writer holds, nor counts one twice. Subclassing ``queue.Queue`` and
    using its lock and conditions is how the stdlib's own LifoQueue and PriorityQueue extend it.
    """

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.closing = False  # close() was called: rows are refused, the writer drains and ends
        self.stopped = False  # the writer ended, or close() gave up on it: flush() waits no more
        self.idle = False  # the writer waits for a first row: only then does a put wake it

    def offer(self, item: Tuple[RequestRecord, CsvMetrics]) -> Optional[str]:
        """Queue item unless the queue is full or closing; never waits.

        ``put_nowait`` does the same through a Condition and a notify per row, which cost
        the caller ~3 us a row on the benchmark machine against ~0.5 us here: a busy writer
        takes whatever has gathered without being told.

        Returns:
            None when item was queued, else why not: ``"queue_full"`` or ``"closed"``.
        """
        with self.mutex:
            # Refused under the lock close() sets closing with: a row is either queued before
            # the writer drains for the last time, or counted dropped, never stranded.
            if self.closing:
                return "closed"
            if self._qsize() >= self.maxsize:
                return "queue_full"
            self._put(item)
            self.unfinished_tasks += 1
            if self.idle:
                self.not_empty.notify()
        return None

    def get_batch(self, limit: int) -> List[Tuple[RequestRecord, CsvMetrics]]:
        """Wait for rows and take up to limit of them in one go; [] once closing and empty."""
        with self.not_empty:
            while not self._qsize():
                if self.closing:
                    return []
                self.idle = True
                self.not_empty.wait()
                self.idle = False
            batch = [self._get() for _ in range(min(limit, self._qsize()))]
            self.not_full.notify(len(batch))
            return batch

    def done(self, batch: Sequence[Tuple[RequestRecord, CsvMetrics]], written: int) -> None:
        """Count the first written rows of batch as written, the rest as write errors."""
        counts: Dict[CsvMetrics, List[int]] = {}
        for i, (_, metrics) in enumerate(batch):
            slot = counts.get(metrics)
            if slot is None:
                slot = counts[metrics] = [0, 0]
            slot[0 if i < written else 1] += 1
        with self.all_tasks_done:
            for metrics, (ok, failed) in counts.items():
                if ok:
                    metrics.written.inc(ok)
                if failed:
                    metrics.write_error.inc(failed)
            self.unfinished_tasks -= len(batch)
            if not self.unfinished_tasks:
                self.all_tasks_done.notify_all()

    def close(self) -> None:
        with self.not_empty:
            self.closing = True
            self.not_empty.notify_all()

    def reset_after_fork(self, closed: bool) -> None:
        """In a forked child: new locks (the old ones may be held by threads that are gone)
        and no rows (those queued at the fork are the parent's, which writes and counts them).
        """
        self.mutex = threading.Lock()
        self.not_empty = threading.Condition(self.mutex)
        self.not_full = threading.Condition(self.mutex)
        self.all_tasks_done = threading.Condition(self.mutex)
        self.queue.clear()
        self.unfinished_tasks = 0
        self.idle = False
        self.closing = self.stopped = closed

    def stop(self) -> None:
        """The writer has ended or been given up on: wake flush() callers, who wait no more."""
        with self.all_tasks_done:
            self.stopped = True
            self.all_tasks_done.notify_all()

    def wait_done(self, timeout: Optional[float]) -> bool:
        """Wait until every row put so far is counted; False when timeout ran out first, or
        when the writer has stopped with rows left (nothing would ever count them)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.all_tasks_done:
            while self.unfinished_tasks and not self.stopped:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self.all_tasks_done.wait(remaining)
            return not self.unfinished_tasks


# --- the file ------------------------------------------------------------------------------------

class _RotatingCsvFile(RotatingFileHandler):
    """The stdlib's RotatingFileHandler, used by the writer thread as a file of lines.

    It keeps the handler's rotation (``path`` -> ``path.1`` ... ``path.N``) and its hooks, but
    writes a whole batch with one write: through the handler's per-record ``emit`` (two stats,
    a seek and a flush per row) the writer drained 14,000 rows/s on the benchmark machine;
    batched, 110,000 to 180,000 from the first row queued to the last written
    (benchmarks/csv_writer.py). It is never attached to a logger. A header is written at the
    top of every new file.

    The file is opened unbuffered in append mode (``O_APPEND``), so a batch goes to the file
    in write() calls of its own, with no buffer left over that a later close could spill half
    a row from, and a failed write can be cut off exactly (:meth:`_write`).
    """

    def __init__(self, path: str, max_bytes: int, backups: int, header: str) -> None:
        super().__init__(path, mode="a", maxBytes=max_bytes, backupCount=backups,
                         encoding="utf-8", delay=True)
        self.header = header
        self.size = 0
        self.regular = True
        self.broken_line = False  # the file ends in part of a row that could not be cut off
        self._identity: Optional[Tuple[int, int]] = None

    def _open(self) -> Any:
        stream = open(self.baseFilename, "ab", buffering=0)
        try:
            st = os.fstat(stream.fileno())
            self.regular = stat.S_ISREG(st.st_mode)
            self._identity = (st.st_dev, st.st_ino)
            self.size = st.st_size
            if self.regular and not self.size:
                self.broken_line = False  # a new file: the part-row is in an old one
            # Appending to a file that has rows already: its header is at its top.
            if self.header and (self.size == 0 or not self.regular):
                self._write(stream, self.header)
                self.size += len(self.header)
        except BaseException:
            _close_quietly(stream)
            raise
        return stream

    def _write(self, stream: Any, text: str) -> None:
        """Append text whole, or leave the file holding only what it held before, and raise."""
        if self.broken_line:
            text = "\n" + text
        data = memoryview(text.encode("utf-8"))
        done = 0
        try:
            while done < len(data):
                wrote = stream.write(data[done:])
                if not wrote:
                    raise OSError(errno.EIO, "the file took no bytes")
                done += wrote
        except BaseException:
            if done:
                self._cut(stream, done)
            raise
        self.broken_line = False

    def _cut(self, stream: Any, done: int) -> None:
        # A write that stopped part-way (disk full, RLIMIT_FSIZE) left whole rows and part of
        # one: cut them off, so the file holds whole rows only and none of the failed batch,
        # whose rows are all counted write_error. Under O_APPEND the offset is the end of
        # what this process wrote; should another process have appended since, its rows stay.
        try:
            fd = stream.fileno()
            end = os.lseek(fd, 0, os.SEEK_CUR)
            if os.fstat(fd).st_size != end:
                raise OSError(errno.EBUSY, "the file grew after the failed write")
            os.ftruncate(fd, end - done)
        except OSError:
            # A FIFO, an append-only file: the part-row stays, the next write ends its line.
            self.broken_line = True

    def replaced(self) -> bool:
        """True when the open file is no longer at its path (deleted, or moved by logrotate)."""
        if self.stream is None or not self.regular:
            return False
        try:
            st = os.stat(self.baseFilename)
        except FileNotFoundError:
            return True
        if (st.st_dev, st.st_ino) != self._identity:
            return True
        self.size = st.st_size  # someone may have truncated it (logrotate's copytruncate)
        return False

    def discard(self) -> None:
        """Close the stream without caring whether its last bytes could be written."""
        stream, self.stream = self.stream, None
        if stream is not None:
            _close_quietly(stream)

    def write_lines(self, lines: Sequence[str]) -> Tuple[int, Optional[BaseException],
                                                         Optional[BaseException]]:
        """Append lines, rotating before the file would reach max_bytes.

        Returns:
            (lines written and flushed, the error that stopped the rest or None, a rotation
            error that was worked around by appending to the current file, or None).
        """
        written = 0
        rotation_error: Optional[BaseException] = None
        try:
            if self.stream is None:
                self.stream = self._open()
            limit = self.maxBytes if self.regular else 0
            pending: List[str] = []
            size = self.size
            for line in lines:
                # A file holding only its header takes the line whatever its size, so a
                # line longer than max_bytes cannot make every write a rotation.
                if limit and size + len(line) >= limit and size > len(self.header):
                    if pending:
                        self._append(pending)
                        written += len(pending)
                        pending = []
                    try:
                        self.doRollover()
                    except OSError as exc:
                        rotation_error, limit = exc, 0  # keep appending to this file
                    self.stream = self._open()
                    size = self.size
                pending.append(line)
                size += len(line)
            if pending:
                self._append(pending)
                written += len(pending)
            self.size = size
            return written, None, rotation_error
        except Exception as exc:
            self.discard()  # reopened for the next batch: the disk may have room by then
            return written, exc, rotation_error

    def _append(self, lines: List[str]) -> None:
        self._write(self.stream, "".join(lines))

    # logging.shutdown() closes every handler at exit, after boto-prom's own atexit flush;
    # a writer stuck on a blocked file has had its stream taken away (see CsvWriter.close).
    def close(self) -> None:
        self.discard()
        super().close()


def _close_quietly(stream: Any) -> None:
    try:
        stream.close()
    except Exception:
        pass


class _Lines:
    """A file-like target for csv.writer that keeps each row's line (one write() per row)."""

    __slots__ = ("write",)

    def __init__(self, lines: List[str]) -> None:
        self.write = lines.append


# --- the writer ----------------------------------------------------------------------------------

class CsvWriter:
    """One CSV file and the daemon thread that writes it; shared by every hook naming the path.

    Get one with :func:`get_csv_writer`, or let :func:`boto_prom.enable_metrics` create it.

    Attributes:
        path: the file's real path.
        format: ``"csv"`` or ``"requestlog"``.
        max_bytes: the size a file rotates at (0: never).
        backups: how many rotated files are kept.
    """

    def __init__(self, path: str, format: str = "csv", max_bytes: int = DEFAULT_MAX_BYTES,
                 backups: int = DEFAULT_BACKUPS, queue_size: int = QUEUE_SIZE) -> None:
        self.path = path
        self.format = format
        self.max_bytes = max_bytes
        self.backups = backups
        self.closed = False
        self._queue = _RowQueue(queue_size)
        self.offer = self._queue.offer
        header = ",".join(COLUMNS) + "\n" if format == "csv" else ""
        self._file = _RotatingCsvFile(path, max_bytes, backups, header)
        self._lines = self._csv_lines if format == "csv" else self._requestlog_lines
        self._wake = threading.Event()  # cuts a linger short: flush() or close() waits
        self._logged: set = set()
        self._second = (-1, "", "")  # (epoch second, its UTC text, its local-time text)
        with _live_lock:  # so that no fork comes between the thread's start and the set
            self._start()
            _live_writers.add(self)

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="boto-prom-csv", daemon=True)
        self._thread.start()

    def _after_fork_in_child(self) -> None:
        # Only the thread that forked lives on in the child: the writer thread is gone, and a
        # lock another thread held stays held. Start over with new locks, no rows, the file
        # reopened by the next batch (the parent may have been rotating it) and a thread.
        self._queue.reset_after_fork(self.closed)
        self._wake = threading.Event()
        self._file.discard()  # unbuffered: closing the child's copy of the fd writes nothing
        if not self.closed:
            self._start()

    @property
    def queued(self) -> int:
        """Rows accepted and not yet counted written or dropped (queued or being written)."""
        with self._queue.mutex:
            return self._queue.unfinished_tasks

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every row queued so far is written (or counted dropped).

        On a closed writer it returns at once: close() has already waited for what it could.

        Returns:
            False when timeout seconds passed first (the file is blocked, or rows keep coming),
            or when the writer is closed with rows it never wrote.
        """
        self._wake.set()
        return self._queue.wait_done(timeout)

    def close(self, timeout: Optional[float] = None) -> bool:
        """Write the queued rows, stop the thread and close the file.

        Rows recorded afterwards by hooks still using the writer are refused and counted in
        ``boto_prom_csv_rows_dropped_total{reason="closed"}``: disable metrics first. Closing
        twice is harmless.

        Args:
            timeout: seconds to wait for the queue to drain; None waits as long as it takes.

        Returns:
            False when the rows could not all be written in time (they stay counted as queued).
        """
        with _writers_lock:
            if _writers.get(self.path) is self:
                del _writers[self.path]
        self.closed = True
        self._queue.close()
        self._wake.set()
        self._thread.join(timeout)
        self._queue.stop()
        if self._thread.is_alive():
            # Blocked on the file: leave the thread (a daemon) and its stream alone, so that
            # neither this call nor logging.shutdown() waits on the same blocked file.
            self._file.stream = None
            log.warning("boto-prom: the CSV writer for %s did not finish within %.1f s; %d "
                        "rows were not written", self.path, timeout, self.queued)
            return False
        self._file.close()
        return True

    # --- the writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        queue_ = self._queue
        while True:
            batch = queue_.get_batch(_BATCH)
            if not batch:
                return
            written = 0
            try:
                written = self._write(batch)
            except Exception:  # a bug of ours: count the rows, keep the thread alive
                self._failed("format", f"formatting CSV rows for {self.path} failed",
                             exc_info=True)
            queue_.done(batch, written)
            if len(batch) < _BATCH and not queue_.closing:
                self._wake.wait(_LINGER)
                self._wake.clear()

    def _write(self, batch: Sequence[Tuple[RequestRecord, CsvMetrics]]) -> int:
        file = self._file
        if file.replaced():
            file.discard()
            self._failed("replaced", f"{self.path} was deleted or moved away; reopening it, "
                         "so later rows go to a new file")
        written, error, rotation_error = file.write_lines(self._lines(batch))
        if rotation_error is not None:
            self._failed("rotate", f"rotating {self.path} failed ({_reason(rotation_error)}); "
                         "rows are appended to the current file")
        if error is not None:
            self._failed("write", f"writing CSV rows to {self.path} failed "
                         f"({_reason(error)}); dropped {len(batch) - written} rows, counted in "
                         'boto_prom_csv_rows_dropped_total{reason="write_error"}',
                         exc_info=not isinstance(error, OSError))
        return written

    def _failed(self, kind: str, message: str, exc_info: bool = False) -> None:
        # As the hook's guard does: the first failure of a kind is a warning, later ones debug.
        first = kind not in self._logged
        self._logged.add(kind)
        suffix = "; the AWS calls are unaffected"
        if first:
            log.warning("boto-prom: %s%s (further ones are logged at debug level)",
                        message, suffix, exc_info=exc_info)
        else:
            log.debug("boto-prom: %s%s", message, suffix, exc_info=exc_info)

    def _times(self, timestamp: float) -> Tuple[int, str, str]:
        second = int(timestamp)
        if second != self._second[0]:
            self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)),
                            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second)))
        return self._second

    def _csv_lines(self, batch: Sequence[Tuple[RequestRecord, CsvMetrics]]) -> List[str]:
        lines: List[str] = []
        rows = []
        for rec, _ in batch:
            ts = rec.timestamp
            second, utc, _local = self._times(ts)
            rows.append((
                "%s.%03dZ" % (utc, int((ts - second) * 1000)),
                rec.aws_service, rec.aws_region, rec.action, rec.status_code,
                _micro(rec.duration_seconds), rec.request_bytes, rec.response_bytes,
                rec.error_type, rec.request_id,
            ))
        csv.writer(_Lines(lines), lineterminator="\n").writerows(rows)  # None -> ""
        return lines

    def _requestlog_lines(self, batch: Sequence[Tuple[RequestRecord, CsvMetrics]]) -> List[str]:
        # boto/requestlog.py: "'%s', '%s', '%s', '%s', '%s'\n" % (time, response.status,
        # duration, len, request.params['Action']), len being 0 when error=True and the
        # response's Content-Length header (None when absent) otherwise. Our duration is
        # timedelta.total_seconds(), the same float as boto's arithmetic.
        lines = []
        for rec, _ in batch:
            status = rec.status_code
            length = 0 if status in _BOTO_RETRIED_STATUSES else rec.response_bytes
            lines.append("'%s', '%s', '%s', '%s', '%s'\n" % (
                self._times(rec.timestamp)[2], status, _micro(rec.duration_seconds), length,
                rec.action))
        return lines


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


# --- the sink ------------------------------------------------------------------------------------

class CsvSink:
    """The recorder's end of a writer: enqueues each record, never waits.

    Args:
        writer: the file's writer.
        metrics: the CSV self-metrics of the hook's registry.
    """

    def __init__(self, writer: CsvWriter, metrics: CsvMetrics) -> None:
        self.writer = writer
        self.metrics = metrics
        # The request id is a column of the csv format only: spare the header lookups.
        self.wants_request_id = writer.format == "csv"
        self._offer = writer.offer
        self._dropped = {"queue_full": metrics.queue_full, "closed": metrics.closed}

    def record(self, rec: RequestRecord) -> None:
        """Queue rec for the writer, or count it dropped when the queue is full or closed."""
        refused = self._offer((rec, self.metrics))
        if refused is not None:
            self._dropped[refused].inc()


def _micro(seconds: Optional[float]) -> Optional[float]:
    # Microseconds, as boto 2's timedelta gives them; botocore's monotonic clock has more
    # digits than anyone can use (and rounding a boto 2 value changes nothing).
    return None if seconds is None else round(seconds, 6)


# --- one writer per path -------------------------------------------------------------------------

_writers: Dict[str, CsvWriter] = {}
_writers_lock = threading.Lock()
_live_writers: "weakref.WeakSet[CsvWriter]" = weakref.WeakSet()  # closed ones too
_live_lock = threading.Lock()
_forking: List[CsvWriter] = []


def _before_fork() -> None:
    # Take every lock of ours, so that none is held mid-change by a thread that will not
    # exist in the child. Each is held briefly (a few list operations, a writer's creation),
    # never while a file is written, so a fork waits at most that long. One order
    # everywhere: _writers_lock before _live_lock.
    _writers_lock.acquire()
    _metrics_lock.acquire()
    _live_lock.acquire()
    _forking[:] = list(_live_writers)
    for writer in _forking:
        writer._queue.mutex.acquire()


def _after_fork_in_parent() -> None:
    for writer in _forking:
        writer._queue.mutex.release()
    _release_module_locks()


def _after_fork_in_child() -> None:
    for writer in _forking:
        writer._after_fork_in_child()  # gives it new locks: the old, held ones are dropped
    _release_module_locks()


def _release_module_locks() -> None:
    del _forking[:]
    _live_lock.release()
    _metrics_lock.release()
    _writers_lock.release()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)


def get_csv_writer(path: Any) -> Optional[CsvWriter]:
    """The running CSV writer of a path (to ``flush()`` or ``close()`` it), or None.

    Args:
        path: the ``csv_path`` given to :func:`boto_prom.enable_metrics` (or ``BOTO_PROM_CSV``).
    """
    try:
        real = csv_real_path(path)
    except ConfigurationError:
        return None
    with _writers_lock:
        return _writers.get(real)


def csv_writer_for(settings: CsvSettings, queue_size: int = QUEUE_SIZE) -> CsvWriter:
    """The writer of a CSV file: the running one, or a new one.

    Args:
        settings: the file and its options, checked (:func:`boto_prom.settings.csv_settings`);
            options left None take the running writer's, or the defaults for a new one.
        queue_size: rows that may wait for the writer before new ones are dropped.

    Raises:
        ConfigurationError: options that differ from those of the writer already running for
            the file.
    """
    real = settings.path
    with _writers_lock:
        writer = _writers.get(real)
        if writer is not None:
            asked = (settings.format, settings.max_bytes, settings.backups)
            running = (writer.format, writer.max_bytes, writer.backups)
            if any(a is not None and a != r for a, r in zip(asked, running)):
                raise ConfigurationError(
                    f"{real} is already written by boto-prom with csv_format={writer.format!r}, "
                    f"csv_max_bytes={writer.max_bytes} and csv_backups={writer.backups}; pass "
                    "the same options (or none) for the same file, or another csv_path."
                )
            return writer
        writer = _writers[real] = CsvWriter(
            real, settings.format or "csv",
            DEFAULT_MAX_BYTES if settings.max_bytes is None else settings.max_bytes,
            DEFAULT_BACKUPS if settings.backups is None else settings.backups, queue_size)
        return writer


@atexit.register
def _flush_at_exit() -> None:
    # Registered after the logging module's own shutdown hook, so it runs before it.
    deadline = time.monotonic() + EXIT_TIMEOUT
    with _writers_lock:
        writers = list(_writers.values())
    for writer in writers:
        writer.close(max(0.0, deadline - time.monotonic()))


__all__ = ["COLUMNS", "CsvSink", "CsvWriter", "DEFAULT_BACKUPS", "DEFAULT_MAX_BYTES",
           "FORMATS", "csv_metrics_for", "csv_writer_for", "get_csv_writer"]
