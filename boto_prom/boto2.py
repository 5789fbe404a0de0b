"""The boto 2 adapter, whole: the request hook, install and uninstall on a connection, and the
global mode that gives every new connection a hook.

boto 2 calls ``hook.handle_request_data(request, response, error=False)`` from
``AWSAuthConnection._mexe``: with ``error=False`` once a response other than a 5xx or a redirect
has arrived (4xx included), before its body is read; with ``error=True`` once retries are
exhausted, after the last backoff sleep, and with ``response=None`` when no HTTP response came
at all. It never calls it when a connection's retry handler or sender raises (DynamoDB's
raises for every 4xx): on the connections it is installed on, the adapter records those
requests from a ``_mexe`` of the connection's own. Importing this module imports boto.

The per-request path has two lanes. The fast lane takes the shape boto 2 hands over on almost
every call: it looks the label set's bound up by the raw values the action is named from (host,
``Action`` param, ``X-Amz-Target`` header), reads the status, sizes, duration and request id
directly, and records. Anything else (the first call of a label set, an S3 or other REST call,
no response, a missing or odd value) raises inside the fast lane before anything is recorded,
and the careful lane then reads every value defensively, each behind its own guard stage.
"""

from __future__ import annotations

import functools
import threading
import weakref
from datetime import datetime
from typing import Any, Dict, Optional, Sequence, Tuple

from .naming import (BOTO2_MODULE_SERVICES, boto2_action, is_region, parse_host, safe_name,
                     safe_request_id)
from .metrics import metrics_for
from .record import NO_RESPONSE, UNKNOWN
from .recorder import Recorder
from .settings import check_buckets, check_registry, detailed_metrics_from_env

try:
    from boto.exception import BotoServerError as _BotoServerError
    from boto.utils import RequestHook as _RequestHook
except ImportError:  # boto 2 cannot import (Python 3.12+): the class still works on its own
    _RequestHook = object  # type: ignore[misc,assignment]

    class _BotoServerError(Exception):  # type: ignore[no-redef]
        """Stands for boto's: nothing raises it."""

# boto 2 only sees throttling as an HTTP status: 429, or 503 (EC2 RequestLimitExceeded and
# S3 SlowDown are both 503s).
THROTTLE_STATUSES = frozenset({429, 503})

# (status, error) -> (status_code, error_type, throttled): what a response status means, worked
# out once so the fast lane reads it with one lookup.
_STATUSES: Dict[Tuple[int, bool], Tuple[str, Optional[str], bool]] = {
    (status, error): (str(status), str(status) if status >= 400 or error else None,
                      status in THROTTLE_STATUSES)
    for status in range(100, 600) for error in (False, True)
}

# Raw keys cached per hook; past this many, new keys take the careful lane every time (still
# counted right: the recorder's own label sets are bounded).
_CACHE_LIMIT = 10_000

_TARGET = "X-Amz-Target"
_ID, _S3_ID = "x-amzn-RequestId", "x-amz-request-id"


class _Dropped:
    """What the cache holds for a label set the recorder's filters drop: records nothing."""

    __slots__ = ()

    def record(self, *values: Any) -> None:
        """Record nothing."""

    def exemplar_due(self, duration: float) -> bool:
        """Never: nothing is recorded."""
        return False


_DROPPED = _Dropped()

def connection_service(conn: Any) -> str:
    """The short service name of a boto 2 connection, or ``"unknown"``."""
    name = safe_name(getattr(conn, "auth_service_name", None))
    if name:
        return name.lower()
    service, _ = parse_host(getattr(conn, "host", None))
    if service != UNKNOWN:
        return service
    module = type(conn).__module__ or ""
    while module:
        if module in BOTO2_MODULE_SERVICES:
            return BOTO2_MODULE_SERVICES[module]
        module = module.rpartition(".")[0]
    return UNKNOWN


def connection_region(conn: Any) -> str:
    """The region of a boto 2 connection, or ``"unknown"``."""
    candidates = (
        getattr(conn, "auth_region_name", None),
        getattr(getattr(conn, "region", None), "name", None),
    )
    for candidate in candidates:
        if is_region(candidate):
            return candidate  # type: ignore[return-value]
    _, region = parse_host(getattr(conn, "host", None))
    return region


