"""Multiprocess mode: many processes (gunicorn or celery workers) record, one place serves.

prometheus_client switches to it when ``PROMETHEUS_MULTIPROC_DIR`` names a directory *before
prometheus_client is imported*: every metric then writes its values to memory-mapped files in
that directory, one set per process. A scrape reads them all and sums them, so the served view is
every process's calls, live and dead, while the directory lives. boto-prom only checks the set-up
at enable time and serves that view; the recording itself is prometheus_client's.

A gunicorn set-up (``gunicorn.conf.py``)::

    from prometheus_client import multiprocess
    import boto_prom

    def when_ready(server):          # in the master: one server for all workers
        boto_prom.start_multiprocess_server(port=9875)

    def child_exit(server, worker):  # drop a dead worker's live gauges
        multiprocess.mark_process_dead(worker.pid)

and in the application, ``boto_prom.enable_metrics(conn, start_server=False)``.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Optional

from prometheus_client import REGISTRY, CollectorRegistry

from ._errors import ConfigurationError

ENV = "PROMETHEUS_MULTIPROC_DIR"


def in_multiprocess_mode() -> bool:
    """True when prometheus_client records into a multiprocess directory in this process.

    prometheus_client picks its value storage once, when it is imported; this reads that choice
    rather than the environment, which may have changed since.
    """
    from prometheus_client import values

    mutex = getattr(values, "MutexValue", None)
    return mutex is not None and getattr(values, "ValueClass", mutex) is not mutex


def check_multiprocess() -> Optional[str]:
    """The multiprocess directory when this process records into one, else None.

    Raises:
        ConfigurationError: the environment and prometheus_client disagree (the variable was
            set after prometheus_client was imported, or unset since), or the directory is
            not a writable directory.
    """
    path = os.environ.get(ENV) or None
    active = in_multiprocess_mode()
    if path is not None and not active:
        raise ConfigurationError(
            f"{ENV} was set after prometheus_client was imported, so this process records "
            "in memory only; set it in the environment before the program starts (for "
            "gunicorn, in the shell or systemd unit that starts it)."
        )
    if path is None and active:
        raise ConfigurationError(
            f"prometheus_client runs in multiprocess mode but {ENV} is no longer set; "
            "leave it set for the life of the process."
        )
    if path is not None and not (os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)):
        raise ConfigurationError(
            f"{ENV}={path!r} is not a writable directory; create it (empty) before the "
            "program starts."
        )
    return path


def multiprocess_registry(path: Optional[str] = None) -> CollectorRegistry:
    """A fresh registry holding every process's metrics, read from the directory.

    Args:
        path: the multiprocess directory (default: ``PROMETHEUS_MULTIPROC_DIR``).
    """
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    try:
        MultiProcessCollector(registry, path=path)
    except ValueError:
        raise ConfigurationError(
            f"the multiprocess directory {path or os.environ.get(ENV)!r} is not a directory; "
            f"pass path= or set {ENV} to the directory the workers record into."
        ) from None
    return registry


def make_multiprocess_app(path: Optional[str] = None) -> Callable[[dict, Callable],
                                                                  Iterable[bytes]]:
    """The WSGI app serving every process's metrics, for mounting in a master or sidecar.

    Each request reads the directory afresh into a registry of its own (so the serving
    process's own metrics are never counted twice); ``/``, ``/metrics`` and ``/healthz`` as
    in :func:`boto_prom.make_app`.

    Args:
        path: the multiprocess directory (default: ``PROMETHEUS_MULTIPROC_DIR``), checked now.

    Example:
        >>> app = boto_prom.make_multiprocess_app()  # doctest: +SKIP
    """
    from .server import make_app

    multiprocess_registry(path)  # fail now, not on the first scrape

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        return make_app(multiprocess_registry(path))(environ, start_response)

    return app


def start_multiprocess_server(
    port: Optional[int] = None,
    addr: Optional[str] = None,
    *,
    path: Optional[str] = None,
    web_config: Optional[str] = None,
) -> Any:
    """Serve every process's metrics from this process (gunicorn's master, a sidecar).

    Args:
        port: as for :func:`boto_prom.enable_metrics` (``BOTO_PROM_PORT`` or 9875).
        addr: as for :func:`boto_prom.enable_metrics` (``BOTO_PROM_ADDR`` or 127.0.0.1).
        path: the multiprocess directory (default: ``PROMETHEUS_MULTIPROC_DIR``).
        web_config: a web configuration file for TLS and basic auth (default:
            ``BOTO_PROM_WEB_CONFIG``), as for :func:`boto_prom.enable_metrics`.

    Returns:
        The running :class:`boto_prom.server.MetricsServer`.
    """
    from ._serve import serve
    from .config import resolve_addr, resolve_port
    from .webconfig import resolve_web_config

    path = path or os.environ.get(ENV)
    if not path:
        raise ConfigurationError(
            f"start_multiprocess_server() needs the directory the workers record into; set "
            f"{ENV} (or pass path=)."
        )
    return serve(resolve_addr(addr), resolve_port(port), REGISTRY,
                 web_config=resolve_web_config(web_config), multiprocess_path=path)


__all__ = ["check_multiprocess", "in_multiprocess_mode", "make_multiprocess_app",
           "multiprocess_registry", "start_multiprocess_server"]
