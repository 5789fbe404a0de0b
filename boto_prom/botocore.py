"""The botocore adapter: event handlers that turn each boto3/botocore call into one record.

It listens on botocore's event system, never wraps client methods:

- ``before-call``: the call starts; the monotonic clock starts and a per-call state goes into the
  call's ``context`` dict (botocore makes one per call and hands it to every event below).
- ``before-send``: an HTTP attempt goes on the wire: its clock starts, and the first one puts the
  call in flight. (botocore before 1.40 or so does not hand ``before-send`` the context; there
  ``request-created``, just before it, counts the attempt and points ``before-send`` at the
  call.)
- ``response-received``: the attempt ended, with a response or an exception.
- ``after-call`` / ``after-call-error``: the call ended; its record goes to the recorder and the
  call leaves the in-flight gauge.

Retries are the attempts after the first. ``needs-retry`` is not listened to: botocore takes
the first answer of its handlers, which another handler cannot see, so watching it would mean
re-deciding what botocore's retry handler decides.

Only ``before-call`` belongs to one :class:`BotocoreHook`; the other handlers are plain functions
that finish whatever call state they find, so a call under way when metrics are disabled still
finishes cleanly (and the in-flight gauge goes back down). Importing this module imports
botocore.
"""

from __future__ import annotations

import inspect
import threading
import time
import weakref
from typing import Any, Dict, Optional, Tuple

from botocore.awsrequest import AWSPreparedRequest
from botocore.exceptions import ConnectionError as _ConnectionError
from botocore.exceptions import HTTPClientError

from ._naming import safe_name, safe_request_id
from .record import NO_RESPONSE, UNKNOWN, RequestRecord

# The error codes botocore's retry handler treats as throttling (botocore/retries/standard.py,
# ThrottledRetryableChecker, and data/_retry.json for legacy mode). The one list boto-prom uses.
THROTTLING_CODES = frozenset({
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
})
THROTTLING_STATUS = 429

# What else botocore retries as transient (TransientRetryableChecker): used only to tell whether
# a failed call ran out of attempts.
TRANSIENT_CODES = frozenset({"RequestTimeout", "RequestTimeoutException",
                             "PriorRequestNotComplete"})
TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})
_RETRYABLE_EXCEPTIONS = (_ConnectionError, HTTPClientError)

_KEY = "boto_prom.call"  # our entry in botocore's per-call context dict
_START_EVENT = "before-call.*.*"
_START_ID = "boto_prom.before-call"
_STATUS_TEXT = {code: str(code) for code in range(100, 600)}
_BOUND_CACHE_LIMIT = 10_000
_UNBOUND = object()
_clock = time.perf_counter  # monotonic, and the finest clock there is

# botocore gave the prepared request a ``context`` only in recent releases; before that,
# ``before-send`` finds the call through the thread that just built the request.
_PREPARED_HAS_CONTEXT = "context" in inspect.signature(AWSPreparedRequest.__init__).parameters
_local = threading.local()


class _Bound:
    """Label values and bound children of one (operation, region), resolved once."""

    __slots__ = ("labels", "attempt", "in_flight")

    def __init__(self, metrics: Any, labels: Tuple[str, str, str]) -> None:
        # The label set as the Prometheus sink keeps it: folded into action="_other" once
        # max_label_sets is reached, so the attempt histogram stays bounded too.
        labels = metrics.label_set(labels)
        self.labels = labels
        self.attempt = metrics.attempt_duration.labels(*labels)
        self.in_flight = metrics.in_flight.labels(labels[0], labels[1])


class _Call:
    """One call under way: lives in botocore's context dict from before-call to after-call."""

    __slots__ = ("hook", "bound", "start", "attempts", "attempt_start", "request_bytes",
                 "in_flight")

    def __init__(self, hook: "BotocoreHook", bound: _Bound, start: float) -> None:
        self.hook = hook
        self.bound = bound
        self.start = start
        self.attempts = 0
        self.attempt_start: Optional[float] = None
        self.request_bytes: Optional[int] = None
        self.in_flight = False  # counted in the in-flight gauge, not yet taken out

    def leave_in_flight(self) -> None:
        if self.in_flight:
            self.in_flight = False
            self.bound.in_flight.dec()

    def __del__(self) -> None:
        # botocore sends no after-call-error for a BaseException (Ctrl-C, SystemExit, a
        # gevent Timeout, a cancellation): the call state is dropped with the context dict,
        # and this takes it out of the in-flight gauge instead of leaving it up for good.
        try:
            self.leave_in_flight()
        except Exception:
            pass


