"""prometheus/: prometheus.yml, the rule files (recording_rules.yml, alerts.yml,
opentelemetry_rules.yml) and their unit tests (*_test.yml), checked by the real promtool, and
every rule's PromQL parsed by promql-parser and linted on its tree."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any, Dict, List, Optional

import promql_parser
import pytest
import yaml

from tests import promql
from tests.conftest import require_binary

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = ROOT / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
RECORDING = PROMETHEUS_DIR / "recording_rules.yml"
OPENTELEMETRY = PROMETHEUS_DIR / "opentelemetry_rules.yml"
RULE_FILES = (RECORDING, ALERTS, OPENTELEMETRY)
TESTS = sorted(PROMETHEUS_DIR.glob("*_test.yml"))
README = ROOT / "README.md"

# The two strings a user sets when copying the rules (alerts.yml's header, README "Alert rules").
JOB_SELECTOR = 'job="boto-prom"'
RUNBOOK_BASE = "https://boto-prom.example/README.md"
# The shortest rate window: four scrapes at the slowest usual scrape interval, 60 s.
MIN_WINDOW = timedelta(minutes=4)
COUNTER_SUFFIXES = ("_total", "_bucket", "_count", "_sum")
RATE_FUNCTIONS = ("rate", "irate", "increase")


def promtool(*args: str) -> subprocess.CompletedProcess:
    """Run promtool with args; its output is kept for the assertion message."""
    return subprocess.run([require_binary("promtool"), *args], capture_output=True, text=True,
                          timeout=60)


def rules(path: Path) -> List[Dict[str, Any]]:
    """Every rule in a rules file, in order."""
    return [rule for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]]


def alert_rules(path: Path = ALERTS) -> List[Dict[str, Any]]:
    """Every alerting rule in a rules file, in order."""
    return [rule for rule in rules(path) if "alert" in rule]


def every_rule() -> List[Dict[str, Any]]:
    """The rules of every rule file, in order."""
    return [rule for path in RULE_FILES for rule in rules(path)]


def _name(rule: Dict[str, Any]) -> str:
    return rule.get("alert") or rule["record"]


def test_promtool_check_config_passes():
    """promtool check config accepts prometheus.yml and the rule files it names."""
    result = promtool("check", "config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(RULE_FILES)} rule files found" in result.stdout


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules_passes_with_every_lint_fatal(path):
    """promtool check rules --lint=all --lint-fatal accepts each rule file."""
    result = promtool("check", "rules", "--lint=all", "--lint-fatal", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_lint_can_fail(tmp_path):
    """The lint above fails on a rule file with a duplicate rule, so it can catch one."""
    doubled = yaml.safe_load(RECORDING.read_text())
    doubled["groups"][0]["rules"].append(doubled["groups"][0]["rules"][0])
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(doubled))
    result = promtool("check", "rules", "--lint=all", "--lint-fatal", str(tmp_path / "rules.yml"))
    assert result.returncode != 0


@pytest.mark.parametrize("path", TESTS, ids=lambda p: p.name)
def test_promtool_test_rules_passes(path):
    """Each unit test file (alerts, alerts without the recording rules, recording rules,
    OpenTelemetry copies) passes under promtool test rules."""
    result = promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_file_has_unit_tests():
    """Every rule file is loaded by some *_test.yml, and every recording rule is evaluated by
    a promql_expr_test of its own file's tests."""
    loaded = {f for t in TESTS for f in yaml.safe_load(t.read_text())["rule_files"]}
    assert loaded == {p.name for p in RULE_FILES}
    for path in (RECORDING, OPENTELEMETRY):
        tested = yaml.safe_load(path.with_name(path.stem + "_test.yml").read_text())["tests"]
        exprs = " ".join(case["expr"] for t in tested for case in t.get("promql_expr_test", []))
        for rule in rules(path):
            assert re.search(rf"\b{re.escape(rule['record'])}\b", exprs), rule["record"]


