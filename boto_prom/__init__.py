"""boto-prom: Prometheus metrics for the AWS calls a Python program makes.

Quick start::

    import boto_prom
    boto_prom.enable_metrics(conn)      # a boto 2 connection
    boto_prom.enable_metrics(client)    # a boto3/botocore client (or session, or nothing)
    # curl http://127.0.0.1:9875/metrics
"""

from typing import Any

from ._version import __version__
from .csvlog import get_csv_writer
from .enable import disable_metrics, enable_metrics
from .exposition import (DEFAULT_PORT, get_server, make_app, make_multiprocess_app,
                         multiprocess_registry, start_multiprocess_server, stop_server)
from .metrics import DEFAULT_DURATION_BUCKETS, DEFAULT_MAX_LABEL_SETS, DEFAULT_SIZE_BUCKETS
from .push import push_metrics
from .settings import ConfigurationError
from .webconfig import load_web_config

__all__ = [
    "BotoRequestHook",
    "ConfigurationError",
    "DEFAULT_DURATION_BUCKETS",
    "DEFAULT_MAX_LABEL_SETS",
    "DEFAULT_PORT",
    "DEFAULT_SIZE_BUCKETS",
    "__version__",
    "disable_metrics",
    "enable_metrics",
    "get_csv_writer",
    "get_server",
    "load_web_config",
    "make_app",
    "make_multiprocess_app",
    "multiprocess_registry",
    "push_metrics",
    "start_multiprocess_server",
    "stop_server",
]


def __getattr__(name: str) -> Any:
    # The hook class lives with the boto 2 adapter, which imports boto: load it only on use.
    if name == "BotoRequestHook":
        from .boto2 import BotoRequestHook

        return BotoRequestHook
    raise AttributeError(f"module 'boto_prom' has no attribute {name!r}")