class BotocoreHook:
    """Records every call of the botocore clients it is registered on.

    Most programs get one from :func:`boto_prom.enable_metrics`, given a boto3/botocore client
    or session (or nothing: boto3's default session).

    Args:
        recorder: where records go (built by :func:`boto_prom.enable_metrics`).
        aws_service: the ``aws_service`` label for every call, instead of the client's.
        aws_region: the ``aws_region`` label for every call, instead of the client's.

    Attributes:
        registry: the prometheus_client registry recorded into.
        server: the metrics server, when enable_metrics started one.
        active: False once disabled where it was enabled; calls started after that are not
            recorded, by any client that carries it.
    """

    def __init__(self, recorder: Any, *, aws_service: Optional[str] = None,
                 aws_region: Optional[str] = None) -> None:
        self.recorder = recorder
        self.registry = recorder.registry
        self.server: Any = None
        self.aws_service = aws_service
        self.aws_region = aws_region
        self.active = True
        self._guard = recorder.guard
        self._metrics = recorder.metrics
        self._bound: Dict[Tuple[Any, Any, Any], Optional[_Bound]] = {}
        self._owner: Any = None  # weak reference to the event emitter it was enabled on

    # --- the per-call path: dict lookups, a clock read, inc/observe -----------------------

    def before_call(self, model: Any = None, context: Any = None, **kwargs: Any) -> None:
        """botocore's ``before-call``: start the call's clock. Returns None, always (a value
        would stand in for the call's response)."""
        if not self.active:
            return None
        try:
            region = context.get("client_region")
            # Keyed by names, not by the model objects: every client has models of its own,
            # and a program making a client per call would otherwise keep them all alive.
            key = (getattr(getattr(model, "service_model", None), "service_name", None),
                   getattr(model, "name", None), region)
            bound = self._bound.get(key, _UNBOUND)
            if bound is _UNBOUND:
                bound = self._bind(model, region, key)
            if bound is not None:
                context[_KEY] = _Call(self, bound, _clock())
        except Exception:
            self._guard.failed("before_call")
        return None

    def _bind(self, model: Any, region: Any, key: Tuple[Any, Any, Any]) -> Optional[_Bound]:
        service = self.aws_service
        if service is None:
            service_model = getattr(model, "service_model", None)
            service = safe_name(getattr(service_model, "service_name", None)) or UNKNOWN
        action = safe_name(getattr(model, "name", None)) or UNKNOWN
        region_label = self.aws_region or safe_name(region) or UNKNOWN
        accept = self.recorder.accept
        if accept is not None and not accept(service, action):
            bound = None  # filtered out: such calls are not followed at all
        else:
            bound = _Bound(self._metrics, (service, region_label, action))
        if len(self._bound) < _BOUND_CACHE_LIMIT:
            self._bound[key] = bound
        return bound

    def _finish(self, call: _Call, context: Any, http: Any, parsed: Any,
                exception: Optional[BaseException]) -> None:
        try:
            duration = _clock() - call.start
            if call.attempts:
                call.leave_in_flight()
            elif exception is None:
                return  # answered before any HTTP attempt (botocore's Stubber): not an AWS call
            rec = self._build(call, context, http, parsed, exception, duration)
        except Exception:
            self._guard.failed("record")
            return
        # Filters were applied when the call's labels were bound, before any folding.
        self.recorder.record(rec, accepted=True)

    def _build(self, call: _Call, context: Any, http: Any, parsed: Any,
               exception: Optional[BaseException], duration: float) -> RequestRecord:
        response_bytes = request_id = None
        throttled = retryable = False
        error_type: Optional[str]
        if exception is not None or http is None:
            status_code = NO_RESPONSE
            error_type = safe_name(type(exception).__name__) or UNKNOWN
            retryable = isinstance(exception, _RETRYABLE_EXCEPTIONS)
        else:
            status = getattr(http, "status_code", None)
            status_code = _STATUS_TEXT.get(status) if type(status) is int else None
            error_type = None
            if status_code is None:
                self._guard.failed("status", f"unusable response status {type(status).__name__}")
                status_code = UNKNOWN
            else:
                if status >= 400:
                    code = _error_code(parsed)
                    error_type = code or status_code
                    throttled = status == THROTTLING_STATUS or code in THROTTLING_CODES
                    retryable = (throttled or status in TRANSIENT_STATUSES
                                 or code in TRANSIENT_CODES)
                meta = parsed.get("ResponseMetadata") if type(parsed) is dict else None
                if type(meta) is not dict:
                    meta = {}
                response_bytes = self._response_bytes(http, meta.get("HTTPHeaders"))
                if self.recorder.wants_request_id:
                    request_id = safe_request_id(meta.get("RequestId"))
        exhausted = False
        if retryable:
            retries = context.get("retries")
            limit = retries.get("max") if type(retries) is dict else None
            exhausted = type(limit) is int and call.attempts >= limit
        return RequestRecord(
            "botocore", *call.bound.labels, status_code, duration, call.request_bytes,
            response_bytes, error_type, throttled, request_id, time.time(),
            attempts=call.attempts, retries_exhausted=exhausted,
        )

    def _response_bytes(self, http: Any, headers: Any) -> Optional[int]:
        try:
            # botocore's parsed copy of the headers is a plain dict with lower-case names: far
            # cheaper to read than the response's own case-insensitive headers.
            if type(headers) is not dict:
                headers = http.headers
            length = headers.get("content-length")
        except Exception:
            self._guard.failed("response_size")
            return None
        return self._guard.size(length, "response_size")


