"""Derive boto 2's S3 naming table (``_s3_operations.py``) from botocore's S3 model.

boto 2 sends no operation name to S3: the method, the path, the sub-resources in the query and
a few headers tell which operation a request is. botocore's model says, for each operation,
exactly that (``http.method``, ``http.requestUri``, and which query and header members are
required), so the table is derived from it rather than written by hand, and shipped as a
generated module so the boto 2 path never needs botocore. Regenerate it after a botocore
upgrade with::

    python -m boto_prom._s3_model

``tests/test_naming.py`` fails when the installed botocore's model and the shipped table
disagree. botocore is imported only by :func:`load_model`.
"""

from __future__ import annotations

import os
import sys
import textwrap
from typing import Any, Dict, List, Tuple

# One row per operation: (name, method, path, query tokens it requires, distinguishing query
# tokens it accepts without requiring them, headers it requires). A query token is a
# sub-resource or query key (``acl``, ``uploadId``) or, where the model fixes its value, the
# whole ``key=value`` (``list-type=2``).
Row = Tuple[str, str, str, Tuple[str, ...], Tuple[str, ...], Tuple[str, ...]]

# The request paths a row may have: the root, a bucket, an object, or a fixed path.
_TEMPLATES = ("/", "/{Bucket}", "/{Bucket}/{Key+}")

# Operations that send the same request as another where neither is deprecated: the one named,
# and why. A tie this table does not settle stops the generator, so a new one gets a decision.
_PREFERRED = {
    "ListBuckets": "ListDirectoryBuckets lists S3 Express directory buckets, which boto 2 "
                   "cannot reach; ListBuckets is the general-purpose call",
}

_MODULE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_s3_operations.py")


def load_model() -> Tuple[Any, str]:
    """(botocore's S3 service model, botocore's version), from the installed botocore."""
    import botocore
    import botocore.session

    return botocore.session.get_session().get_service_model("s3"), botocore.__version__


def _wire_names(shape: Any, location: str) -> Tuple[List[str], List[str]]:
    """(required, optional) wire names of shape's members serialized at location."""
    required: List[str] = []
    optional: List[str] = []
    if shape is None:
        return required, optional
    needed = set(shape.required_members)
    for member, member_shape in shape.members.items():
        if member_shape.serialization.get("location") == location:
            name = member_shape.serialization.get("name", member)
            (required if member in needed else optional).append(name)
    return required, optional


def derive(model: Any) -> Tuple[Tuple[Row, ...], Dict[str, str]]:
    """(rows, shared) for an S3 service model: every operation's request as sent on the wire,
    and, for operations whose requests cannot be told apart, which name a request gets.

    Args:
        model: botocore's S3 ``ServiceModel``.

    Raises:
        ValueError: the model has a request path boto 2 naming cannot read, or two current
            operations send the same request and ``_PREFERRED`` does not settle which.
    """
    facts = {}
    for name in sorted(model.operation_names):
        operation = model.operation_model(name)
        method = operation.http["method"].upper()
        path, _, literal = operation.http["requestUri"].partition("?")
        if path not in _TEMPLATES and "{" in path:
            raise ValueError(f"S3 operation {name} has a request path ({path}) that the boto 2 "
                             f"naming cannot read; extend boto_prom.naming first")
        required_query, optional_query = _wire_names(operation.input_shape, "querystring")
        required_headers, _ = _wire_names(operation.input_shape, "header")
        tokens = [token for token in literal.split("&") if token] + required_query
        facts[name] = (method, path, tuple(sorted(set(tokens))), tuple(optional_query),
                       tuple(sorted(h.lower() for h in required_headers)),
                       operation.deprecated)
    # A query key tells operations apart when some operation requires it; any other key
    # (prefix, versionId, max-keys...) is an option and never changes the name.
    distinguishing = {token for fact in facts.values() for token in fact[2]}
    rows = tuple(
        (name, method, path, tokens, tuple(sorted(set(optional) & distinguishing - set(tokens))),
         headers)
        for name, (method, path, tokens, optional, headers, _) in facts.items())
    return rows, _shared(facts)


def _shared(facts: Dict[str, Tuple[Any, ...]]) -> Dict[str, str]:
    """{operation: the operation a request of it is named after}, for requests two operations
    share: the one not deprecated, else the one ``_PREFERRED`` names."""
    groups: Dict[Tuple[Any, ...], List[str]] = {}
    for name, (method, path, tokens, _, headers, _) in facts.items():
        groups.setdefault((method, path, tokens, headers), []).append(name)
    shared = {}
    for names in groups.values():
        if len(names) == 1:
            continue
        current = [name for name in names if not facts[name][5]]
        if len(current) > 1:
            current = [name for name in current if name in _PREFERRED]
        if len(current) != 1:
            raise ValueError(f"S3 operations {', '.join(names)} send the same request; "
                             f"say in boto_prom._s3_model._PREFERRED which one to name")
        for name in names:
            if name != current[0]:
                shared[name] = current[0]
    return dict(sorted(shared.items()))


def _reason(name: str, winner: str, model: Any) -> str:
    if model.operation_model(name).deprecated:
        return f"{name} is deprecated"
    return _PREFERRED[winner]


def _literal(value: Any) -> str:
    """value (a str or a tuple of them) as Python source, in double quotes."""
    if isinstance(value, tuple):
        inner = ", ".join(_literal(item) for item in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _row_lines(row: Row) -> List[str]:
    line = f"    {_literal(row)},"
    if len(line) <= 99:
        return [line]
    head = ", ".join(_literal(item) for item in row[:3])
    tail = ", ".join(_literal(item) for item in row[3:])
    return [f"    ({head},", f"     {tail}),"]


def render(rows: Tuple[Row, ...], shared: Dict[str, str], model: Any, version: str) -> str:
    """The source text of ``_s3_operations.py``."""
    lines = [
        f"# Generated by `python -m boto_prom._s3_model` from botocore {version}'s S3 model.",
        "# Do not edit by hand: regenerate it (tests/test_naming.py says when it is stale).",
        '"""S3 operations as boto 2 sends them, derived from botocore\'s S3 model (generated)."""',
        "",
        f'BOTOCORE_VERSION = "{version}"',
        "",
        "# (name, method, path, query tokens it requires, distinguishing query tokens it also",
        "# accepts, headers it requires). A token is a query key or, where the model fixes the",
        "# value, key=value.",
        "OPERATIONS = (",
    ]
    for row in rows:
        lines += _row_lines(row)
    lines += [
        ")",
        "",
        "# Operations whose requests are identical on the wire: a request is named after the",
        "# current operation.",
        "SHARED = {",
    ]
    for name, winner in shared.items():
        lines += textwrap.wrap(f"{_reason(name, winner, model)}.", 95,
                               initial_indent="    # ", subsequent_indent="    # ")
        lines.append(f"    {_literal(name)}: {_literal(winner)},")
    lines += ["}", ""]
    return "\n".join(lines)


def main() -> int:
    """Write ``_s3_operations.py`` from the installed botocore's S3 model."""
    model, version = load_model()
    try:
        rows, shared = derive(model)
    except ValueError as problem:
        print(f"{_MODULE} not written: {problem}", file=sys.stderr)
        return 1
    with open(_MODULE, "w", encoding="utf-8") as out:
        out.write(render(rows, shared, model, version))
    print(f"wrote {_MODULE}: {len(rows)} operations, {len(shared)} shared requests, "
          f"botocore {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
