"""grafana/dashboards/boto.json against Grafana's own published schema, for the Grafana version
docker-compose.yml pins: the npm package @grafana/schema of that version, type-checked by
TypeScript's tsc (both installed into .ci/node_modules by `.ci/setup node`).

The test writes the dashboard, as JSON is valid TypeScript, into a .ts file as constants of the
schema's types: the whole dashboard as a Dashboard, and each panel again with its plugin's own
Options and FieldConfig types (which Dashboard leaves as open records). `tsc --noEmit` then
reports each field of the wrong type, and each field the schema does not know.

Two allowances, each for a known difference between the schema's types and the JSON Grafana
itself reads and writes, and nothing more:
- String enums (``"line"``, ``"table"``) are typed as TypeScript enums, which a string literal
  does not satisfy; LOOSE turns each enum into the union of its string values.
- The schema lags Grafana on query variables: Grafana writes a ``definition`` (the query's text,
  shown in the editor) that VariableModel does not declare; QueryVariableLag adds that one key,
  to query variables only.
A panel's options are Partial at the top: Grafana merges them over the plugin's defaults when it
loads a panel, so a saved panel may leave out any of them (the stat panel's
``percentChangeColorMode``, the table's ``frameIndex``); what it does write must be right.
Queries are checked as the schema's generic DataQuery (it has no Prometheus query type); their
PromQL is checked by tests/test_dashboard.py.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import yaml

from tests import grafana_dashboard as gd
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / ".ci" / "node_modules"
SCHEMA = NODE_MODULES / "@grafana" / "schema"
TSC = NODE_MODULES / ".bin" / "tsc"
PANEL_CONFIGS = SCHEMA / "dist" / "esm" / "raw" / "composable"

LOOSE = """
// TypeScript string enums reject the string literals JSON holds: accept each enum's values.
type Loose<T> = T extends string ? `${T}`
  : T extends Array<infer U> ? Array<Loose<U>>
  : T extends object ? { [K in keyof T]: Loose<T[K]> }
  : T;
// The schema lags Grafana here: query variables carry a definition, VariableModel lacks it.
type QueryVariableLag = { type: 'query'; definition?: string };
type OtherVariable = { type: Exclude<Loose<VariableModel>['type'], 'query'> };
type CheckedVariable = Loose<VariableModel> & (QueryVariableLag | OtherVariable);
type CheckedDashboard = Omit<Loose<Dashboard>, 'templating'> & {
  templating?: { list?: Array<CheckedVariable> };
};
type TypedPanel<O, F = Record<string, unknown>> =
  Loose<Omit<Panel, 'options' | 'fieldConfig'>
        & { options?: Partial<O>; fieldConfig?: FieldConfigSource<F> }>;
"""


def _require_schema() -> None:
    """Skip, or under CI=true fail, when .ci/node_modules lacks the schema or tsc."""
    if not (SCHEMA / "package.json").is_file() or not TSC.is_file():
        message = "@grafana/schema or typescript is not installed (run .ci/setup node)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def _pinned_grafana() -> str:
    """The Grafana version docker-compose.yml runs."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return services["grafana"]["image"].rsplit(":", 1)[1]


def _panel_config(panel_type: str) -> Dict[str, str]:
    """The panel plugin's schema module (import path) and whether it exports a FieldConfig."""
    found = sorted(PANEL_CONFIGS.glob(f"{panel_type}/panelcfg/x/*_types.gen.d.ts"))
    if not found:
        return {}
    module = str(found[0].relative_to(NODE_MODULES))[:-len(".d.ts")]
    return {"module": module,
            "field_config": "yes" if "interface FieldConfig" in found[0].read_text() else ""}


def typescript(dashboards: Dict[str, Dict[str, Any]]) -> Tuple[str, List[Tuple[int, str]]]:
    """The dashboards as typed TypeScript constants, each whole, then each of its panels by its
    type; and (first line, dashboard name) where each dashboard's constants start."""
    panel_types = {p["type"] for d in dashboards.values() for p in gd.panels(d)}
    configs = {t: _panel_config(t) for t in sorted(panel_types)}
    lines = ["import type { Dashboard, FieldConfigSource, Panel, VariableModel } "
             "from '@grafana/schema';"]
    lines += [f"import type * as {t} from '{c['module']}';" for t, c in configs.items() if c]
    lines.append(LOOSE)
    starts = []
    for name, dashboard in dashboards.items():
        starts.append((sum(line.count("\n") + 1 for line in lines) + 1, name))
        lines.append(f"export const {name}: CheckedDashboard = {json.dumps(dashboard, indent=1)};")
        for panel in gd.panels(dashboard):
            config = configs[panel["type"]]
            if not config:
                continue
            types = f"{panel['type']}.Options"
            if config["field_config"]:
                types += f", {panel['type']}.FieldConfig"
            lines.append(f"export const {name}_panel_{panel['id']}: TypedPanel<{types}> = "
                         f"{json.dumps(panel, indent=1)};")
    return "\n".join(lines) + "\n", starts


