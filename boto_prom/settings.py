"""Every setting boto-prom has, resolved and checked in one place, once.

An argument wins over its ``BOTO_PROM_*`` variable, which wins over the default. Each public
entry point hands its arguments to one function here (:func:`resolve` for
:func:`boto_prom.enable_metrics`, :func:`resolve_server` for
:func:`boto_prom.start_multiprocess_server`, :func:`resolve_push` for
:func:`boto_prom.push_metrics`) and gets back a frozen object; everything downstream receives
that object. No other module reads the environment. A bad value raises
:class:`ConfigurationError` with one sentence saying what to change.

The variables:

==============================  ==============================================================
``BOTO_PROM_DISABLED``          1/true/yes/on: ``enable_metrics`` does nothing
``BOTO_PROM_PORT``              the metrics server's port
``BOTO_PROM_ADDR``              the address it binds
``BOTO_PROM_WEB_CONFIG``        its web configuration file (TLS, basic auth)
``BOTO_PROM_MAX_LABEL_SETS``    label sets kept before new ones are folded
``BOTO_PROM_DETAILED_METRICS`` 1/true/yes/on: also the attempt histogram, all size buckets
``BOTO_PROM_ALLOWED_SERVICES``  record only these services, ``s3,ec2``
``BOTO_PROM_IGNORED_ACTIONS``   never record these actions, ``HeadObject,GetObject``
``BOTO_PROM_CSV``               the CSV file every request is appended to
``BOTO_PROM_PUSHGATEWAY``       push the metrics there when the process exits
``BOTO_PROM_PUSH_JOB``          the push's ``job`` label (default: the script's name)
``BOTO_PROM_PUSH_GROUPING_KEY`` more grouping labels, ``instance=web1,shard=2``
``BOTO_PROM_PUSH_USERNAME``     basic auth user for the gateway (with the password)
``BOTO_PROM_PUSH_PASSWORD``     basic auth password
``BOTO_PROM_PUSH_TIMEOUT``      seconds a push may take (default 5, at most 600)
``PROMETHEUS_MULTIPROC_DIR``    prometheus_client's multiprocess directory
``BOTO_PROM_RUN``               set by ``boto-prom run`` for its start-up hook (not by hand)
==============================  ==============================================================
"""

from __future__ import annotations

import math
import os
import re
import stat
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, Iterable, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from prometheus_client import REGISTRY, CollectorRegistry

from .naming import safe_name


class ConfigurationError(ValueError):
    """Bad configuration, found at enable time; its message is one sentence saying what to do.

    Attributes:
        setting: the argument (``"port"``, ``"csv_path"``...) or variable the sentence is
            about, when one setting's value is at fault, else None. A caller that takes that
            setting under a name of its own (the command line's flags) says the sentence with
            its name: :meth:`naming`.
    """

    setting: Optional[str] = None
    _wording: Optional[Callable[[str], str]] = None

    @classmethod
    def about(cls, setting: str, wording: Callable[[str], str]) -> "ConfigurationError":
        """The error about one setting; ``wording(name)`` is its sentence with the setting
        called name (setting itself here, a flag for the command line)."""
        error = cls(wording(setting))
        error.setting = setting
        error._wording = wording
        return error

    def naming(self, names: Mapping[str, str]) -> str:
        """The sentence with the setting called what names maps it to (``{"port":
        "--port"}``); as it is when the setting has no entry there."""
        if self._wording is None or self.setting not in names:
            return str(self)
        return self._wording(names[self.setting])


ConfigurationError.__module__ = "boto_prom"  # what users import it as, in tracebacks too

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

DETAILED_METRICS_ENV = "BOTO_PROM_DETAILED_METRICS"

CSV_FORMATS = ("csv", "requestlog")
"""``csv``: a CSV file with a header row; ``requestlog``: boto's ``RequestLogger`` lines."""

DEFAULT_CSV_MAX_BYTES = 100 * 1024 * 1024
"""Rotate the CSV file once it would reach 100 MiB (about a million rows)."""

DEFAULT_CSV_BACKUPS = 5
"""Keep five rotated CSV files (``requests.csv.1`` ... ``requests.csv.5``)."""

