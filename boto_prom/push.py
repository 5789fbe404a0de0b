"""Batch jobs: push the metrics to a Pushgateway, by hand or once at exit.

A cron job may finish before Prometheus ever scrapes it. Either call :func:`push_metrics` at
the end, or set ``BOTO_PROM_PUSHGATEWAY`` (and the other ``BOTO_PROM_PUSH*`` variables, see
:mod:`boto_prom.settings`) and :func:`boto_prom.enable_metrics` arranges one push when the
process exits. The push at exit never hangs the exit and never prints a traceback: a gateway
that is down or silent costs at most the timeout and one log line.

Not in multiprocess mode: each worker would push only its own values to the same group, and
the last push would replace the others. There, scrape the multiprocess server, or push once
from one process with ``push_metrics(url, registry=boto_prom.multiprocess_registry())``.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
from typing import Any, Callable, Mapping, Optional

from prometheus_client import REGISTRY, CollectorRegistry

from .settings import (DEFAULT_PUSH_TIMEOUT, ConfigurationError, PushSettings, resolve_push,
                       shown_url)

log = logging.getLogger("boto_prom")


def push_metrics(
    gateway: str,
    *,
    job: Optional[str] = None,
    grouping_key: Optional[Mapping[str, str]] = None,
    registry: Optional[CollectorRegistry] = None,
    username: Optional[str] = None,
    password: Optional[str] = None,
    timeout: float = DEFAULT_PUSH_TIMEOUT,
) -> None:
    """Push the registry's metrics to a Pushgateway, replacing the group's earlier push.

    Args:
        gateway: the gateway's URL, ``http://pushgateway:9091`` (https works too).
        job: the ``job`` label (default ``BOTO_PROM_PUSH_JOB`` or the script's name).
        grouping_key: further labels that name the group (``{"instance": "web1"}``).
        registry: what to push (default: the global registry).
        username: basic auth user for the gateway, with password.
        password: basic auth password.
        timeout: seconds to wait on the network before giving up (above 0, at most 600).

    Raises:
        ConfigurationError: a bad argument.
        OSError: the gateway could not be reached, or refused the push.

    Example:
        >>> boto_prom.push_metrics("http://127.0.0.1:9091", job="nightly-backup")  # doctest: +SKIP
    """
    settings = resolve_push(gateway, job=job, grouping_key=grouping_key, username=username,
                            password=password, timeout=timeout)
    push(settings, REGISTRY if registry is None else registry)


def push(settings: PushSettings, registry: CollectorRegistry) -> None:
    """Push registry's metrics as settings say (checked already: see
    :func:`boto_prom.settings.resolve_push`)."""
    from prometheus_client import push_to_gateway

    push_to_gateway(settings.gateway, job=settings.job, registry=registry,
                    grouping_key=dict(settings.grouping_key), timeout=settings.timeout,
                    handler=_handler(settings.username, settings.password))


def _handler(username: Optional[str], password: Optional[str]) -> Callable[..., Any]:
    from prometheus_client.exposition import basic_auth_handler, default_handler

    if username is None:
        return default_handler

    def handler(url: str, method: str, timeout: Optional[float], headers: list,
                data: bytes) -> Callable[[], None]:
        return basic_auth_handler(url, method, timeout, headers, data, username, password)

    return handler


# --- the push at exit ------------------------------------------------------------------------

_exit_push: Optional["ExitPush"] = None
_exit_lock = threading.Lock()
_registered = False


class ExitPush:
    """The one push a process makes at exit: what, where, and a way to call it off."""

    def __init__(self, settings: PushSettings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.registry = registry
        # A forked child inherits the arrangement (and the SIGTERM handler) but not the job:
        # its push would replace the parent's, so only this process pushes.
        self.pid = os.getpid()

    def cancel(self) -> None:
        """Call the push off (a failed enable undoes the one it arranged)."""
        global _exit_push
        with _exit_lock:
            if _exit_push is self:
                _exit_push = None


def push_at_exit(settings: PushSettings, registry: CollectorRegistry) -> ExitPush:
    """Arrange one push of registry when the process exits; called at enable time.

    Returns:
        The push that will run at exit (an earlier enable's, when it pushes the same
        registry).

    Raises:
        ConfigurationError: an earlier enable arranged a push of another registry (one
            process pushes one registry).
    """
    global _exit_push, _registered
    with _exit_lock:
        if _exit_push is not None:
            if _exit_push.registry is not registry:
                raise ConfigurationError(
                    "BOTO_PROM_PUSHGATEWAY pushes one registry at exit and an earlier "
                    "enable_metrics call chose another; pass the same registry= to every call.")
            return _exit_push
        _exit_push = ExitPush(settings, registry)
        if not _registered:
            atexit.register(_push_at_exit)
            _registered = True
        return _exit_push


def pending_exit_push() -> Optional[ExitPush]:
    """The push arranged for exit, or None."""
    return _exit_push


def _push_at_exit() -> None:
    """Push once, within the timeout; whatever happens, one log line at most, never a raise."""
    arranged = _exit_push
    if arranged is None or arranged.pid != os.getpid():
        return
    settings = arranged.settings
    outcome: list = []

    def run() -> None:
        try:
            push(settings, arranged.registry)
            outcome.append(None)
        except BaseException as exc:  # noqa: B902 - reported below, never raised at exit
            outcome.append(exc)

    try:
        # A thread bounds what the socket timeout cannot: a slow DNS lookup, a trickling
        # gateway. It is a daemon, so one left behind does not hold the exit.
        thread = threading.Thread(target=run, name="boto-prom-push", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no new threads at interpreter shutdown (Python 3.12+)
            run()
        else:
            thread.join(settings.timeout + 1.0)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: B902 - never a traceback at exit
        outcome[:] = [exc]
    try:
        if not outcome:
            log.warning("boto-prom: push of metrics to %s did not finish within %.3g s; "
                        "they were not pushed", shown_url(settings.gateway), settings.timeout)
        elif outcome[0] is not None:
            log.warning("boto-prom: push of metrics to %s at exit failed (%s); they were not "
                        "pushed", shown_url(settings.gateway), _reason(outcome[0]))
        else:
            log.debug("boto-prom: pushed metrics to %s as job %s", shown_url(settings.gateway),
                      settings.job)
    except Exception:  # pragma: no cover - logging itself broken at exit
        pass


def push_on_sigterm() -> bool:
    """Make SIGTERM push too: the arranged exit push runs, then SIGTERM ends the process as
    it would have (status -15 to its parent). Called by ``boto-prom run`` before the program
    starts; a SIGTERM handler the program installs later replaces this one (and its own exit
    then pushes through atexit).

    Returns:
        True when installed; False when SIGTERM is not at its default action or this is not
        the main thread (then nothing changes).
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False
    signal.signal(signal.SIGTERM, _on_sigterm)
    return True


def _on_sigterm(signum: int, frame: Any) -> None:
    try:
        _push_at_exit()
    finally:
        # Whatever happened, die of the signal: the parent sees the status it expects.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return f"HTTP {code}"
    text = str(reason if reason is not None else exc) or type(exc).__name__
    return text.splitlines()[0][:200]


__all__ = ["ExitPush", "pending_exit_push", "push", "push_at_exit", "push_metrics",
           "push_on_sigterm"]
