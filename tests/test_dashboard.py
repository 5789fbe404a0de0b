"""grafana/dashboards/boto.json: Grafana's dashboard-linter rules, the panels the issue asks
for, and valid PromQL in every query (checked by the real promtool)."""

from __future__ import annotations

import copy
import subprocess
from typing import Any, Callable, Dict, List, Tuple

import pytest
import yaml

from tests import grafana_dashboard as gd
from tests import promql
from tests.conftest import require_binary

PANEL_TYPES = {"timeseries", "heatmap", "table", "stat"}
# Series that exist only once something happens (a hook failure, a CSV sink, a boto3 client,
# a throttled call):
# queries on them need a fallback so their panels show 0 rather than "No data".
OPTIONAL_METRICS = (
    "boto_prom_hook_errors_total", "boto_prom_csv_rows_dropped_total",
    "boto_prom_csv_rows_written_total", "boto_attempt_duration_seconds",
    "boto_request_retries_total", "boto_retries_exhausted_total", "boto_requests_in_flight",
    "boto_throttled_attempts_total", "boto_throttled_requests_total",
)


@pytest.fixture(scope="module")
def dashboard() -> Dict[str, Any]:
    """The dashboard as committed."""
    return gd.load()


def test_dashboard_passes_every_lint_rule(dashboard):
    """The committed dashboard has no problem under any lint rule."""
    assert gd.lint(dashboard) == {}


# --- Every rule can fail ---------------------------------------------------------------------

def _panel(d: Dict[str, Any], title: str) -> Dict[str, Any]:
    return next(p for p in gd.panels(d) if p["title"] == title)


def _variable(d: Dict[str, Any], name: str) -> Dict[str, Any]:
    return next(v for v in gd.variables(d) if v["name"] == name)


def _set_expr(d: Dict[str, Any], title: str, old: str, new: str) -> None:
    target = _panel(d, title)["targets"][0]
    assert old in target["expr"], f"{old!r} not in {target['expr']!r}"
    target["expr"] = target["expr"].replace(old, new)


def _remove(d: Dict[str, Any], name: str) -> None:
    d["templating"]["list"] = [v for v in gd.variables(d) if v["name"] != name]


def _set_query(d: Dict[str, Any], name: str, old: str, new: str) -> None:
    v = _variable(d, name)
    v["definition"] = v["definition"].replace(old, new)
    v["query"]["query"] = v["query"]["query"].replace(old, new)