class BotoRequestHook(_RequestHook):  # type: ignore[misc,valid-type]
    """A boto 2 request hook that records every request in Prometheus metrics (and other sinks).

    Most programs get one from :func:`boto_prom.enable_metrics`. It also works the way boto's
    docs teach: ``conn.set_request_hook(BotoRequestHook())`` reads the service and region of
    each request from its host (``ec2.us-west-2.amazonaws.com``, ``s3.amazonaws.com``).

    Args:
        registry: the prometheus_client registry to record into (the global one by default).
        aws_service: the service label for every request, instead of reading it per request.
        aws_region: the region label for every request, likewise.
        buckets: duration histogram buckets in seconds (see :func:`boto_prom.enable_metrics`).
        previous: a hook to call after recording, with the same arguments (the connection's
            earlier hook, so enabling metrics keeps it working).
        recorder: where calls go (built by :func:`boto_prom.enable_metrics`); by default
            the registry's Prometheus metrics alone, detailed when
            ``BOTO_PROM_DETAILED_METRICS`` says so (as for :func:`boto_prom.enable_metrics`).

    Attributes:
        recorder, registry: where calls are recorded.
        server: the metrics server :func:`boto_prom.enable_metrics` started, else None.
        settings: the settings it was enabled with; None for a hook built by hand.
        active: False for a hook that no longer records (a global-mode hook after
            :func:`boto_prom.disable_metrics`); enabling again replaces such a hook.
        previous: the hook called after this one.

    Example:
        >>> conn.set_request_hook(BotoRequestHook())  # doctest: +SKIP
    """

    active = True

    def __init__(
        self,
        registry: Any = None,
        *,
        aws_service: Optional[str] = None,
        aws_region: Optional[str] = None,
        buckets: Optional[Sequence[float]] = None,
        previous: Any = None,
        recorder: Any = None,
    ) -> None:
        if recorder is None:
            checked = None if buckets is None else check_buckets(buckets, "buckets")
            # BOTO_PROM_DETAILED_METRICS applies here as in enable_metrics(), so that both
            # build a registry's metrics alike.
            recorder = Recorder(metrics_for(check_registry(registry), checked,
                                            detailed=detailed_metrics_from_env()))
        self.recorder = recorder
        self.registry = recorder.registry
        self.aws_service = aws_service
        self.aws_region = aws_region
        self.previous = previous
        self.server: Any = None
        self.settings: Any = None
        self._guard = recorder.guard
        # Reading the request id costs header lookups: for every call only when a sink keeps
        # them all, else only when the call would leave an exemplar.
        self._every_request_id = recorder.every_request_id
        # (host, Action param, X-Amz-Target header) -> the bound, or _DROPPED.
        self._bounds: Dict[Tuple[Any, Any, Any], Any] = {}

    def handle_request_data(self, request: Any, response: Any, error: bool = False) -> None:
        """Record one request; called by boto 2. Never raises, whatever it is handed; the
        previous hook's own exceptions reach the caller unchanged."""
        try:
            # The fast lane: each line raises on a value out of the usual shape, before
            # anything is recorded, and the careful lane takes the call over. (A HEAD answer
            # has .length 0 here: http.client knows no body follows.)
            headers = request.headers
            bound = self._bounds[request.host, request.params.get("Action"), headers.get(_TARGET)]
            code, error_type, throttled = _STATUSES[response.status, error]
            sent, received = int(headers["Content-Length"]), response.length
            if sent < 0 or received.__class__ is not int or response.fp is None:
                raise LookupError("not the usual shape")
            # boto stamps start_time with naive local time: a clock step (NTP, DST on a
            # badly-set host) can make the difference negative, so clamp at zero.
            duration = max((datetime.now() - request.start_time).total_seconds(), 0.0)
            if self._every_request_id or bound.exemplar_due(duration):
                # Only Query and JSON APIs reach this lane, and they answer with
                # x-amzn-RequestId (S3's x-amz-request-id is read in the careful lane): ask for
                # it first, since each miss scans every header.
                request_id = safe_request_id(response.msg.get(_ID) or response.msg.get(_S3_ID))
            else:
                request_id = None
        except Exception:
            self._careful(request, response, error)
        else:
            try:
                bound.record(code, duration, sent, received, error_type, throttled, request_id)
            except Exception:
                self._guard.failed("metrics")
        if self.previous is not None:
            # The user's own hook: its exceptions are theirs and reach them unchanged.
            self.previous.handle_request_data(request, response, error)

    def _record_raised(self, request: Any, response: Any, exc: Any) -> None:
        """Record a request boto 2 ended by raising ``exc`` from a retry handler or a sender,
        where it never calls the hook: as the hook would have, with the AWS error code (else
        the status) as error_type. ``response`` is None when a sender raised (it keeps its
        response to itself; the exception carries the status). Never raises."""
        try:
            bound = self._bind(request)
            if bound is None:
                return
            values = self._values(request, _Answer(exc) if response is None else response,
                                  True, bound)
            code = _error_code(exc)
        except Exception:
            self._guard.failed("record")
            return
        status_code, duration, sent, received, error_type, throttled, request_id = values
        try:
            bound.record(status_code, duration, sent, received, code or error_type, throttled,
                         request_id)
        except Exception:
            self._guard.failed("metrics")

    # --- the careful lane: first calls and anything unusual; each value behind its guard ---

    def _careful(self, request: Any, response: Any, error: bool) -> None:
        try:
            bound = self._bind(request)
            if bound is None:
                return
            values = self._values(request, response, error, bound)
        except Exception:
            self._guard.failed("record")
            return
        try:
            bound.record(*values)
        except Exception:
            self._guard.failed("metrics")

    def _labels(self, request: Any) -> Tuple[str, str]:
        """(service, region): the hook's own, else read from the request's host."""
        service, region = self.aws_service, self.aws_region
        if service is None or region is None:
            parsed = parse_host(getattr(request, "host", None))
            service = parsed[0] if service is None else service
            region = parsed[1] if region is None else region
        return service, region

    def _bind(self, request: Any) -> Any:
        """The request's bound (None when filtered out), cached under its raw key."""
        service, region = self._labels(request)
        try:
            action = boto2_action(
                service,
                getattr(request, "method", None),
                getattr(request, "auth_path", None) or getattr(request, "path", None),
                getattr(request, "params", None),
                getattr(request, "headers", None),
            )
        except Exception:
            self._guard.failed("action")
            action = UNKNOWN
        bound = self.recorder.bind("boto2", service, region, action)
        key = _cache_key(request)
        if key is not None and len(self._bounds) < _CACHE_LIMIT:
            self._bounds[key] = _DROPPED if bound is None else bound
        return bound

    def _values(self, request: Any, response: Any, error: bool, bound: Any) -> Tuple[Any, ...]:
        """The arguments of ``bound.record`` for one call, each read defensively."""
        duration = self._duration(request)
        request_bytes = self._request_bytes(request)
        response_bytes = None
        request_id = None
        if response is None:
            return (NO_RESPONSE, duration, request_bytes, None, "no_response", False, None)
        status = getattr(response, "status", None)
        known = _STATUSES.get((status, bool(error))) if type(status) is int else None
        if known is None:
            self._guard.failed("status", f"unusable response status {type(status).__name__}")
            return (UNKNOWN, duration, request_bytes, None, UNKNOWN if error else None,
                    False, None)
        status_code, error_type, throttled = known
        # A HEAD answer's Content-Length describes the object; no body came.
        if getattr(request, "method", None) == "HEAD":
            response_bytes = 0
        else:
            response_bytes = self._response_bytes(response)
        if self._every_request_id or (duration is not None and bound.exemplar_due(duration)):
            request_id = _request_id(response, self._guard)
        return (status_code, duration, request_bytes, response_bytes, error_type, throttled,
                request_id)

    def _duration(self, request: Any) -> Optional[float]:
        start = getattr(request, "start_time", None)
        if start is None:
            self._guard.failed("duration", "request has no start_time")
            return None
        try:
            seconds = (datetime.now(start.tzinfo) - start).total_seconds()
        except Exception:
            self._guard.failed("duration")
            return None
        return seconds if seconds > 0.0 else 0.0  # clamped: see the fast lane

    def _request_bytes(self, request: Any) -> Optional[int]:
        headers = getattr(request, "headers", None)
        length = headers.get("Content-Length") if isinstance(headers, dict) else None
        if length is not None:
            return self._guard.size(length, "request_size")
        body = getattr(request, "body", None)
        if isinstance(body, (bytes, str)):
            return len(body)
        return None if body is not None else 0

    def _response_bytes(self, response: Any) -> Optional[int]:
        # http.client has already parsed Content-Length into .length; it is exact while the
        # body is unread (fp still open). Once read (a retry handler, error=True) it is 0.
        length = getattr(response, "length", None)
        if type(length) is int and getattr(response, "fp", None) is not None:
            return length
        try:
            length = response.getheader("Content-Length")
        except Exception:
            self._guard.failed("response_size")
            return None
        return self._guard.size(length, "response_size")


