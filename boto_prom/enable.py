"""The one-line entry points: :func:`enable_metrics` and :func:`disable_metrics`."""

from __future__ import annotations

import logging
from typing import Any, Iterable, Optional, Sequence

from ._errors import ConfigurationError
from .config import (check_label_override, env_flag, resolve_addr, resolve_csv_path,
                     resolve_port)

log = logging.getLogger("boto_prom")


def _is_boto2_connection(target: Any) -> bool:
    return callable(getattr(target, "set_request_hook", None)) and hasattr(target, "_mexe")


def enable_metrics(
    conn: Any,
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
    """Record every request a boto 2 connection makes, and serve the metrics on ``/metrics``.

    Call it once per connection at start-up. Calling it again on the same connection returns
    the hook already installed (nothing is counted twice); a request hook the connection
    already had is kept and still called. The first call in a process starts the metrics
    server; later calls reuse it.

    Args:
        conn: a boto 2 connection (``boto.ec2.connect_to_region(...)``, ``S3Connection()``...).
        port: the metrics server's port (default ``BOTO_PROM_PORT`` or 9875; 0 picks a free
            one, readable back as ``hook.server.port``).
        addr: the address to bind (default ``BOTO_PROM_ADDR`` or 127.0.0.1).
        registry: the prometheus_client registry (default: the global one).
        start_server: False to only record, e.g. when the app already serves ``/metrics``.
        aws_service: the ``aws_service`` label, when the connection's host does not say it.
        aws_region: the ``aws_region`` label, likewise.
        buckets: duration histogram buckets in seconds (default: 5 ms to 60 s).
        web_config: a web configuration file (as Prometheus's ``--web.config.file``) for
            TLS and basic auth on the server (default ``BOTO_PROM_WEB_CONFIG``).
        allowed_services: record only these services (``["s3", "ec2"]``).
        ignored_actions: never record these actions (``["HeadObject"]``).
        max_label_sets: label sets kept per registry before new ones are counted under
            ``action="_other"`` (default ``BOTO_PROM_MAX_LABEL_SETS`` or 2000).

    With ``PROMETHEUS_MULTIPROC_DIR`` set, the server serves every process's metrics (see
    :mod:`boto_prom.multiprocess`); with ``BOTO_PROM_PUSHGATEWAY`` set, the metrics are pushed
    there when the process exits (see :mod:`boto_prom.push`).
        csv_path: also append every request as a row to this file (default ``BOTO_PROM_CSV``;
            none when unset). Every connection naming the same file shares one writer.
        csv_format: ``"csv"`` (default: a header and one row per request) or ``"requestlog"``
            (the lines boto's ``RequestLogger`` wrote).
        csv_max_bytes: rotate the file before it reaches this size (default 100 MiB; 0 never).
        csv_backups: rotated files kept, ``path.1`` (newest) to ``path.N`` (default 5).

    Returns:
        The installed :class:`boto_prom.BotoRequestHook`, or None when ``BOTO_PROM_DISABLED``
        is set.

    Raises:
        ConfigurationError: one sentence on what to change (a busy port, bad buckets...).

    Example:
        >>> import boto.ec2, boto_prom  # doctest: +SKIP
        >>> conn = boto.ec2.connect_to_region("us-west-2")  # doctest: +SKIP
        >>> boto_prom.enable_metrics(conn)  # doctest: +SKIP
    """
    if env_flag("BOTO_PROM_DISABLED"):
        log.info("boto-prom: BOTO_PROM_DISABLED is set; metrics are not enabled")
        return None
    if not _is_boto2_connection(conn):
        raise ConfigurationError(
            "enable_metrics() takes a boto 2 connection (an object with set_request_hook), "
            f"not {type(conn).__name__}."
        )
    aws_service = check_label_override("aws_service", aws_service)
    aws_region = check_label_override("aws_region", aws_region)
    port = resolve_port(port)
    addr = resolve_addr(addr)
    from .cardinality import make_filter, resolve_max_label_sets
    from .multiprocess import check_multiprocess
    from .webconfig import resolve_web_config

    accept = make_filter(allowed_services, ignored_actions)
    max_label_sets = resolve_max_label_sets(max_label_sets)
    multiprocess_path = check_multiprocess()
    if web_config is not None and not start_server:
        raise ConfigurationError(
            "web_config= configures the metrics server, which start_server=False does not "
            "start; pass one or the other.")
    web_config = resolve_web_config(web_config)
    csv_path = resolve_csv_path(csv_path)

    from .boto2 import BotoRequestHook, connection_region, connection_service
    from .metrics import metrics_for
    from .push import exit_push_from_env
    from .recorder import Recorder

    existing = getattr(conn, "request_hook", None)
    if isinstance(existing, BotoRequestHook):
        return existing
    from .csvlog import csv_sinks

    metrics = metrics_for(registry, buckets, max_label_sets)
    sinks = csv_sinks(metrics.registry, csv_path, csv_format, csv_max_bytes, csv_backups)
    recorder = Recorder(metrics, sinks=sinks, accept=accept)
    hook = BotoRequestHook(
        aws_service=aws_service or connection_service(conn),
        aws_region=aws_region or connection_region(conn),
        previous=existing,
        recorder=recorder,
    )
    if start_server:
        from ._serve import serve

        hook.server = serve(addr, port, hook.registry, web_config=web_config,
                            multiprocess_path=multiprocess_path)
    exit_push_from_env(hook.registry)
    conn.set_request_hook(hook)
    return hook


def disable_metrics(conn: Any) -> bool:
    """Stop recording a connection's requests and give it back the hook it had before.

    Args:
        conn: a connection passed to :func:`enable_metrics`.

    Returns:
        True when metrics were on and are now off, False when they were not on.
    """
    from .boto2 import BotoRequestHook

    hook = getattr(conn, "request_hook", None)
    if not isinstance(hook, BotoRequestHook):
        return False
    conn.set_request_hook(hook.previous)
    return True


__all__ = ["ConfigurationError", "disable_metrics", "enable_metrics"]