RATE = "Request rate by action"
BROKEN: List[Tuple[str, str, Callable[[Dict[str, Any]], None]]] = [
    ("datasource_variable", "no datasource variable", lambda d: _remove(d, "datasource")),
    ("datasource_variable", "datasource variable misnamed",
     lambda d: _variable(d, "datasource").update(name="ds")),
    ("datasource_variable", "datasource variable for another kind",
     lambda d: _variable(d, "datasource").update(query="loki")),
    ("panel_datasource", "panel with a fixed datasource",
     lambda d: _panel(d, RATE).update(datasource={"type": "prometheus", "uid": "abc"})),
    ("panel_datasource", "query with a fixed datasource",
     lambda d: _panel(d, RATE)["targets"][0].update(datasource={"uid": "abc"})),
    ("query_variables", "no job variable", lambda d: _remove(d, "job")),
    ("query_variables", "no instance variable", lambda d: _remove(d, "instance")),
    ("query_variables", "single-select variable",
     lambda d: _variable(d, "job").update(multi=False)),
    ("query_variables", "All is not .+", lambda d: _variable(d, "action").update(allValue=".*")),
    ("query_variables", "no refresh on time change",
     lambda d: _variable(d, "instance").update(refresh=1)),
    ("query_variables", "variable with a fixed datasource",
     lambda d: _variable(d, "aws_region").update(datasource={"uid": "abc"})),
    ("query_variables", "chain broken",
     lambda d: _set_query(d, "action", 'aws_service=~"$aws_service", ', "")),
    ("query_variables", "query for another label",
     lambda d: _set_query(d, "aws_region", ", aws_region)", ", aws_service)")),
    ("panel_title_description_unit", "no title", lambda d: _panel(d, RATE).update(title="")),
    ("panel_title_description_unit", "no description",
     lambda d: _panel(d, RATE).pop("description")),
    ("panel_title_description_unit", "no unit",
     lambda d: _panel(d, RATE)["fieldConfig"]["defaults"].pop("unit")),
    ("panel_title_description_unit", "a unit Grafana does not have",
     lambda d: _panel(d, RATE)["fieldConfig"]["defaults"].update(unit="requests")),
    ("unique_panel_ids", "repeated id", lambda d: d["panels"][1].update(id=d["panels"][0]["id"])),
    ("unique_panel_ids", "no id", lambda d: d["panels"][2].pop("id")),
    ("grid_pos", "no gridPos", lambda d: _panel(d, RATE).pop("gridPos")),
    ("grid_pos", "wider than the grid", lambda d: _panel(d, RATE)["gridPos"].update(x=20)),
    ("grid_pos", "overlapping panels",
     lambda d: d["panels"][1].update(gridPos=dict(d["panels"][0]["gridPos"]))),
    ("panel_targets", "no queries", lambda d: _panel(d, RATE).update(targets=[])),
    ("panel_targets", "repeated refId",
     lambda d: _panel(d, "Bytes sent / received")["targets"][1].update(refId="A")),
    ("panel_targets", "empty expr", lambda d: _panel(d, RATE)["targets"][0].update(expr=" ")),
    ("promql_parses", "syntax error",
     lambda d: _set_expr(d, RATE, "sum by (aws_service, action) (", "sum by (aws_service (")),
    ("promql_parses", "variable where a range goes",
     lambda d: _set_expr(d, RATE, "[$__rate_interval]", "[$window]")),
    ("rate_interval", "rate over a fixed range",
     lambda d: _set_expr(d, RATE, "[$__rate_interval]", "[5m]")),
    ("rate_interval", "increase over $__interval",
     lambda d: _set_expr(d, RATE, "rate(boto_requests_total", "increase(boto_requests_total")
     or _set_expr(d, RATE, "[$__rate_interval]", "[$__interval]")),
    ("counters_in_rate", "_total summed raw",
     lambda d: _set_expr(d, RATE, "[$__rate_interval]", "")
     or _set_expr(d, RATE, "rate(boto_requests_total", "(boto_requests_total")),
    ("counters_in_rate", "_bucket without rate",
     lambda d: _set_expr(d, "Latency heatmap", "rate(", "max_over_time(")),
    ("counters_in_rate", "_count and _sum divided raw",
     lambda d: _panel(d, RATE)["targets"][0].update(
         expr='boto_request_duration_seconds_sum{job=~"$job", instance=~"$instance"} / '
              'boto_request_duration_seconds_count{job=~"$job", instance=~"$instance"}')),
    ("counters_in_rate", "rate of a subquery of a counter",
     lambda d: _panel(d, RATE)["targets"][0].update(
         expr='rate(sum(boto_requests_total{job=~"$job", instance=~"$instance"})'
              '[$__rate_interval:])')),
    ("target_matchers", "no instance matcher",
     lambda d: _set_expr(d, RATE, 'instance=~"$instance", ', "")),
    ("target_matchers", "job matched exactly",
     lambda d: _set_expr(d, RATE, 'job=~"$job"', 'job="boto-prom"')),
    ("known_variables", "undefined variable",
     lambda d: _set_expr(d, RATE, '"$aws_service"', '"$service"')),
    ("known_variables", "datasource variable inside the query",
     lambda d: _set_expr(d, RATE, '"$aws_region"', '"$datasource"')),
]


@pytest.mark.parametrize("rule, case, breaks", BROKEN, ids=[f"{r}: {c}" for r, c, _ in BROKEN])
def test_each_rule_reports_a_broken_dashboard(dashboard, rule, case, breaks):
    """A copy of the dashboard broken in one way is reported by the rule that guards it."""
    assert gd.RULES[rule](dashboard) == []
    broken = copy.deepcopy(dashboard)
    breaks(broken)
    assert gd.RULES[rule](broken), f"{rule} did not report: {case}"


