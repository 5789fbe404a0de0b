"""Settings: every argument and BOTO_PROM_* variable read, checked and frozen in one place."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess
import sys

import pytest
from prometheus_client import REGISTRY

import boto_prom
from boto_prom import ConfigurationError, settings
from boto_prom.settings import CsvSettings, PushSettings, ServerSettings, Settings
from tests.conftest import HAS_BOTO2
from tests.procs import child_env

needs_boto2 = pytest.mark.skipif(not HAS_BOTO2, reason="boto 2 needs Python 3.11 or older")

ENVIRONMENT = ("BOTO_PROM_DISABLED", "BOTO_PROM_PORT", "BOTO_PROM_ADDR", "BOTO_PROM_WEB_CONFIG",
               "BOTO_PROM_MAX_LABEL_SETS", "BOTO_PROM_CSV", "BOTO_PROM_PUSHGATEWAY",
               "BOTO_PROM_PUSH_JOB", "BOTO_PROM_PUSH_GROUPING_KEY", "BOTO_PROM_PUSH_USERNAME",
               "BOTO_PROM_PUSH_PASSWORD", "BOTO_PROM_PUSH_TIMEOUT", "BOTO_PROM_ALLOWED_SERVICES",
               "BOTO_PROM_IGNORED_ACTIONS", "BOTO_PROM_RUN", "BOTO_PROM_DETAILED_METRICS")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    """Start each test with none of boto-prom's variables set, whatever the shell has."""
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


def one_sentence(exc):
    """True when an error message is one sentence on one line."""
    text = str(exc)
    return "\n" not in text and text.endswith(".")


# --- the whole environment, and arguments over it ---------------------------------------------

def test_resolve_reads_every_variable(monkeypatch, tmp_path):
    """With every BOTO_PROM_* variable set and no arguments, each one lands in the settings."""
    env = {
        "BOTO_PROM_DISABLED": "0",
        "BOTO_PROM_PORT": "9123",
        "BOTO_PROM_ADDR": "127.0.0.2",
        "BOTO_PROM_WEB_CONFIG": str(tmp_path / "env-web.yml"),
        "BOTO_PROM_MAX_LABEL_SETS": "77",
        "BOTO_PROM_CSV": str(tmp_path / "env.csv"),
        "BOTO_PROM_PUSHGATEWAY": "http://127.0.0.1:9091",
        "BOTO_PROM_PUSH_JOB": "nightly",
        "BOTO_PROM_PUSH_GROUPING_KEY": "instance=web1, shard=2",
        "BOTO_PROM_PUSH_USERNAME": "pusher",
        "BOTO_PROM_PUSH_PASSWORD": "push-password-0042",
        "BOTO_PROM_PUSH_TIMEOUT": "7.5",
        "BOTO_PROM_ALLOWED_SERVICES": "s3, ec2",
        "BOTO_PROM_IGNORED_ACTIONS": "HeadObject",
        "BOTO_PROM_RUN": "main",
        "BOTO_PROM_DETAILED_METRICS": "yes",
    }
    assert sorted(env) == sorted(ENVIRONMENT), "the test sets every variable there is"
    for name, val in env.items():
        monkeypatch.setenv(name, val)
    got = settings.resolve()
    assert got.disabled is False
    assert got.server == ServerSettings(addr="127.0.0.2", port=9123,
                                web_config=str(tmp_path / "env-web.yml"))
    assert got.max_label_sets == 77 and got.detailed_metrics is True
    assert got.csv == CsvSettings(os.path.realpath(tmp_path / "env.csv"))
    assert got.push == PushSettings("http://127.0.0.1:9091", "nightly",
                                    (("instance", "web1"), ("shard", "2")), "pusher",
                                    "push-password-0042", 7.5)
    assert got.allowed_services == {"s3", "ec2"} and got.ignored_actions == {"HeadObject"}
    assert got.registry is REGISTRY and got.multiprocess_dir is None
    assert settings.resolve_run("/nowhere") == settings.RunSettings(True, None)


