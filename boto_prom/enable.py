"""The one-line entry points: :func:`enable_metrics` and :func:`disable_metrics`.

Enabling is one order: resolve every setting (:mod:`boto_prom.settings`), then start the
server, open the CSV writer, build one :class:`~boto_prom.recorder.Recorder`, install the
adapter that the table below picks for the target, and arrange the push at exit. Each step puts
its undo on one ``ExitStack``, so a failure at any step takes out exactly what the steps before
it did, and nothing is left behind.
"""

from __future__ import annotations

import logging
import sys
import threading
from contextlib import ExitStack
from typing import Any, Callable, Iterable, NamedTuple, Optional, Sequence, Tuple

from .csvlog import CsvSink, csv_metrics_for, csv_writer_for, get_csv_writer
from .exposition import get_server, serve, stop_server
from .metrics import metrics_for
from .push import pending_exit_push, push_at_exit
from .recorder import Recorder
from .settings import ConfigurationError, Settings, resolve

log = logging.getLogger("boto_prom")


def _target(function: str, target: Any) -> Tuple[str, Any]:
    """What target is, "global" (None), "boto2", "client" or "session", and what the adapter
    takes for it: the target itself, or a boto3 resource's client (``resource.meta.client``,
    which makes its calls).

    Raises:
        ConfigurationError: target is none of these; function names the entry point.
    """
    resource = getattr(sys.modules.get("boto3.resources.base"), "ServiceResource", None)
    if resource is not None and isinstance(target, resource):
        target = target.meta.client
    kind = _kind(target)
    if kind is None:
        raise ConfigurationError(
            f"{function}() takes a boto 2 connection (boto.connection.AWSAuthConnection), "
            "a boto3/botocore client, resource or session, or nothing (for every AWS call), "
            f"not {type(target).__name__}.")
    return kind, target


def _kind(target: Any) -> Optional[str]:
    """What target is: "global" (None), "boto2", "client" or "session"; None for anything else.

    botocore and boto3 are not imported to find out: an object of theirs exists only once
    they are.
    """
    if target is None:
        return "global"
    if callable(getattr(target, "set_request_hook", None)) and hasattr(target, "_mexe"):
        return "boto2"
    for module, name, kind in (("botocore.client", "BaseClient", "client"),
                               ("botocore.session", "Session", "session"),
                               ("boto3.session", "Session", "session")):
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(target, cls):
            return kind
    return None


class GlobalHook:
    """What ``enable_metrics()`` with no argument installed.

    Attributes:
        registry: the prometheus_client registry recorded into.
        server: the metrics server, when enable_metrics started one.
        botocore: the hook recording every botocore client that has no hook of its own (of
            any session: boto3's default one, ``boto3.session.Session()``,
            ``botocore.session.get_session()``), or None when botocore does not import.
        boto2: True when new boto 2 connections are instrumented (boto imports).
        active: False once :func:`boto_prom.disable_metrics` undid it.
    """

    def __init__(self, recorder: Any, settings: Settings) -> None:
        self.recorder = recorder
        self.registry = recorder.registry
        self.settings = settings
        self.server: Any = None
        self.botocore: Any = None
        self.boto2 = False
        self.active = True


class _Adapter(NamedTuple):
    """How enable_metrics installs one kind of target, and how disable_metrics undoes it."""

    installed: Callable[[Any], Any]  # target -> the active hook of ours on it, or None
    install: Callable[[Any, Any, Settings], Any]  # (target, recorder, settings) -> hook
    uninstall: Callable[[Any], bool]  # target -> True when metrics were on
    undo: Callable[[Any], Any]  # target -> None: take out what a failed enable installed


# The global mode's one hook for the process. Enabling and disabling hold the lock (re-entered
# when a failed enable undoes its global install).
_global: Optional[GlobalHook] = None
_lock = threading.RLock()


def _global_installed(target: Any) -> Optional[GlobalHook]:
    return _global


def _global_install(target: Any, recorder: Any, settings: Settings) -> GlobalHook:
    """Every botocore client, and every boto 2 connection made from now on; all or nothing."""
    from . import boto2

    global _global
    hook = GlobalHook(recorder, settings)
    with ExitStack() as undo:
        if _module_imports("botocore"):
            from . import botocore

            hook.botocore = botocore.install_global(recorder, settings)
            undo.callback(botocore.uninstall_global)
        hook.boto2 = boto2.install_global(recorder, settings)
        if hook.botocore is None and not hook.boto2:
            raise ConfigurationError(
                "enable_metrics() with no argument instruments boto3/botocore and boto 2, and "
                "neither imports here; install boto3 (or boto 2 on Python 3.11 and older).")
        undo.pop_all()
    _global = hook
    return hook


