"""The Grafana dashboard as data: its panels and queries, Grafana's variable substitution, and
the rules of Grafana's dashboard-linter as plain functions.

Each rule takes the parsed dashboard and returns its problems, one sentence each, naming the
panel or variable; an empty list means the dashboard passes it. The rules follow
grafana/dashboard-linter (template-datasource, template-job/instance, panel-datasource,
panel-title-description, panel-units, target-rate-interval, target-counter-agg,
target-job-instance), stricter where this repository wants more: every panel needs a unit,
``_bucket``/``_count``/``_sum`` count as counters, the AWS label variables are chained.

The linter parses PromQL with Prometheus's parser; here promql-parser does (tests/promql.py),
and the rules read its tree: which selectors and ranges sit directly inside which function
call, with which matchers. promtool (tests/test_dashboard.py) and Prometheus (the end-to-end
test) check the syntax again, with Prometheus's own parser.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

from tests import promql

DASHBOARD = Path(__file__).resolve().parent.parent / "grafana" / "dashboards" / "boto.json"

DATASOURCE_UIDS = ("$datasource", "${datasource}")
RATE_INTERVALS = ("$__rate_interval",)  # promql.parse gives ${__rate_interval} back so too
RATE_FUNCTIONS = ("rate", "irate", "increase")
COUNTER_SUFFIXES = ("_total", "_bucket", "_count", "_sum")
# Variables Grafana itself defines for queries.
GLOBAL_VARIABLES = ("__rate_interval", "__interval", "__interval_ms", "__range", "__range_s",
                    "__range_ms")
# The query variables, in the order each one filters the next.
CHAINED_VARIABLES = ("job", "instance", "aws_service", "aws_region", "action")
# Grafana unit ids this dashboard may use; add one here when a panel needs it (Grafana's full
# list is in its valueFormats/categories.ts).
KNOWN_UNITS = frozenset({
    "none", "short", "percent", "percentunit", "s", "ms", "µs", "ns", "reqps", "ops", "rps",
    "cps", "wps", "bytes", "decbytes", "Bps", "binBps", "bool", "dtdurations",
})
GRID_WIDTH = 24

Dashboard = Dict[str, Any]
Rule = Callable[[Dashboard], List[str]]


def load(path: Path = DASHBOARD) -> Dashboard:
    """The dashboard JSON as a dict."""
    return json.loads(path.read_text(encoding="utf-8"))


def panels(dashboard: Dashboard) -> List[Dict[str, Any]]:
    """Every panel that shows data, rows' collapsed panels included, rows themselves not."""
    found: List[Dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def targets(dashboard: Dashboard) -> Iterator[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """(panel, target) for every query of every panel."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel, target


def variables(dashboard: Dashboard) -> List[Dict[str, Any]]:
    """The template variables."""
    return dashboard.get("templating", {}).get("list", [])


def _name(panel: Mapping[str, Any]) -> str:
    return f"panel {panel.get('id')!r} ({panel.get('title') or 'untitled'})"


# --- Grafana's variable substitution --------------------------------------------------------

_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")


def referenced_variables(text: str) -> List[str]:
    """Names of the variables a query refers to, in order of appearance."""
    return [next(g for g in m.groups() if g) for m in _VARIABLE.finditer(text)]


def substitute(text: str, values: Mapping[str, str]) -> str:
    """text with every ``$name``, ``${name}``, ``${name:format}`` and ``[[name]]`` replaced, as
    Grafana does before sending a query; a variable missing from values raises KeyError."""
    return _VARIABLE.sub(lambda m: values[next(g for g in m.groups() if g)], text)


def all_values(dashboard: Dashboard) -> Dict[str, str]:
    """What each query variable stands for with "All" selected: its allValue (``.+``)."""
    return {v["name"]: v.get("allValue") or ".*" for v in variables(dashboard)
            if v.get("type") == "query"}


_LABEL_VALUES = re.compile(r"^\s*label_values\((?:(?P<selector>.*),\s*)?(?P<label>\w+)\s*\)\s*$",
                           re.S)


def variable_query(variable: Mapping[str, Any]) -> str:
    """A query variable's query text (Grafana stores it as a string or as an object)."""
    query = variable.get("query")
    if isinstance(query, dict):
        query = query.get("query")
    return query or variable.get("definition") or ""


def label_values(variable: Mapping[str, Any]) -> Optional[Tuple[str, str]]:
    """(series selector, label) of a ``label_values(selector, label)`` variable, else None."""
    match = _LABEL_VALUES.match(variable_query(variable))
    if match is None:
        return None
    return (match.group("selector") or "").strip(), match.group("label")


# --- PromQL, parsed ------------------------------------------------------------------------

def _exprs(dashboard: Dashboard) -> Iterator[Tuple[str, Dict[str, Any], str]]:
    """(where, target, expr) for every target with a PromQL expression."""
    for panel, target in targets(dashboard):
        expr = target.get("expr")
        if isinstance(expr, str) and expr.strip():
            yield f"{_name(panel)} query {target.get('refId')}", target, expr


def _parsed(dashboard: Dashboard) -> Iterator[Tuple[str, promql.Parsed]]:
    for where, _, expr in _exprs(dashboard):
        try:
            yield where, promql.parse(expr)
        except ValueError:
            continue  # rule_promql_parses reports it


# --- The rules ------------------------------------------------------------------------------

def rule_datasource_variable(dashboard: Dashboard) -> List[str]:
    """A datasource variable named ``datasource``, labelled "Data source", for Prometheus."""
    found = [v for v in variables(dashboard) if v.get("type") == "datasource"]
    if not found:
        return ["the dashboard has no datasource variable"]
    problems = []
    for v in found:
        if v.get("name") != "datasource":
            problems.append(f"datasource variable {v.get('name')!r} should be named 'datasource'")
        if v.get("query") != "prometheus":
            problems.append(f"datasource variable {v.get('name')!r} should list prometheus "
                            f"datasources, not {v.get('query')!r}")
        if v.get("label") != "Data source":
            problems.append(f"datasource variable {v.get('name')!r} should be labelled "
                            "'Data source'")
    return problems


def rule_panel_datasource(dashboard: Dashboard) -> List[str]:
    """Every panel and every query uses the datasource variable."""
    problems = []
    for panel in panels(dashboard):
        uid = (panel.get("datasource") or {}).get("uid")
        if uid not in DATASOURCE_UIDS:
            problems.append(f"{_name(panel)} uses datasource {uid!r}, not ${{datasource}}")
        for target in panel.get("targets", []):
            uid = (target.get("datasource") or {}).get("uid", "${datasource}")
            if uid not in DATASOURCE_UIDS:
                problems.append(f"{_name(panel)} query {target.get('refId')} uses datasource "
                                f"{uid!r}, not ${{datasource}}")
    return problems


def rule_query_variables(dashboard: Dashboard) -> List[str]:
    """job and instance variables exist; every query variable uses the datasource variable,
    is a multi-select with "All" as ``.+``, reloads on time range change, and filters by the
    variables before it in the chain job, instance, aws_service, aws_region, action."""
    by_name = {v.get("name"): v for v in variables(dashboard)}
    problems = [f"the dashboard has no {name} variable" for name in ("job", "instance")
                if name not in by_name]
    for v in variables(dashboard):
        if v.get("type") != "query":
            continue
        name = v.get("name")
        uid = (v.get("datasource") or {}).get("uid")
        if uid not in DATASOURCE_UIDS:
            problems.append(f"variable {name} uses datasource {uid!r}, not ${{datasource}}")
        if not v.get("multi"):
            problems.append(f"variable {name} should be a multi-select")
        if not v.get("includeAll") or v.get("allValue") != ".+":
            problems.append(f"variable {name} should offer All, with allValue '.+'")
        if v.get("refresh") != 2:
            problems.append(f"variable {name} should refresh on time range change (refresh 2)")
        parsed = label_values(v)
        if parsed is None or parsed[1] != name:
            problems.append(f"variable {name} should be label_values(<selector>, {name})")
            continue
        if name in CHAINED_VARIABLES:
            try:
                selectors = promql.parse(parsed[0]).selectors if parsed[0] else []
            except ValueError as error:
                problems.append(f"variable {name}: its selector is not PromQL: {error}")
                continue
            for before in CHAINED_VARIABLES[:CHAINED_VARIABLES.index(name)]:
                wanted = (f"${before}", f"${{{before}}}")
                if before in by_name and not all(s.matches(before, "=~", wanted)
                                                 for s in selectors):
                    problems.append(f"variable {name} should filter by {before}=~\"${before}\"")
    return problems


def rule_panel_title_description_unit(dashboard: Dashboard) -> List[str]:
    """Every panel has a title, a description and a known unit."""
    problems = []
    for panel in panels(dashboard):
        for key in ("title", "description"):
            if not str(panel.get(key) or "").strip():
                problems.append(f"{_name(panel)} has no {key}")
        unit = ((panel.get("fieldConfig") or {}).get("defaults") or {}).get("unit")
        if not unit:
            problems.append(f"{_name(panel)} has no unit (fieldConfig.defaults.unit)")
        elif unit not in KNOWN_UNITS:
            problems.append(f"{_name(panel)} has unit {unit!r}, not one of KNOWN_UNITS")
    return problems


def rule_unique_panel_ids(dashboard: Dashboard) -> List[str]:
    """Panel ids are integers, unique in the dashboard."""
    problems, seen = [], set()
    everything = []
    for panel in dashboard.get("panels", []):
        everything.append(panel)
        everything.extend(panel.get("panels", []) if panel.get("type") == "row" else [])
    for panel in everything:
        pid = panel.get("id")
        if not isinstance(pid, int):
            problems.append(f"{_name(panel)} has no integer id")
        elif pid in seen:
            problems.append(f"{_name(panel)} repeats panel id {pid}")
        seen.add(pid)
    return problems


def rule_grid_pos(dashboard: Dashboard) -> List[str]:
    """Every panel has a gridPos inside the 24-column grid, and no two panels overlap."""
    problems = []
    boxes: List[Tuple[str, int, int, int, int]] = []
    for panel in dashboard.get("panels", []):
        pos = panel.get("gridPos")
        if not isinstance(pos, dict) or not all(isinstance(pos.get(k), int) for k in "hwxy"):
            problems.append(f"{_name(panel)} has no gridPos with integer h, w, x and y")
            continue
        h, w, x, y = pos["h"], pos["w"], pos["x"], pos["y"]
        if h <= 0 or w <= 0 or x < 0 or y < 0 or x + w > GRID_WIDTH:
            problems.append(f"{_name(panel)} gridPos {pos} is outside the {GRID_WIDTH}-column grid")
            continue
        for other, ox, oy, ow, oh in boxes:
            if x < ox + ow and ox < x + w and y < oy + oh and oy < y + h:
                problems.append(f"{_name(panel)} overlaps {other}")
        boxes.append((_name(panel), x, y, w, h))
    return problems


def rule_panel_targets(dashboard: Dashboard) -> List[str]:
    """Every panel has at least one query, each with an expression and its own refId."""
    problems = []
    for panel in panels(dashboard):
        queries = panel.get("targets") or []
        if not queries:
            problems.append(f"{_name(panel)} has no queries")
        refs = [t.get("refId") for t in queries]
        if len(set(refs)) != len(refs) or not all(refs):
            problems.append(f"{_name(panel)} has missing or repeated refIds {refs}")
        for target in queries:
            if not str(target.get("expr") or "").strip():
                problems.append(f"{_name(panel)} query {target.get('refId')} has no expr")
    return problems


def rule_rate_interval(dashboard: Dashboard) -> List[str]:
    """Every rate, irate and increase takes its range as ``$__rate_interval``."""
    problems = []
    for where, found in _parsed(dashboard):
        for text, call in found.ranges:
            if call in RATE_FUNCTIONS and text not in RATE_INTERVALS:
                problems.append(f"{where}: {call}() over [{text}], not [$__rate_interval]")
    return problems


def rule_counters_in_rate(dashboard: Dashboard) -> List[str]:
    """Counters (``*_total``, and histograms' ``*_bucket``, ``*_count``, ``*_sum``) appear only
    as the ranged argument of rate, irate or increase."""
    problems = []
    for where, found in _parsed(dashboard):
        for sel in found.selectors:
            if sel.metric and sel.metric.endswith(COUNTER_SUFFIXES):
                if sel.range is None or sel.call not in RATE_FUNCTIONS:
                    problems.append(f"{where}: counter {sel.metric} is not inside rate() or "
                                    "increase()")
    return problems


def rule_target_matchers(dashboard: Dashboard) -> List[str]:
    """Every selector filters by ``job=~"$job"`` and ``instance=~"$instance"``."""
    problems = []
    for where, found in _parsed(dashboard):
        for sel in found.selectors:
            for label in ("job", "instance"):
                if not sel.matches(label, "=~", (f"${label}", f"${{{label}}}")):
                    problems.append(f"{where}: {sel.metric or 'selector'} does not filter by "
                                    f"{label}=~\"${label}\"")
    return problems


def rule_known_variables(dashboard: Dashboard) -> List[str]:
    """Queries refer only to the dashboard's variables and Grafana's own."""
    known = {v.get("name") for v in variables(dashboard)} | set(GLOBAL_VARIABLES)
    problems = []
    for where, _, expr in _exprs(dashboard):
        for name in referenced_variables(expr):
            if name not in known:
                problems.append(f"{where}: unknown variable ${name}")
            elif name == "datasource":
                problems.append(f"{where}: $datasource belongs in the datasource, not the query")
    for v in variables(dashboard):
        if v.get("type") == "query":
            for name in referenced_variables(variable_query(v)):
                if name not in known:
                    problems.append(f"variable {v.get('name')}: unknown variable ${name}")
    return problems


def rule_promql_parses(dashboard: Dashboard) -> List[str]:
    """Every query is PromQL, Grafana's range variables standing where a range goes."""
    problems = []
    for where, _, expr in _exprs(dashboard):
        try:
            promql.parse(expr)
        except ValueError as error:
            problems.append(f"{where} is not PromQL: {error}")
    return problems


RULES: Dict[str, Rule] = {
    "promql_parses": rule_promql_parses,
    "datasource_variable": rule_datasource_variable,
    "panel_datasource": rule_panel_datasource,
    "query_variables": rule_query_variables,
    "panel_title_description_unit": rule_panel_title_description_unit,
    "unique_panel_ids": rule_unique_panel_ids,
    "grid_pos": rule_grid_pos,
    "panel_targets": rule_panel_targets,
    "rate_interval": rule_rate_interval,
    "counters_in_rate": rule_counters_in_rate,
    "target_matchers": rule_target_matchers,
    "known_variables": rule_known_variables,
}


def lint(dashboard: Dashboard) -> Dict[str, List[str]]:
    """Every rule's problems, by rule name; rules without problems are left out."""
    return {name: problems for name, rule in RULES.items() if (problems := rule(dashboard))}
