"""``enable_metrics()`` with no argument: boto3's default session, and every boto 2 connection
created afterwards.

boto3 clients made from the default session (``boto3.client(...)``, ``boto3.resource(...)``)
get the botocore handlers from it. boto 2 has no session, so ``AWSAuthConnection.__init__`` is
wrapped, only when boto imports, to give each new connection a hook; disabling puts the original
back (or, when someone wrapped it after us, leaves ours inert).
"""

from __future__ import annotations

import functools
import threading
import weakref
from typing import Any, Optional

from ._errors import ConfigurationError
from .boto2 import BotoRequestHook, connection_region, connection_service


class GlobalHook:
    """What ``enable_metrics()`` installed.

    Attributes:
        registry: the prometheus_client registry recorded into.
        server: the metrics server, when enable_metrics started one.
        botocore: the :class:`~boto_prom.botocore.BotocoreHook` on boto3's default session, or
            None when boto3 does not import.
        boto2: True when new boto 2 connections are instrumented (boto imports).
        active: False once :func:`boto_prom.disable_metrics` undid it.
    """

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder
        self.registry = recorder.registry
        self.server: Any = None
        self.botocore: Any = None
        self.boto2 = False
        self.active = True
        self._session: Any = None
        self._own_botocore = False  # True when hook.botocore was registered by this enable


_current: Optional[GlobalHook] = None
_lock = threading.Lock()


def enable_global(recorder: Any) -> GlobalHook:
    """Instrument boto3's default session and new boto 2 connections; idempotent.

    All or nothing: when it raises, neither SDK is left instrumented.

    Raises:
        ConfigurationError: boto3's default session cannot be made (a missing AWS profile),
            or neither boto3 nor boto 2 imports.
    """
    global _current
    with _lock:
        if _current is not None:
            return _current
        hook = GlobalHook(recorder)
        try:
            import boto3
        except ImportError:
            boto3 = None
        created_session = boto3 is not None and boto3.DEFAULT_SESSION is None
        try:
            if boto3 is not None:
                _instrument_default_session(boto3, hook)
            hook.boto2 = _patch_boto2(hook)
            if hook.botocore is None and not hook.boto2:
                raise ConfigurationError(
                    "enable_metrics() with no argument instruments boto3 and boto 2, and "
                    "neither imports here; install boto3 (or boto 2 on Python 3.11 and older).")
        except BaseException:
            hook.active = False
            _undo(hook, boto3 if created_session else None)
            raise
        _current = hook
        return hook


def _instrument_default_session(boto3: Any, hook: GlobalHook) -> None:
    from botocore.exceptions import BotoCoreError, ProfileNotFound

    from .botocore import BotocoreHook, instrument

    try:
        if boto3.DEFAULT_SESSION is None:
            boto3.setup_default_session()  # what boto3.client() would do on first use
        hook._session = boto3.DEFAULT_SESSION
        ours = BotocoreHook(hook.recorder)
        hook.botocore = instrument(hook._session, ours)
        hook._own_botocore = hook.botocore is ours
    except ProfileNotFound as exc:
        profile = exc.kwargs.get("profile")
        raise ConfigurationError(
            f"enable_metrics() could not set up boto3's default session: the AWS profile "
            f"{profile!r} is not in the AWS config or credentials file; set AWS_PROFILE (or "
            "AWS_DEFAULT_PROFILE) to a profile that is, or unset it."
        ) from None
    except BotoCoreError as exc:
        raise ConfigurationError(
            f"enable_metrics() could not set up boto3's default session ({exc}); fix the AWS "
            "config and credentials files and AWS_* variables it reads."
        ) from None


def _undo(hook: GlobalHook, created_in: Any) -> None:
    """Take out whatever a failed enable_global installed (and a default session it made)."""
    if hook._own_botocore:  # a hook enabled on the session before us stays
        from .botocore import uninstrument

        uninstrument(hook._session)
    hook.botocore = None
    if hook.boto2:
        _unpatch_boto2()
        hook.boto2 = False
    if created_in is not None and created_in.DEFAULT_SESSION is hook._session:
        created_in.DEFAULT_SESSION = None  # made by us for this enable: not left behind


def disable_global() -> bool:
    """Undo :func:`enable_global`; True when it was on."""
    global _current
    with _lock:
        hook, _current = _current, None
    if hook is None:
        return False
    hook.active = False
    if hook.botocore is not None:
        from .botocore import uninstrument

        uninstrument(hook._session)
    if hook.boto2:
        _unpatch_boto2()
    return True


# --- boto 2 -------------------------------------------------------------------------------------

def _patch_boto2(owner: GlobalHook) -> bool:
    try:
        from boto.connection import AWSAuthConnection
    except Exception:  # not installed, or Python 3.12+ where boto 2 cannot import
        return False
    original = AWSAuthConnection.__init__

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if not owner.active:
            return
        try:
            existing = getattr(self, "request_hook", None)
            if not isinstance(existing, BotoRequestHook):
                self.set_request_hook(_ConnectionHook(owner, self, existing))
        except Exception:
            owner.recorder.guard.failed("boto2_global")

    __init__._boto_prom_original = original  # type: ignore[attr-defined]
    AWSAuthConnection.__init__ = __init__
    global _wrapper
    _wrapper = __init__
    return True


_wrapper: Any = None  # our __init__ wrapper while it is installed


def _unpatch_boto2() -> None:
    global _wrapper
    from boto.connection import AWSAuthConnection

    wrapper, _wrapper = _wrapper, None
    # Only our own wrapper is taken out. A wrapper someone put on top of ours (functools.wraps
    # copies our marker onto it) stays, and ours under it is inert once the owner is inactive.
    if wrapper is not None and AWSAuthConnection.__dict__.get("__init__") is wrapper:
        AWSAuthConnection.__init__ = wrapper._boto_prom_original


class _ConnectionHook(BotoRequestHook):
    """The hook each new boto 2 connection gets: labels read from the connection at its first
    request (programs often set ``auth_service_name`` after construction), and inert once
    global metrics are disabled."""

    def __init__(self, owner: GlobalHook, conn: Any, previous: Any) -> None:
        super().__init__(previous=previous, recorder=owner.recorder)
        self._owner = owner
        self._conn = weakref.ref(conn)

    @property
    def active(self) -> bool:
        """False once global metrics were disabled: the hook only passes calls on."""
        return self._owner.active

    def handle_request_data(self, request: Any, response: Any, error: bool = False) -> None:
        if self._owner.active:
            if self.aws_service is None:
                conn = self._conn()
                if conn is not None:
                    try:
                        self.aws_region = connection_region(conn)
                        self.aws_service = connection_service(conn)
                    except Exception:
                        self._guard.failed("labels")
            super().handle_request_data(request, response, error)
        elif self.previous is not None:
            self.previous.handle_request_data(request, response, error)
