"""The botocore adapter: the handlers, instrument/uninstrument, and the global mode.

boto-prom records from botocore's event system. These events give the whole metric contract,
and none of them can be left out:

- ``before-call``: the call starts. Its handler is the only one that belongs to a
  :class:`BotocoreHook`: it looks up the bound label set of the call's (service, operation,
  region), binding it on first use, and puts a small per-call state holding the start time into
  the call's ``context`` dict (botocore makes one per call and hands it to the events below).
  The call's duration starts here, serialising and signing included, and a call that fails
  before any HTTP attempt (missing credentials) is still seen.
- ``before-send``: a signed HTTP attempt goes on the wire: its clock starts, and the first one
  puts the call in flight and measures the request body. The one event per attempt before the
  request leaves.
- ``response-received``: the attempt ended, with a response or an exception; a throttled
  answer is counted, and with detailed metrics the attempt is observed in the attempt
  histogram. The one event per attempt after it: a retried attempt has no other.
- ``after-call`` / ``after-call-error``: the call ended, with a response (of any status) or an
  exception. Exactly one of the two comes per call; the call is counted and leaves the in-flight
  gauge.

A call with one attempt thus runs four handlers. ``needs-retry`` is not listened to: botocore
takes the first answer of its handlers, which another handler cannot see, so watching it would
mean re-deciding what botocore's retry handler decides; retries are the attempts after the
first. Older botocore (1.40 among them) hands ``before-send`` no context: there a handler on
``request-created``, just before it in the same thread and asyncio task, points ``before-send``
at the call.

Only ``before-call`` is taken out when metrics are disabled; the other handlers finish whatever
call state they find, so a call under way when metrics are disabled still finishes cleanly (and
leaves the in-flight gauge).

The global mode (``enable_metrics()`` with no argument) must reach clients of sessions it is
never shown, made before it or after, so it wraps the one method every client's every call
goes through, ``BaseClient._make_api_call``, and every subclass's own (aiobotocore's
``AioBaseClient`` replaces it with a coroutine), whether the subclass exists already or is
defined later: a client's first call registers the handlers on that client, and the calls
after it cost one look in the client's ``__dict__``. The recording is the events', as for one
client.

aiobotocore's clients and sessions subclass botocore's and emit the same events (awaiting a
handler's result only when it is awaitable), so everything here serves them unchanged: the
per-call state lives in the call's own context dict, never in the hook or the thread, and
so many coroutines' calls interleaved on one thread each keep their own. Importing this module
imports botocore.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import threading
import time
import weakref
from typing import Any, Dict, List, Optional, Tuple

from botocore.awsrequest import AWSPreparedRequest
from botocore.exceptions import ConnectionError as _ConnectionError
from botocore.exceptions import HTTPClientError

from .naming import safe_name, safe_request_id
from .record import NO_RESPONSE, UNKNOWN
from .settings import ConfigurationError

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
# The statuses after-call records on its short path: a success needs no error code read.
_SUCCESS_TEXT = {code: text for code, text in _STATUS_TEXT.items() if code < 400}
_BOUND_CACHE_LIMIT = 10_000
_FILTERED = object()  # cached for a label set the recorder's filters drop
_clock = time.perf_counter  # monotonic, and the finest clock there is

# botocore gave the prepared request a ``context`` only in recent releases; before that,
# ``before-send`` finds the call through the thread that just built the request, and the
# asyncio task: a context variable is both, so coroutines that interleave on one thread
# between the two events (an async handler may let others run) each find their own call.
_PREPARED_HAS_CONTEXT = "context" in inspect.signature(AWSPreparedRequest.__init__).parameters
_handed: "contextvars.ContextVar[Optional[_Call]]" = contextvars.ContextVar(
    "boto_prom_handed", default=None)


class _Call:
    """One call under way: lives in botocore's context dict from before-call to after-call."""

    __slots__ = ("hook", "bound", "start", "attempts", "attempt_start", "request_bytes")

    def __init__(self, hook: "BotocoreHook", bound: Any, start: float) -> None:
        self.hook, self.bound, self.start = hook, bound, start
        # attempts > 0 means the call is counted in the in-flight gauge: the first attempt
        # puts it there, and finishing sets attempts back to 0 when it takes it out.
        self.attempts, self.attempt_start, self.request_bytes = 0, None, None

    def __del__(self) -> None:
        # botocore sends no after-call-error for a BaseException (Ctrl-C, SystemExit, a gevent
        # Timeout, a cancellation): the call state is dropped with the context dict, and this
        # takes it out of the in-flight gauge instead of leaving it up for good.
        if self.attempts:
            self.attempts = 0
            try:
                self.bound.in_flight.dec()
            except Exception:
                pass  # in a finaliser: no call to report it to


