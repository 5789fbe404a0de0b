"""prometheus/prometheus.yml, alerts.yml and alerts_test.yml, checked by the real promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

from tests.conftest import require_binary

PROMETHEUS_DIR = Path(__file__).resolve().parent.parent / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess:
    """Run promtool with args; its output is kept for the assertion message."""
    return subprocess.run([require_binary("promtool"), *args], capture_output=True, text=True,
                          timeout=60)


def alert_rules(path: Path = ALERTS) -> List[Dict[str, Any]]:
    """Every alerting rule in a rules file, in order."""
    groups = yaml.safe_load(path.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_check_config_passes():
    """promtool check config accepts prometheus.yml and the rule files it names."""
    result = promtool("check", "config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_promtool_check_rules_passes():
    """promtool check rules accepts alerts.yml."""
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules_passes():
    """The alert unit tests in alerts_test.yml pass under promtool test rules."""
    result = promtool("test", "rules", str(ALERTS_TEST))
    assert result.returncode == 0, result.stdout + result.stderr


def test_config_loads_the_alert_rules_and_scrapes_the_app():
    """prometheus.yml loads alerts.yml and has a boto-prom job scraping the compose app."""
    config = yaml.safe_load(CONFIG.read_text())
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = [t for sc in jobs["boto-prom"]["static_configs"] for t in sc["targets"]]
    assert targets == ["app:9875"]


def test_every_alert_has_severity_summary_and_description():
    """Each alert carries a severity label and non-empty summary and description annotations."""
    rules = alert_rules()
    assert {r["alert"] for r in rules} >= {
        "BotoHighErrorRatio", "BotoThrottled", "BotoHighLatencyP99", "BotoExporterDown"}
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        for key in ("summary", "description"):
            assert rule["annotations"].get(key, "").strip(), f"{rule['alert']} has no {key}"


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    """alerts_test.yml expects each alert both firing and not firing at some evaluation time."""
    tests = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for rule in alert_rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case.get("exp_alerts") for case in mine), f"no firing test for {rule['alert']}"
        assert any(not case.get("exp_alerts") for case in mine), (
            f"no quiet test for {rule['alert']}")


@pytest.mark.parametrize("alert", [rule["alert"] for rule in alert_rules()])
def test_unit_tests_fail_when_an_alert_never_fires(tmp_path, alert):
    """With one alert's expression replaced by one that never fires, promtool test rules fails."""
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                rule["expr"] = "vector(1) < 0"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    shutil.copy(ALERTS_TEST, tmp_path / "alerts_test.yml")
    result = promtool("test", "rules", str(tmp_path / "alerts_test.yml"))
    assert result.returncode != 0
    assert alert in result.stdout + result.stderr