DEFAULT_PUSH_TIMEOUT = 5.0
"""Seconds a push may take before it is given up."""

MAX_PUSH_TIMEOUT = 600.0
"""The longest push timeout accepted; longer ones overflow the socket and thread-join timers."""

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


# --- the settings objects ---------------------------------------------------------------------

@dataclass(frozen=True)
class ServerSettings:
    """Where and how the metrics server listens.

    ``addr`` and ``port`` are None when neither an argument nor the environment chose them:
    the running server's, else the defaults (``DEFAULT_ADDR``, ``DEFAULT_PORT``).
    """

    addr: Optional[str] = None
    port: Optional[int] = None
    web_config: Optional[str] = None
    multiprocess_dir: Optional[str] = None


@dataclass(frozen=True)
class CsvSettings:
    """The CSV file; options left None take the running writer's, else the defaults."""

    path: str
    format: Optional[str] = None
    max_bytes: Optional[int] = None
    backups: Optional[int] = None


@dataclass(frozen=True)
class PushSettings:
    """One push to a Pushgateway: by hand (:func:`boto_prom.push_metrics`) or at exit."""

    gateway: str
    job: str
    grouping_key: Tuple[Tuple[str, str], ...] = ()
    username: Optional[str] = None
    password: Optional[str] = None
    timeout: float = DEFAULT_PUSH_TIMEOUT

    def __repr__(self) -> str:  # never the password, in a traceback or a log line
        return (f"PushSettings(gateway={shown_url(self.gateway)!r}, job={self.job!r}, "
                f"grouping_key={dict(self.grouping_key)!r}, username={self.username!r})")


@dataclass(frozen=True)
class Settings:
    """What :func:`boto_prom.enable_metrics` was asked for, every value checked.

    Attributes:
        disabled: ``BOTO_PROM_DISABLED`` is set: enable nothing.
        registry: the prometheus_client registry recorded into.
        server: the server's settings, or None with ``start_server=False``.
        aws_service: the ``aws_service`` label for every call, or None (read per call).
        aws_region: the ``aws_region`` label, likewise.
        buckets: duration histogram buckets, or None (the registry's, else the defaults).
        allowed_services: record only these services; None records every one.
        ignored_actions: never record these actions.
        max_label_sets: label sets kept per registry, or None (the registry's, else 2000).
        detailed_metrics: export the detailed metrics (full size histograms, per-attempt
            durations, finer per-action buckets), or None (the registry's, else False).
        csv: the CSV file, or None.
        multiprocess_dir: prometheus_client's multiprocess directory, or None.
        push: the push at exit, or None.
    """

    disabled: bool = False
    registry: CollectorRegistry = REGISTRY
    server: Optional[ServerSettings] = None
    aws_service: Optional[str] = None
    aws_region: Optional[str] = None
    buckets: Optional[Tuple[float, ...]] = None
    allowed_services: Optional[FrozenSet[str]] = None
    ignored_actions: FrozenSet[str] = frozenset()
    max_label_sets: Optional[int] = None
    detailed_metrics: Optional[bool] = None
    csv: Optional[CsvSettings] = None
    multiprocess_dir: Optional[str] = None
    push: Optional[PushSettings] = None

    def conflict(self, earlier: "Settings",
                 detailed_in_effect: Optional[bool] = None) -> Optional[str]:
        """What makes these settings record differently from earlier's, or None.

        A setting left unset here (None, or no ignored actions) agrees with whatever earlier
        chose; the registry and the CSV file always count (unset, they mean the global
        registry and no file). detailed_metrics is compared with the value in effect:
        detailed_in_effect, what earlier's registry exports (earlier's None stands for it),
        when known.
        """
        if self.registry is not earlier.registry:
            return "another registry"
        if (self.csv is None) != (earlier.csv is None):
            return "another CSV file"
        if self.csv is not None and earlier.csv is not None:
            if self.csv.path != earlier.csv.path:
                return "another CSV file"
            for name in ("format", "max_bytes", "backups"):
                value = getattr(self.csv, name)
                if value is not None and value != getattr(earlier.csv, name):
                    return f"another csv_{name}"
        if self.ignored_actions and self.ignored_actions != earlier.ignored_actions:
            return "other ignored_actions"
        for name in ("buckets", "allowed_services", "aws_service", "aws_region",
                     "max_label_sets"):
            value = getattr(self, name)
            if value is not None and value != getattr(earlier, name):
                return f"other {name}"
        if detailed_in_effect is None:
            detailed_in_effect = bool(earlier.detailed_metrics)
        return self._detailed_conflict(detailed_in_effect)

    def _detailed_conflict(self, in_effect: Optional[bool]) -> Optional[str]:
        """"other detailed_metrics" when these settings ask for a value other than the one in
        effect (None: not known, which agrees with anything)."""
        wanted = self.detailed_metrics
        if wanted is not None and in_effect is not None and wanted != in_effect:
            return "other detailed_metrics"
        return None

    def check_same(self, hook: Any) -> None:
        """Raise unless a hook already on the target records the way these settings ask.

        Raises:
            ConfigurationError: saying to disable the target first.
        """
        earlier = getattr(hook, "settings", None)
        # What the hook's registry exports, whatever set it.
        detailed = getattr(getattr(getattr(hook, "recorder", None), "metrics", None),
                           "detailed", None)
        if earlier is not None:
            conflict = self.conflict(earlier, detailed)
        elif self.registry is not hook.registry:  # a hook built by hand: no settings known
            conflict = "another registry"
        else:
            conflict = self._detailed_conflict(detailed)
        if conflict is not None:
            raise ConfigurationError(
                f"metrics are already enabled on this target (or the session or global "
                f"enable_metrics() that covers it) with {conflict}; to change them, pass the "
                "same target to boto_prom.disable_metrics() first.")