def test_arguments_win_over_the_environment(monkeypatch, tmp_path, registry):
    """An argument given to resolve() wins over its variable, which still fills the rest."""
    monkeypatch.setenv("BOTO_PROM_PORT", "9123")
    monkeypatch.setenv("BOTO_PROM_ADDR", "127.0.0.2")
    monkeypatch.setenv("BOTO_PROM_WEB_CONFIG", str(tmp_path / "env-web.yml"))
    monkeypatch.setenv("BOTO_PROM_MAX_LABEL_SETS", "77")
    monkeypatch.setenv("BOTO_PROM_CSV", str(tmp_path / "env.csv"))
    monkeypatch.setenv("BOTO_PROM_PUSHGATEWAY", "http://127.0.0.1:9091")
    got = settings.resolve(port=0, addr="127.0.0.3", web_config=tmp_path / "arg-web.yml",
                           max_label_sets=5, csv_path=tmp_path / "arg.csv", csv_format="requestlog",
                           registry=registry)
    assert got.server == ServerSettings(addr="127.0.0.3", port=0,
                                web_config=str(tmp_path / "arg-web.yml"))
    assert got.max_label_sets == 5
    assert got.csv == CsvSettings(os.path.realpath(tmp_path / "arg.csv"), "requestlog")
    assert not (tmp_path / "env.csv").exists(), "the variable's file was not even checked"
    assert got.registry is registry
    assert got.push is not None and got.push.gateway == "http://127.0.0.1:9091"


@pytest.mark.parametrize("raw, disabled", [
    ("1", True), ("true", True), ("YES", True), (" on ", True),
    ("", False), ("0", False), ("false", False), ("no", False), ("off", False),
])
def test_disabled_variable(monkeypatch, raw, disabled):
    """BOTO_PROM_DISABLED turns enable into nothing, whatever else is asked for."""
    monkeypatch.setenv("BOTO_PROM_DISABLED", raw)
    monkeypatch.setenv("BOTO_PROM_PORT", "not a port")  # never read once disabled
    if disabled:
        assert settings.resolve(max_label_sets=0) == Settings(disabled=True)
    else:
        with pytest.raises(ConfigurationError, match="BOTO_PROM_PORT must be a port number"):
            settings.resolve()


def test_disabled_variable_that_is_not_a_yes_or_no_is_an_error(monkeypatch):
    """BOTO_PROM_DISABLED=maybe is a ConfigurationError, not a silent yes or no."""
    monkeypatch.setenv("BOTO_PROM_DISABLED", "maybe")
    with pytest.raises(ConfigurationError, match="BOTO_PROM_DISABLED must be one of") as raised:
        settings.resolve()
    assert one_sentence(raised.value)


MULTIPROC = """if True:
    from boto_prom import settings
    got = settings.resolve(port=0)
    print(got.multiprocess_dir, got.server.multiprocess_dir)
    print(settings.resolve_server().multiprocess_dir)
"""


def test_multiprocess_directory_is_read_from_the_environment(tmp_path):
    """PROMETHEUS_MULTIPROC_DIR, set before the program starts, reaches both server settings."""
    done = subprocess.run([sys.executable, "-c", MULTIPROC], capture_output=True, text=True,
                          env=child_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path)), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(tmp_path)] * 3


@pytest.mark.parametrize("name, raw, match", [
    ("BOTO_PROM_PORT", "80a", "BOTO_PROM_PORT must be a port number from 0 to 65535, not '80a'"),
    ("BOTO_PROM_PORT", "70000", "BOTO_PROM_PORT must be a port number"),
    ("BOTO_PROM_MAX_LABEL_SETS", "0", "BOTO_PROM_MAX_LABEL_SETS must be a whole number"),
    ("BOTO_PROM_ALLOWED_SERVICES", "s3,no such", "BOTO_PROM_ALLOWED_SERVICES must be names"),
    ("BOTO_PROM_IGNORED_ACTIONS", ",", "BOTO_PROM_IGNORED_ACTIONS must be names"),
    ("BOTO_PROM_DETAILED_METRICS", "lots", "BOTO_PROM_DETAILED_METRICS must be one of"),
])
def test_bad_variable_is_named_in_one_sentence(monkeypatch, name, raw, match):
    """A bad variable's error names the variable, not the argument it stands for."""
    monkeypatch.setenv(name, raw)
    with pytest.raises(ConfigurationError, match=match) as raised:
        settings.resolve()
    assert one_sentence(raised.value)


