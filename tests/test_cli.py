"""The boto-prom command: the demo runs, serves real metrics, and ends cleanly; run and serve
parse their arguments."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from boto_prom.cli import main
from boto_prom.demo import aiobotocore_imports, sdks_line
from tests.conftest import HAS_BOTO2
from tests.procs import busy_port, child_env

# The demo here: boto 2 beside boto3 where boto 2 imports, boto3 alone where not (aiobotocore
# too, where it is installed).
SDKS = sdks_line(HAS_BOTO2, aiobotocore_imports())


def test_demo_runs_for_its_duration_and_reports():
    """python -m boto_prom demo --duration 3 says which SDKs it drives, prints progress and a
    final line, and exits 0."""
    result = subprocess.run(
        [sys.executable, "-m", "boto_prom", "demo", "--port", "0", "--duration", "3",
         "--rate", "40"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"boto-prom demo: {SDKS} to moto on http://127.0.0.1:")
    assert "metrics on http://127.0.0.1:" in first
    final = re.search(r"done: requests (\d+) .*errors (\d+) .*p50 ([\d.]+) ms +p99 ([\d.]+) ms",
                      result.stderr)
    assert final, result.stderr
    requests, errors = int(final.group(1)), int(final.group(2))
    assert requests >= 60 and 0 < errors < requests


def _ignore_sigint():
    """In the child before exec: SIGINT ignored, as a shell leaves it for a job started with &."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def demo_process(rate, sigint_ignored=False):
    """``python -m boto_prom demo`` in a session of its own (inheriting SIGINT ignored, when
    asked), killed if a test leaves it running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "boto_prom", "demo", "--port", "0", "--rate", str(rate)],
        stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        preexec_fn=_ignore_sigint if sigint_ignored else None)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def assert_ended_cleanly(proc):
    """The demo exits 0 with its summary line and no traceback."""
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "done: requests" in err and "Traceback" not in err


def test_demo_serves_metrics_and_stops_on_ctrl_c():
    """While the demo runs its /metrics has traffic from five services (boto 2 and boto3, or
    boto3 alone); SIGINT ends it."""
    with demo_process(rate=100) as proc:
        line = proc.stderr.readline()
        url = re.search(r"metrics on (\S+)", line).group(1)
        deadline = time.monotonic() + 30
        services = set()
        while time.monotonic() < deadline and len(services) < 5:
            body = urllib.request.urlopen(url, timeout=5).read().decode()
            services = set(re.findall(r'boto_requests_total\{[^}]*aws_service="(\w+)"', body))
            time.sleep(0.2)
        assert services == {"ec2", "s3", "dynamodb", "iam", "sqs"}
        proc.send_signal(signal.SIGINT)
        assert_ended_cleanly(proc)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_demo_started_with_sigint_ignored_stops_on_a_signal(signum):
    """Started as a background job is (SIGINT inherited as ignored), the demo still ends with
    its summary line and exit 0 on SIGINT, and on SIGTERM."""
    with demo_process(rate=50, sigint_ignored=True) as proc:
        assert "metrics on" in proc.stderr.readline()
        proc.stderr.readline()  # "Ctrl-C to stop."
        proc.stderr.readline()  # the first progress line: the workload runs
        proc.send_signal(signum)
        assert_ended_cleanly(proc)


def test_demo_ends_cleanly_on_two_interrupts_at_once():
    """SIGINT sent to the demo and then to its process group (as timeout does, or a Ctrl-C
    pressed twice) still ends it with its summary line and exit 0."""
    with demo_process(rate=50) as proc:
        assert "metrics on" in proc.stderr.readline()
        proc.stderr.readline()  # "Ctrl-C to stop."
        proc.stderr.readline()  # the first progress line: the workload runs
        os.kill(proc.pid, signal.SIGINT)
        time.sleep(0.05)  # the second lands while the demo sums up and cleans up
        os.killpg(proc.pid, signal.SIGINT)
        assert_ended_cleanly(proc)


def test_demo_busy_port_is_one_sentence(capsys):
    """A busy metrics port ends the demo with exit 2 and one sentence, no traceback."""
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert main(["demo", "--port", str(port), "--duration", "1"]) == 2
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is already in use" in err
    assert "as --port=N" in err and "--port=0" in err and err.count("\n") == 1
    assert "Traceback" not in err and "On the command line" not in err


@pytest.mark.parametrize("duration", ["-1", "nan", "inf"])
def test_bad_arguments_exit_2(duration, capsys):
    """A negative, NaN or infinite duration is refused by the argument parser."""
    with pytest.raises(SystemExit) as raised:
        main(["demo", "--duration", duration])
    assert raised.value.code == 2


@pytest.mark.parametrize("text, expected", [
    (":9875", ("0.0.0.0", 9875)),
    ("127.0.0.1:0", ("127.0.0.1", 0)),
    ("[::1]:9875", ("::1", 9875)),
    ("localhost:65535", ("localhost", 65535)),
    (None, (None, None)),
])
def test_listen_address_in_the_prometheus_form(text, expected):
    """--web.listen-address is [HOST]:PORT; an empty host is every interface."""
    from boto_prom.cli import _listen_address

    assert _listen_address(text) == expected


@pytest.mark.parametrize("text", ["9875", ":http", "host:65536", "host:-1", ""])
def test_bad_listen_address_is_a_configuration_error(text):
    """A listen address without a port number is refused in one sentence."""
    from boto_prom import ConfigurationError
    from boto_prom.cli import _listen_address

    with pytest.raises(ConfigurationError, match="--web.listen-address must be"):
        _listen_address(text)


def serve_refused(*flags):
    """boto-prom serve run with flags, expected to refuse them: its stderr."""
    done = subprocess.run([sys.executable, "-m", "boto_prom", "serve", *flags],
                          capture_output=True, text=True, env=child_env(), timeout=60)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    return done.stderr


def test_serve_busy_port_is_said_in_the_listen_address_form(tmp_path):
    """A taken port ends serve with one sentence in --web.listen-address's own [HOST]:PORT form
    (not --web.listen-address=N), without the advice for programs that call the API."""
    with busy_port() as port:
        err = serve_refused(f"--web.listen-address=127.0.0.1:{port}",
                            f"--multiprocess.dir={tmp_path}")
    assert err == (f"boto-prom: port {port} on 127.0.0.1 is already in use; pass "
                   "--web.listen-address=[HOST]:PORT with a free PORT, or PORT 0 to let the "
                   "system pick one.\n")


def test_serve_bad_host_names_the_flags_host(tmp_path):
    """A host serve cannot bind is named as --web.listen-address's host, with no advice for
    programs that call the API."""
    err = serve_refused("--web.listen-address=no-such-host.invalid:0",
                        f"--multiprocess.dir={tmp_path}")
    assert err == ("boto-prom: --web.listen-address's host 'no-such-host.invalid' is not an "
                   "address or host name this machine can bind; pass one such as 127.0.0.1 or "
                   "0.0.0.0 (or set BOTO_PROM_ADDR).\n")


@pytest.mark.parametrize("argv", [["run"], ["run", "--"], ["run", "--port", "1"]])
def test_run_without_a_command_is_a_usage_error(argv, capsys):
    """boto-prom run with no command exits 2 and says how to call it."""
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    assert "boto-prom run [options] -- COMMAND" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["run", "--help"],
                                  ["serve", "--help"]])
def test_help_is_plain_text(argv, capsys):
    """Every --help is plain text: no reStructuredText markup from a docstring."""
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: boto-prom")
    for markup in ("``", ":func:", ":meth:", ":mod:", ":class:", "**"):
        assert markup not in out


@pytest.mark.parametrize("argv, says", [
    (["demo", "--port", "99999"], "--port must be a port number from 0 to 65535, not 99999."),
    (["run", "--addr", " 127.0.0.1", "--", "true"],
     "--addr must be a host name or IP address (like 127.0.0.1 or 0.0.0.0), not ' 127.0.0.1'."),
    (["run", "--max-label-sets", "0", "--", "true"],
     "--max-label-sets must be a whole number of 1 or more, not 0."),
    (["run", "--ignored-actions", "Get/Object", "--", "true"],
     "--ignored-actions must hold short names of letters, digits, '-', '_' or '.', "
     "not 'Get/Object'."),
    (["run", "--push", "http://gateway:9091", "--grouping-key", "shard", "--", "true"],
     "--grouping-key must be name=value pairs separated by commas, like instance=web1,shard=2, "
     "not 'shard'."),
    (["run", "--push", "http://gateway:9091", "--grouping-key", "job=x", "--", "true"],
     "--grouping-key names must be label names other than 'job', not 'job'."),
    (["serve", "--web.listen-address", "127.0.0.1:0"],
     "serving every process's metrics needs the directory the workers record into; set "
     "PROMETHEUS_MULTIPROC_DIR (or pass --multiprocess.dir)."),
])
def test_a_bad_flag_is_named_as_a_flag(argv, says, capsys, monkeypatch):
    """A bad value given on the command line is refused in one sentence naming its flag, with
    no hint appended, before anything starts."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert main(argv) == 2
    assert capsys.readouterr().err == f"boto-prom: {says}\n"


def test_a_bad_csv_flag_is_named_as_a_flag(tmp_path, capsys):
    """--csv in a missing directory names --csv, not the API's csv_path."""
    missing = tmp_path / "missing"
    assert main(["run", "--csv", str(missing / "calls.csv"), "--", "true"]) == 2
    assert capsys.readouterr().err == (
        f"boto-prom: the directory of --csv, {missing}, does not exist; create it or give "
        "--csv a file in an existing directory.\n")


@pytest.mark.parametrize("argv", [["run", "--", "true"], ["run", "--addr", "0.0.0.0", "--",
                                                          "true"]])
def test_a_bad_variable_is_named_as_the_variable(argv, capsys, monkeypatch):
    """A bad value from the environment is named by its variable, also when the command has a
    flag for that setting, and no flag is hinted at."""
    monkeypatch.setenv("BOTO_PROM_PORT", "nine")
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "boto-prom: BOTO_PROM_PORT must be a port number from 0 to 65535, not 'nine'.\n")