# --- the handlers every hook shares: they finish whatever call they find ----------------------

def _call_in(context: Any) -> Optional[_Call]:
    return context.get(_KEY) if type(context) is dict else None


def _start_attempt(call: _Call) -> None:
    call.attempts += 1
    if call.attempts == 1:
        call.bound.in_flight.inc()
        call.in_flight = True


def _on_request_created(request: Any = None, **kwargs: Any) -> None:
    # Only for botocore whose prepared requests carry no context (see the module docstring).
    call = _call_in(getattr(request, "context", None))
    if call is None:
        return
    try:
        _start_attempt(call)
        # Registered last, after signing: nothing runs between here and before-send but the
        # request's preparation, so no other call can come in between on this thread.
        _local.call = call
    except Exception:
        call.hook._guard.failed("request_created")


def _on_before_send(request: Any = None, **kwargs: Any) -> None:
    # Returns None, always: a value would stand in for the HTTP response.
    if _PREPARED_HAS_CONTEXT:
        call = _call_in(getattr(request, "context", None))
    else:
        call = getattr(_local, "call", None)
        _local.call = None
    if call is None:
        return
    try:
        if _PREPARED_HAS_CONTEXT:
            _start_attempt(call)
        call.request_bytes = _request_bytes(request, call.hook._guard)
        call.attempt_start = _clock()
    except Exception:
        call.hook._guard.failed("before_send")


def _on_response_received(context: Any = None, **kwargs: Any) -> None:
    call = _call_in(context)
    if call is None or call.attempt_start is None:
        return
    try:
        call.bound.attempt.observe(_clock() - call.attempt_start)
        call.attempt_start = None
    except Exception:
        call.hook._guard.failed("attempt")


def _on_after_call(http_response: Any = None, parsed: Any = None, context: Any = None,
                   **kwargs: Any) -> None:
    call = context.pop(_KEY, None) if type(context) is dict else None
    if call is not None:
        call.hook._finish(call, context, http_response, parsed, None)


