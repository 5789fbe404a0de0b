"""Batch jobs: push the metrics to a Pushgateway, by hand or once at exit.

A cron job may finish before Prometheus ever scrapes it. Either call :func:`push_metrics` at
the end, or set ``BOTO_PROM_PUSHGATEWAY`` and every :func:`boto_prom.enable_metrics` call
arranges one push when the process exits. The push at exit never hangs the exit and never
prints a traceback: a gateway that is down or silent costs at most the timeout and one log line.

Environment:
    ``BOTO_PROM_PUSHGATEWAY``: the gateway's URL (``http://pushgateway:9091``); unset, no push.
    ``BOTO_PROM_PUSH_JOB``: the ``job`` label (default: the script's name).
    ``BOTO_PROM_PUSH_GROUPING_KEY``: more grouping labels, ``instance=web1,shard=2``.
    ``BOTO_PROM_PUSH_USERNAME``, ``BOTO_PROM_PUSH_PASSWORD``: basic auth for the gateway.
    ``BOTO_PROM_PUSH_TIMEOUT``: seconds the push may take (default 5, at most 600).

Not in multiprocess mode: each worker would push only its own values to the same group, and
the last push would replace the others. There, scrape the multiprocess server, or push once
from one process with ``push_metrics(url, registry=multiprocess_registry())``.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import re
import sys
import threading
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional
from urllib.parse import urlsplit

from prometheus_client import REGISTRY, CollectorRegistry

from ._errors import ConfigurationError

log = logging.getLogger("boto_prom")

DEFAULT_TIMEOUT = 5.0
"""Seconds a push may take before it is given up."""

MAX_TIMEOUT = 600.0
"""The longest timeout accepted; longer ones overflow the socket and thread-join timers."""

_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _shown(gateway: str) -> str:
    """The URL for an error message, without anything that may be credentials."""
    return re.sub(r"//[^/?#]*@", "//...@", gateway)


def _check_gateway(gateway: object) -> str:
    if not isinstance(gateway, str) or not gateway.strip():
        raise ConfigurationError(
            f"the Pushgateway must be a URL like http://pushgateway:9091, not {gateway!r}.")
    gateway = gateway.strip()
    try:
        parts = urlsplit(gateway if "://" in gateway else f"http://{gateway}")
        port = parts.port  # raises on a port that is not a number from 0 to 65535
        hostname = parts.hostname
    except ValueError:
        parts, port, hostname = None, None, None
    if parts is None or port == 0:
        raise ConfigurationError(
            f"the Pushgateway URL {_shown(gateway)!r} has a malformed host or a port that is "
            "not a number from 1 to 65535; give one like http://pushgateway:9091.")
    if parts.scheme not in ("http", "https") or not hostname:
        raise ConfigurationError(
            f"the Pushgateway must be an http:// or https:// URL with a host, "
            f"not {_shown(gateway)!r}.")
    if parts.username is not None or parts.password is not None:
        # Credentials in a URL end up in logs and error messages.
        raise ConfigurationError(
            "the Pushgateway URL must not carry credentials; pass username= and password= "
            "(or set BOTO_PROM_PUSH_USERNAME and BOTO_PROM_PUSH_PASSWORD).")
    return gateway


def _check_grouping_key(grouping_key: object) -> Dict[str, str]:
    if grouping_key is None:
        return {}
    if not isinstance(grouping_key, Mapping):
        raise ConfigurationError(
            f"grouping_key must be a mapping of label names to values, not {grouping_key!r}.")
    checked = {}
    for name, value in grouping_key.items():
        if not isinstance(name, str) or not _LABEL_RE.match(name) or name == "job":
            raise ConfigurationError(
                f"grouping_key names must be label names other than 'job', not {name!r}.")
        if not isinstance(value, str):
            raise ConfigurationError(f"grouping_key[{name!r}] must be a string, not {value!r}.")
        checked[name] = value
    return checked


def _check_timeout(timeout: object, source: str = "timeout") -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (
            math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT):
        raise ConfigurationError(
            f"{source} must be a number of seconds above 0 and at most {MAX_TIMEOUT:g}, "
            f"not {timeout!r}.")
    return float(timeout)


def _handler(username: Optional[str], password: Optional[str]) -> Callable[..., Any]:
    from prometheus_client.exposition import basic_auth_handler, default_handler

    if (username is None) != (password is None):
        raise ConfigurationError("Pushgateway basic auth needs both username and password.")
    if username is None:
        return default_handler

    def handler(url: str, method: str, timeout: Optional[float], headers: list,
                data: bytes) -> Callable[[], None]:
        return basic_auth_handler(url, method, timeout, headers, data, username, password)

    return handler


def default_job() -> str:
    """``BOTO_PROM_PUSH_JOB``, else the running script's name, else ``boto_prom``."""
    job = os.environ.get("BOTO_PROM_PUSH_JOB", "").strip()
    if job:
        return job
    script = os.path.basename(sys.argv[0] if sys.argv else "")
    script = re.sub(r"\.pyw?$", "", script)
    script = re.sub(r"[^A-Za-z0-9_.-]", "_", script).strip("_")
    return script if script and not script.startswith("-") else "boto_prom"