def test_every_rule_has_a_broken_case():
    """Each lint rule is shown failing by at least one broken dashboard above."""
    assert {rule for rule, _, _ in BROKEN} == set(gd.RULES)


# --- The parser behind the PromQL rules ----------------------------------------------------

@pytest.mark.parametrize("expr, expected", [
    ('sum by (le) (rate(a_bucket{job=~"$job"}[$__rate_interval]))',
     [("a_bucket", "$__rate_interval", "rate")]),
    ('rate(a_bucket{job=~"$job"}[${__rate_interval}])', [("a_bucket", "$__rate_interval", "rate")]),
    ("sum(rate(a_total[5m])) by (job)", [("a_total", "5m", "rate")]),
    ('rate(a_total{x="rate(b_total)"}[1m] offset 5m)', [("a_total", "1m", "rate")]),
    ("a_total / on (job) group_left (x) increase(b_total[1m])",
     [("a_total", None, None), ("b_total", "1m", "increase")]),
    ("rate(sum(a_total)[5m:1m])", [("a_total", None, "sum")]),
    ('{__name__="a_total", job="x"}', [("a_total", None, None)]),
    ("topk(10, histogram_quantile(0.99, sum without (x) (a_bucket)))", [("a_bucket", None, "sum")]),
    ("up == 0 and on (job) max_over_time(b_info[1h]) or vector(0)",
     [("up", None, None), ("b_info", "1h", "max_over_time")]),
])
def test_parse_finds_selectors_with_their_range_and_call(expr, expected):
    """promql.parse() reports each selector's metric, range and the call it sits directly in."""
    found = promql.parse(expr)
    assert [(s.metric, s.range, s.call) for s in found.selectors] == expected


def test_parse_reads_matchers_and_subquery_ranges():
    """Matchers come back as (label, operator, value); a subquery's range is a range too."""
    found = promql.parse('rate(sum(a_total{job=~"$job", x!="y"})[5m:1m])')
    (sel,) = found.selectors
    assert sel.matchers == [("job", "=~", "$job"), ("x", "!=", "y")]
    assert sel.matches("job", "=~", ("$job",)) and not sel.matches("job", "=", ("$job",))
    assert found.ranges == [("5m", "rate")]


@pytest.mark.parametrize("expr", ["rate(a_total[5m]", "sum(a))", "a{job='x'", "a[5m)", "a ; b",
                                  "rate(a_total[$job])"])
def test_parse_rejects_what_is_not_promql(expr):
    """promql.parse() raises ValueError on unbalanced brackets, foreign characters, and a
    variable where only Grafana's range variables may stand."""
    with pytest.raises(ValueError):
        promql.parse(expr)


# --- What the dashboard must be and show ----------------------------------------------------

def test_dashboard_is_importable_and_provisionable(dashboard):
    """Fixed uid, no id, schemaVersion 39, stable panel types, and no ${DS_...} import inputs."""
    assert dashboard["uid"] == "boto-prom"
    assert dashboard.get("id") is None
    assert dashboard["schemaVersion"] == 39
    assert dashboard["title"]
    assert "__inputs" not in dashboard
    assert "${DS_" not in gd.DASHBOARD.read_text(encoding="utf-8")
    assert {p["type"] for p in gd.panels(dashboard)} <= PANEL_TYPES


def _exprs(panel: Dict[str, Any]) -> str:
    return "\n".join(t["expr"] for t in panel["targets"])


