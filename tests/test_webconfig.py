"""TLS and basic auth on /metrics from the exporter-toolkit web config: real HTTPS clients,
the real promtool as the judge of which files are bad, and a real Prometheus scraping us."""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

import boto_prom
from boto_prom import ConfigurationError
from boto_prom.webconfig import load_web_config
from tests.conftest import HAS_BOTO2, require_binary
from tests.procs import free_port, get, poll, start_binary, stop

bcrypt = pytest.importorskip("bcrypt")
pytest.importorskip("yaml")
pytest.importorskip("cryptography")

USER, PASSWORD = "prometheus", "right-password"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, server and client certificates in a directory of their own."""
    from tests.pki import make_pki

    directory = tmp_path_factory.mktemp("pki")
    files = make_pki(str(directory))
    files["dir"] = str(directory)
    files["hash"] = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    return files


def write_config(pki, text, name="web.yml"):
    """A web config file next to the certificates (so relative paths resolve there)."""
    path = os.path.join(pki["dir"], name)
    with open(path, "w") as f:
        f.write(text)
    return path


def tls_config(pki, mtls=False, users=True):
    text = ("tls_server_config:\n  cert_file: server_cert.pem\n  key_file: server_key.pem\n")
    if mtls:
        text += "  client_ca_file: ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n"
    text += ("http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
             "    Strict-Transport-Security: max-age=31536000\n")
    if users:
        text += f"basic_auth_users:\n  {USER}: '{pki['hash']}'\n"
    return text


def client_context(pki, cert=None):
    context = ssl.create_default_context(cafile=pki["ca"])
    if cert:
        context.load_cert_chain(pki[f"{cert}_cert"], pki[f"{cert}_key"])
    return context


def fetch(url, context, user=None, password=None):
    """(status, headers, body) of a GET; 4xx answers are returned, not raised."""
    headers = {}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(
            f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode()


needs_boto2 = pytest.mark.skipif(not HAS_BOTO2, reason="boto 2 needs Python 3.11 or older")


@pytest.fixture
def secured(aws, registry, pki, monkeypatch):
    """An EC2 connection with metrics served over HTTPS behind basic auth (via the env var)."""
    monkeypatch.setenv("BOTO_PROM_WEB_CONFIG", write_config(pki, tls_config(pki)))
    conn = aws.ec2()
    hook = boto_prom.enable_metrics(conn, port=0, registry=registry)
    conn.get_all_volumes()
    return hook


@needs_boto2
def test_basic_auth_over_https(secured, pki):
    """No credentials, a wrong password or an unknown user get 401; the right password 200."""
    url = secured.server.url
    assert url.startswith("https://127.0.0.1:")
    context = client_context(pki)
    status, headers, _ = fetch(url, context)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    assert fetch(url, context, USER, "wrong-password")[0] == 401
    assert fetch(url, context, "mallory", PASSWORD)[0] == 401
    assert fetch(url.replace("/metrics", "/healthz"), context)[0] == 401
    status, headers, body = fetch(url, context, USER, PASSWORD)
    assert status == 200 and 'action="DescribeVolumes"' in body
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Strict-Transport-Security"] == "max-age=31536000"
    assert fetch(url, context, USER, PASSWORD)[0] == 200, "and again, from the cache"


@needs_boto2
def test_plain_http_to_the_tls_port_fails(secured):
    """A plain-HTTP request to the TLS port fails with a 400 that says to use HTTPS (as Go's
    exporters answer), and is never served."""
    connection = http.client.HTTPConnection("127.0.0.1", secured.server.port, timeout=10)
    connection.request("GET", "/metrics")
    response = connection.getresponse()
    assert response.status == 400
    assert response.read() == b"Client sent an HTTP request to an HTTPS server.\n"
    assert response.getheader("Connection") == "close"
    connection.close()


@needs_boto2
def test_mutual_tls(aws, registry, pki):
    """With RequireAndVerifyClientCert, no certificate or an untrusted one fails; ours works."""
    path = write_config(pki, tls_config(pki, mtls=True, users=False), "mtls.yml")
    hook = boto_prom.enable_metrics(aws.ec2(), port=0, registry=registry, web_config=path)
    url = hook.server.url
    for cert in (None, "stranger"):
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            fetch(url, client_context(pki, cert))
    status, _, body = fetch(url, client_context(pki, "client"))
    assert status == 200 and "boto_prom_build_info" in body


@needs_boto2
def test_server_reuse_needs_the_same_web_config(aws, registry, pki):
    """A second enable with the same file reuses the server; another file is an error."""
    path = write_config(pki, tls_config(pki), "reuse.yml")
    first = boto_prom.enable_metrics(aws.ec2(), port=0, registry=registry, web_config=path)
    port = first.server.port
    second = boto_prom.enable_metrics(aws.ec2(), port=port, registry=registry, web_config=path)
    assert first.server is second.server
    with pytest.raises(ConfigurationError, match="already runs with other settings"):
        boto_prom.enable_metrics(aws.ec2(), port=port, registry=registry)
    with pytest.raises(ConfigurationError, match="start_server=False"):
        boto_prom.enable_metrics(aws.ec2(), registry=registry, web_config=path,
                                 start_server=False)


def _auth(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_verified_credentials_are_cached_and_failures_are_not(pki):
    """One bcrypt check per verified password; every failed attempt (known user or not) pays."""
    config = load_web_config(write_config(pki, tls_config(pki), "cache.yml"))
    calls = []
    real = config._checkpw
    config._checkpw = lambda password, hashed: calls.append(hashed) or real(password, hashed)
    for _ in range(5):
        assert config.check(_auth(USER, PASSWORD))
    assert len(calls) == 1
    for _ in range(3):
        assert not config.check(_auth(USER, "wrong"))
        assert not config.check(_auth("nobody", PASSWORD))
    assert len(calls) == 7, "failures are checked by bcrypt every time, never cached"
    assert calls[-1] != pki["hash"].encode(), "an unknown user is checked against a dummy hash"
    for header in (None, "", "Bearer x", "Basic !!!", "Basic " + base64.b64encode(b"nocolon")
                   .decode(), _auth(USER, "x" * 100)):
        assert not config.check(header)


def test_credential_cache_is_bounded(pki):
    """Twenty users verified in turn leave at most 16 cached; the oldest pays bcrypt again."""
    users = {f"user{i}": bcrypt.hashpw(f"pw{i}".encode(), bcrypt.gensalt(rounds=4)).decode()
             for i in range(20)}
    text = "basic_auth_users:\n" + "".join(f"  {u}: '{h}'\n" for u, h in users.items())
    config = load_web_config(write_config(pki, text, "many.yml"))
    calls = []
    real = config._checkpw
    config._checkpw = lambda password, hashed: calls.append(1) or real(password, hashed)
    for i in range(20):
        assert config.check(_auth(f"user{i}", f"pw{i}"))
    assert len(config._verified) == 16
    assert config.check(_auth("user19", "pw19")) and len(calls) == 20
    assert config.check(_auth("user0", "pw0")) and len(calls) == 21


# --- the same verdicts as promtool ------------------------------------------------------------

BAD = {
    "hash_not_bcrypt": "basic_auth_users:\n  alice: notahash\n",
    "hash_null": "basic_auth_users:\n  alice:\n",
    "hash_bad_prefix": "basic_auth_users:\n  a: 'x2b$12$abcdefghijklmnopqrstuu5NtYhrhv3Xv2gZ1H1yY.yqQ5tVbqHd6'\n",
    "hash_cost_99": "basic_auth_users:\n  a: '$2b$99$abcdefghijklmnopqrstuu5NtYhrhv3Xv2gZ1H1yY.yqQ5tVbqHd6'\n",
    "hash_cost_3": "basic_auth_users:\n  a: '$2b$03$abcdefghijklmnopqrstuu5NtYhrhv3Xv2gZ1H1yY.yqQ5tVbqHd6'\n",
    "hash_version_3": "basic_auth_users:\n  a: '$3b$12$abcdefghijklmnopqrstuu5NtYhrhv3Xv2gZ1H1yY.yqQ5tVbqHd6'\n",
    "users_a_list": "basic_auth_users: [a, b]\n",
    "header_not_allowed": "http_server_config:\n  headers:\n    X-Foo: bar\n",
    "header_lowercase": "http_server_config:\n  headers:\n    strict-transport-security: x\n",
    "header_bad_value": "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n",
    "header_bad_frame": "http_server_config:\n  headers:\n    X-Frame-Options: nope\n",
    "headers_a_list": "http_server_config:\n  headers: [a]\n",
    "http2_not_bool": "http_server_config:\n  http2: maybe\n",
    "unknown_field": "unknown_key: 1\n",
    "newer_field": "rate_limit:\n  burst: 1\n",
    "unknown_tls_field": "tls_server_config:\n  client_allowed_sans: [a]\n",
    "duplicate_key": "basic_auth_users:\n  a: x\nbasic_auth_users:\n  b: y\n",
    "not_yaml": "tls_server_config: [: bad\n",
    "a_list": "- a\n- b\n",
    "a_scalar": "hello\n",
    "cert_without_key": "tls_server_config:\n  cert_file: server_cert.pem\n",
    "client_auth_without_cert": "tls_server_config:\n  client_auth_type: RequireAndVerifyClientCert\n",
    "missing_files": "tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n",
    "key_does_not_match": "tls_server_config:\n  cert_file: server_cert.pem\n  key_file: client_key.pem\n",
    "cert_not_pem": "tls_server_config:\n  cert_file: web.yml\n  key_file: server_key.pem\n",
    "bad_client_auth": ("tls_server_config:\n  cert_file: server_cert.pem\n  key_file: server_key.pem\n"
                        "  client_auth_type: Bogus\n"),
    "ca_without_client_auth": ("tls_server_config:\n  cert_file: server_cert.pem\n"
                               "  key_file: server_key.pem\n  client_ca_file: ca.pem\n"),
    "bad_tls_version": "tls_server_config:\n  min_version: TLS99\n",
    "bad_cipher": "tls_server_config:\n  cipher_suites: [FOO]\n",
    "bad_curve": "tls_server_config:\n  curve_preferences: [Foo]\n",
}

GOOD = {
    "empty": "",
    "all_nulls": "tls_server_config: ~\nhttp_server_config: ~\nbasic_auth_users: ~\n",
    "every_header": ("http_server_config:\n  http2: false\n  headers:\n"
                     "    Strict-Transport-Security: max-age=31536000\n"
                     "    X-Content-Type-Options: nosniff\n    X-Frame-Options: deny\n"
                     "    X-XSS-Protection: '1; mode=block'\n"
                     "    Content-Security-Policy: \"default-src 'self'\"\n"),
    "tls_only": "tls_server_config:\n  cert_file: server_cert.pem\n  key_file: server_key.pem\n",
    "tls_options": ("tls_server_config:\n  cert_file: server_cert.pem\n  key_file: server_key.pem\n"
                    "  min_version: TLS12\n  max_version: TLS13\n  prefer_server_cipher_suites: false\n"
                    "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n"),
    "mtls": ("tls_server_config:\n  cert_file: server_cert.pem\n  key_file: server_key.pem\n"
             "  client_ca_file: ca.pem\n  client_auth_type: VerifyClientCertIfGiven\n"),
}


def test_bad_files_are_rejected_by_promtool_and_by_us(pki):
    """Every file promtool check web-config rejects, we reject at load, in one sentence."""
    promtool = require_binary("promtool")
    for name, text in BAD.items():
        path = write_config(pki, text.replace("web.yml", "bad-cert.yml"), f"bad-{name}.yml")
        if name == "cert_not_pem":
            write_config(pki, "not a certificate\n", "bad-cert.yml")
        verdict = subprocess.run([promtool, "check", "web-config", path], capture_output=True,
                                 text=True, timeout=30)
        assert verdict.returncode != 0, f"{name}: promtool accepted it"
        with pytest.raises(ConfigurationError) as raised:
            load_web_config(path)
        message = str(raised.value)
        assert "\n" not in message and message.endswith("."), f"{name}: {message}"
        assert message.startswith(f"web config {path}: "), message


def test_good_files_are_accepted_by_promtool_and_by_us(pki):
    """The files promtool accepts (within what Python's ssl can serve) load here too."""
    promtool = require_binary("promtool")
    for name, text in dict(GOOD, users=f"basic_auth_users:\n  {USER}: '{pki['hash']}'\n").items():
        path = write_config(pki, text, f"good-{name}.yml")
        verdict = subprocess.run([promtool, "check", "web-config", path], capture_output=True,
                                 text=True, timeout=30)
        assert verdict.returncode == 0, f"{name}: {verdict.stdout}{verdict.stderr}"
        config = load_web_config(path)
        assert (config.ssl_context is not None) == ("cert_file" in text), name


def test_settings_python_cannot_serve_are_refused_not_ignored(pki):
    """RequestClientCert, curve_preferences and a header that is not ASCII pass promtool but
    are refused with a reason (a header h11 cannot send would fail every answer)."""
    base = "tls_server_config:\n  cert_file: server_cert.pem\n  key_file: server_key.pem\n"
    for extra, match in (("  client_auth_type: RequestClientCert\n", "without verifying"),
                         ("  curve_preferences: [X25519]\n", "curve_preferences cannot"),
                         ("http_server_config:\n  headers:\n    Content-Security-Policy: "
                          "\"default-src 'self' caf\u00e9\"\n", "must be ASCII")):
        with pytest.raises(ConfigurationError, match=match):
            load_web_config(write_config(pki, base + extra, "refused.yml"))


def test_missing_dependencies_are_one_sentence(pki, monkeypatch):
    """Without PyYAML a web config fails with the pip command that fixes it."""
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(ConfigurationError, match=r"boto-prom\[production\]"):
        load_web_config(write_config(pki, GOOD["empty"], "deps.yml"))


# --- a real Prometheus ---------------------------------------------------------------------

@needs_boto2
def test_real_prometheus_scrapes_over_mtls_with_basic_auth(aws, registry, pki, tmp_path):
    """Prometheus with basic_auth and tls_config (CA and client certificate) finds us up."""
    prometheus = require_binary("prometheus")
    path = write_config(pki, tls_config(pki, mtls=True), "prom-target.yml")
    hook = boto_prom.enable_metrics(aws.ec2(), port=0, registry=registry, web_config=path)
    hook_conn_calls = aws.ec2()
    hook_conn_calls.set_request_hook(hook)
    hook_conn_calls.get_all_volumes()
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{
            "job_name": "boto",
            "scheme": "https",
            "basic_auth": {"username": USER, "password": PASSWORD},
            "tls_config": {"ca_file": pki["ca"], "cert_file": pki["client_cert"],
                           "key_file": pki["client_key"]},
            "static_configs": [{"targets": [f"127.0.0.1:{hook.server.port}"]}],
        }],
    }))
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v1"
    proc = start_binary([prometheus, f"--config.file={config}",
                         f"--storage.tsdb.path={tmp_path / 'data'}",
                         f"--web.listen-address=127.0.0.1:{port}"], f"{api}/status/buildinfo",
                        timeout=60)
    try:
        def target_up():
            targets = json.loads(get(f"{api}/targets"))["data"]["activeTargets"]
            if targets and targets[0]["health"] == "up":
                return targets[0]
            return None

        target = poll(target_up, 60, "Prometheus scraping boto-prom")
        assert target["lastError"] == ""
        assert target["scrapeUrl"].startswith("https://")

        def volumes():
            result = json.loads(get(f"{api}/query?query=boto_requests_total"))["data"]["result"]
            return result or None

        series = poll(volumes, 30, "boto_requests_total in Prometheus")
        assert series[0]["metric"]["action"] == "DescribeVolumes"
    finally:
        stop(proc)