class BotocoreHook:
    """Records every call of the botocore clients and sessions it is registered on.

    Built by :func:`boto_prom.enable_metrics` (through :func:`instrument`), given a
    boto3/botocore client or session, or nothing (then it records every client that has no hook
    of its own).

    Args:
        recorder: the :class:`boto_prom.recorder.Recorder` that binds label sets.
        settings: the :class:`boto_prom.settings.Settings` it was enabled with (its
            ``aws_service`` and ``aws_region`` replace the client's), or None.

    Attributes:
        registry: the prometheus_client registry recorded into.
        server: the metrics server, when enable_metrics started one.
        settings: the settings it was enabled with, or None.
        aws_service: the ``aws_service`` label for every call, or None (the client's).
        aws_region: the ``aws_region`` label for every call, or None (the client's).
        active: False once disabled where it was enabled; calls started after that are not
            recorded, by any client that carries it.
        every_request_id: read every response's request id (the CSV file keeps them); else
            only when the call would leave an exemplar.
    """

    def __init__(self, recorder: Any, settings: Any = None) -> None:
        self.recorder = recorder
        self.registry = recorder.registry
        self.server: Any = None
        self.settings = settings
        self.aws_service: Optional[str] = getattr(settings, "aws_service", None)
        self.aws_region: Optional[str] = getattr(settings, "aws_region", None)
        self.active = True
        self.guard = recorder.guard
        self.every_request_id = recorder.every_request_id
        # What recorder.bind returned, by (event name, client region): a hit skips naming.
        # Keyed by names, not by the model objects: every client has models of its own, and a
        # program making a client per call would otherwise keep them all alive.
        self._bound: Dict[Tuple[Any, Any], Any] = {}
        self._owner: Any = None  # weak reference to the event emitter it was enabled on

    def before_call(self, model: Any = None, context: Any = None, event_name: Any = None,
                    **kwargs: Any) -> None:
        """botocore's ``before-call``: start the call's clock. Returns None, always (a value
        would stand in for the call's response)."""
        if not self.active:
            return
        try:
            # The event's name ("before-call.ec2.DescribeRegions") names the service and the
            # operation: with the client's region it keys the cache, so a hit reads no model.
            key = (event_name, context.get("client_region"))
            bound = self._bound.get(key)
            if bound is None:
                bound = self._bind(model, key)
            if bound is not _FILTERED:
                context[_KEY] = _Call(self, bound, _clock())
        except Exception:
            self.guard.failed("before_call")

    def _bind(self, model: Any, key: Tuple[Any, Any]) -> Any:
        service_model = getattr(model, "service_model", None)
        bound = self.recorder.bind(
            "botocore",
            self.aws_service or safe_name(getattr(service_model, "service_name", None)) or UNKNOWN,
            self.aws_region or safe_name(key[1]) or UNKNOWN,
            safe_name(getattr(model, "name", None)) or UNKNOWN,
        )
        if bound is None:
            bound = _FILTERED  # such calls are not followed at all
        # Called by hand, a handler gets no event name: such calls are bound, not cached.
        if key[0] is not None and len(self._bound) < _BOUND_CACHE_LIMIT:
            self._bound[key] = bound
        return bound

    def _finish(self, call: _Call, attempts: int, duration: float, context: Any, http: Any,
               parsed: Any, exception: Optional[BaseException] = None) -> None:
        """Record a call that did not end in a well-formed success: an error status, an
        exception, or a response botocore's parser did not make the usual way."""
        request_id = None
        response_bytes = None
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
                self.guard.failed("status", f"unusable response status {type(status).__name__}")
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
                if self.every_request_id or call.bound.exemplar_due(duration):
                    request_id = safe_request_id(meta.get("RequestId"))
        exhausted = False
        if retryable:
            retries = context.get("retries")
            limit = retries.get("max") if type(retries) is dict else None
            exhausted = type(limit) is int and attempts >= limit
        call.bound.record(status_code, duration, call.request_bytes, response_bytes, error_type,
                          throttled, request_id, attempts, exhausted)

    def _response_bytes(self, http: Any, headers: Any) -> Optional[int]:
        try:
            # botocore's parsed copy of the headers is a plain dict with lower-case names: far
            # cheaper to read than the response's own case-insensitive headers.
            if type(headers) is not dict:
                headers = http.headers
            length = headers.get("content-length")
        except Exception:
            self.guard.failed("response_size")
            return None
        return self.guard.size(length, "response_size")