def _global_uninstall(target: Any) -> bool:
    from . import boto2

    global _global
    with _lock:
        hook, _global = _global, None
    if hook is None:
        return False
    hook.active = False
    if hook.botocore is not None:
        from . import botocore

        botocore.uninstall_global()
    if hook.boto2:
        boto2.uninstall_global()
    return True


def _module_imports(name: str) -> bool:
    try:
        __import__(name)
    except Exception:
        return False
    return True


def _adapter(kind: str) -> _Adapter:
    """The adapter for a kind of target; importing it imports its SDK."""
    if kind == "boto2":
        from . import boto2

        return _Adapter(boto2.installed, boto2.install, boto2.uninstall, boto2.uninstall)
    if kind == "global":
        return _Adapter(_global_installed, _global_install, _global_uninstall,
                        _global_uninstall)
    from . import botocore

    return _Adapter(botocore.installed, botocore.instrument, botocore.uninstrument,
                    botocore.uninstrument)


def enable_metrics(
    target: Any = None,
    *,
    port: Optional[int] = None,
    addr: Optional[str] = None,
    registry: Any = None,
    start_server: bool = True,
    aws_service: Optional[str] = None,
    aws_region: Optional[str] = None,
    buckets: Optional[Sequence[float]] = None,
    web_config: Optional[str] = None,
    allowed_services: Optional[Iterable[str]] = None,
    ignored_actions: Optional[Iterable[str]] = None,
    max_label_sets: Optional[int] = None,
    csv_path: Any = None,
    csv_format: Optional[str] = None,
    csv_max_bytes: Optional[int] = None,
    csv_backups: Optional[int] = None,
    detailed_metrics: Optional[bool] = None,
) -> Any:
    """Record every AWS call a connection, client or session makes, and serve ``/metrics``.

    Call it once per connection, client or session at start-up, or once with no argument for
    every call of the process. Calling it again on the same target with the same settings
    returns the hook already installed (nothing is counted twice); a request hook a boto 2
    connection already had is kept and still called. The first call in a process starts the
    metrics server; later calls reuse it.

    Args:
        target: what to instrument: a boto 2 connection (``boto.ec2.connect_to_region(...)``,
            ``S3Connection()``...); a boto3/botocore client (``boto3.client("s3")``); a boto3
            resource (``boto3.resource("s3")``: its client, ``resource.meta.client``); a
            ``boto3.Session`` or ``botocore.session.Session`` (every client and resource
            created from it afterwards); or None: every boto3/botocore client, whatever its
            session and whenever it was made, and every boto 2 connection created afterwards.
        port: the metrics server's port (default ``BOTO_PROM_PORT``, else the running
            server's, else 9875; 0 picks a free one, readable back as ``hook.server.port``).
        addr: the address to bind (default ``BOTO_PROM_ADDR`` or 127.0.0.1).
        registry: the prometheus_client registry (default: the global one).
        start_server: False to only record, e.g. when the app already serves ``/metrics``.
        aws_service: the ``aws_service`` label, when the connection's host does not say it
            (a connection or client only).
        aws_region: the ``aws_region`` label, likewise.
        buckets: per-action duration histogram buckets in seconds (default: 5 ms to 30 s in
            12 buckets; 5 ms to 60 s in 16 with ``detailed_metrics``).
        web_config: a web configuration file (as Prometheus's ``--web.config.file``) for
            TLS and basic auth on the server (default ``BOTO_PROM_WEB_CONFIG``).
        allowed_services: record only these services (``["s3", "ec2"]``).
        ignored_actions: never record these actions (``["HeadObject"]``).
        max_label_sets: label sets kept per registry before new ones are counted under
            ``action="_other"`` (default ``BOTO_PROM_MAX_LABEL_SETS`` or 2000).
        csv_path: also append every request as a row to this file (default ``BOTO_PROM_CSV``;
            none when unset). Every target naming the same file shares one writer.
        csv_format: ``"csv"`` (default: a header and one row per request) or ``"requestlog"``
            (the lines boto's ``RequestLogger`` wrote).
        csv_max_bytes: rotate the file before it reaches this size (default 100 MiB; 0 never).
        csv_backups: rotated files kept, ``path.1`` (newest) to ``path.N`` (default 5).
        detailed_metrics: True to also export the full request- and response-size histograms
            and the per-attempt duration histogram, and finer per-action duration buckets
            (default ``BOTO_PROM_DETAILED_METRICS``, else False: at most 24 series per label
            set). Set by the first enable per registry.

    With ``PROMETHEUS_MULTIPROC_DIR`` set, the server serves every process's metrics; with
    ``BOTO_PROM_PUSHGATEWAY`` set, the metrics are pushed there when the process exits (see
    :mod:`boto_prom.settings` for every variable).

    Returns:
        The installed hook: a :class:`boto_prom.BotoRequestHook` for a boto 2 connection, a
        ``boto_prom.botocore.BotocoreHook`` for a client or session, a ``GlobalHook`` with no
        argument; None when ``BOTO_PROM_DISABLED`` is set.

    Raises:
        ConfigurationError: one sentence on what to change (a busy port, bad buckets, the
            target already enabled with another registry...).

    Example:
        >>> import boto.ec2, boto3, boto_prom  # doctest: +SKIP
        >>> boto_prom.enable_metrics(boto.ec2.connect_to_region("us-west-2"))  # doctest: +SKIP
        >>> boto_prom.enable_metrics(boto3.client("s3"))  # doctest: +SKIP
    """
    settings = resolve(
        port=port, addr=addr, registry=registry, start_server=start_server,
        aws_service=aws_service, aws_region=aws_region, buckets=buckets, web_config=web_config,
        allowed_services=allowed_services, ignored_actions=ignored_actions,
        max_label_sets=max_label_sets, csv_path=csv_path, csv_format=csv_format,
        csv_max_bytes=csv_max_bytes, csv_backups=csv_backups, detailed_metrics=detailed_metrics)
    if settings.disabled:
        log.info("boto-prom: BOTO_PROM_DISABLED is set; metrics are not enabled")
        return None
    kind, target = _target("enable_metrics", target)
    if kind in ("session", "global") and (settings.aws_service or settings.aws_region):
        raise ConfigurationError(
            "aws_service= and aws_region= label one client or connection; with a session or "
            "no argument each client is labelled with its own service and region.")
    adapter = _adapter(kind)
    with _lock:
        existing = adapter.installed(target)
        if existing is not None:
            return _same_hook(existing, settings)
        return _enable(target, adapter, settings)