def _cache_key(request: Any) -> Optional[Tuple[Any, Any, Any]]:
    """The fast lane's key for request, when the action is named from it alone (a Query or
    JSON API: ``Action`` param or ``X-Amz-Target`` header); None for S3 and other REST calls,
    named from their method and path on every call."""
    try:
        params, headers = request.params, request.headers
        if type(params) is not dict or type(headers) is not dict:
            return None
        key = (request.host, params.get("Action"), headers.get(_TARGET))
        hash(key)
    except Exception:
        return None
    return key if key[1] is not None or key[2] is not None else None


class _Answer:
    """The response a sender's exception stands for: its status, and no headers or size."""

    __slots__ = ("status",)
    length = fp = msg = None

    def __init__(self, exc: Any) -> None:
        self.status = getattr(exc, "status", None)

    def getheader(self, name: str, default: Any = None) -> Any:
        return default


def _error_code(exc: Any) -> Optional[str]:
    """The AWS error code a boto 2 exception carries (``ResourceNotFoundException``), or None.

    JSON services' exceptions name it in ``error_code``, or only in the body's ``__type``
    (``com.amazonaws.dynamodb.v20120810#ResourceNotFoundException``) when they were raised
    without it."""
    code = getattr(exc, "error_code", None)
    if not code:
        body = getattr(exc, "body", None)
        kind = body.get("__type") if isinstance(body, dict) else None
        code = kind.rpartition("#")[2] if isinstance(kind, str) else None
    return safe_name(code)