# --- the handlers every hook shares: they finish whatever call they find ----------------------

def _on_before_send(request: Any = None, **kwargs: Any) -> None:
    # Returns None, always: a value would stand in for the HTTP response.
    context = getattr(request, "context", None)
    call = context.get(_KEY) if type(context) is dict else None
    if call is not None:
        _start_attempt(call, request)


def _start_attempt(call: _Call, request: Any) -> None:
    try:
        if call.attempts:
            call.attempts += 1
        else:
            # attempts > 0 and the gauge go together: set at once, before anything can fail.
            call.bound.in_flight.inc()
            call.attempts = 1
            call.request_bytes = _request_bytes(request, call.hook.guard)
        if call.bound.attempt is not None:  # the attempt histogram: detailed metrics only
            call.attempt_start = _clock()
    except Exception:
        call.hook.guard.failed("before_send")


def _on_request_created(request: Any = None, **kwargs: Any) -> None:
    # Only for botocore whose prepared requests carry no context (see the module docstring).
    # Registered last, after signing: in this thread and task, nothing runs between here and
    # before-send but the request's preparation.
    context = getattr(request, "context", None)
    _handed.set(context.get(_KEY) if type(context) is dict else None)


def _on_before_send_handed(request: Any = None, **kwargs: Any) -> None:
    # before-send where the prepared request has no context: the call request-created handed.
    call = _handed.get()
    _handed.set(None)
    if call is not None:
        _start_attempt(call, request)


def _on_response_received(context: Any = None, response_dict: Any = None,
                          parsed_response: Any = None, **kwargs: Any) -> None:
    call = context.get(_KEY) if type(context) is dict else None
    if call is None:
        return
    try:
        if call.attempt_start is not None:
            call.bound.attempt.observe(_clock() - call.attempt_start)
            call.attempt_start = None
        # Each attempt AWS throttled, the ones retries absorbed included: after-call sees
        # only the last answer.
        status = response_dict.get("status_code") if type(response_dict) is dict else None
        if type(status) is int and status >= 400 and (
                status == THROTTLING_STATUS or _error_code(parsed_response) in THROTTLING_CODES):
            call.bound.count_throttled_attempt()
    except Exception:
        call.hook.guard.failed("attempt")


def _on_after_call(http_response: Any = None, parsed: Any = None, context: Any = None,
                   **kwargs: Any) -> None:
    call = context.pop(_KEY, None) if type(context) is dict else None
    if call is None or not call.attempts:
        return  # not ours, or answered before any HTTP attempt (botocore's Stubber)
    duration = _clock() - call.start
    attempts, call.attempts = call.attempts, 0  # 0: out of the in-flight gauge (see _Call)
    try:
        call.bound.in_flight.dec()
        # The short path: a success botocore parsed the usual way. Everything else (an error
        # status, a malformed response) takes the careful one.
        status = _SUCCESS_TEXT.get(getattr(http_response, "status_code", None))
        meta = parsed.get("ResponseMetadata") if type(parsed) is dict else None
        headers = meta.get("HTTPHeaders") if type(meta) is dict else None
        if status is None or type(headers) is not dict:
            call.hook._finish(call, attempts, duration, context, http_response, parsed)
            return
        # botocore's parsed copy of the headers: a plain dict with lower-case names.
        size = headers.get("content-length")
        size = int(size) if type(size) is str and size.isdecimal() else call.hook.guard.size(
            size, "response_size")
        due = call.hook.every_request_id or call.bound.exemplar_due(duration)
        rid = safe_request_id(meta.get("RequestId")) if due else None
        call.bound.record(status, duration, call.request_bytes, size, None, False, rid, attempts)
    except Exception:
        call.hook.guard.failed("record")