def _same_hook(hook: Any, settings: Settings) -> Any:
    """The hook already on a target, when settings record the way it does (and the server
    they ask for is the one running)."""
    settings.check_same(hook)
    if settings.server is not None:
        server = serve(settings.server, settings.registry)
        if getattr(hook, "server", None) is None:
            hook.server = server
    return hook


def _enable(target: Any, adapter: _Adapter, settings: Settings) -> Any:
    registry = settings.registry
    with ExitStack() as undo:
        server = None
        if settings.server is not None:
            running = get_server()
            server = serve(settings.server, registry)
            if server is not running:
                undo.callback(stop_server)
        metrics = metrics_for(registry, settings.buckets, settings.max_label_sets,
                              settings.detailed_metrics)
        csv = None
        if settings.csv is not None:
            running_writer = get_csv_writer(settings.csv.path)
            writer = csv_writer_for(settings.csv)
            if writer is not running_writer:
                undo.callback(writer.close)
            csv = CsvSink(writer, csv_metrics_for(registry))
        recorder = Recorder(metrics, csv, settings.allowed_services, settings.ignored_actions)
        hook = adapter.install(target, recorder, settings)
        undo.callback(adapter.undo, target)
        if settings.push is not None:
            arranged = pending_exit_push()
            exit_push = push_at_exit(settings.push, registry)
            if exit_push is not arranged:
                undo.callback(exit_push.cancel)
        undo.pop_all()
    if getattr(hook, "server", None) is None:
        hook.server = server
    return hook


def disable_metrics(target: Any = None) -> bool:
    """Stop recording a target's calls; a boto 2 connection gets back the hook it had before.

    A client or session stops being recorded (a session's clients too); with no argument,
    what ``enable_metrics()`` with no argument installed is undone.

    Args:
        target: a connection, client, resource or session passed to :func:`enable_metrics`,
            or None.

    Returns:
        True when metrics were on and are now off, False when they were not on.

    Raises:
        ConfigurationError: target is not something :func:`enable_metrics` takes.
    """
    kind, target = _target("disable_metrics", target)
    with _lock:
        return _adapter(kind).uninstall(target)


__all__ = ["GlobalHook", "disable_metrics", "enable_metrics"]