def _request_id(response: Any, guard: Any) -> Optional[str]:
    try:
        # http.client's parsed headers answer a lookup faster than getheader (which collects
        # and joins every value).
        headers = getattr(response, "msg", None)
        get = headers.get if hasattr(headers, "get") else response.getheader
        for name in (_S3_ID, _ID):
            value = get(name)
            if value:
                return safe_request_id(value)
    except Exception:
        guard.failed("request_id")
    return None


# --- install on one connection --------------------------------------------------------------

def installed(conn: Any) -> Optional[BotoRequestHook]:
    """The active hook of ours on a boto 2 connection, or None."""
    hook = getattr(conn, "request_hook", None)
    return hook if isinstance(hook, BotoRequestHook) and hook.active else None


def install(conn: Any, recorder: Any, settings: Any) -> BotoRequestHook:
    """Put a hook of ours on a boto 2 connection, keeping its earlier hook as ``.previous``.

    An inactive hook of ours (a global-mode hook left after disabling) is replaced by what it
    wrapped. The labels are ``settings.aws_service`` / ``aws_region``, else read from the
    connection now.

    Args:
        conn: a boto 2 connection.
        recorder: the :class:`boto_prom.recorder.Recorder` to record into.
        settings: the :class:`boto_prom.settings.Settings` metrics were enabled with.
    """
    previous = getattr(conn, "request_hook", None)
    while isinstance(previous, BotoRequestHook) and not previous.active:
        previous = previous.previous
    hook = BotoRequestHook(
        aws_service=settings.aws_service or connection_service(conn),
        aws_region=settings.aws_region or connection_region(conn),
        previous=previous,
        recorder=recorder,
    )
    hook.settings = settings
    conn.set_request_hook(hook)
    _watch_raised(conn)
    return hook


def uninstall(conn: Any) -> bool:
    """Take our hook off a boto 2 connection, putting back the hook it had before (and
    boto's own ``_mexe``).

    Returns:
        True when a hook of ours was on it, False otherwise.
    """
    hook = getattr(conn, "request_hook", None)
    if not isinstance(hook, BotoRequestHook):
        return False
    conn.set_request_hook(hook.previous)
    _unwatch_raised(conn)
    return True


