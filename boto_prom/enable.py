"""The one-line entry points: :func:`enable_metrics` and :func:`disable_metrics`.

Everything is decided here, once, at enable time: the settings (arguments, then the
environment), the sinks behind one Recorder, the server; then the adapter for the target is
installed. Bad settings fail here with one sentence, before anything is installed.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Iterable, Optional, Sequence

from ._errors import ConfigurationError
from .config import (check_label_override, env_flag, resolve_addr, resolve_csv_path,
                     resolve_port)

log = logging.getLogger("boto_prom")


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
) -> Any:
    """Record every AWS call a connection, client or session makes, and serve ``/metrics``.

    Call it once per connection, client or session at start-up, or once with no argument for
    every call of the process. Calling it again on the same target returns the hook already
    installed (nothing is counted twice); a request hook a boto 2 connection already had is
    kept and still called. The first call in a process starts the metrics server; later calls
    reuse it.

    Args:
        target: what to instrument: a boto 2 connection (``boto.ec2.connect_to_region(...)``,
            ``S3Connection()``...); a boto3/botocore client (``boto3.client("s3")``); a
            ``boto3.Session`` or ``botocore.session.Session`` (every client created from it
            afterwards); or None: boto3's default session and every boto 2 connection
            created afterwards.
        port: the metrics server's port (default ``BOTO_PROM_PORT``, else the running
            server's, else 9875; 0 picks a free one, readable back as ``hook.server.port``).
        addr: the address to bind (default ``BOTO_PROM_ADDR`` or 127.0.0.1).
        registry: the prometheus_client registry (default: the global one).
        start_server: False to only record, e.g. when the app already serves ``/metrics``.
        aws_service: the ``aws_service`` label, when the connection's host does not say it
            (a connection or client only).
        aws_region: the ``aws_region`` label, likewise.
        buckets: duration histogram buckets in seconds (default: 5 ms to 60 s).
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

    With ``PROMETHEUS_MULTIPROC_DIR`` set, the server serves every process's metrics (see
    :mod:`boto_prom.multiprocess`); with ``BOTO_PROM_PUSHGATEWAY`` set, the metrics are pushed
    there when the process exits (see :mod:`boto_prom.push`).

    Returns:
        The installed hook: a :class:`boto_prom.BotoRequestHook` for a boto 2 connection, a
        :class:`boto_prom.BotocoreHook` for a client or session, a ``GlobalHook`` with no
        argument; None when ``BOTO_PROM_DISABLED`` is set.

    Raises:
        ConfigurationError: one sentence on what to change (a busy port, bad buckets...).

    Example:
        >>> import boto.ec2, boto3, boto_prom  # doctest: +SKIP
        >>> boto_prom.enable_metrics(boto.ec2.connect_to_region("us-west-2"))  # doctest: +SKIP
        >>> boto_prom.enable_metrics(boto3.client("s3"))  # doctest: +SKIP
    """
    if env_flag("BOTO_PROM_DISABLED"):
        log.info("boto-prom: BOTO_PROM_DISABLED is set; metrics are not enabled")
        return None
    kind = _kind(target)
    if kind is None:
        raise ConfigurationError(
            "enable_metrics() takes a boto 2 connection (an object with set_request_hook), "
            "a boto3/botocore client or session, or nothing (for every AWS call), "
            f"not {type(target).__name__}."
        )
    aws_service = check_label_override("aws_service", aws_service)
    aws_region = check_label_override("aws_region", aws_region)
    if kind in ("session", "global") and (aws_service or aws_region):
        raise ConfigurationError(
            "aws_service= and aws_region= label one client or connection; with a session or "
            "no argument each client is labelled with its own service and region."
        )
    if web_config is not None and not start_server:
        raise ConfigurationError(
            "web_config= configures the metrics server, which start_server=False does not "
            "start; pass one or the other.")

    from .cardinality import make_filter, resolve_max_label_sets
    from .multiprocess import check_multiprocess
    from .webconfig import resolve_web_config

    port = resolve_port(port)
    addr = resolve_addr(addr)
    accept = make_filter(allowed_services, ignored_actions)
    max_label_sets = resolve_max_label_sets(max_label_sets)
    multiprocess_path = check_multiprocess()
    web_config = resolve_web_config(web_config)
    csv_path = resolve_csv_path(csv_path)

    if kind == "boto2":
        from .boto2 import BotoRequestHook

        existing = getattr(target, "request_hook", None)
        if isinstance(existing, BotoRequestHook) and existing.active:
            return existing

    from ._serve import serve
    from .csvlog import csv_sinks
    from .metrics import metrics_for, validate_buckets
    from .push import check_push_env, exit_push_from_env
    from .recorder import Recorder
    from .server import get_server, stop_server

    # Everything that can be checked is checked before anything is created or installed.
    if buckets is not None:
        validate_buckets(buckets, "buckets")
    check_push_env()
    registry = _check_registry(registry)

    started = None
    server = None
    if start_server:
        running = get_server()
        server = serve(addr, port, registry, web_config=web_config,
                       multiprocess_path=multiprocess_path)
        started = server if server is not running else None
    try:
        metrics = metrics_for(registry, buckets, max_label_sets)
        sinks = csv_sinks(registry, csv_path, csv_format, csv_max_bytes, csv_backups)
        hook = _install(kind, target, Recorder(metrics, sinks=sinks, accept=accept),
                        aws_service, aws_region)
        try:
            exit_push_from_env(registry)
        except BaseException:
            disable_metrics(target)
            raise
    except BaseException:
        # A failed enable leaves nothing behind: not even the server this call started.
        if started is not None:
            stop_server()
        raise
    if hook.server is None:
        hook.server = server
    return hook


def _check_registry(registry: Any) -> Any:
    from prometheus_client import REGISTRY, CollectorRegistry

    if registry is None:
        return REGISTRY
    if not isinstance(registry, CollectorRegistry):
        raise ConfigurationError(
            f"registry must be a prometheus_client CollectorRegistry, not {type(registry).__name__}.")
    return registry


def _install(kind: str, target: Any, recorder: Any, aws_service: Optional[str],
             aws_region: Optional[str]) -> Any:
    """Install the adapter for target; returns its hook (an existing one when already on)."""
    if kind == "boto2":
        from .boto2 import BotoRequestHook, connection_region, connection_service

        previous = getattr(target, "request_hook", None)
        if isinstance(previous, BotoRequestHook):
            previous = previous.previous  # an inactive hook of ours: replace it
        hook = BotoRequestHook(
            aws_service=aws_service or connection_service(target),
            aws_region=aws_region or connection_region(target),
            previous=previous,
            recorder=recorder,
        )
        target.set_request_hook(hook)
        return hook
    if kind == "global":
        from ._global import enable_global

        return enable_global(recorder)
    from .botocore import BotocoreHook, instrument

    return instrument(target, BotocoreHook(recorder, aws_service=aws_service,
                                           aws_region=aws_region))


def disable_metrics(target: Any = None) -> bool:
    """Stop recording a target's calls; a boto 2 connection gets back the hook it had before.

    A client or session stops being recorded (a session's clients too); with no argument,
    what ``enable_metrics()`` with no argument installed is undone.

    Args:
        target: a connection, client or session passed to :func:`enable_metrics`, or None.

    Returns:
        True when metrics were on and are now off, False when they were not on.
    """
    kind = _kind(target)
    if kind == "global":
        from ._global import disable_global

        return disable_global()
    if kind in ("client", "session"):
        from .botocore import uninstrument

        return uninstrument(target)
    from .boto2 import BotoRequestHook

    hook = getattr(target, "request_hook", None)
    if not isinstance(hook, BotoRequestHook):
        return False
    target.set_request_hook(hook.previous)
    return True


__all__ = ["ConfigurationError", "disable_metrics", "enable_metrics"]