def _on_after_call_error(exception: Any = None, context: Any = None, **kwargs: Any) -> None:
    call = context.pop(_KEY, None) if type(context) is dict else None
    if call is None:
        return
    duration = _clock() - call.start
    attempts, call.attempts = call.attempts, 0
    try:
        if attempts:
            call.bound.in_flight.dec()
        call.hook._finish(call, attempts, duration, context, None, None, exception)
    except Exception:
        call.hook.guard.failed("record")


def _followers(prepared_has_context: bool) -> Tuple[Tuple[str, str, Any], ...]:
    """(event, registration, handler) of the handlers that finish calls.

    The attempt's start goes last so that signing and client-side rate limiting are not counted
    in the attempt; the end events go first (``.*.*`` sorts before every more specific handler)
    so that another handler raising cannot skip them.
    """
    ends = (("response-received.*.*", "register_first", _on_response_received),
            ("after-call.*.*", "register_first", _on_after_call),
            ("after-call-error.*.*", "register_first", _on_after_call_error))
    if prepared_has_context:
        return (("before-send", "register_last", _on_before_send),) + ends
    return (("request-created", "register_last", _on_request_created),
            ("before-send", "register_last", _on_before_send_handed)) + ends


_FOLLOWERS = _followers(_PREPARED_HAS_CONTEXT)


def _error_code(parsed: Any) -> Optional[str]:
    error = parsed.get("Error") if type(parsed) is dict else None
    code = error.get("Code") if type(error) is dict else None
    return safe_name(code)


def _request_bytes(request: Any, guard: Any) -> Optional[int]:
    body = getattr(request, "body", None)
    if body is None:
        return 0
    # A query-protocol body is url-encoded text: ASCII, so its length is its size in bytes.
    if isinstance(body, (bytes, bytearray)) or (type(body) is str and body.isascii()):
        return len(body)
    try:  # a stream: trust its header
        length = request.headers.get("Content-Length")
    except Exception:
        guard.failed("request_size")
        return None
    return guard.size(length, "request_size")


# --- instrumenting and uninstrumenting a client or session ------------------------------------

def events_of(target: Any) -> Any:
    """The event emitter of a botocore client, a botocore session or a boto3 session."""
    meta = getattr(target, "meta", None)
    if meta is not None and hasattr(meta, "events"):
        return meta.events  # a client
    if hasattr(target, "get_component"):
        return target.get_component("event_emitter")  # a botocore session
    return target.events  # a boto3 session


def _registered(emitter: Any) -> Optional[BotocoreHook]:
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


def installed(target: Any) -> Optional[BotocoreHook]:
    """The active hook recording a client's or session's calls (a client's own, or the one it
    got from its session), or None.

    Args:
        target: a boto3/botocore client, a botocore session or a boto3 session.
    """
    hook = _registered(events_of(target))
    return hook if hook is not None and hook.active else None


def instrument(target: Any, recorder: Any, settings: Any) -> BotocoreHook:
    """Record a client's or session's calls (a session's: of the clients made from it after).

    Idempotent: when an active hook already records the target, that one is returned and
    nothing is registered (callers that care about settings ask :func:`installed` first).
    An inactive hook of ours is replaced.

    Args:
        target: a boto3/botocore client, a botocore session or a boto3 session.
        recorder: the :class:`boto_prom.recorder.Recorder` to bind label sets with.
        settings: the :class:`boto_prom.settings.Settings` enabled with (kept as
            ``hook.settings``; its ``aws_service``/``aws_region`` label every call).

    Returns:
        The :class:`BotocoreHook` that records the target's calls.
    """
    emitter = events_of(target)
    existing = _registered(emitter)
    if existing is not None and existing.active:
        return existing
    hook = BotocoreHook(recorder, settings)
    _register(emitter, hook, existing)
    hook._owner = weakref.ref(emitter)
    _owned[emitter] = hook
    return hook


def _register(emitter: Any, hook: BotocoreHook, existing: Optional[BotocoreHook]) -> None:
    """Put hook's handlers on an emitter, in place of existing, an inactive hook of ours."""
    if existing is not None:
        emitter.unregister(_START_EVENT, unique_id=_START_ID)
    # The followers first: a call that sees the start always finds them (each is registered
    # once per emitter, under its unique id).
    for event, how, handler in _FOLLOWERS:
        getattr(emitter, how)(event, handler, unique_id=f"boto_prom.{event}")
    emitter.register(_START_EVENT, hook.before_call, unique_id=_START_ID)