# --- the entry points -------------------------------------------------------------------------

def resolve(
    *,
    port: Optional[int] = None,
    addr: Optional[str] = None,
    registry: Any = None,
    start_server: bool = True,
    aws_service: Optional[str] = None,
    aws_region: Optional[str] = None,
    buckets: Optional[Sequence[float]] = None,
    web_config: Any = None,
    allowed_services: Optional[Iterable[str]] = None,
    ignored_actions: Optional[Iterable[str]] = None,
    max_label_sets: Optional[int] = None,
    csv_path: Any = None,
    csv_format: Optional[str] = None,
    csv_max_bytes: Optional[int] = None,
    csv_backups: Optional[int] = None,
    detailed_metrics: Optional[bool] = None,
) -> Settings:
    """The settings of one :func:`boto_prom.enable_metrics` call (its arguments, see there).

    Raises:
        ConfigurationError: one sentence on the first bad setting found.
    """
    if env_flag("BOTO_PROM_DISABLED"):
        return Settings(disabled=True)
    if web_config is not None and not start_server:
        raise ConfigurationError(
            "web_config= configures the metrics server, which start_server=False does not "
            "start; pass one or the other.")
    multiprocess_dir = check_multiprocess()
    server = None
    if start_server:
        server = ServerSettings(addr=_addr(addr), port=_port(port),
                                web_config=_web_config(web_config),
                                multiprocess_dir=multiprocess_dir)
    return Settings(
        registry=check_registry(registry),
        server=server,
        aws_service=_label_override("aws_service", aws_service),
        aws_region=_label_override("aws_region", aws_region),
        buckets=None if buckets is None else check_buckets(buckets, "buckets"),
        allowed_services=_names_setting("allowed_services", allowed_services,
                                        "BOTO_PROM_ALLOWED_SERVICES"),
        ignored_actions=_names_setting("ignored_actions", ignored_actions,
                                       "BOTO_PROM_IGNORED_ACTIONS") or frozenset(),
        max_label_sets=_int_setting(max_label_sets, "max_label_sets",
                                    "BOTO_PROM_MAX_LABEL_SETS", 1, None,
                                    "a whole number of 1 or more"),
        detailed_metrics=_flag_setting(detailed_metrics, "detailed_metrics",
                                       DETAILED_METRICS_ENV),
        csv=csv_settings(csv_path, csv_format, csv_max_bytes, csv_backups),
        multiprocess_dir=multiprocess_dir,
        push=_push_from_env(),
    )


