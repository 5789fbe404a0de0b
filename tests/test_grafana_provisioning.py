"""grafana/provisioning: the Prometheus datasource and the dashboard provider Grafana loads."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources"
DASHBOARD_PROVIDERS = ROOT / "grafana" / "provisioning" / "dashboards"
PROMETHEUS_CONFIG = ROOT / "prometheus" / "prometheus.yml"


def _one_yaml(folder: Path) -> dict:
    files = sorted(folder.glob("*.yml"))
    assert len(files) == 1, f"expected one .yml file in {folder}, found {files}"
    return yaml.safe_load(files[0].read_text())


def test_datasource_is_prometheus_with_a_fixed_uid():
    """The provisioned datasource is the default Prometheus, with a fixed uid, at the compose
    service."""
    config = _one_yaml(DATASOURCES)
    assert config["apiVersion"] == 1
    (source,) = config["datasources"]
    assert source["type"] == "prometheus"
    assert source["uid"] == "boto-prom-prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source["access"] == "proxy"
    assert source["isDefault"] is True


def test_datasource_time_interval_is_the_scrape_interval():
    """timeInterval equals Prometheus's scrape interval, so $__rate_interval spans 4 scrapes."""
    source = _one_yaml(DATASOURCES)["datasources"][0]
    prometheus = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    intervals = {job.get("scrape_interval", prometheus["global"]["scrape_interval"])
                 for job in prometheus["scrape_configs"]}
    assert intervals == {source["jsonData"]["timeInterval"]}


def test_dashboard_provider_reads_files():
    """The dashboard provider is a file provider (apiVersion 1) that keeps the repository's JSON
    as the source of truth."""
    config = _one_yaml(DASHBOARD_PROVIDERS)
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["allowUiUpdates"] is False
    assert provider["options"]["path"].startswith("/")