def uninstrument(target: Any) -> bool:
    """Stop recording the calls of a client or session; True when metrics were on.

    Disabling a session also stops its clients created while it was enabled. The handlers that
    finish calls stay registered, so calls under way finish and leave the in-flight gauge.

    Args:
        target: a client or session given to :func:`instrument` (or made from one that was).
    """
    emitter = events_of(target)
    hook = _registered(emitter)
    emitter.unregister(_START_EVENT, unique_id=_START_ID)
    _owned.pop(emitter, None)
    if hook is None or not hook.active:
        return False
    owner = hook._owner() if hook._owner is not None else None
    if owner is emitter:
        hook.active = False
    return True


# --- global mode: every botocore client (enable_metrics() with no argument) --------------------

_MARK = "_boto_prom_global"  # in a client's __dict__: the global install that has seen it


class _Global:
    """One global install: its hook, the methods it wrapped, and the clients it saw."""

    def __init__(self, hook: BotocoreHook) -> None:
        self.hook = hook
        self.active = True
        self.lock = threading.Lock()
        self.seen: "weakref.WeakSet[Any]" = weakref.WeakSet()
        # (class, its own _make_api_call put back on uninstall, our wrapper of it)
        self.patched: List[Tuple[type, Any, Any]] = []
        self.init_subclass: Any = None  # BaseClient's own __init_subclass__, if it had one
        self.init_subclass_wrapper: Any = None  # ours, in BaseClient while installed

    def wrap(self, cls: type) -> None:
        """Put our wrapper over a client class's own ``_make_api_call``."""
        original = cls.__dict__["_make_api_call"]
        wrapper = _wrap(getattr(cls, "_make_api_call"), self)
        wrapper._boto_prom_original = original
        setattr(cls, "_make_api_call", wrapper)
        self.patched.append((cls, original, wrapper))

    def cover(self, client: Any) -> None:
        """A client's first call under this install: give it the hook unless an active hook
        of ours (its own, or its session's) records it already."""
        with self.lock:  # two threads' first calls on one client: one registers, one waits
            if not self.active:
                return
            try:
                if client.__dict__.get(_MARK) is self:
                    return
                self.seen.add(client)  # so that uninstall finds it, whatever happens next
                emitter = client.meta.events
                existing = _registered(emitter)
                if existing is None or not existing.active:
                    _register(emitter, self.hook, existing)
            except Exception:
                self.hook.guard.failed("global")
            client.__dict__[_MARK] = self  # after registering, and after a failure too: once


def _wrap(call: Any, state: _Global) -> Any:
    """A client class's ``_make_api_call`` behind one check: has this install seen the client?

    call is the method as read from the class, so a wrapper already there (wrapt's, as
    OpenTelemetry's) is called as it expects to be. aiobotocore's is a coroutine function, and
    its wrapper is one too, so that code asking ``inspect.iscoroutinefunction`` of it (other
    instrumentations do) still gets the true answer.
    """
    if inspect.iscoroutinefunction(call):
        @functools.wraps(call)
        async def _make_api_call_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            if self.__dict__.get(_MARK) is not state and state.active:
                state.cover(self)
            return await call(self, *args, **kwargs)

        return _make_api_call_async

    @functools.wraps(call)
    def _make_api_call(self: Any, *args: Any, **kwargs: Any) -> Any:
        # BaseClient has no __slots__, so every client has a __dict__.
        if self.__dict__.get(_MARK) is not state and state.active:
            state.cover(self)
        return call(self, *args, **kwargs)

    return _make_api_call


def _own_make_api_call(base: type) -> List[type]:
    """base and its subclasses that define their own ``_make_api_call`` (aiobotocore's
    ``AioBaseClient``, when it is imported); the classes botocore makes for each service only
    inherit it."""
    found, todo, seen = [], [base], set()
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.add(cls)
            if "_make_api_call" in cls.__dict__:
                found.append(cls)
            todo.extend(cls.__subclasses__())
    return found