def test_config_loads_the_rules_and_scrapes_the_app():
    """prometheus.yml loads the recording rules, the alerts that read them and the
    OpenTelemetry copies, and has a boto-prom job scraping the compose app."""
    config = yaml.safe_load(CONFIG.read_text())
    assert config["rule_files"] == [p.name for p in RULE_FILES]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = [t for sc in jobs["boto-prom"]["static_configs"] for t in sc["targets"]]
    assert targets == ["app:9875"]


def test_every_alert_has_severity_summary_and_description():
    """Each alert carries a severity label and non-empty summary and description annotations."""
    rules = alert_rules()
    assert {r["alert"] for r in rules} >= {
        "BotoHighErrorRatio", "BotoThrottled", "BotoHighLatencyP99", "BotoExporterDown",
        "BotoPromHookErrors", "BotoPromLabelSetsFolded", "BotoPromCsvRowsDropped"}
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        for key in ("summary", "description"):
            assert rule["annotations"].get(key, "").strip(), f"{rule['alert']} has no {key}"


def _github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to
    hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_links_its_runbook_in_the_readme():
    """Each alert's runbook_url is RUNBOOK_BASE#anchor, the anchor of a README heading named
    after the alert, whose section says what the alert means and what to check first."""
    text = README.read_text(encoding="utf-8")
    headings = {_github_anchor(m.group(1)): m.start()
                for m in re.finditer(r"^#{2,6} (.+)$", text, re.M)}
    for rule in alert_rules():
        url = rule["annotations"].get("runbook_url", "")
        base, _, anchor = url.partition("#")
        assert base == RUNBOOK_BASE, f"{rule['alert']}: {url}"
        assert anchor == _github_anchor(rule["alert"]), f"{rule['alert']}: {url}"
        assert anchor in headings, f"README has no section for {rule['alert']}"
        section = text[headings[anchor]:].split("\n#", 1)[0]
        assert "What it means" in section and "Check first" in section, rule["alert"]


def test_the_two_strings_to_set_are_documented_where_they_appear():
    """The job selector and the runbook base are named in alerts.yml's header and the README,
    and the rules use each in exactly the form documented there."""
    header = ALERTS.read_text().split("groups:", 1)[0]
    readme = README.read_text(encoding="utf-8")
    for value in (JOB_SELECTOR, RUNBOOK_BASE):
        assert value in header and value in readme, value


def test_the_job_is_selected_in_one_rule_only():
    """No rule selects a job but BotoExporterDown's up{job="boto-prom"}: boto-prom's metric
    names are its own, and up is every target's."""
    selecting = [(_name(rule), str(sel.matchers)) for rule in every_rule()
                 for sel in promql.parse(rule["expr"]).selectors
                 if any(label == "job" for label, _, _ in sel.matchers)]
    assert selecting == [("BotoExporterDown", str([("job", "=", "boto-prom")]))]


def _ranged_counters_problems(rule: Dict[str, Any]) -> List[str]:
    """The rate-window and counter problems of one rule's expression."""
    name, parsed = _name(rule), promql.parse(rule["expr"])
    problems = []
    # A recording rule named ...:rate5m takes every rate over [5m]; any rule takes at least four
    # scrapes at the slowest usual interval.
    named = re.search(r":(?:\w+_)?rate(\w+)$", rule.get("record", ""))
    for text, call in parsed.ranges:
        if call not in RATE_FUNCTIONS:
            continue
        if promql_parser.parse_duration(text) < MIN_WINDOW:
            problems.append(f"{name}: {call}() over [{text}], under {MIN_WINDOW}")
        if named and text != named.group(1):
            problems.append(f"{name}: {call}() over [{text}], but the name says {named.group(1)}")
    # A counter is read through rate or increase, unless the rule records a copy of it (the
    # OpenTelemetry-named series are counters themselves).
    copies = rule.get("record", "").endswith(COUNTER_SUFFIXES)
    for sel in parsed.selectors:
        if sel.metric and sel.metric.endswith(COUNTER_SUFFIXES) and not copies:
            if sel.range is None or sel.call not in RATE_FUNCTIONS:
                problems.append(f"{name}: counter {sel.metric} is not inside rate() or increase()")
    return problems


