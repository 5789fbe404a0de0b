"""End to end: the real Prometheus, configured by the repository's own prometheus.yml and
every rule file it names, scrapes the real demo workload; every dashboard query returns data,
every recording rule records samples and the alerts that read them have their input.

One module-scoped fixture does the live part, bounded by DEADLINE: it runs the demo in a
thread, starts Prometheus on loopback, waits (polling, never sleeping a fixed time) for the
target to be up, then evaluates every panel query and variable query the way Grafana would
send them, reads the loaded rules and the series they record, and stops both. The tests then
judge what it saw. (It cannot stay up across tests: conftest stops the process's metrics
server after each test.)
"""

from __future__ import annotations

import io
import json
import logging
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
import yaml
from prometheus_client import CollectorRegistry

from tests import grafana_dashboard as gd
from tests import promql
from tests.conftest import HAS_BOTO2, require_binary

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_CONFIG = ROOT / "prometheus" / "prometheus.yml"
JOB = "boto-prom"

DEADLINE = 60.0  # seconds for the whole live part, from starting the demo to the last query
SCRAPE_INTERVAL = "1s"
# What Grafana would put for the variables: $__rate_interval is at least four scrape
# intervals; one more keeps a late scrape from leaving a window with a single sample.
GRAFANA_GLOBALS = {"__rate_interval": "5s", "__interval": "1s", "__interval_ms": "1000",
                   "__range": "1m", "__range_s": "60", "__range_ms": "60000"}