def tsc_errors(dashboards: Dict[str, Dict[str, Any]], tmp_path: Path) -> Dict[str, List[str]]:
    """tsc's errors for each dashboard, each error with the JSON line it points at. tsc reports
    at most one error per constant (the first mismatch it finds)."""
    (tmp_path / "node_modules").symlink_to(NODE_MODULES, target_is_directory=True)
    source = tmp_path / "dashboard.ts"
    text, starts = typescript(dashboards)
    source.write_text(text, encoding="utf-8")
    result = subprocess.run(
        [str(TSC), "--noEmit", "--strict", "--target", "es2020", "--module", "es2020",
         "--moduleResolution", "node", "--skipLibCheck", str(source)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = text.splitlines()
    errors: Dict[str, List[str]] = {name: [] for name in dashboards}
    for line in result.stdout.splitlines():
        match = re.match(r".*dashboard\.ts\((\d+),\d+\): (error .*)", line)
        assert match, result.stdout + result.stderr  # an error outside the dashboards
        number = int(match.group(1))
        name = [n for first, n in starts if first <= number][-1]
        errors[name].append(f"{match.group(2)}  at: {lines[number - 1].strip()}")
    assert result.returncode == 0 or any(errors.values()), result.stdout + result.stderr
    return errors


def test_schema_matches_the_grafana_that_compose_runs():
    """The installed @grafana/schema is the version of the Grafana image docker-compose.yml pins,
    and .ci/package.json pins that same version."""
    _require_schema()
    installed = json.loads((SCHEMA / "package.json").read_text())["version"]
    wanted = json.loads((ROOT / ".ci" / "package.json").read_text())["devDependencies"]
    assert installed == _pinned_grafana() == wanted["@grafana/schema"]


def test_dashboard_satisfies_grafanas_schema(tmp_path):
    """tsc finds no error in the dashboard typed by Grafana's schema."""
    _require_schema()
    assert tsc_errors({"dashboard": gd.load()}, tmp_path) == {"dashboard": []}


def _footer_fields_as_text(d: Dict[str, Any]) -> None:
    next(p for p in gd.panels(d) if p["type"] == "table")["options"]["footer"]["fields"] = ""


def _misspelt_key(d: Dict[str, Any]) -> None:
    d["schemaVerison"] = d.pop("schemaVersion")


def _unknown_draw_style(d: Dict[str, Any]) -> None:
    panel = next(p for p in gd.panels(d) if p["type"] == "timeseries")
    panel["fieldConfig"]["defaults"]["custom"]["drawStyle"] = "curve"


def _definition_on_a_panel(d: Dict[str, Any]) -> None:
    d["panels"][0]["definition"] = "up"


def _definition_on_the_datasource_variable(d: Dict[str, Any]) -> None:
    next(v for v in gd.variables(d) if v["type"] == "datasource")["definition"] = "prom"


BROKEN = {
    "footer_fields_as_text": (_footer_fields_as_text, '"fields": ""'),
    "misspelt_key": (_misspelt_key, '"schemaVerison"'),
    "unknown_enum_value": (_unknown_draw_style, '"drawStyle": "curve"'),
    "definition_on_a_panel": (_definition_on_a_panel, '"definition": "up"'),
    "definition_on_another_variable": (_definition_on_the_datasource_variable,
                                       '"definition": "prom"'),
}


def test_schema_check_reports_a_broken_dashboard(tmp_path):
    """Copies of the dashboard, each broken in one way, fail the check at the broken line: the
    allowances above let nothing else through. (One tsc run checks them all.)"""
    _require_schema()
    dashboards = {}
    for name, (breaks, _) in BROKEN.items():
        dashboards[name] = copy.deepcopy(gd.load())
        breaks(dashboards[name])
    errors = tsc_errors(dashboards, tmp_path)
    for name, (_, where) in BROKEN.items():
        assert any(where in error for error in errors[name]), (name, errors[name])