def resolve_server(port: Optional[int] = None, addr: Optional[str] = None, *,
                   web_config: Any = None, multiprocess_dir: Any = None) -> ServerSettings:
    """The settings of a server that serves the multiprocess directory (and nothing else).

    Raises:
        ConfigurationError: a bad setting, or no multiprocess directory given or set.
    """
    if multiprocess_dir is None:
        multiprocess_dir = multiprocess_dir_from_env()
    if not multiprocess_dir:
        raise ConfigurationError.about(
            "path", lambda called: f"serving every process's metrics needs the directory the "
            f"workers record into; set {MULTIPROC_ENV} (or pass {called}).")
    return ServerSettings(addr=_addr(addr), port=_port(port),
                          web_config=_web_config(web_config),
                          multiprocess_dir=_path("path", multiprocess_dir))


def resolve_push(gateway: Any, *, job: Optional[str] = None,
                 grouping_key: Optional[Mapping[str, str]] = None,
                 username: Optional[str] = None, password: Optional[str] = None,
                 timeout: Any = DEFAULT_PUSH_TIMEOUT) -> PushSettings:
    """The settings of one push (:func:`boto_prom.push_metrics`'s arguments, see there).

    Raises:
        ConfigurationError: one sentence on the first bad setting found.
    """
    job = default_job() if job is None else job
    if not isinstance(job, str) or not job:
        raise ConfigurationError.about(
            "job", lambda called: f"{called} must be a non-empty string, not {job!r}.")
    if (username is None) != (password is None):
        raise ConfigurationError("Pushgateway basic auth needs both username and password.")
    return PushSettings(_gateway(gateway, "gateway"), job, _grouping_key(grouping_key),
                        username, password, _timeout(timeout, "timeout"))


# --- single settings, each checked once -------------------------------------------------------

def env_flag(name: str) -> bool:
    """A yes/no environment variable; anything else is a ConfigurationError."""
    raw = os.environ.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be one of 1/0, true/false, yes/no or on/off, not {raw!r}.")


def detailed_metrics_from_env() -> Optional[bool]:
    """BOTO_PROM_DETAILED_METRICS as a yes/no, or None when unset: for what builds metrics
    without :func:`resolve` (a hook made by hand, a conflict's explanation)."""
    return _flag_setting(None, "detailed_metrics", DETAILED_METRICS_ENV)


def _flag_setting(value: Optional[bool], name: str, env: str) -> Optional[bool]:
    """value, else the yes/no variable env, else None (unset: whatever applies already)."""
    if value is None:
        if not os.environ.get(env, "").strip():
            return None
        return env_flag(env)
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False, not {value!r}.")
    return value


def _int_setting(value: Optional[int], name: str, env: str, minimum: int,
                 maximum: Optional[int], expected: str) -> Optional[int]:
    """value, else the variable env, else None; checked to lie in [minimum, maximum]."""
    source = name
    if value is None:
        raw = os.environ.get(env, "").strip()
        if not raw:
            return None
        source = env
        try:
            value = int(raw)
        except ValueError:
            raise ConfigurationError(f"{env} must be {expected}, not {raw!r}.") from None
    if (isinstance(value, bool) or not isinstance(value, int) or value < minimum
            or (maximum is not None and value > maximum)):
        raise ConfigurationError.about(
            source, lambda called: f"{called} must be {expected}, not {value!r}.")
    return value


def _port(port: Optional[int]) -> Optional[int]:
    return _int_setting(port, "port", "BOTO_PROM_PORT", 0, 65535,
                        "a port number from 0 to 65535")


def _addr(addr: Optional[str]) -> Optional[str]:
    source = "addr"
    if addr is None:
        addr = os.environ.get("BOTO_PROM_ADDR", "").strip() or None
        if addr is None:
            return None
        source = "BOTO_PROM_ADDR"
    if not isinstance(addr, str) or not addr or "\0" in addr or addr != addr.strip():
        raise ConfigurationError.about(
            source, lambda called: f"{called} must be a host name or IP address (like 127.0.0.1 "
            f"or 0.0.0.0), not {addr!r}.")
    return addr


