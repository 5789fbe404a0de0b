"""PromQL as a syntax tree, for the lint rules of the dashboard and of the Prometheus rules.

promql-parser (PyPI; Rust, compatible with Prometheus 2.45's PromQL) parses an expression; this
module reads off what the rules judge: every selector, with its matchers, its range, and the
function or aggregation it is directly the argument of. Grafana's range variables
(``$__rate_interval``...) are not PromQL: they are parsed as stand-in durations no query uses,
and given back by name.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Dict, List, Optional, Tuple

import promql_parser

# Grafana variables that stand for a range, each parsed as a duration no query would write.
_STAND_INS: Dict[str, str] = {"__rate_interval": "7919s", "__interval": "7907s",
                              "__range": "7901s"}
_BY_DURATION = {promql_parser.parse_duration(d): f"${name}" for name, d in _STAND_INS.items()}
_RANGE_VARIABLE = re.compile(r"\$\{(%s)\}|\$(%s)\b" % (("|".join(_STAND_INS),) * 2))


class Selector:
    """One vector selector: its metric name (None when it has none), its matchers as (label,
    operator, value), its range (``"5m"``, ``"$__rate_interval"``, or None) and the function
    or aggregation it is directly the argument of (None at the top or under an operator)."""

    def __init__(self, metric: Optional[str], matchers: List[Tuple[str, str, str]],
                 range_: Optional[str], call: Optional[str]) -> None:
        self.metric = metric
        self.matchers = matchers
        self.range = range_
        self.call = call

    def matches(self, label: str, op: str, values: Tuple[str, ...]) -> bool:
        """True when some matcher is ``label op value`` for one of values."""
        return any(m == (label, op, v) for m in self.matchers for v in values)

    def __repr__(self) -> str:
        return f"Selector({self.metric!r}, {self.matchers!r}, range={self.range!r}, " \
               f"call={self.call!r})"


class Parsed:
    """What the lint rules need to know of one PromQL expression."""

    def __init__(self, tree: promql_parser.Expr) -> None:
        self.tree = tree
        self.selectors: List[Selector] = []
        # (range, the function or aggregation the ranged expression is directly inside), for
        # range selectors and subqueries alike
        self.ranges: List[Tuple[str, Optional[str]]] = []


# MatchOp values compare equal but do not hash: a list of pairs, not a dict.
_OPS = [(promql_parser.MatchOp.Equal, "="), (promql_parser.MatchOp.NotEqual, "!="),
        (promql_parser.MatchOp.Re, "=~"), (promql_parser.MatchOp.NotRe, "!~")]


def _duration(delta: timedelta) -> str:
    return _BY_DURATION.get(delta) or promql_parser.display_duration(delta)


def parse(expr: str) -> Parsed:
    """The parsed expression, with Grafana's range variables allowed where a range goes.

    Raises:
        ValueError: the expression is not PromQL (promql-parser's message).
    """
    text = _RANGE_VARIABLE.sub(lambda m: _STAND_INS[m.group(1) or m.group(2)], expr)
    parsed = Parsed(promql_parser.parse(text))
    _visit(parsed.tree, None, parsed)
    return parsed


def _visit(node: promql_parser.Expr, call: Optional[str], out: Parsed) -> None:
    """Collect node's selectors and ranges; call is what node is the argument of.
    Parentheses are transparent; an operator's operands are inside no call."""
    P = promql_parser
    if isinstance(node, P.ParenExpr):
        _visit(node.expr, call, out)
    elif isinstance(node, P.UnaryExpr):
        _visit(node.expr, None, out)
    elif isinstance(node, P.BinaryExpr):
        _visit(node.lhs, None, out)
        _visit(node.rhs, None, out)
    elif isinstance(node, P.AggregateExpr):
        name = str(node.op)
        if node.param is not None:
            _visit(node.param, name, out)
        _visit(node.expr, name, out)
    elif isinstance(node, P.Call):
        for arg in node.args:
            _visit(arg, node.func.name, out)
    elif isinstance(node, P.SubqueryExpr):
        out.ranges.append((_duration(node.range), call))
        _visit(node.expr, None, out)
    elif isinstance(node, P.MatrixSelector):
        out.ranges.append((_duration(node.range), call))
        _selector(node.vector_selector, _duration(node.range), call, out)
    elif isinstance(node, P.VectorSelector):
        _selector(node, None, call, out)


def _selector(node: promql_parser.VectorSelector, range_: Optional[str], call: Optional[str],
              out: Parsed) -> None:
    matchers = [(m.name, next(text for op, text in _OPS if op == m.op), m.value)
                for m in node.matchers.matchers]
    metric = node.name or next((v for n, op, v in matchers if n == "__name__" and op == "="),
                               None)
    out.selectors.append(Selector(metric, [m for m in matchers if m[0] != "__name__"], range_,
                                  call))
