"""docker-compose.yml, Dockerfile and .dockerignore: the demo stack as compose 1.29 reads it."""

from __future__ import annotations

import fnmatch
import re
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List

import pytest
import yaml

from boto_prom import DEFAULT_PORT
from tests.conftest import require_binary

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


def compose(*args: str) -> subprocess.CompletedProcess:
    """docker-compose on the repository's compose file; it reads files only, no engine."""
    return subprocess.run([require_binary("docker-compose"), "-f", str(COMPOSE), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def resolved() -> Dict[str, Any]:
    """The compose file as docker-compose resolves it (absolute host paths, long syntax)."""
    result = compose("config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def _binds(service: Dict[str, Any]) -> Dict[str, str]:
    """container path -> host path of a service's bind mounts; all must be read-only."""
    binds = {}
    for volume in service.get("volumes", []):
        source, target, mode = volume.split(":")
        assert mode == "ro", f"{volume} is not mounted read-only"
        binds[target] = source
    return binds


def _app(resolved: Dict[str, Any]) -> tuple:
    (name,) = [n for n, s in resolved["services"].items() if "build" in s]
    return name, resolved["services"][name]


def test_compose_config_is_valid():
    """docker-compose config -q accepts docker-compose.yml."""
    result = compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_prometheus_scrapes_the_app_service_on_its_port(resolved):
    """Prometheus's boto-prom target is the app's compose service name and metrics port."""
    name, app = _app(resolved)
    command: List[str] = app["command"]
    assert command[:2] == ["boto-prom", "demo"]
    assert command[command.index("--addr") + 1] == "0.0.0.0"
    port = int(command[command.index("--port") + 1]) if "--port" in command else DEFAULT_PORT
    assert any(p.split(":")[-1].split("/")[0] == str(port) for p in app["ports"])
    config_path = _binds(resolved["services"]["prometheus"])["/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load(Path(config_path).read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "boto-prom"]
    assert [t for sc in job["static_configs"] for t in sc["targets"]] == [f"{name}:{port}"]


def test_every_mounted_host_path_exists(resolved):
    """Each bind mount's host path exists in the repository, and the build context has the
    Dockerfile."""
    for name, service in resolved["services"].items():
        for target, source in _binds(service).items():
            assert Path(source).exists(), f"{name}: {source} (for {target}) does not exist"
    _, app = _app(resolved)
    assert (Path(app["build"]["context"]) / "Dockerfile").is_file()


def test_config_files_are_mounted_where_their_readers_look(resolved):
    """Prometheus finds its rule files beside its config; Grafana finds the provisioning
    folders and, at the provider's path, the dashboard."""
    prometheus = _binds(resolved["services"]["prometheus"])
    config = yaml.safe_load(Path(prometheus["/etc/prometheus/prometheus.yml"]).read_text())
    for rule_file in config["rule_files"]:
        assert f"/etc/prometheus/{rule_file}" in prometheus
    grafana_service = resolved["services"]["grafana"]
    grafana = _binds(grafana_service)
    providers = Path(grafana["/etc/grafana/provisioning/dashboards"])
    assert Path(grafana["/etc/grafana/provisioning/datasources"]).is_dir()
    (provider,) = yaml.safe_load(next(providers.glob("*.yml")).read_text())["providers"]
    dashboards = Path(grafana[provider["options"]["path"]])
    assert (dashboards / "boto.json").is_file()
    env = grafana_service["environment"]
    home = PurePosixPath(env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert (Path(grafana[str(home.parent)]) / home.name).is_file()


def test_grafana_lets_anonymous_viewers_in(resolved):
    """Grafana's anonymous access is on, with the Viewer role only."""
    env = resolved["services"]["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_images_are_pinned_by_version(resolved):
    """Prometheus, Grafana and the Dockerfile's Python 3.11 slim base carry exact versions."""
    for name in ("prometheus", "grafana"):
        image = resolved["services"][name]["image"]
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", image), f"{name} image {image} unpinned"
    base = re.search(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), re.M).group(1)
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), base


def test_dockerfile_installs_and_runs_the_demo():
    """The image installs the package with its demo extra and runs the demo on 0.0.0.0."""
    text = DOCKERFILE.read_text()
    assert re.search(r"^RUN pip install \"\.\[demo\]\"$", text, re.M)
    assert 'CMD ["boto-prom", "demo", "--addr", "0.0.0.0"]' in text


def test_dockerignore_keeps_out_the_clutter_but_not_the_build_inputs():
    """.dockerignore leaves out .git and virtual environments, and none of what COPY needs."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    ignored = lambda path: any(fnmatch.fnmatch(path, p) for p in patterns)  # noqa: E731
    assert ignored(".git") and ignored(".venv")
    copied = [src for line in DOCKERFILE.read_text().splitlines() if line.startswith("COPY ")
              for src in line.split()[1:-1]]
    assert copied
    for src in copied:
        assert (ROOT / src).exists(), src
        assert not ignored(src), f"{src} is copied by the Dockerfile but in .dockerignore"
