"""Settings from arguments and the environment; arguments win. Every check fails at enable
time with one sentence, so nothing bad reaches the per-request path."""

from __future__ import annotations

import os
from typing import Optional

from ._errors import ConfigurationError
from ._naming import safe_name

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def env_flag(name: str) -> bool:
    """A yes/no environment variable; anything else is a ConfigurationError."""
    raw = os.environ.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be one of 1/0, true/false, yes/no or on/off, not {raw!r}.")


def int_setting(value: Optional[int], name: str, env: str, minimum: int,
                maximum: Optional[int], expected: str) -> Optional[int]:
    """value, else the environment variable env, else None; checked to lie in
    [minimum, maximum], or a ConfigurationError saying "<name or env> must be <expected>"."""
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
        raise ConfigurationError(f"{source} must be {expected}, not {value!r}.")
    return value


def resolve_port(port: Optional[int]) -> Optional[int]:
    """port, else ``BOTO_PROM_PORT``, else None: the running server's port, or the default
    for the first one. 0 asks the system for a free port."""
    return int_setting(port, "port", "BOTO_PROM_PORT", 0, 65535, "a port number from 0 to 65535")


def resolve_addr(addr: Optional[str]) -> Optional[str]:
    """addr, else ``BOTO_PROM_ADDR``, else None: the running server's address, or loopback
    (``DEFAULT_ADDR``) for the first one."""
    source = "addr"
    if addr is None:
        addr = os.environ.get("BOTO_PROM_ADDR", "").strip() or None
        if addr is None:
            return None
        source = "BOTO_PROM_ADDR"
    if not isinstance(addr, str) or not addr or "\0" in addr or addr != addr.strip():
        raise ConfigurationError(
            f"{source} must be a host name or IP address (like 127.0.0.1 or 0.0.0.0), "
            f"not {addr!r}.")
    return addr


def check_label_override(name: str, value: Optional[str]) -> Optional[str]:
    """An ``aws_service=``/``aws_region=`` override, checked to be a short plain name."""
    if value is None:
        return None
    if safe_name(value) is None:
        raise ConfigurationError(
            f"{name} must be a short name of letters, digits, '-', '_' or '.' "
            f"(like 'ec2' or 'us-west-2'), not {value!r}."
        )
    return value


def resolve_csv_path(path: object) -> object:
    """csv_path, else ``BOTO_PROM_CSV``, else None (no CSV file); checked by the CSV writer."""
    if path is None:
        path = os.environ.get("BOTO_PROM_CSV", "").strip() or None
    return path