def _init_subclass(state: _Global) -> Any:
    """BaseClient's ``__init_subclass__`` while state is installed: a client class defined
    later with its own ``_make_api_call`` (aiobotocore imported after enabling, or in the
    middle of being imported when ``boto-prom run`` enables on botocore's import) is wrapped
    as it is made."""
    from botocore.client import BaseClient

    def __init_subclass__(cls: type, **kwargs: Any) -> None:
        if state.init_subclass is not None:
            state.init_subclass.__get__(None, cls)(**kwargs)
        else:
            super(BaseClient, cls).__init_subclass__(**kwargs)  # type: ignore[misc]
        if "_make_api_call" in cls.__dict__:
            with state.lock:
                if state.active:
                    state.wrap(cls)

    return classmethod(__init_subclass__)


_current: Optional[_Global] = None
_global_lock = threading.Lock()


def install_global(recorder: Any, settings: Any) -> BotocoreHook:
    """Record the calls of every botocore client, whatever session made it and whenever it
    was made: boto3's default session's, any ``boto3.session.Session()``'s, a
    ``botocore.session.get_session()``'s.

    It wraps ``botocore.client.BaseClient._make_api_call``, the method every call of every
    client goes through, as OpenTelemetry's botocore instrumentation does, and the one of
    every subclass defining its own, now or later: aiobotocore's ``AioBaseClient``, whether
    aiobotocore is imported before or after (it is not imported here). A client's first
    call after this registers the returned hook's event handlers on that client's emitter,
    unless an active hook of ours is there already (the client's own, or its session's),
    which then keeps recording it; after that, each call costs one look in the client's
    ``__dict__``. Recording stays on botocore's events, as for one client.

    Args:
        recorder: the :class:`boto_prom.recorder.Recorder` to bind label sets with.
        settings: the :class:`boto_prom.settings.Settings` enabled with.

    Returns:
        The hook that records every client without one of its own.

    Raises:
        ConfigurationError: this botocore has no ``BaseClient._make_api_call``.
    """
    from botocore.client import BaseClient

    global _current
    with _global_lock:
        if _current is not None:
            _uninstall_locked()
        if "_make_api_call" not in BaseClient.__dict__:
            raise ConfigurationError(
                "enable_metrics() with no argument needs botocore's "
                "BaseClient._make_api_call, which this botocore does not have; enable "
                "clients or sessions one by one instead.")
        state = _Global(BotocoreHook(recorder, settings))
        with state.lock:
            for cls in _own_make_api_call(BaseClient):
                state.wrap(cls)
            state.init_subclass = BaseClient.__dict__.get("__init_subclass__")
            state.init_subclass_wrapper = _init_subclass(state)
            BaseClient.__init_subclass__ = state.init_subclass_wrapper
        _current = state
    return state.hook


def uninstall_global() -> None:
    """Undo :func:`install_global`: botocore's (and aiobotocore's) own ``_make_api_call``
    goes back, and the clients it gave the hook to stop being recorded (a hook of their own
    stays)."""
    with _global_lock:
        _uninstall_locked()


def _uninstall_locked() -> None:
    global _current
    state, _current = _current, None
    if state is None:
        return
    from botocore.client import BaseClient

    with state.lock:
        state.active = False
        state.hook.active = False
        # Only our own wrapper is taken out. A wrapper someone put on top of ours stays, and
        # ours under it is inert now.
        for cls, original, wrapper in state.patched:
            if cls.__dict__.get("_make_api_call") is wrapper:
                setattr(cls, "_make_api_call", original)
        if BaseClient.__dict__.get("__init_subclass__") is state.init_subclass_wrapper:
            if state.init_subclass is None:
                del BaseClient.__init_subclass__
            else:
                BaseClient.__init_subclass__ = state.init_subclass
        clients = list(state.seen)
    for client in clients:
        try:
            if client.__dict__.get(_MARK) is state:
                del client.__dict__[_MARK]
            emitter = client.meta.events
            if _registered(emitter) is state.hook:
                # As uninstrument: the followers stay, so calls under way finish.
                emitter.unregister(_START_EVENT, unique_id=_START_ID)
        except Exception:
            state.hook.guard.failed("global")


__all__ = ["BotocoreHook", "THROTTLING_CODES", "install_global", "installed", "instrument",
           "uninstall_global", "uninstrument"]