def _on_after_call_error(exception: Any = None, context: Any = None, **kwargs: Any) -> None:
    call = context.pop(_KEY, None) if type(context) is dict else None
    if call is not None:
        call.hook._finish(call, context, None, None, exception)


# (event, registration, handler). Attempt events go last so that signing and client-side rate
# limiting are not counted in the attempt; the end events go first (``.*.*`` sorts before
# every more specific handler) so that another handler raising cannot skip them.
_FOLLOWERS: Tuple[Tuple[str, str, Any], ...] = (
    ("before-send", "register_last", _on_before_send),
    ("response-received.*.*", "register_first", _on_response_received),
    ("after-call.*.*", "register_first", _on_after_call),
    ("after-call-error.*.*", "register_first", _on_after_call_error),
)
if not _PREPARED_HAS_CONTEXT:
    _FOLLOWERS = (("request-created", "register_last", _on_request_created),) + _FOLLOWERS


def _error_code(parsed: Any) -> Optional[str]:
    error = parsed.get("Error") if type(parsed) is dict else None
    code = error.get("Code") if type(error) is dict else None
    return safe_name(code)


def _request_bytes(request: Any, guard: Any) -> Optional[int]:
    body = getattr(request, "body", None)
    if body is None:
        return 0
    if isinstance(body, (bytes, bytearray)):
        return len(body)
    # A stream: trust its header.
    return guard.size(request.headers.get("Content-Length"), "request_size")


# --- enabling and disabling -------------------------------------------------------------------

def events_of(target: Any) -> Any:
    """The event emitter of a botocore client, a botocore session or a boto3 session."""
    meta = getattr(target, "meta", None)
    if meta is not None and hasattr(meta, "events"):
        return meta.events  # a client
    if hasattr(target, "get_component"):
        return target.get_component("event_emitter")  # a botocore session
    return target.events  # a boto3 session


def registered_hook(emitter: Any) -> Optional[BotocoreHook]:
    """The hook whose before-call handler the emitter carries (inherited from a session
    included), or None. Reads botocore internals defensively."""
    inner = getattr(emitter, "_emitter", emitter)
    handlers = getattr(inner, "_unique_id_handlers", None)
    entry = handlers.get(_START_ID) if isinstance(handlers, dict) else None
    handler = entry.get("handler") if isinstance(entry, dict) else None
    hook = getattr(handler, "__self__", None)
    if isinstance(hook, BotocoreHook):
        return hook
    return _owned.get(emitter)


# Hooks by the emitter they were enabled on: the fallback when botocore's internals change.
_owned: "weakref.WeakKeyDictionary[Any, BotocoreHook]" = weakref.WeakKeyDictionary()


def instrument(target: Any, hook: BotocoreHook) -> BotocoreHook:
    """Register hook on a client's or session's events, unless an active hook already is.

    Returns the hook that records the target's calls: hook, or the one already there (enabling
    twice never double-counts; a client from an enabled session already has its session's).
    """
    emitter = events_of(target)
    existing = registered_hook(emitter)
    if existing is not None and existing.active:
        return existing
    if existing is not None:
        emitter.unregister(_START_EVENT, unique_id=_START_ID)
    for event, how, handler in _FOLLOWERS:
        getattr(emitter, how)(event, handler, unique_id=f"boto_prom.{event}")
    emitter.register(_START_EVENT, hook.before_call, unique_id=_START_ID)
    hook._owner = weakref.ref(emitter)
    _owned[emitter] = hook
    return hook


def uninstrument(target: Any) -> bool:
    """Stop recording the calls of a client or session; True when metrics were on.

    Disabling a session also stops its clients created while it was enabled. The handlers that
    finish calls stay registered, so calls under way finish and leave the in-flight gauge.
    """
    emitter = events_of(target)
    hook = registered_hook(emitter)
    emitter.unregister(_START_EVENT, unique_id=_START_ID)
    _owned.pop(emitter, None)
    if hook is None or not hook.active:
        return False
    owner = hook._owner() if hook._owner is not None else None
    if owner is emitter:
        hook.active = False
    return True


__all__ = ["BotocoreHook", "THROTTLING_CODES", "instrument", "uninstrument"]