def test_cached_password_is_answered_during_a_wrong_password_storm(pki, registry):
    """32 clients looping on wrong passwords (each a full bcrypt check, here cost 10) do not
    queue a remembered password behind them: it is answered in well under a second, and the
    storm's own answers are all 401s."""
    from boto_prom.exposition import MetricsServer

    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    text = tls_config(pki, users=False) + f"basic_auth_users:\n  {USER}: '{hashed}'\n"
    config = load_web_config(write_config(pki, text, "storm.yml"))
    server = MetricsServer("127.0.0.1", 0, registry, web_config=config)
    context = client_context(pki)
    try:
        assert fetch(server.url, context, USER, PASSWORD)[0] == 200  # pays bcrypt once
        stop, statuses = time.monotonic() + 4, []

        def storm():
            while time.monotonic() < stop:
                statuses.append(fetch(server.url, context, USER, "wrong")[0])

        threads = [threading.Thread(target=storm, daemon=True) for _ in range(32)]
        for thread in threads:
            thread.start()
        time.sleep(1)  # the bcrypt queue is full by now
        slowest = 0.0
        while time.monotonic() < stop - 0.5:
            started = time.monotonic()
            assert fetch(server.url, context, USER, PASSWORD)[0] == 200
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.2)
        for thread in threads:
            thread.join(timeout=30)
    finally:
        server.shutdown()
    assert slowest < 1.0, slowest
    assert statuses and set(statuses) <= {401, 503}, set(statuses)
