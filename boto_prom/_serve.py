"""What the bundled server serves: one registry or the multiprocess directory, behind the web
configuration (TLS, basic auth, headers) when there is one."""

from __future__ import annotations

from typing import Optional

from prometheus_client import CollectorRegistry

from ._errors import ConfigurationError
from .server import MetricsServer, ensure_server, get_server, make_app


def serve(addr: Optional[str], port: Optional[int], registry: CollectorRegistry, *,
          web_config: Optional[str] = None,
          multiprocess_path: Optional[str] = None) -> MetricsServer:
    """The process's server for these settings: started now, or the running one reused.

    addr and port may be None: the running server's, else the defaults (DEFAULT_ADDR and
    DEFAULT_PORT).

    Raises:
        ConfigurationError: as :func:`boto_prom.server.ensure_server`, or a bad web config.
    """
    variant = None if web_config is None and multiprocess_path is None else (
        web_config, multiprocess_path)
    running = get_server()
    if running is not None and running.variant == variant:
        # Reuse without reading the web config again; ensure_server still checks the rest.
        return ensure_server(addr, port, registry, variant=variant)
    if multiprocess_path is not None:
        from .multiprocess import make_multiprocess_app

        app = make_multiprocess_app(multiprocess_path)
    else:
        app = make_app(registry)
    ssl_context = None
    if web_config is not None:
        from .webconfig import load_web_config

        config = load_web_config(web_config)
        app, ssl_context = config.wrap(app), config.ssl_context
    try:
        return ensure_server(addr, port, registry, app=app, ssl_context=ssl_context,
                             variant=variant)
    except ConfigurationError as exc:
        if multiprocess_path is None or running is not None:
            raise
        raise ConfigurationError(
            f"{str(exc).rstrip('.')}; in multiprocess mode one process serves every "
            "process's metrics, so start it once (boto_prom.start_multiprocess_server() in "
            "gunicorn's when_ready) and pass start_server=False to enable_metrics in workers."
        ) from None
