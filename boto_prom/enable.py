"""The one-line entry points: :func:`enable_metrics` and :func:`disable_metrics`."""

from __future__ import annotations

import logging
import sys
from typing import Any, Optional, Sequence

from ._errors import ConfigurationError
from .config import check_label_override, env_flag, resolve_addr, resolve_port

log = logging.getLogger("boto_prom")


def _is_boto2_connection(target: Any) -> bool:
    return callable(getattr(target, "set_request_hook", None)) and hasattr(target, "_mexe")


def _botocore_kind(target: Any) -> Optional[str]:
    """"client" or "session" for a botocore/boto3 object, else None; imports neither (an
    object of theirs exists only once they are imported)."""
    for module, name, kind in (("botocore.client", "BaseClient", "client"),
                               ("botocore.session", "Session", "session"),
                               ("boto3.session", "Session", "session")):
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(target, cls):
            return kind
    return None


def _enable_botocore(target: Any, kind: str, registry: Any, buckets: Any, start_server: bool,
                     addr: str, port: int, aws_service: Optional[str],
                     aws_region: Optional[str]) -> Any:
    if kind != "client" and (aws_service or aws_region):
        raise ConfigurationError(
            "aws_service= and aws_region= label one client or connection; with a session or "
            "no argument each client is labelled with its own service and region."
        )
    from .metrics import metrics_for
    from .recorder import Recorder

    recorder = Recorder(metrics_for(registry, buckets))
    if kind == "global":
        from ._global import enable_global

        hook = enable_global(recorder)
    else:
        from .botocore import BotocoreHook, instrument

        hook = instrument(target, BotocoreHook(recorder, aws_service=aws_service,
                                               aws_region=aws_region))
    if start_server and hook.server is None:
        from .server import ensure_server

        hook.server = ensure_server(addr, port, hook.registry)
    return hook


def enable_metrics(
    conn: Any = None,
    *,
    port: Optional[int] = None,
    addr: Optional[str] = None,
    registry: Any = None,
    start_server: bool = True,
    aws_service: Optional[str] = None,
    aws_region: Optional[str] = None,
    buckets: Optional[Sequence[float]] = None,
) -> Any:
    """Record every AWS call a connection, client or session makes, and serve ``/metrics``.

    Call it once per connection, client or session at start-up, or once with no argument for
    every call of the process. Calling it again on the same target returns the hook already
    installed (nothing is counted twice); a request hook a boto 2 connection already had is
    kept and still called. The first call in a process starts the metrics server; later calls
    reuse it.

    Args:
        conn: what to instrument: a boto 2 connection (``boto.ec2.connect_to_region(...)``,
            ``S3Connection()``...); a boto3/botocore client (``boto3.client("s3")``); a
            ``boto3.Session`` or ``botocore.session.Session`` (every client created from it
            afterwards); or None: boto3's default session and every boto 2 connection
            created afterwards.
        port: the metrics server's port (default ``BOTO_PROM_PORT`` or 9875; 0 picks a free
            one, readable back as ``hook.server.port``).
        addr: the address to bind (default ``BOTO_PROM_ADDR`` or 127.0.0.1).
        registry: the prometheus_client registry (default: the global one).
        start_server: False to only record, e.g. when the app already serves ``/metrics``.
        aws_service: the ``aws_service`` label, when the connection's host does not say it
            (a connection or client only).
        aws_region: the ``aws_region`` label, likewise.
        buckets: duration histogram buckets in seconds (default: 5 ms to 60 s).

    Returns:
        The installed hook: a :class:`boto_prom.BotoRequestHook` for a boto 2 connection, a
        :class:`boto_prom.BotocoreHook` for a client or session, a ``GlobalHook`` with no
        argument; None when ``BOTO_PROM_DISABLED`` is set.

    Raises:
        ConfigurationError: one sentence on what to change (a busy port, bad buckets...).

    Example:
        >>> import boto.ec2, boto_prom  # doctest: +SKIP
        >>> conn = boto.ec2.connect_to_region("us-west-2")  # doctest: +SKIP
        >>> boto_prom.enable_metrics(conn)  # doctest: +SKIP
        >>> boto_prom.enable_metrics(boto3.client("s3"))  # doctest: +SKIP
    """
    if env_flag("BOTO_PROM_DISABLED"):
        log.info("boto-prom: BOTO_PROM_DISABLED is set; metrics are not enabled")
        return None
    boto2 = _is_boto2_connection(conn)
    kind = "global" if conn is None else None if boto2 else _botocore_kind(conn)
    if not boto2 and kind is None:
        raise ConfigurationError(
            "enable_metrics() takes a boto 2 connection (an object with set_request_hook), "
            "a boto3/botocore client or session, or nothing (for every AWS call), "
            f"not {type(conn).__name__}."
        )
    aws_service = check_label_override("aws_service", aws_service)
    aws_region = check_label_override("aws_region", aws_region)
    port = resolve_port(port)
    addr = resolve_addr(addr)
    if kind is not None:
        return _enable_botocore(conn, kind, registry, buckets, start_server, addr, port,
                                aws_service, aws_region)

    from .boto2 import BotoRequestHook, connection_region, connection_service
    from .metrics import metrics_for
    from .recorder import Recorder

    existing = getattr(conn, "request_hook", None)
    if isinstance(existing, BotoRequestHook):
        return existing
    recorder = Recorder(metrics_for(registry, buckets))
    hook = BotoRequestHook(
        aws_service=aws_service or connection_service(conn),
        aws_region=aws_region or connection_region(conn),
        previous=existing,
        recorder=recorder,
    )
    if start_server:
        from .server import ensure_server

        hook.server = ensure_server(addr, port, hook.registry)
    conn.set_request_hook(hook)
    return hook


def disable_metrics(conn: Any = None) -> bool:
    """Stop recording a connection's requests and give it back the hook it had before.

    A client or session stops being recorded (a session's clients too); with no argument,
    what ``enable_metrics()`` with no argument installed is undone.

    Args:
        conn: a connection, client or session passed to :func:`enable_metrics`, or None.

    Returns:
        True when metrics were on and are now off, False when they were not on.
    """
    if conn is None:
        from ._global import disable_global

        return disable_global()
    if _botocore_kind(conn) is not None:
        from .botocore import uninstrument

        return uninstrument(conn)
    from .boto2 import BotoRequestHook

    hook = getattr(conn, "request_hook", None)
    if not isinstance(hook, BotoRequestHook):
        return False
    conn.set_request_hook(hook.previous)
    return True


__all__ = ["ConfigurationError", "disable_metrics", "enable_metrics"]