def _path(name: str, value: Any) -> str:
    """A file system path as text, or a ConfigurationError naming the setting."""
    try:
        text = os.fsdecode(os.fspath(value))
    except TypeError:
        text = ""
    if not text or "\0" in text:
        raise ConfigurationError.about(
            name, lambda called: f"{called} must be a file path (a str or os.PathLike), "
            f"not {value!r}.")
    return text


def _web_config(value: Any) -> Optional[str]:
    if value is None:
        value = os.environ.get("BOTO_PROM_WEB_CONFIG", "").strip() or None
        return None if value is None else _path("BOTO_PROM_WEB_CONFIG", value)
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigurationError.about(
            "web_config",
            lambda called: f"{called} must be the path of a YAML file, not {value!r}.")
    return _path("web_config", value)


def check_registry(registry: Any) -> CollectorRegistry:
    """registry, or the global one for None; anything else is a ConfigurationError."""
    if registry is None:
        return REGISTRY
    if not isinstance(registry, CollectorRegistry):
        raise ConfigurationError(
            f"registry must be a prometheus_client CollectorRegistry, not {type(registry).__name__}.")
    return registry


def _label_override(name: str, value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    if safe_name(value) is None:
        raise ConfigurationError(
            f"{name} must be a short name of letters, digits, '-', '_' or '.' "
            f"(like 'ec2' or 'us-west-2'), not {value!r}.")
    return value


def check_buckets(buckets: object, what: str) -> Tuple[float, ...]:
    """Buckets as a tuple of finite floats (+Inf dropped), or a ConfigurationError."""
    try:
        values = tuple(float(b) for b in buckets)  # type: ignore[union-attr]
    except (TypeError, ValueError, OverflowError):
        raise ConfigurationError(
            f"{what} must be a list of numbers in increasing order, not {buckets!r}.") from None
    finite = [b for b in values if not math.isinf(b)]
    if not finite or any(b <= 0 or math.isnan(b) for b in finite) or any(
            a >= b for a, b in zip(finite, finite[1:])):
        raise ConfigurationError(
            f"{what} must be positive numbers in strictly increasing order, not {buckets!r}.")
    return tuple(finite)


def _names(what: str, values: object) -> Optional[FrozenSet[str]]:
    if values is None:
        return None
    # A lone string is iterable too, and would silently become a set of letters.
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ConfigurationError.about(
            what, lambda called: f"{called} must be a list of names like ['s3', 'ec2'], "
            f"not {values!r}.")
    values = list(values)
    bad = sorted(repr(v) for v in values if type(v) is not str or safe_name(v) is None)
    if bad:
        raise ConfigurationError.about(
            what, lambda called: f"{called} must hold short names of letters, digits, '-', '_' "
            f"or '.', not {', '.join(bad)}.")
    return frozenset(values)


def _names_setting(what: str, values: object, env: str) -> Optional[FrozenSet[str]]:
    """values, else the comma-separated variable env (unset or empty: None), checked."""
    if values is not None:
        return _names(what, values)
    raw = os.environ.get(env, "").strip()
    if not raw:
        return None
    names = [part.strip() for part in raw.split(",") if part.strip()]
    bad = sorted(repr(n) for n in names if safe_name(n) is None)
    if bad or not names:
        raise ConfigurationError(
            f"{env} must be names separated by commas, like s3,ec2, not {raw!r}.")
    return frozenset(names)


# --- the CSV file -----------------------------------------------------------------------------

def csv_settings(path: Any, format: Optional[str] = None, max_bytes: Optional[int] = None,
                 backups: Optional[int] = None) -> Optional[CsvSettings]:
    """The CSV file's settings (``csv_path`` and its options, else ``BOTO_PROM_CSV``), checked
    down to the file being writable; None when no file is asked for."""
    if path is None:
        path = os.environ.get("BOTO_PROM_CSV", "").strip() or None
    if path is None:
        if (format, max_bytes, backups) != (None, None, None):
            raise ConfigurationError(
                "csv_format, csv_max_bytes and csv_backups apply to a CSV file; pass csv_path= "
                "(or set BOTO_PROM_CSV) too.")
        return None
    if format is not None and format not in CSV_FORMATS:
        raise ConfigurationError(f"csv_format must be 'csv' or 'requestlog', not {format!r}.")
    max_bytes = _count("csv_max_bytes", max_bytes)
    backups = _count("csv_backups", backups)
    if (DEFAULT_CSV_MAX_BYTES if max_bytes is None else max_bytes) and backups == 0:
        raise ConfigurationError(
            "csv_backups must be 1 or more when csv_max_bytes is set, since rotation keeps "
            "the old rows in backups; pass csv_max_bytes=0 for one growing file.")
    real = csv_real_path(path)
    _check_writable(real)
    return CsvSettings(real, format, max_bytes, backups)


def _count(name: str, value: Optional[int]) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"{name} must be a whole number, 0 or more, not {value!r}.")
    return value