def push_metrics(
    gateway: str,
    *,
    job: Optional[str] = None,
    grouping_key: Optional[Mapping[str, str]] = None,
    registry: Optional[CollectorRegistry] = None,
    username: Optional[str] = None,
    password: Optional[str] = None,
    timeout: float = DEFAULT_TIMEOUT,
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
    from prometheus_client import push_to_gateway

    gateway = _check_gateway(gateway)
    job = default_job() if job is None else job
    if not isinstance(job, str) or not job:
        raise ConfigurationError(f"job must be a non-empty string, not {job!r}.")
    push_to_gateway(gateway, job=job, registry=REGISTRY if registry is None else registry,
                    grouping_key=_check_grouping_key(grouping_key),
                    timeout=_check_timeout(timeout), handler=_handler(username, password))


# --- the push at exit ------------------------------------------------------------------------

class _ExitPush:
    def __init__(self, registry: CollectorRegistry, gateway: str, job: str,
                 grouping_key: Dict[str, str], username: Optional[str],
                 password: Optional[str], timeout: float) -> None:
        self.registry = registry
        self.gateway = gateway
        self.job = job
        self.grouping_key = grouping_key
        self.username = username
        self.password = password
        self.timeout = timeout

    def push(self) -> None:
        push_metrics(self.gateway, job=self.job, grouping_key=self.grouping_key,
                     registry=self.registry, username=self.username, password=self.password,
                     timeout=self.timeout)


_exit_push: Optional[_ExitPush] = None
_exit_lock = threading.Lock()
_registered = False


def _env_grouping_key() -> Dict[str, str]:
    raw = os.environ.get("BOTO_PROM_PUSH_GROUPING_KEY", "").strip()
    key: Dict[str, str] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise ConfigurationError(
                f"BOTO_PROM_PUSH_GROUPING_KEY must be name=value pairs separated by commas, "
                f"like instance=web1,shard=2, not {raw!r}.")
        key[name.strip()] = value.strip()
    return _check_grouping_key(key)


class PushSettings(NamedTuple):
    """The push at exit as the ``BOTO_PROM_PUSH*`` variables set it."""

    gateway: str
    job: str
    grouping_key: Dict[str, str]
    username: Optional[str]
    password: Optional[str]
    timeout: float


def check_push_env() -> Optional[PushSettings]:
    """Check every ``BOTO_PROM_PUSH*`` variable, without arranging anything; enable calls it
    before it starts or installs anything.

    Returns:
        The settings, or None when ``BOTO_PROM_PUSHGATEWAY`` is not set (nothing to push).

    Raises:
        ConfigurationError: a bad setting, or ``BOTO_PROM_PUSHGATEWAY`` set in multiprocess
            mode.
    """
    gateway = os.environ.get("BOTO_PROM_PUSHGATEWAY", "").strip()
    if not gateway:
        return None
    from .multiprocess import in_multiprocess_mode

    if in_multiprocess_mode():
        # Each worker would push only its own values to one group, each push replacing the last.
        raise ConfigurationError(
            "BOTO_PROM_PUSHGATEWAY (push at exit) is not available in multiprocess mode, where "
            "each worker would overwrite the others' push; unset it and scrape the multiprocess "
            "server, or push once from one process with boto_prom.push_metrics(url, "
            "registry=boto_prom.multiprocess.multiprocess_registry()).")
    raw_timeout = os.environ.get("BOTO_PROM_PUSH_TIMEOUT", "").strip()
    try:
        timeout = float(raw_timeout) if raw_timeout else DEFAULT_TIMEOUT
    except ValueError:
        timeout = float("nan")
    timeout = _check_timeout(timeout, f"BOTO_PROM_PUSH_TIMEOUT ({raw_timeout!r})")
    username = os.environ.get("BOTO_PROM_PUSH_USERNAME") or None
    password = os.environ.get("BOTO_PROM_PUSH_PASSWORD") or None
    _handler(username, password)  # both or neither
    return PushSettings(_check_gateway(gateway), default_job(), _env_grouping_key(), username,
                        password, timeout)


def exit_push_from_env(registry: Optional[CollectorRegistry]) -> Optional[_ExitPush]:
    """Arrange the push at exit when ``BOTO_PROM_PUSHGATEWAY`` is set; called at enable time.

    Returns:
        The push that will run at exit, or None when the variable is not set.

    Raises:
        ConfigurationError: a bad setting (see :func:`check_push_env`), or an earlier enable
            arranged a push of another registry (one process pushes one registry).
    """
    global _exit_push, _registered
    settings = check_push_env()
    if settings is None:
        return None
    registry = REGISTRY if registry is None else registry
    push = _ExitPush(registry, *settings)
    with _exit_lock:
        if _exit_push is not None:
            if _exit_push.registry is not registry:
                raise ConfigurationError(
                    "BOTO_PROM_PUSHGATEWAY pushes one registry at exit and an earlier "
                    "enable_metrics call chose another; pass the same registry= to every call.")
            return _exit_push
        _exit_push = push
        if not _registered:
            atexit.register(_push_at_exit)
            _registered = True
    return push


def _push_at_exit() -> None:
    """Push once, within the timeout; whatever happens, one log line at most, never a raise."""
    push = _exit_push
    if push is None:
        return
    outcome: list = []

    def run() -> None:
        try:
            push.push()
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
            thread.join(push.timeout + 1.0)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: B902 - never a traceback at exit
        outcome[:] = [exc]
    try:
        if not outcome:
            log.warning("boto-prom: push of metrics to %s did not finish within %.3g s; "
                        "they were not pushed", push.gateway, push.timeout)
        elif outcome[0] is not None:
            log.warning("boto-prom: push of metrics to %s at exit failed (%s); they were not "
                        "pushed", push.gateway, _reason(outcome[0]))
        else:
            log.debug("boto-prom: pushed metrics to %s as job %s", push.gateway, push.job)
    except Exception:  # pragma: no cover - logging itself broken at exit
        pass


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return f"HTTP {code}"
    text = str(reason if reason is not None else exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def _reset_for_tests() -> None:
    """Forget the push at exit (the atexit hook stays, and finds nothing to do)."""
    global _exit_push
    with _exit_lock:
        _exit_push = None


__all__ = ["DEFAULT_TIMEOUT", "MAX_TIMEOUT", "PushSettings", "check_push_env", "default_job",
           "push_metrics"]