POLL = 0.2  # seconds between two looks at something that is not there yet


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrometheusError(RuntimeError):
    """An API answer with an error status; error_type "bad_data" is a query Prometheus rejects."""

    def __init__(self, error_type: Optional[str], message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type


class Prometheus:
    """A prometheus process on loopback and its HTTP API."""

    def __init__(self, binary: str, config: Path, data: Path, log: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._log_file = log.open("wb")
        self.process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={data}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT)

    def api(self, path: str, params: Optional[List[Tuple[str, str]]] = None,
            post: bool = False) -> Any:
        """The ``data`` of one API answer; raises on a connection failure or an error status."""
        query = urllib.parse.urlencode(params or [])
        url = f"{self.base}/api/v1/{path}"
        request = (urllib.request.Request(url, data=query.encode(), method="POST") if post
                   else urllib.request.Request(f"{url}?{query}" if query else url))
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:  # Prometheus explains a bad query in the body
            body = json.load(exc)
        if body.get("status") != "success":
            raise PrometheusError(body.get("errorType"), f"{path} {params}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> List[Dict[str, Any]]:
        """An instant query, sent as Grafana sends it (POST); its result vector."""
        return self.api("query", [("query", expr)], post=True)["result"]

    def log_tail(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log_file.close()


def _poll(deadline: float, probe: Callable[[], Tuple[bool, Any]],
          alive: Callable[[], None]) -> Tuple[bool, Any]:
    """probe() again and again until it says done or the deadline passes: (done, last seen).
    alive() raises when what is being waited for has died, to fail at once."""
    while True:
        alive()
        try:
            done, seen = probe()
        except (OSError, RuntimeError, ValueError) as exc:  # not listening yet, or a bad query
            done, seen = False, exc
        if done or time.monotonic() >= deadline:
            return done, seen
        time.sleep(POLL)


def _answer(prom: "Prometheus", expr: str,
            done: Callable[[List[Dict[str, Any]]], bool]) -> Callable[[], Tuple[bool, Any]]:
    """A probe for _poll: expr's result, and whether done() says it is what is waited for."""
    def probe() -> Tuple[bool, Any]:
        result = prom.query(expr)
        return done(result), result
    return probe


def _has_a_number(result: List[Dict[str, Any]]) -> bool:
    """True when an instant query's result has a series whose value is a number, not NaN (what
    histogram_quantile or a ratio gives for a window without calls)."""
    return any(sample["value"][1] != "NaN" for sample in result)


def _has_a_positive_number(result: List[Dict[str, Any]]) -> bool:
    """True when some series of an instant query's result is above 0: calls were made in the
    window, not only before it (a rate of 0, a ratio or quantile of NaN)."""
    return any(sample["value"][1] != "NaN" and float(sample["value"][1]) > 0
               for sample in result)


def _rule_files() -> List[Path]:
    """The rule files prometheus.yml names (rule_files), where Prometheus would find them."""
    names = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["rule_files"]
    paths = [path for name in names for path in sorted(PROMETHEUS_CONFIG.parent.glob(name))]
    assert len(paths) >= len(names), f"prometheus.yml names missing rule files: {names}"
    return paths


def _rules(kind: str) -> List[Dict[str, Any]]:
    """Every rule of kind "record" or "alert" in the rule files prometheus.yml names."""
    return [rule for path in _rule_files() for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if kind in rule]


# Recording rules the demo cannot feed, each with the one input it lacks: the per-attempt
# duration histogram is a detailed metric (detailed_metrics=True), and the demo runs with the
# defaults, as a user's first run does. promtool's unit tests (opentelemetry_rules_test.yml)
# check what these record; here they must load and evaluate without error, and the test checks
# that their input really is absent, so that the day the demo exports it they must record too.
NOT_FED_BY_THE_DEMO = {
    "http_client_request_duration_seconds_bucket": "boto_attempt_duration_seconds_bucket",
    "http_client_request_duration_seconds_sum": "boto_attempt_duration_seconds_sum",
    "http_client_request_duration_seconds_count": "boto_attempt_duration_seconds_count",
}


def _test_config(tmp: Path, demo_port: int) -> Path:
    """The repository's prometheus.yml, pointed at the demo on loopback, scraping and
    evaluating every second, with every rule file it names."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval=SCRAPE_INTERVAL, evaluation_interval=SCRAPE_INTERVAL)
    config["rule_files"] = [str(path) for path in _rule_files()]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == JOB]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{demo_port}"]}]
    config["scrape_configs"] = [job]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Observed:
    """What the live run saw."""

    def __init__(self) -> None:
        self.demo_port = 0
        self.panels: Dict[str, Tuple[str, Any]] = {}  # where -> (query sent, last result)
        self.variables: Dict[str, Any] = {}  # variable -> values with "All" everywhere
        self.iam_actions: Any = None  # action values with aws_service narrowed to iam
        self.rules: Any = None  # the rules Prometheus loaded, once all were evaluated
        self.recorded: Dict[str, Any] = {}  # recording rule -> its series
        self.not_fed: Dict[str, Any] = {}  # NOT_FED_BY_THE_DEMO rule -> (its input's, its own)
        self.reads: Dict[str, Dict[str, bool]] = {}  # alert -> recording rule -> had series
        self.rules_missing: Any = None  # what BotoPromRecordingRulesMissing's expression gave


def _variable_values(prom: Prometheus, variable: Dict[str, Any], values: Dict[str, str],
                     start: float) -> List[str]:
    """What Grafana lists for a label_values(selector, label) variable: the label's values on
    the selected series over the time range."""
    selector, label = gd.label_values(variable)
    params = [("start", f"{start:.3f}"), ("end", f"{time.time():.3f}")]
    if selector:
        params.append(("match[]", gd.substitute(selector, values)))
    return prom.api(f"label/{label}/values", params)


# Actions only the demo's workload makes (one a boto3 call), each frequent enough to show early.
WORKLOAD_ACTIONS = ("DescribeInstances", "GetObject", "PutItem", "ListUsers", "SendMessage")


@pytest.fixture(scope="module")
def observed(tmp_path_factory) -> Observed:
    """Run the demo and Prometheus, ask every dashboard and rule question, stop both."""
    if not HAS_BOTO2:
        pytest.skip("the demo needs boto 2, which needs Python 3.11 or older")
    binary = require_binary("prometheus")
    from boto_prom import get_server, stop_server
    from boto_prom.demo import run_demo

    tmp = tmp_path_factory.mktemp("e2e")
    start_time = time.time()
    deadline = time.monotonic() + DEADLINE
    stop = threading.Event()
    demo_errors: List[BaseException] = []

    def demo() -> None:
        try:
            run_demo(port=0, addr="127.0.0.1", rate=50, registry=CollectorRegistry(),
                     out=io.StringIO(), stop=stop)
        except BaseException as exc:  # reported by the test, not lost in the thread
            demo_errors.append(exc)

    thread = threading.Thread(target=demo, name="boto-prom-e2e-demo", daemon=True)
    prom: Optional[Prometheus] = None
    seen = Observed()

    def alive() -> None:
        if demo_errors:
            raise AssertionError(f"the demo failed: {demo_errors[0]!r}")
        if not thread.is_alive() and thread.ident is not None:
            raise AssertionError("the demo stopped before the test was done")
        if prom is not None and prom.process.poll() is not None:
            raise AssertionError(f"prometheus exited with {prom.process.returncode}:\n"
                                 f"{prom.log_tail()}")

    # boto 2 logs every 4xx answer at ERROR; the demo makes them on purpose.
    boto_log = logging.getLogger("boto")
    boto_level = boto_log.level
    boto_log.setLevel(logging.CRITICAL)
    thread.start()
    try:
        ok, server = _poll(deadline, lambda: (get_server() is not None, get_server()), alive)
        assert ok, f"the demo's metrics server did not start within {DEADLINE:.0f} s"
        seen.demo_port = server.port
        prom = Prometheus(binary, _test_config(tmp, server.port), tmp / "data",
                          tmp / "prometheus.log")

        def target_up() -> Tuple[bool, Any]:
            active = prom.api("targets", [("state", "active")])["activeTargets"]
            return any(t["labels"].get("job") == JOB and t["health"] == "up"
                       for t in active), active

        ok, last = _poll(deadline, target_up, alive)
        assert ok, (f"Prometheus did not report the demo target up within {DEADLINE:.0f} s; "
                    f"last /api/v1/targets: {last!r}\nprometheus log:\n{prom.log_tail()}")

        # The demo's set-up calls (a bucket, a table, a user...) come first, and every panel
        # has data from them alone: wait until its workload, boto 2 and boto3, is scraped too.
        def workload_scraped() -> Tuple[bool, Any]:
            result = prom.query(f'count by (action) (rate(boto_requests_total{{action=~'
                                f'"{"|".join(WORKLOAD_ACTIONS)}"}}[1m]))')
            return len(result) == len(WORKLOAD_ACTIONS), result

        ok, last = _poll(deadline, workload_scraped, alive)
        assert ok, f"the demo's workload was not scraped within {DEADLINE:.0f} s: {last!r}"

        dashboard = gd.load()
        values = {**gd.all_values(dashboard), **GRAFANA_GLOBALS}
        for panel, target in gd.targets(dashboard):
            where = f"{panel['title']} / {target['refId']}"
            expr = gd.substitute(target["expr"], values)

            def data(expr: str = expr) -> Tuple[bool, Any]:
                try:
                    result = prom.query(expr)
                except PrometheusError as exc:
                    if exc.error_type == "bad_data":
                        return True, exc  # waiting will not make a bad query good
                    raise
                return _has_a_number(result), result

            seen.panels[where] = (expr, _poll(deadline, data, alive)[1])

        for variable in gd.variables(dashboard):
            if variable["type"] == "query":
                name = variable["name"]
                seen.variables[name] = _poll(deadline, lambda v=variable: (
                    True, _variable_values(prom, v, values, start_time)), alive)[1]
        action = next(v for v in gd.variables(dashboard) if v["name"] == "action")
        seen.iam_actions = _poll(deadline, lambda: (True, _variable_values(
            prom, action, {**values, "aws_service": "iam"}, start_time)), alive)[1]

        def rules_evaluated() -> Tuple[bool, Any]:
            rules = [rule for group in prom.api("rules")["groups"] for rule in group["rules"]]
            return bool(rules) and all(r["health"] == "ok" for r in rules), rules

        seen.rules = _poll(deadline, rules_evaluated, alive)[1]

        # Each recording rule's own series, from the rules' first evaluations on: a [5m] rate
        # needs two samples in its window, not five minutes of them, so with one scrape and
        # one evaluation a second every rule the demo feeds records within seconds.
        for rule in _rules("record"):
            name = rule["record"]
            if name not in NOT_FED_BY_THE_DEMO:
                seen.recorded[name] = _poll(deadline, _answer(
                    prom, f'{name}{{job="{JOB}"}}', _has_a_positive_number), alive)[1]
        # Asked once, after the others had their time: waiting would not bring their input.
        for name, series in NOT_FED_BY_THE_DEMO.items():
            seen.not_fed[name] = (prom.query(f'{series}{{job="{JOB}"}}'),
                                  prom.query(f'{name}{{job="{JOB}"}}'))

        # The alerts that read recording rules: each rule one reads has series for the job,
        # and the alert that says they are not loaded has nothing to say.
        recorded = {rule["record"] for rule in _rules("record")}
        for alert in _rules("alert"):
            for name in {sel.metric for sel in promql.parse(alert["expr"]).selectors} & recorded:
                seen.reads.setdefault(alert["alert"], {})[name] = _poll(
                    deadline, _answer(prom, f'{name}{{job="{JOB}"}}', bool), alive)[0]
        (missing,) = [a["expr"] for a in _rules("alert")
                      if a["alert"] == "BotoPromRecordingRulesMissing"]
        seen.rules_missing = _poll(deadline, _answer(prom, missing, lambda r: not r), alive)[1]
    finally:
        stop.set()
        thread.join(timeout=15)
        if prom is not None:
            prom.stop()
        stop_server()
        boto_log.setLevel(boto_level)
    assert not thread.is_alive(), "the demo did not stop within 15 s of being asked to"
    return seen


def test_every_panel_query_returns_data(observed):
    """Every query of every panel, with variables filled in as Grafana would, returns a number."""
    empty = {where: expr for where, (expr, result) in observed.panels.items()
             if not isinstance(result, list) or not _has_a_number(result)}
    assert len(observed.panels) == len(list(gd.targets(gd.load())))
    if empty:
        pytest.fail(f"these queries gave no number within {DEADLINE:.0f} s:\n" + "\n".join(
            f"  {where}: {expr}\n    last answer: {observed.panels[where][1]!r}"
            for where, expr in empty.items()), pytrace=False)


def test_exporter_up_panel_shows_the_demo_up(observed):
    """The scrape-status stat shows the demo instance up (1)."""
    result = next(r for where, (_, r) in observed.panels.items()
                  if where.startswith("Exporter targets up"))
    assert [(s["metric"].get("instance"), s["value"][1]) for s in result] == [
        (f"127.0.0.1:{observed.demo_port}", "1")]


def test_variables_list_the_demo_labels(observed):
    """The chained variables list the demo's job, instance, services, regions and actions."""
    v = observed.variables
    assert v["job"] == [JOB]
    assert v["instance"] == [f"127.0.0.1:{observed.demo_port}"]
    assert {"dynamodb", "ec2", "iam", "s3"} <= set(v["aws_service"])
    assert {"us-east-1", "us-west-2"} <= set(v["aws_region"])
    assert {"DescribeInstances", "GetObject", "PutItem", "ListUsers"} <= set(v["action"])


def test_action_variable_follows_the_service_variable(observed):
    """With aws_service narrowed to iam, the action variable lists IAM actions only."""
    assert observed.iam_actions
    assert set(observed.iam_actions) <= {"CreateUser", "GetUser", "ListUsers"}


def test_every_rule_file_of_the_configuration_is_loaded(observed):
    """Prometheus loaded every rule of every file prometheus.yml names: the recording rules,
    the alerts and the OpenTelemetry-named series."""
    assert [path.name for path in _rule_files()] == [
        "recording_rules.yml", "alerts.yml", "opentelemetry_rules.yml"]
    assert isinstance(observed.rules, list), observed.rules
    assert sorted(r["name"] for r in observed.rules if r["type"] == "recording") == sorted(
        rule["record"] for rule in _rules("record"))


def test_alert_rules_are_loaded_and_evaluate(observed):
    """Prometheus loaded every alert of the rule files and evaluates each, and every recording
    rule, without error."""
    expected = {rule["alert"] for rule in _rules("alert")}
    assert isinstance(observed.rules, list), observed.rules
    assert {rule["name"] for rule in observed.rules if rule["type"] == "alerting"} == expected
    assert [(r["name"], r.get("lastError")) for r in observed.rules if r["health"] != "ok"] == []


def test_every_recording_rule_records_samples(observed):
    """On the demo's scraped traffic, every recording rule records a series above 0 (a p50 or
    p99 too, from its [5m] rates' first two samples) for the demo's job, the
    level:metric:operations ones without instance; NOT_FED_BY_THE_DEMO's rules aside."""
    fed = {rule["record"] for rule in _rules("record")} - set(NOT_FED_BY_THE_DEMO)
    assert set(observed.recorded) == fed
    empty = {name: result for name, result in observed.recorded.items()
             if not isinstance(result, list) or not _has_a_positive_number(result)}
    assert empty == {}, f"no sample above 0 within {DEADLINE:.0f} s"
    for name, result in observed.recorded.items():
        assert {s["metric"].get("job") for s in result} == {JOB}, name
        if ":" in name:
            assert not any("instance" in s["metric"] for s in result), name


def test_rules_the_demo_cannot_feed_lack_only_their_input(observed):
    """The recording rules the demo cannot feed record nothing because their input, the
    per-attempt histogram (a detailed metric), is absent: once it is not, they must record."""
    assert set(observed.not_fed) == set(NOT_FED_BY_THE_DEMO)
    for name, (input_, output) in observed.not_fed.items():
        assert input_ == [], f"the demo exports {NOT_FED_BY_THE_DEMO[name]} now: drop {name} " \
                             "from NOT_FED_BY_THE_DEMO"
        assert output == [], name


def test_alerts_that_read_recording_rules_have_their_input(observed):
    """The alerts that read recording rules are the expected three, every rule each reads has
    series for the demo's job, and BotoPromRecordingRulesMissing's expression is empty."""
    assert set(observed.reads) == {"BotoHighErrorRatio", "BotoHighLatencyP99",
                                   "BotoPromRecordingRulesMissing"}
    assert {alert: sorted(name for name, had in reads.items() if not had)
            for alert, reads in observed.reads.items()} == {alert: [] for alert in observed.reads}
    assert observed.rules_missing == []
def test_boto3_traffic_shows_on_the_same_panels(observed):
    """The demo's boto3 SQS calls appear on the request-rate and latency panels beside the
    boto 2 series, with no boto3-specific query."""
    for title in ("Request rate by action", "Latency p50 / p90 / p99 by action / A"):
        result = next(r for where, (_, r) in observed.panels.items() if where.startswith(title))
        series = {(s["metric"].get("aws_service"), s["metric"].get("action")) for s in result}
        assert ("sqs", "SendMessage") in series, title
        assert ("ec2", "DescribeInstances") in series, title