def csv_real_path(path: Any) -> str:
    """The absolute, symlink-free path a CSV writer is known by."""
    return os.path.realpath(os.path.abspath(_path("csv_path", path)))


def _check_writable(real: str) -> None:
    """Fail now, in one sentence, for a path the writer thread could never write."""
    directory = os.path.dirname(real)
    if os.path.isdir(real):
        raise ConfigurationError.about(
            "csv_path", lambda called: f"{called} {real} is a directory; pass the path of a "
            "file in it.")
    if not os.path.isdir(directory):
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise ConfigurationError.about(
            "csv_path", lambda called: f"the directory of {called}, {directory}, {what}; "
            f"create it or give {called} a file in an existing directory.")
    try:
        st = os.stat(real)
    except FileNotFoundError:
        st = None
    except OSError as exc:  # a name too long, a loop of links, a directory we may not enter
        error = (exc.strerror or str(exc)).lower()
        raise ConfigurationError.about(
            "csv_path", lambda called: f"{called} {real} cannot be written ({error}); give "
            f"{called} a file in a directory this process may write to.") from None
    if st is None:
        # Created and taken out again: a later step of the enable may still fail, and a
        # failed enable leaves nothing behind. (access() is no answer: it says yes for /sys.)
        try:
            os.close(os.open(real, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            os.unlink(real)
            return
        except FileExistsError:
            return  # made by someone else meanwhile: the writer appends to it
        except OSError as exc:
            error = (exc.strerror or str(exc)).lower()
    elif not stat.S_ISREG(st.st_mode):
        # A FIFO or a device: opening one may block until a reader comes, which is the
        # writer thread's business, not the caller's.
        if os.access(real, os.W_OK):
            return
        error = "permission denied"
    else:
        try:
            os.close(os.open(real, os.O_WRONLY | os.O_APPEND))
            return
        except OSError as exc:
            error = (exc.strerror or str(exc)).lower()
    raise ConfigurationError.about(
        "csv_path", lambda called: f"{called} {real} cannot be written ({error}); give "
        f"{called} a file in a directory this process may write to.")


# --- multiprocess mode ------------------------------------------------------------------------

def in_multiprocess_mode() -> bool:
    """True when prometheus_client records into a multiprocess directory in this process.

    prometheus_client picks its value storage once, when it is imported; this reads that choice
    rather than the environment, which may have changed since.
    """
    from prometheus_client import values

    mutex = getattr(values, "MutexValue", None)
    return mutex is not None and getattr(values, "ValueClass", mutex) is not mutex


def multiprocess_dir_from_env() -> Optional[str]:
    """``PROMETHEUS_MULTIPROC_DIR``, or None when it is not set."""
    return os.environ.get(MULTIPROC_ENV) or None


def check_multiprocess() -> Optional[str]:
    """The multiprocess directory when this process records into one, else None.

    Raises:
        ConfigurationError: the environment and prometheus_client disagree (the variable was
            set after prometheus_client was imported, or unset since), or the directory is
            not a writable directory.
    """
    path = multiprocess_dir_from_env()
    active = in_multiprocess_mode()
    if path is not None and not active:
        raise ConfigurationError(
            f"{MULTIPROC_ENV} was set after prometheus_client was imported, so this process "
            "records in memory only; set it in the environment before the program starts (for "
            "gunicorn, in the shell or systemd unit that starts it).")
    if path is None and active:
        raise ConfigurationError(
            f"prometheus_client runs in multiprocess mode but {MULTIPROC_ENV} is no longer "
            "set; leave it set for the life of the process.")
    if path is not None and not (os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)):
        raise ConfigurationError(
            f"{MULTIPROC_ENV}={path!r} is not a writable directory; create it (empty) before "
            "the program starts.")
    return path


# --- boto-prom run ----------------------------------------------------------------------------

RUN_ENV = "BOTO_PROM_RUN"
"""Set by ``boto-prom run``: ``main`` for the command it starts, ``child`` for the Python
processes that command starts in multiprocess mode."""


@dataclass(frozen=True)
class RunSettings:
    """What ``boto-prom run``'s start-up hook finds in a process's environment.

    Attributes:
        main: this is the process ``boto-prom run`` started, which serves and pushes; False in
            a Python process it started in turn, which only records (multiprocess mode).
        python_path: ``PYTHONPATH`` without the hook's directory (None when nothing is left):
            what the program would have had without ``boto-prom run``.
    """

    main: bool
    python_path: Optional[str]


def _path_entries(raw: str, leave_out: str) -> list:
    """PYTHONPATH's entries, without leave_out; an unset or empty one has none."""
    if not raw:
        return []
    out = os.path.realpath(leave_out)
    return [entry for entry in raw.split(os.pathsep)
            if not entry or os.path.realpath(entry) != out]


def run_environment(variables: Mapping[str, str], hook_dir: str) -> Dict[str, str]:
    """The environment ``boto-prom run`` starts its command in: this process's, with the
    variables its options stand for, hook_dir first on ``PYTHONPATH`` and ``BOTO_PROM_RUN``.

    Args:
        variables: ``BOTO_PROM_*`` (and ``PROMETHEUS_MULTIPROC_DIR``) values from the options.
        hook_dir: the directory holding boto-prom's ``sitecustomize``.
    """
    env = dict(os.environ)
    env.update(variables)
    env["PYTHONPATH"] = os.pathsep.join(
        [hook_dir] + _path_entries(env.get("PYTHONPATH", ""), hook_dir))
    env[RUN_ENV] = "main"
    return env


def resolve_run(hook_dir: str) -> Optional[RunSettings]:
    """This process's part in ``boto-prom run``, or None when it was not started by it."""
    role = os.environ.get(RUN_ENV, "")
    if role not in ("main", "child"):
        return None
    rest = _path_entries(os.environ.get("PYTHONPATH", ""), hook_dir)
    return RunSettings(role == "main", os.pathsep.join(rest) or None)


# --- pushing ----------------------------------------------------------------------------------

def shown_url(gateway: str) -> str:
    """A URL for a message or a log line, without anything that may be credentials."""
    return re.sub(r"//[^/?#]*@", "//...@", gateway)


def _gateway(gateway: object, source: str) -> str:
    """The Pushgateway URL checked; source is the argument or variable it came from."""
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
            f"the Pushgateway URL {shown_url(gateway)!r} has a malformed host or a port that "
            "is not a number from 1 to 65535; give one like http://pushgateway:9091.")
    if parts.scheme not in ("http", "https") or not hostname:
        raise ConfigurationError(
            f"the Pushgateway must be an http:// or https:// URL with a host, "
            f"not {shown_url(gateway)!r}.")
    if parts.username is not None or parts.password is not None:
        # Credentials in a URL end up in logs and error messages. Only push_metrics takes them
        # as arguments, so only a sentence said under its argument's name (gateway) says
        # username= and password=; the push at exit, boto-prom run's --push too, reads them
        # from two variables.
        raise ConfigurationError.about(
            source, lambda called: f"the Pushgateway URL ({called}) must not carry "
            "credentials; " + ("pass username= and password= instead." if called == "gateway"
                               else "set BOTO_PROM_PUSH_USERNAME and BOTO_PROM_PUSH_PASSWORD "
                               "instead."))
    return gateway


