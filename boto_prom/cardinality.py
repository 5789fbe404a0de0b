"""Cardinality limits decided at enable time: which records are kept, and how many label sets.

Two knobs keep what boto-prom exports bounded and wanted:

- filters (``allowed_services=``, ``ignored_actions=``) drop records before any sink sees
  them, so a noisy service or a health-check action costs no series at all;
- a cap on label sets (``max_label_sets=``, or ``BOTO_PROM_MAX_LABEL_SETS``), enforced inside
  the Prometheus sink (:mod:`boto_prom.metrics`) for every SDK adapter: past it, new label sets
  are counted under ``action="_other"`` and in ``boto_prom_label_sets_folded_total``.
"""

from __future__ import annotations

from typing import Callable, FrozenSet, Iterable, Optional

from ._errors import ConfigurationError
from ._naming import safe_name
from .config import int_setting

RecordFilter = Callable[[str, str], bool]
"""Takes (aws_service, action); False means the call is not recorded at all."""


def _names(what: str, values: object) -> Optional[FrozenSet[str]]:
    if values is None:
        return None
    # A lone string is iterable too, and would silently become a set of letters.
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ConfigurationError(
            f"{what} must be a list of names like ['s3', 'ec2'], not {values!r}."
        )
    values = list(values)
    bad = sorted(repr(v) for v in values if type(v) is not str or safe_name(v) is None)
    if bad:
        raise ConfigurationError(
            f"{what} must hold short names of letters, digits, '-', '_' or '.', "
            f"not {', '.join(bad)}."
        )
    return frozenset(values)


def make_filter(
    allowed_services: Optional[Iterable[str]] = None,
    ignored_actions: Optional[Iterable[str]] = None,
) -> Optional[RecordFilter]:
    """The record filter for these settings, or None when nothing is filtered.

    Args:
        allowed_services: ``aws_service`` names to record (``["s3", "dynamodb"]``); records
            of other services are dropped. None records every service.
        ignored_actions: action names never to record (``["HeadObject"]``).

    Raises:
        ConfigurationError: a setting is not a list of plain names.
    """
    services = _names("allowed_services", allowed_services)
    ignored = _names("ignored_actions", ignored_actions)
    if services is None and not ignored:
        return None
    if services is None:
        assert ignored is not None
        return lambda service, action: action not in ignored
    if not ignored:
        return lambda service, action: service in services
    return lambda service, action: service in services and action not in ignored


def resolve_max_label_sets(value: Optional[int]) -> Optional[int]:
    """max_label_sets, else ``BOTO_PROM_MAX_LABEL_SETS``, else None (the registry's default)."""
    return int_setting(value, "max_label_sets", "BOTO_PROM_MAX_LABEL_SETS", 1, None,
                       "a whole number of 1 or more")