REQUIRED_PANELS: Dict[str, Callable[[Dict[str, Any]], bool]] = {
    "request rate by action": lambda p: "sum by (aws_service, action) (rate(boto_requests_total"
    in _exprs(p) and p["fieldConfig"]["defaults"]["unit"] == "reqps",
    "error ratio": lambda p: "boto_request_errors_total" in _exprs(p) and "/" in _exprs(p)
    and p["fieldConfig"]["defaults"]["unit"] == "percentunit",
    "throttled rate": lambda p: "rate(boto_throttled_attempts_total" in _exprs(p),
    "p50/p90/p99 by action": lambda p: all(
        f"histogram_quantile({q}, sum by (le, aws_service, action) "
        "(rate(boto_request_duration_seconds_bucket" in _exprs(p) for q in ("0.5", "0.9", "0.99")),
    "latency heatmap": lambda p: p["type"] == "heatmap"
    and p["targets"][0].get("format") == "heatmap"
    and "boto_request_duration_seconds_bucket" in _exprs(p),
    "status codes over time": lambda p: "sum by (status_code)" in _exprs(p),
    "bytes sent/received": lambda p: "boto_request_size_bytes" in _exprs(p)
    and "boto_response_size_bytes" in _exprs(p),
    "slowest actions table": lambda p: p["type"] == "table" and "histogram_quantile" in _exprs(p),
    "exporter health": lambda p: "boto_prom_hook_errors_total" in _exprs(p)
    and "boto_prom_csv_rows_dropped_total" in _exprs(p),
    "scrape up": lambda p: "up{" in _exprs(p),
}


@pytest.mark.parametrize("name", REQUIRED_PANELS)
def test_dashboard_has_the_required_panel(dashboard, name):
    """Some panel shows each view the issue asks for."""
    assert any(REQUIRED_PANELS[name](p) for p in gd.panels(dashboard)), f"no panel for {name}"


def test_queries_on_optional_metrics_fall_back_to_zero(dashboard):
    """Queries on series that may not exist yet end in `or vector(0)`."""
    for panel, target in gd.targets(dashboard):
        if any(metric in target["expr"] for metric in OPTIONAL_METRICS):
            assert target["expr"].replace("\n", " ").rstrip().endswith("or vector(0)"), (
                f"{panel['title']} query {target['refId']}")


def test_no_query_names_a_job(dashboard):
    """The job variable lists the jobs that serve boto-prom's own build-info metric, whatever
    they are called (present from start-up, before any AWS call), and no variable or panel
    selects a job by name, so the dashboard works for any job."""
    job = next(v for v in gd.variables(dashboard) if v["name"] == "job")
    selector, label = gd.label_values(job)
    (sel,) = promql.parse(selector).selectors
    assert (sel.metric, sel.matchers, label) == ("boto_prom_build_info", [], "job")
    exprs = [target["expr"] for _, target in gd.targets(dashboard)]
    exprs += [gd.label_values(v)[0] for v in gd.variables(dashboard)
              if v["type"] == "query" and v["name"] != "job"]
    for sel in (s for expr in exprs for s in promql.parse(expr).selectors):
        jobs = [m for m in sel.matchers if m[0] == "job"]
        assert jobs == [("job", "=~", "$job")], (sel.metric, jobs)


def test_every_query_is_valid_promql(dashboard, tmp_path):
    """Every panel query and variable selector, with variables filled in, passes promtool."""
    values = {**gd.all_values(dashboard), "__rate_interval": "1m", "__interval": "15s",
              "__range": "1h", "__interval_ms": "15000", "__range_s": "3600",
              "__range_ms": "3600000"}
    rules = [{"record": f"dashboard:panel_{panel['id']}_{target['refId']}",
              "expr": gd.substitute(target["expr"], values)}
             for panel, target in gd.targets(dashboard)]
    for variable in gd.variables(dashboard):
        parsed = gd.label_values(variable) if variable["type"] == "query" else None
        if parsed and parsed[0]:
            rules.append({"record": f"dashboard:variable_{variable['name']}",
                          "expr": gd.substitute(parsed[0], values)})
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([require_binary("promtool"), "check", "rules", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_promtool_check_catches_a_syntax_error(tmp_path):
    """The promtool check above fails on a query with a syntax error, so it can catch one."""
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": "dashboard:broken", "expr": "sum by (le (rate(a_total[1m]))"}]}]}))
    result = subprocess.run([require_binary("promtool"), "check", "rules", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