def _grouping_key(grouping_key: object) -> Tuple[Tuple[str, str], ...]:
    if grouping_key is None:
        return ()
    if not isinstance(grouping_key, Mapping):
        raise ConfigurationError(
            f"grouping_key must be a mapping of label names to values, not {grouping_key!r}.")
    checked = []
    for name, value in grouping_key.items():
        if not isinstance(name, str) or not _LABEL_RE.match(name) or name == "job":
            raise ConfigurationError.about(
                "grouping_key", lambda called: f"{called} names must be label names other "
                f"than 'job', not {name!r}.")
        if not isinstance(value, str):
            raise ConfigurationError(f"grouping_key[{name!r}] must be a string, not {value!r}.")
        checked.append((name, value))
    return tuple(checked)


def _timeout(timeout: object, source: str, shown: object = None) -> float:
    """timeout checked; shown is what the user wrote (the variable's text), for the message."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (
            math.isfinite(timeout) and 0 < timeout <= MAX_PUSH_TIMEOUT):
        raise ConfigurationError(
            f"{source} must be a number of seconds above 0 and at most {MAX_PUSH_TIMEOUT:g}, "
            f"not {timeout if shown is None else shown!r}.")
    return float(timeout)


def default_job() -> str:
    """``BOTO_PROM_PUSH_JOB``, else the running script's name, else ``boto_prom``."""
    job = os.environ.get("BOTO_PROM_PUSH_JOB", "").strip()
    if job:
        return job
    script = os.path.basename(sys.argv[0] if sys.argv else "")
    script = re.sub(r"\.pyw?$", "", script)
    script = re.sub(r"[^A-Za-z0-9_.-]", "_", script).strip("_")
    return script if script and not script.startswith("-") else "boto_prom"