# --- requests boto 2 ends by raising, without calling the hook ------------------------------
#
# A retry handler (DynamoDB's raises for every 4xx: ResourceNotFoundException,
# ConditionalCheckFailedException...) or a sender (S3 uploads raise for a 4xx) that raises ends
# ``_mexe`` before it calls the hook. So on a connection of ours, ``_mexe`` is an instance
# attribute that hands boto's ``_mexe`` watched copies of the two callbacks for that one call:
# one that raises a BotoServerError records the request, then lets the exception go on. Only
# those two raise past the hook, and boto calls the hook only after they return, so no
# request is counted twice; the copies belong to one call, so threads sharing the connection
# never see each other's.

def _mexe_for(conn: Any) -> Any:
    """A ``_mexe`` for conn's instance dictionary; its ``boto_prom_shadowed`` is what it hides
    there (an instance attribute someone set before us), or None (boto's class method)."""
    # A weak reference: the connection holds this function, and must not be kept alive by it.
    ref = weakref.ref(conn)
    shadowed = vars(conn).get("_mexe")

    def _mexe(request: Any, sender: Any = None, override_num_retries: Any = None,
              retry_handler: Any = None) -> Any:
        conn = ref()
        if sender is not None or retry_handler is not None:
            sender, retry_handler = _watched(conn, request, sender, retry_handler)
        if shadowed is not None:
            return shadowed(request, sender, override_num_retries, retry_handler)
        return type(conn)._mexe(conn, request, sender, override_num_retries, retry_handler)

    _mexe.boto_prom_shadowed = shadowed  # type: ignore[attr-defined]
    return _mexe


def _ours(mexe: Any) -> bool:
    """True for a ``_mexe`` made by :func:`_mexe_for` (not for a wrapper someone put over it,
    which functools.wraps would give our attribute and a ``__wrapped__``)."""
    attributes = getattr(mexe, "__dict__", {})
    return "boto_prom_shadowed" in attributes and "__wrapped__" not in attributes


def _watched(conn: Any, request: Any, sender: Any, retry_handler: Any) -> Tuple[Any, Any]:
    """(sender, retry_handler) for one request: each one that raises a BotoServerError records
    the request with the connection's hook first; the originals when no hook of ours is on."""
    try:
        hook = installed(conn)
        if hook is None:
            return sender, retry_handler
        return (_watch(sender, hook, request, False) if callable(sender) else sender,
                _watch(retry_handler, hook, request, True) if callable(retry_handler)
                else retry_handler)
    except Exception:  # nothing here should raise; if it does, the call goes on unwatched
        return sender, retry_handler


def _watch(callback: Any, hook: BotoRequestHook, request: Any, gets_response: bool) -> Any:
    def watched(*args: Any) -> Any:
        try:
            return callback(*args)
        except _BotoServerError as exc:
            # A retry handler gets (response, attempt, sleep); a sender (connection, ...).
            hook._record_raised(request, args[0] if gets_response else None, exc)
            raise  # the same exception, with its traceback

    return watched


def _state_for(conn: Any) -> Any:
    """A ``__getstate__`` for conn's instance dictionary: ``copy.copy(conn)`` copies that
    dictionary, and our ``_mexe`` in a copy would send the copy's requests through conn (and
    find nothing once conn is gone). A copy gets conn's state without it: its hook still
    counts, errors raised past the hook are not (as for a hook set by hand)."""
    ref = weakref.ref(conn)

    def __getstate__() -> Any:
        state = dict(vars(ref()))
        del state["__getstate__"]
        mexe = state.pop("_mexe", None)
        if mexe is not None and _ours(mexe):
            mexe = mexe.boto_prom_shadowed
        if mexe is not None:
            state["_mexe"] = mexe
        return state

    __getstate__.boto_prom_state = True  # type: ignore[attr-defined]
    return __getstate__


def _watch_raised(conn: Any) -> None:
    """Give conn our ``_mexe``, once, and the ``__getstate__`` that keeps it out of copies
    (unless conn has a ``__getstate__`` of its own to respect)."""
    if not _ours(vars(conn).get("_mexe")):
        conn._mexe = _mexe_for(conn)
        if "__getstate__" not in vars(conn):
            conn.__getstate__ = _state_for(conn)


def _unwatch_raised(conn: Any) -> None:
    """Put back the ``_mexe`` conn had before ours (boto's class method, unless an instance
    attribute was there), once no hook of ours is active on it."""
    mexe = vars(conn).get("_mexe")
    if _ours(mexe) and installed(conn) is None:
        if mexe.boto_prom_shadowed is None:
            del conn._mexe
        else:
            conn._mexe = mexe.boto_prom_shadowed
        if getattr(vars(conn).get("__getstate__"), "boto_prom_state", False):
            del conn.__getstate__