def test_rates_use_long_enough_windows_and_counters_are_rated():
    """Every rule's PromQL, parsed: rate windows cover four slow scrapes and match a recording
    rule's name; counters appear only inside rate or increase."""
    assert [p for rule in every_rule() for p in _ranged_counters_problems(rule)] == []


@pytest.mark.parametrize("expr, problem", [
    ("sum(rate(boto_requests_total[1m]))", "under"),
    ("sum(boto_requests_total)", "not inside rate"),
    ("histogram_quantile(0.5, sum by (le) (boto_request_duration_seconds_bucket))",
     "not inside rate"),
])
def test_rule_lint_reports_a_broken_rule(expr, problem):
    """The rule lint above reports a short window and a counter read raw."""
    assert problem in " ".join(_ranged_counters_problems({"alert": "Broken", "expr": expr}))


def test_rule_lint_reports_a_window_that_contradicts_the_name():
    """A recording rule named :rate5m that rates over [10m] is reported."""
    rule = {"record": "job:boto_requests:rate5m",
            "expr": "sum by (job) (rate(boto_requests_total[10m]))"}
    assert "the name says 5m" in " ".join(_ranged_counters_problems(rule))


def _output_labels(node: promql_parser.Expr, known: Dict[str, List[str]]) -> Optional[List[str]]:
    """The labels an expression's result keeps, in the order its by-clause names them; None
    when that is not known (a raw selector)."""
    P = promql_parser
    if isinstance(node, P.ParenExpr):
        return _output_labels(node.expr, known)
    if isinstance(node, P.AggregateExpr) and node.modifier is not None \
            and node.modifier.type == P.AggModifierType.By:
        return list(node.modifier.labels)
    if isinstance(node, P.Call) and node.func.name == "histogram_quantile":
        inner = _output_labels(node.args[1], known)
        return None if inner is None else [label for label in inner if label != "le"]
    if isinstance(node, P.BinaryExpr):
        side = node.rhs if isinstance(node.lhs, P.NumberLiteral) else node.lhs
        return _output_labels(side, known)
    if isinstance(node, P.VectorSelector):
        return known.get(node.name or "")
    return None


def test_recording_rules_are_named_level_metric_operations():
    """Each recording rule in recording_rules.yml is level:metric:operations, and its level
    lists the labels its result keeps."""
    known: Dict[str, List[str]] = {}
    for rule in rules(RECORDING):
        level, metric, operations = rule["record"].split(":")
        assert metric.startswith("boto_") and operations, rule["record"]
        labels = _output_labels(promql_parser.parse(rule["expr"]), known)
        assert labels is not None and level == "_".join(labels), (rule["record"], labels)
        known[rule["record"]] = labels


def _cases(alert: str) -> List[Dict[str, Any]]:
    """Every alert_rule_test case for alert, in every unit test file."""
    return [case for path in TESTS for test in yaml.safe_load(path.read_text())["tests"]
            for case in test.get("alert_rule_test", []) if case["alertname"] == alert]


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    """The unit tests expect each alert both firing and not firing at some evaluation time."""
    for rule in alert_rules():
        mine = _cases(rule["alert"])
        assert any(case.get("exp_alerts") for case in mine), f"no firing test for {rule['alert']}"
        assert any(not case.get("exp_alerts") for case in mine), (
            f"no quiet test for {rule['alert']}")


@pytest.mark.parametrize("alert", [rule["alert"] for rule in alert_rules()])
def test_unit_tests_fail_when_an_alert_never_fires(tmp_path, alert):
    """With one alert's expression replaced by one that never fires, promtool test rules fails."""
    rules_ = yaml.safe_load(ALERTS.read_text())
    for group in rules_["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                rule["expr"] = "vector(1) < 0"
    for path in PROMETHEUS_DIR.glob("*.yml"):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules_, sort_keys=False))
    result = promtool("test", "rules", *(str(tmp_path / t.name) for t in TESTS))
    assert result.returncode != 0
    assert alert in result.stdout + result.stderr