def grouping_key_pairs(raw: str, source: str) -> Dict[str, str]:
    """``instance=web1,shard=2`` as a mapping; source names the setting in an error."""
    key: Dict[str, str] = {}
    for part in filter(None, (p.strip() for p in raw.strip().split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise ConfigurationError.about(
                source, lambda called: f"{called} must be name=value pairs separated by "
                f"commas, like instance=web1,shard=2, not {raw.strip()!r}.")
        key[name.strip()] = value.strip()
    return key


def _push_from_env() -> Optional[PushSettings]:
    """The push at exit the ``BOTO_PROM_PUSH*`` variables ask for, or None."""
    gateway = os.environ.get("BOTO_PROM_PUSHGATEWAY", "").strip()
    if not gateway:
        return None
    if in_multiprocess_mode():
        # Each worker would push only its own values to one group, each push replacing the last.
        raise ConfigurationError(
            "BOTO_PROM_PUSHGATEWAY (push at exit) is not available in multiprocess mode, where "
            "each worker would overwrite the others' push; unset it and scrape the multiprocess "
            "server, or push once from one process with boto_prom.push_metrics(url, "
            "registry=boto_prom.multiprocess_registry()).")
    raw_timeout = os.environ.get("BOTO_PROM_PUSH_TIMEOUT", "").strip()
    try:
        timeout = float(raw_timeout) if raw_timeout else DEFAULT_PUSH_TIMEOUT
    except ValueError:
        timeout = float("nan")
    key = grouping_key_pairs(os.environ.get("BOTO_PROM_PUSH_GROUPING_KEY", ""),
                             "BOTO_PROM_PUSH_GROUPING_KEY")
    username = os.environ.get("BOTO_PROM_PUSH_USERNAME") or None
    password = os.environ.get("BOTO_PROM_PUSH_PASSWORD") or None
    if (username is None) != (password is None):
        raise ConfigurationError(
            "Pushgateway basic auth needs both BOTO_PROM_PUSH_USERNAME and "
            f"BOTO_PROM_PUSH_PASSWORD; set {'BOTO_PROM_PUSH_PASSWORD' if password is None else 'BOTO_PROM_PUSH_USERNAME'} too, or neither.")
    return PushSettings(_gateway(gateway, "BOTO_PROM_PUSHGATEWAY"), default_job(),
                        _grouping_key(key), username,
                        password, _timeout(timeout, "BOTO_PROM_PUSH_TIMEOUT", raw_timeout))