@pytest.mark.parametrize("kwargs, setting, says", [
    ({"port": 70000}, "port", "{} must be a port number from 0 to 65535, not 70000."),
    ({"addr": ""}, "addr",
     "{} must be a host name or IP address (like 127.0.0.1 or 0.0.0.0), not ''."),
    ({"max_label_sets": 0}, "max_label_sets", "{} must be a whole number of 1 or more, not 0."),
    ({"allowed_services": "s3"}, "allowed_services",
     "{} must be a list of names like ['s3', 'ec2'], not 's3'."),
    ({"web_config": 3}, "web_config", "{} must be the path of a YAML file, not 3."),
])
def test_a_bad_argument_is_named_as_the_caller_calls_it(kwargs, setting, says):
    """An argument's error names the argument, says which setting it is about, and the same
    sentence names the command line's flag when asked to."""
    with pytest.raises(ConfigurationError) as raised:
        settings.resolve(**kwargs)
    assert raised.value.setting == setting
    assert str(raised.value) == says.format(setting)
    flag = "--" + setting.replace("_", "-")
    assert raised.value.naming({setting: flag}) == says.format(flag)
    assert raised.value.naming({"other": "--other"}) == says.format(setting)


def test_a_bad_variable_keeps_its_name_whatever_the_caller_calls_the_argument(monkeypatch):
    """A variable's error names the variable even for a caller with a flag for the argument it
    stands for: the flag was not what set it."""
    monkeypatch.setenv("BOTO_PROM_PORT", "70000")
    with pytest.raises(ConfigurationError) as raised:
        settings.resolve()
    says = "BOTO_PROM_PORT must be a port number from 0 to 65535, not 70000."
    assert str(raised.value) == raised.value.naming({"port": "--port"}) == says


def test_an_error_about_no_one_setting_is_said_as_it_is():
    """A sentence about no single setting has no setting and reads the same for every caller."""
    with pytest.raises(ConfigurationError) as raised:
        settings.resolve(web_config="web.yml", start_server=False)
    assert raised.value.setting is None
    assert raised.value.naming({"web_config": "--web-config"}) == str(raised.value)


# --- paths ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {"csv_path": "/tmp/boto-prom\0.csv"},
    {"csv_path": pathlib.Path("/tmp/boto-prom\0.csv")},
    {"web_config": "/etc/boto-prom/web\0.yml"},
    {"web_config": pathlib.Path("/etc/boto-prom/web\0.yml")},
])
def test_nul_byte_in_a_path_is_a_configuration_error(kwargs):
    """A NUL byte in csv_path or web_config is a ConfigurationError saying so, not a ValueError
    from deep inside os."""
    with pytest.raises(ValueError) as raised:
        settings.resolve(**kwargs)
    assert type(raised.value) is ConfigurationError
    assert one_sentence(raised.value)
    assert f"{next(iter(kwargs))} must be a file path" in str(raised.value)


@pytest.mark.parametrize("kwargs, match", [
    ({"csv_path": "/tmp/" + "a" * 300 + "/calls.csv"}, "directory of csv_path"),
    ({"csv_path": "/tmp/" + "a" * 300}, "csv_path .* cannot be written"),
    ({"buckets": [1, 10**400]}, "buckets must be a list of numbers"),
])
def test_paths_and_numbers_the_os_refuses_are_one_sentence(kwargs, match):
    """A csv_path the OS refuses to even look at (a name too long) and a bucket too large for
    a float are ConfigurationErrors, not OSError or OverflowError tracebacks."""
    with pytest.raises(ConfigurationError, match=match) as raised:
        settings.resolve(start_server=False, **kwargs)
    assert one_sentence(raised.value) and raised.value.__cause__ is None


# --- the objects ------------------------------------------------------------------------------

@pytest.mark.parametrize("frozen, field", [
    (Settings(), "registry"),
    (Settings(), "csv"),
    (ServerSettings(port=1), "port"),
    (CsvSettings("/tmp/r.csv"), "path"),
    (PushSettings("http://127.0.0.1:9091", "job"), "timeout"),
])
def test_settings_are_frozen(frozen, field):
    """No one downstream can change a setting: assigning a field raises."""
    before = getattr(frozen, field)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(frozen, field, None)
    assert getattr(frozen, field) is before