# --- global mode: every connection made from now on -----------------------------------------

class _Global:
    """One global install: what its connection hooks record into, and whether they still do."""

    def __init__(self, recorder: Any, settings: Any) -> None:
        self.recorder = recorder
        self.settings = settings
        self.active = True
        self.wrapper: Any = None  # our AWSAuthConnection.__init__ wrapper
        # The connections given a hook, whose _mexe uninstalling puts back; the lock keeps a
        # connection made on another thread from changing the set while it is read.
        self.connections: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self.connections_lock = threading.Lock()


_current: Optional[_Global] = None
_lock = threading.Lock()


def install_global(recorder: Any, settings: Any) -> bool:
    """Give every boto 2 connection created from now on a hook, by wrapping
    ``AWSAuthConnection.__init__``.

    Args:
        recorder: the :class:`boto_prom.recorder.Recorder` the hooks record into.
        settings: the :class:`boto_prom.settings.Settings` metrics were enabled with.

    Returns:
        True once installed; False when boto 2 does not import (then nothing is installed).
    """
    try:
        from boto.connection import AWSAuthConnection
    except Exception:  # not installed, or Python 3.12+ where boto 2 cannot import
        return False
    global _current
    with _lock:
        if _current is not None:
            _uninstall_locked()
        state = _Global(recorder, settings)
        original = AWSAuthConnection.__init__

        @functools.wraps(original)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            if not state.active:
                return
            try:
                existing = getattr(self, "request_hook", None)
                if not isinstance(existing, BotoRequestHook):
                    self.set_request_hook(_ConnectionHook(state, self, existing))
                    _watch_raised(self)
                    with state.connections_lock:
                        state.connections.add(self)
            except Exception:
                state.recorder.guard.failed("boto2_global")

        __init__._boto_prom_original = original  # type: ignore[attr-defined]
        state.wrapper = __init__
        AWSAuthConnection.__init__ = __init__
        _current = state
    return True


def uninstall_global() -> None:
    """Undo :func:`install_global`: connections made from now on get no hook, the hooks it
    gave earlier connections only pass calls on to their previous hook, and those connections
    get boto's own ``_mexe`` back."""
    with _lock:
        _uninstall_locked()


def _uninstall_locked() -> None:
    global _current
    state, _current = _current, None
    if state is None:
        return
    state.active = False
    from boto.connection import AWSAuthConnection

    # Only our own wrapper is taken out. A wrapper someone put on top of ours (functools.wraps
    # copies our marker onto it) stays, and ours under it is inert now that it is inactive.
    if AWSAuthConnection.__dict__.get("__init__") is state.wrapper:
        AWSAuthConnection.__init__ = state.wrapper._boto_prom_original
    with state.connections_lock:
        connections = list(state.connections)
    for conn in connections:
        _unwatch_raised(conn)


class _ConnectionHook(BotoRequestHook):
    """The hook each new boto 2 connection gets in global mode: labels read from the
    connection at its first request (programs often set ``auth_service_name`` after
    construction), and inert once global mode is uninstalled."""

    def __init__(self, state: _Global, conn: Any, previous: Any) -> None:
        super().__init__(previous=previous, recorder=state.recorder)
        self.settings = state.settings
        self.aws_service = getattr(state.settings, "aws_service", None)
        self.aws_region = getattr(state.settings, "aws_region", None)
        self._state = state
        self._conn = weakref.ref(conn)

    @property  # type: ignore[override]
    def active(self) -> bool:
        """False once global mode was uninstalled: the hook only passes calls on."""
        return self._state.active

    def handle_request_data(self, request: Any, response: Any, error: bool = False) -> None:
        if self._state.active:
            BotoRequestHook.handle_request_data(self, request, response, error)
        elif self.previous is not None:
            self.previous.handle_request_data(request, response, error)

    def _labels(self, request: Any) -> Tuple[str, str]:
        if self.aws_service is None or self.aws_region is None:
            conn = self._conn()
            if conn is not None:
                try:
                    self.aws_region = self.aws_region or connection_region(conn)
                    self.aws_service = self.aws_service or connection_service(conn)
                except Exception:
                    self._guard.failed("labels")
        return super()._labels(request)