def test_resolved_settings_are_frozen(registry):
    """What resolve() hands out is frozen too, down to its filters."""
    got = settings.resolve(registry=registry, allowed_services=["s3"], start_server=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.allowed_services = None
    assert got.allowed_services == frozenset({"s3"})
    assert isinstance(got.ignored_actions, frozenset)


def test_push_settings_never_show_the_password():
    """PushSettings' repr, which tracebacks and logs show, leaves the password out."""
    text = repr(PushSettings("http://127.0.0.1:9091", "job", (), "user", "hunter2-0042"))
    assert "hunter2-0042" not in text and "user" in text


# --- filters and limits (moved from test_cardinality.py) --------------------------------------

@needs_boto2
@pytest.mark.parametrize("env, kwargs, match", [
    ({}, {"allowed_services": "s3"}, "allowed_services must be a list of names"),
    ({}, {"allowed_services": ["s3", "bad/name"]}, "allowed_services must hold short names"),
    ({}, {"ignored_actions": 7}, "ignored_actions must be a list of names"),
    ({}, {"max_label_sets": 0}, "max_label_sets must be a whole number"),
    ({}, {"max_label_sets": "many"}, "max_label_sets must be a whole number"),
    ({"BOTO_PROM_MAX_LABEL_SETS": "lots"}, {}, "BOTO_PROM_MAX_LABEL_SETS must be a whole"),
])
def test_bad_limits_are_one_sentence(aws, registry, monkeypatch, env, kwargs, match):
    """Each bad filter or cap fails resolve(), and so enable_metrics, with one sentence,
    leaving the connection."""
    for name, val in env.items():
        monkeypatch.setenv(name, val)
    with pytest.raises(ConfigurationError, match=match) as raised:
        settings.resolve(registry=registry, start_server=False, **kwargs)
    assert "\n" not in str(raised.value)
    conn = aws.ec2()
    with pytest.raises(ConfigurationError, match=match) as raised:
        boto_prom.enable_metrics(conn, registry=registry, start_server=False, **kwargs)
    assert "\n" not in str(raised.value)
    assert conn.request_hook is None


@needs_boto2
def test_cap_from_environment_and_conflicting_caps(aws, registry, monkeypatch):
    """BOTO_PROM_MAX_LABEL_SETS sets the cap; a later call asking for another is an error."""
    monkeypatch.setenv("BOTO_PROM_MAX_LABEL_SETS", "5")
    hook = boto_prom.enable_metrics(aws.ec2(), registry=registry, start_server=False)
    assert hook.recorder.metrics.max_label_sets == 5
    monkeypatch.delenv("BOTO_PROM_MAX_LABEL_SETS")
    boto_prom.enable_metrics(aws.ec2(), registry=registry, start_server=False)
    with pytest.raises(ConfigurationError, match="differs from the cap"):
        boto_prom.enable_metrics(aws.ec2(), registry=registry, start_server=False,
                                 max_label_sets=6)


@pytest.mark.parametrize("raw, expected", [("1", True), ("on", True), ("0", False), ("", None)])
def test_detailed_metrics_from_the_environment(monkeypatch, raw, expected):
    """BOTO_PROM_DETAILED_METRICS is a yes/no variable; unset, the setting is left open."""
    monkeypatch.setenv("BOTO_PROM_DETAILED_METRICS", raw)
    assert settings.resolve().detailed_metrics is expected
    assert settings.resolve(detailed_metrics=not expected).detailed_metrics is (not expected)


def test_detailed_metrics_argument_must_be_a_bool():
    """detailed_metrics="yes" is refused in one sentence."""
    with pytest.raises(ConfigurationError, match="detailed_metrics must be True or False"):
        settings.resolve(detailed_metrics="yes")


def ec2_client(moto_url):
    """A boto3 EC2 client of its own, against moto."""
    import boto3

    return boto3.session.Session().client(
        "ec2", endpoint_url=moto_url, region_name="us-west-2",
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret")


def test_detailed_metrics_conflict_with_the_registrys(registry, moto_url):
    """A registry's detailed_metrics is set by its first enable; asking another is an error."""
    def client():
        return ec2_client(moto_url)

    hook = boto_prom.enable_metrics(client(), registry=registry, start_server=False,
                                    detailed_metrics=True)
    assert hook.recorder.metrics.detailed is True
    boto_prom.enable_metrics(client(), registry=registry, start_server=False)
    with pytest.raises(ConfigurationError, match="detailed_metrics=False differs"):
        boto_prom.enable_metrics(client(), registry=registry, start_server=False,
                                 detailed_metrics=False)


@pytest.mark.parametrize("registry_detailed", [None, False, True])
def test_enabling_again_compares_the_detailed_metrics_in_effect(registry, moto_url,
                                                                registry_detailed):
    """Enabling a client again with the detailed_metrics its registry exports (set, or left
    to the default) returns its hook; the other value is refused."""
    from boto_prom.metrics import metrics_for

    if registry_detailed is not None:
        metrics_for(registry, detailed=registry_detailed)
    in_effect = bool(registry_detailed)
    client = ec2_client(moto_url)
    hook = boto_prom.enable_metrics(client, registry=registry, start_server=False)
    assert hook.recorder.metrics.detailed is in_effect
    assert boto_prom.enable_metrics(client, registry=registry, start_server=False,
                                    detailed_metrics=in_effect) is hook
    with pytest.raises(ConfigurationError, match="with other detailed_metrics") as raised:
        boto_prom.enable_metrics(client, registry=registry, start_server=False,
                                 detailed_metrics=not in_effect)
    assert one_sentence(raised.value)


@needs_boto2
def test_a_hook_made_by_hand_reads_the_detailed_metrics_variable(aws, registry, moto_url,
                                                                 monkeypatch):
    """With BOTO_PROM_DETAILED_METRICS=1, BotoRequestHook(registry=r) builds detailed metrics,
    so a later enable_metrics(client, registry=r) that passes nothing agrees with it."""
    from boto_prom.boto2 import BotoRequestHook

    monkeypatch.setenv("BOTO_PROM_DETAILED_METRICS", "1")
    hook = BotoRequestHook(registry=registry)
    assert hook.recorder.metrics.detailed is True
    enabled = boto_prom.enable_metrics(ec2_client(moto_url), registry=registry,
                                       start_server=False)
    assert enabled.recorder.metrics is hook.recorder.metrics
    # On its connection, the hand-made hook is kept for the same value, refused for the other.
    conn = aws.ec2()
    conn.set_request_hook(hook)
    assert boto_prom.enable_metrics(conn, registry=registry, start_server=False,
                                    detailed_metrics=True) is hook
    with pytest.raises(ConfigurationError, match="with other detailed_metrics"):
        boto_prom.enable_metrics(conn, registry=registry, start_server=False,
                                 detailed_metrics=False)


def test_a_detailed_metrics_conflict_names_the_variable_it_may_come_from(registry, moto_url,
                                                                          monkeypatch):
    """A registry built without detailed metrics, then BOTO_PROM_DETAILED_METRICS=1 and an
    enable that passes nothing: the one-sentence error names the variable."""
    from boto_prom.metrics import metrics_for

    metrics_for(registry, detailed=False)
    monkeypatch.setenv("BOTO_PROM_DETAILED_METRICS", "1")
    with pytest.raises(ConfigurationError, match="BOTO_PROM_DETAILED_METRICS") as raised:
        boto_prom.enable_metrics(ec2_client(moto_url), registry=registry, start_server=False)
    assert one_sentence(raised.value)
    assert "pass detailed_metrics=False" in str(raised.value)


# --- pushing (moved from test_push.py: the checks live here now) ------------------------------

@pytest.mark.parametrize("env, match", [
    ({"BOTO_PROM_PUSHGATEWAY": "http://[::1"}, "malformed host or a port"),
    ({"BOTO_PROM_PUSHGATEWAY": "http://127.0.0.1:abc"}, "malformed host or a port"),
    ({"BOTO_PROM_PUSHGATEWAY": "http://127.0.0.1:99999"}, "from 1 to 65535"),
    ({"BOTO_PROM_PUSHGATEWAY": "http://127.0.0.1:0"}, "from 1 to 65535"),
    ({"BOTO_PROM_PUSHGATEWAY": "http://u:secret@127.0.0.1:abc"}, "malformed host"),
    ({"BOTO_PROM_PUSH_TIMEOUT": "1e10"}, "at most 600"),
    ({"BOTO_PROM_PUSH_TIMEOUT": "nan"}, "BOTO_PROM_PUSH_TIMEOUT"),
    ({"BOTO_PROM_PUSH_GROUPING_KEY": "job=x"}, "other than 'job'"),
])
def test_bad_push_variables_are_refused_without_side_effects(monkeypatch, registry, env, match):
    """resolve() raises one sentence for each bad push variable and arranges nothing (no push
    pending, no exit handler registered)."""
    import atexit

    from boto_prom import push

    registered = []
    monkeypatch.setattr(atexit, "register", lambda *args: registered.append(args))
    monkeypatch.setenv("BOTO_PROM_PUSHGATEWAY", "http://127.0.0.1:9091")
    for name, val in env.items():
        monkeypatch.setenv(name, val)
    with pytest.raises(ConfigurationError, match=match) as raised:
        settings.resolve(registry=registry, start_server=False)
    assert "\n" not in str(raised.value) and "secret" not in str(raised.value)
    assert str(raised.value).count(". ") == 0 and str(raised.value).endswith(".")
    assert push.pending_exit_push() is None and registered == []


def test_push_variables_are_returned_as_settings(monkeypatch, registry):
    """Good push variables come back parsed; an unset gateway is None; nothing is arranged."""
    from boto_prom import push

    assert settings.resolve(registry=registry, start_server=False).push is None
    monkeypatch.setenv("BOTO_PROM_PUSHGATEWAY", "http://127.0.0.1:9091")
    monkeypatch.setenv("BOTO_PROM_PUSH_JOB", "nightly")
    monkeypatch.setenv("BOTO_PROM_PUSH_GROUPING_KEY", "instance=a")
    monkeypatch.setenv("BOTO_PROM_PUSH_TIMEOUT", "600")
    got = settings.resolve(registry=registry, start_server=False).push
    assert got == PushSettings("http://127.0.0.1:9091", "nightly", (("instance", "a"),),
                               None, None, 600.0)
    assert push.pending_exit_push() is None


def test_resolve_push_arguments_win_over_the_job_variable(monkeypatch):
    """resolve_push() takes job= over BOTO_PROM_PUSH_JOB, and the variable without one."""
    monkeypatch.setenv("BOTO_PROM_PUSH_JOB", "from-env")
    assert settings.resolve_push("http://127.0.0.1:9091").job == "from-env"
    assert settings.resolve_push("http://127.0.0.1:9091", job="by-arg").job == "by-arg"


def test_default_job_is_the_script_name(monkeypatch):
    """Without BOTO_PROM_PUSH_JOB the job is the script's name, sanitised."""
    monkeypatch.delenv("BOTO_PROM_PUSH_JOB", raising=False)
    monkeypatch.setattr("sys.argv", [os.path.join("opt", "jobs", "nightly backup.py")])
    assert settings.default_job() == "nightly_backup"
    monkeypatch.setattr("sys.argv", ["-c"])
    assert settings.default_job() == "boto_prom"


# --- boto-prom run ----------------------------------------------------------------------------

@pytest.mark.parametrize("own, sent, kept", [
    (None, "HOOK", None),
    ("", "HOOK", None),
    ("/a{sep}/b", "HOOK{sep}/a{sep}/b", "/a{sep}/b"),
    ("HOOK{sep}/a", "HOOK{sep}/a", "/a"),
    ("/a{sep}{sep}/b", "HOOK{sep}/a{sep}{sep}/b", "/a{sep}{sep}/b"),
])
def test_run_puts_the_hook_first_on_pythonpath_and_takes_it_back(monkeypatch, tmp_path, own,
                                                                 sent, kept):
    """run_environment puts the hook's directory first on PYTHONPATH once (never an empty
    entry, which would add the working directory), and resolve_run gives the program's own
    PYTHONPATH back."""
    hook = str(tmp_path)

    def fill(text):
        return None if text is None else text.replace("HOOK", hook).replace("{sep}", os.pathsep)

    if own is None:
        monkeypatch.delenv("PYTHONPATH", raising=False)
    else:
        monkeypatch.setenv("PYTHONPATH", fill(own))
    env = settings.run_environment({"BOTO_PROM_PORT": "9999"}, hook)
    assert env["PYTHONPATH"] == fill(sent)
    assert env["BOTO_PROM_PORT"] == "9999" and env["BOTO_PROM_RUN"] == "main"
    assert "BOTO_PROM_PORT" not in os.environ, "this process's environment is left alone"
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])
    monkeypatch.setenv("BOTO_PROM_RUN", "child")
    assert settings.resolve_run(hook) == settings.RunSettings(False, fill(kept))
