"""boto-prom run and boto-prom serve, as real processes: moto on loopback, a real Pushgateway,
real multiprocessing pools; every wait bounded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import HAS_BOTO2, require_binary
from tests.procs import (busy_port, child_env, free_port, get, poll, read_line,
                         start_pushgateway, stop)

BOTO_PROM = os.path.join(os.path.dirname(sys.executable), "boto-prom")
CALLS = 5
LIST_BUCKETS = dict(aws_service="s3", aws_region="us-east-1", action="ListBuckets",
                    status_code="200")

# A boto3 program that knows nothing of boto-prom: CALLS S3 ListBuckets against moto, then
# exits, waits for stdin to close, raises, or exits with a status of its choosing.
BOTO3_PROGRAM = """
import os, sys
import boto3

url, calls, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
for _ in range(calls):
    s3.list_buckets()
print("ready", flush=True)
if mode == "wait":
    sys.stdin.read()
elif mode == "raise":
    raise RuntimeError("the job failed")
sys.exit(int(os.environ.get("PROGRAM_EXIT", "0")))
"""

# A program that makes its clients from sessions of its own, as libraries do for assumed roles:
# a boto3 Session's (made before any call) or, importing botocore alone, a botocore session's.
SESSIONS_PROGRAM = """
import sys

url, calls, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
args = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
            aws_secret_access_key="testing")
if kind == "boto3":
    import boto3
    s3 = boto3.session.Session().client("s3", **args)
else:
    import botocore.session
    s3 = botocore.session.get_session().create_client("s3", **args)
for _ in range(calls):
    s3.list_buckets()
print("ready", sorted(m for m in ("boto3", "botocore") if m in sys.modules), flush=True)
sys.stdin.read()
"""

# A pool of 4 workers, each call one S3 ListBuckets from the worker's own client.
POOL_PROGRAM = """
import multiprocessing, sys
import boto3

_client = None

def call(url):
    global _client
    if _client is None:
        _client = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                               aws_access_key_id="testing", aws_secret_access_key="testing")
    _client.list_buckets()
    return multiprocessing.current_process().pid

if __name__ == "__main__":
    url, calls, method = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with multiprocessing.get_context(method).Pool(4) as pool:
        pids = set(pool.map(call, [url] * calls, chunksize=1))
    print("ready", len(pids), flush=True)
    sys.stdin.read()
"""

# boto 2, as old scripts use it: an EC2 connection to moto, CALLS DescribeVolumes.
BOTO2_PROGRAM = """
import sys
import boto
from boto.ec2.connection import EC2Connection
from boto.ec2.regioninfo import RegionInfo

port, calls = int(sys.argv[1]), int(sys.argv[2])
if not boto.config.has_section("Boto"):
    boto.config.add_section("Boto")
boto.config.set("Boto", "num_retries", "0")
conn = EC2Connection(region=RegionInfo(name="us-west-2", endpoint="127.0.0.1"), port=port,
                     aws_access_key_id="AKIARUNRUNRUN0000001", aws_secret_access_key="x",
                     is_secure=False)
conn.auth_service_name, conn.auth_region_name = "ec2", "us-west-2"
for _ in range(calls):
    conn.get_all_volumes()
print("ready", flush=True)
sys.stdin.read()
"""

# A program that never touches AWS and reports what it sees of its own process.
PLAIN_PROGRAM = """
import json, os, signal, sys
print(json.dumps({
    "argv": sys.argv,
    "path": sys.path,
    "environ": dict(os.environ),
    "stdin": sys.stdin.read(),
    "cwd": os.getcwd(),
    "sdk_imported": [m for m in ("boto3", "botocore", "boto") if m in sys.modules],
    "signals": [str(signal.getsignal(s)) for s in (signal.SIGTERM, signal.SIGINT)],
    "sitecustomize": getattr(sys.modules.get("sitecustomize"), "MARK", None),
}, sort_keys=True))
print("to stderr", file=sys.stderr)
sys.exit(7)
"""


@pytest.fixture(scope="module")
def moto_url():
    """moto's AWS-protocol server on loopback (no boto 2 needed, so on Python 3.12 too)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def program(tmp_path):
    """Write a program's source to a file; its path."""
    def write(source, name="program.py"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(source))
        return str(path)

    return write


@pytest.fixture
def gateway(tmp_path):
    """A real prometheus-pushgateway on loopback; its URL."""
    proc, url = start_pushgateway(require_binary("prometheus-pushgateway"), str(tmp_path))
    yield url
    stop(proc)


def start(args, env=None, **kwargs):
    """boto-prom with args, as a user types it, pipes on all three streams."""
    return subprocess.Popen([BOTO_PROM, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=env if env is not None else child_env(), **kwargs)


def scraped(url, name="boto_requests_total", **labels):
    """The value of one series at a /metrics URL, or None."""
    for family in text_string_to_metric_families(get(url)):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def pushed(url, job, **labels):
    """The value the gateway holds for boto_requests_total of a job, or None."""
    return scraped(f"{url}/metrics", job=job, **labels)


def stopped(proc, timeout=30):
    """Close stdin, wait for the exit; (status, stdout, stderr)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return proc.returncode, out, err


# --- run: a boto3 program, scraped while it runs ----------------------------------------------

def test_boto3_program_is_scraped_while_it_runs(moto_url, program):
    """A boto3 program under boto-prom run serves its calls; its exit status is its own."""
    port = free_port()
    proc = start(["run", "--port", str(port), "--", sys.executable,
                  program(BOTO3_PROGRAM), moto_url, str(CALLS), "wait"],
                 env=child_env(PROGRAM_EXIT="3"))
    try:
        assert read_line(proc) == "ready"
        url = f"http://127.0.0.1:{port}/metrics"
        assert scraped(url, **LIST_BUCKETS) == CALLS
        assert scraped(url, "boto_prom_build_info") == 1
    finally:
        status, _, err = stopped(proc)
    assert status == 3
    assert err == "", "a run that goes well says nothing"


@pytest.mark.parametrize("kind, imported", [("boto3", "['boto3', 'botocore']"),
                                           ("botocore", "['botocore']")])
def test_clients_of_the_programs_own_sessions_are_recorded(moto_url, program, kind, imported):
    """Under boto-prom run, a client of boto3.session.Session() and one of
    botocore.session.get_session() (in a program that never imports boto3) are recorded."""
    port = free_port()
    proc = start(["run", "--port", str(port), "--", sys.executable,
                  program(SESSIONS_PROGRAM), moto_url, str(CALLS), kind])
    try:
        assert read_line(proc) == f"ready {imported}"
        assert scraped(f"http://127.0.0.1:{port}/metrics", **LIST_BUCKETS) == CALLS
    finally:
        status, _, err = stopped(proc)
    assert status == 0 and err == ""


def test_options_and_variables_are_the_same(moto_url, program):
    """BOTO_PROM_ALLOWED_SERVICES=ec2 in the environment and --allowed-services ec2 both keep
    the S3 calls out, and --port and BOTO_PROM_PORT both choose the port."""
    for args, env in ((["--port", "{port}", "--allowed-services", "ec2"], {}),
                      ([], {"BOTO_PROM_PORT": "{port}", "BOTO_PROM_ALLOWED_SERVICES": "ec2"})):
        port = str(free_port())
        args = [a.replace("{port}", port) for a in args]
        env = {k: v.replace("{port}", port) for k, v in env.items()}
        proc = start(["run", *args, "--", sys.executable, program(BOTO3_PROGRAM), moto_url,
                      str(CALLS), "wait"], env=child_env(**env))
        try:
            assert read_line(proc) == "ready"
            url = f"http://127.0.0.1:{port}/metrics"
            assert scraped(url, "boto_prom_build_info") == 1
            assert scraped(url, **LIST_BUCKETS) is None
        finally:
            assert stopped(proc)[0] == 0


def test_detailed_metrics_option_stands_for_its_variable():
    """boto-prom run --detailed-metrics sets BOTO_PROM_DETAILED_METRICS=1; without it, nothing."""
    from boto_prom.run import variables

    assert variables(detailed_metrics=True) == {"BOTO_PROM_DETAILED_METRICS": "1"}
    assert variables(detailed_metrics=None) == {}


# --- run: batch jobs push at exit -------------------------------------------------------------

@pytest.mark.parametrize("ending, status", [("exit", 0), ("raise", 1), ("sigterm", -15)])
def test_batch_job_pushes_when_it_ends(moto_url, program, gateway, ending, status):
    """--push URL --job NAME: the gateway gets every call when the program exits, raises, or
    is killed with SIGTERM, and the exit status is still the program's."""
    job = f"nightly-{ending}"
    mode = "wait" if ending == "sigterm" else ending
    proc = start(["run", "--port", "0", "--push", gateway, "--job", job, "--",
                  sys.executable, program(BOTO3_PROGRAM), moto_url, str(CALLS), mode])
    try:
        assert read_line(proc) == "ready"
        if ending == "sigterm":
            proc.send_signal(signal.SIGTERM)
    finally:
        code, _, err = stopped(proc)
    assert code == status, err
    assert pushed(gateway, job, **LIST_BUCKETS) == CALLS
    if ending == "raise":
        assert "RuntimeError: the job failed" in err  # the program's own traceback
    assert "boto-prom" not in err


FORKING_JOB = """
import os, sys, time
import boto3

url, calls = sys.argv[1], int(sys.argv[2])
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
for _ in range(calls):
    s3.list_buckets()
child = os.fork()
if child == 0:  # outlive the parent, call once more, and exit through sys.exit (atexit runs)
    parent = os.getppid()
    deadline = time.monotonic() + 30
    while os.getppid() == parent and time.monotonic() < deadline:
        time.sleep(0.05)
    s3.list_buckets()
    sys.exit(0)
print("ready", child, flush=True)
"""


def test_forked_child_does_not_push_over_the_job(moto_url, program, gateway):
    """A child forked by the job, exiting after it through sys.exit, does not replace the
    job's push with its own copy of the registry."""
    proc = start(["run", "--port", "0", "--push", gateway, "--job", "forker", "--",
                  sys.executable, program(FORKING_JOB), moto_url, str(CALLS)])
    try:
        child = int(read_line(proc).split()[1])
    finally:
        status, _, err = stopped(proc)
    assert status == 0, err

    def child_gone():
        try:
            with open(f"/proc/{child}/stat") as f:
                return True if f.read().rsplit(")", 1)[1].split()[0] == "Z" else None
        except FileNotFoundError:
            return True

    poll(child_gone, 30, "the forked child's exit")
    assert pushed(gateway, "forker", **LIST_BUCKETS) == CALLS


# --- run: a multiprocessing pool, a multiprocess directory and boto-prom serve ----------------

@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_of_four_sums_exactly_in_serve(moto_url, program, tmp_path, method):
    """A pool of 4 workers (forked or spawned) records into --multiprocess DIR; boto-prom serve
    on that directory, and the program's own server, both count every call exactly once."""
    calls = 40
    directory = tmp_path / "metrics"
    serve_port, run_port = free_port(), free_port()
    server = None
    proc = start(["run", "--port", str(run_port), "--multiprocess", str(directory), "--",
                  sys.executable, program(POOL_PROGRAM), moto_url, str(calls), method])
    try:
        line = read_line(proc, timeout=60)
        assert line.startswith("ready ") and int(line.split()[1]) > 1, line
        server = start(["serve", f"--web.listen-address=127.0.0.1:{serve_port}",
                        f"--multiprocess.dir={directory}"])
        serve_url = f"http://127.0.0.1:{serve_port}/metrics"
        total = poll(lambda: scraped(serve_url, **LIST_BUCKETS), 30, "boto-prom serve up")
        assert total == calls
        assert scraped(f"http://127.0.0.1:{run_port}/metrics", **LIST_BUCKETS) == calls
    finally:
        status, _, err = stopped(proc, timeout=60)
        if server is not None:
            server.send_signal(signal.SIGTERM)
            serve_status, _, serve_err = stopped(server)
    assert status == 0 and err == "", err
    assert serve_status == 0 and "Traceback" not in serve_err, serve_err
    assert serve_err.startswith("boto-prom: serving the multiprocess directory on http://")


def test_serve_bad_flags_are_one_sentence(tmp_path):
    """A bad listen address or a missing directory ends serve with exit 2 and one line."""
    for args in (["--web.listen-address=9875", f"--multiprocess.dir={tmp_path}"],
                 ["--web.listen-address=127.0.0.1:0", f"--multiprocess.dir={tmp_path}/no"]):
        status, out, err = stopped(start(["serve", *args], env=child_env()))
        assert status == 2 and out == ""
        assert err.startswith("boto-prom: ") and len(err.splitlines()) == 1, err


# --- run: boto 2 ------------------------------------------------------------------------------

@pytest.mark.skipif(not HAS_BOTO2, reason="boto 2 needs Python 3.11 or older")
def test_boto2_script_is_recorded(moto_url, program):
    """An unchanged boto 2 script under boto-prom run has its EC2 calls served."""
    port = free_port()
    proc = start(["run", "--port", str(port), "--", sys.executable, program(BOTO2_PROGRAM),
                  moto_url.rsplit(":", 1)[1], str(CALLS)])
    try:
        assert read_line(proc) == "ready"
        assert scraped(f"http://127.0.0.1:{port}/metrics", aws_service="ec2",
                       action="DescribeVolumes", status_code="200") == CALLS
    finally:
        status, _, err = stopped(proc)
    assert status == 0, err


# --- run: a program that never touches AWS ----------------------------------------------------

@pytest.mark.parametrize("own_path", [False, True])
def test_program_without_aws_runs_as_without_boto_prom(program, tmp_path, own_path):
    """Output, stderr, exit status, argv, sys.path, the environment, signal handlers and a
    sitecustomize of the user's own are the same with and without boto-prom run."""
    script = program(PLAIN_PROGRAM)
    env = child_env(BOTO_PROM_PORT="0")
    if own_path:
        user = tmp_path / "user-site"
        user.mkdir()
        (user / "sitecustomize.py").write_text("MARK = 'the user sitecustomize ran'\n")
        env["PYTHONPATH"] = str(user)
    command = [sys.executable, script, "an arg", "--flag"]
    results = []
    for prefix in ([], [BOTO_PROM, "run", "--"]):
        done = subprocess.run(prefix + command, input="stdin text", capture_output=True,
                              text=True, env=env, cwd=str(tmp_path), timeout=60)
        results.append((done.returncode, done.stdout, done.stderr))
    assert results[0] == results[1]
    seen = json.loads(results[0][1])
    assert seen["sdk_imported"] == [] and seen["stdin"] == "stdin text"
    assert seen["sitecustomize"] == ("the user sitecustomize ran" if own_path else None)


# --- run: bad settings end the start in one sentence ------------------------------------------

@pytest.mark.parametrize("args, env, says", [
    (["--port", "99999"], {}, "--port must be a port number"),
    ([], {"BOTO_PROM_MAX_LABEL_SETS": "many"}, "BOTO_PROM_MAX_LABEL_SETS must be"),
    (["--allowed-services", "s3,no such"], {}, "--allowed-services must hold short names"),
    (["--push", "ftp://gateway"], {}, "the Pushgateway must be an http://"),
    (["--push", "http://u:secret@gateway"], {}, "the Pushgateway URL (--push) must not carry "
     "credentials; set BOTO_PROM_PUSH_USERNAME and BOTO_PROM_PUSH_PASSWORD instead.\n"),
    ([], {"BOTO_PROM_PUSHGATEWAY": "http://u:secret@gateway"}, "the Pushgateway URL "
     "(BOTO_PROM_PUSHGATEWAY) must not carry credentials; set BOTO_PROM_PUSH_USERNAME and "
     "BOTO_PROM_PUSH_PASSWORD instead.\n"),
])
def test_bad_setting_exits_2_before_the_program(args, env, says):
    """A bad option or variable: exit 2, one line on stderr naming the flag or the variable
    given, and the program never ran."""
    done = subprocess.run([BOTO_PROM, "run", *args, "--", sys.executable, "-c", "print('ran')"],
                          capture_output=True, text=True, env=child_env(**env), timeout=60)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith(f"boto-prom: {says}") and done.stderr.count("\n") == 1, \
        done.stderr


def test_busy_port_exits_2_in_one_sentence():
    """A port already taken ends the program's start with one sentence, exit 2."""
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run([BOTO_PROM, "run", "--port", str(port), "--", sys.executable,
                               "-c", "print('ran')"], capture_output=True, text=True,
                              env=child_env(), timeout=60)
    assert (done.returncode, done.stdout) == (2, "")
    assert f"port {port} on 127.0.0.1 is already in use" in done.stderr
    assert "as --port=N (or BOTO_PROM_PORT=N), or --port=0" in done.stderr  # run's own names
    assert done.stderr.count("\n") == 1


def test_busy_port_in_multiprocess_mode_names_the_option_without_api_advice(tmp_path):
    """With --multiprocess, a taken port is said as without it: run starts the one server
    itself, so the advice for programs that call the API (start_server=False) is left out."""
    with busy_port() as port:
        done = subprocess.run([BOTO_PROM, "run", "--multiprocess", str(tmp_path / "metrics"),
                               "--port", str(port), "--", sys.executable, "-c", "print('ran')"],
                              capture_output=True, text=True, env=child_env(), timeout=60)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (f"boto-prom: port {port} on 127.0.0.1 is already in use; pass a "
                           "free port as --port=N (or BOTO_PROM_PORT=N), or --port=0 to let "
                           "the system pick one.\n")


def test_command_not_found_is_127():
    """A command that does not exist: 127 and one line, as a shell says it."""
    done = subprocess.run([BOTO_PROM, "run", "--", "no-such-command-boto-prom"],
                          capture_output=True, text=True, env=child_env(), timeout=60)
    assert done.returncode == 127
    assert done.stderr == "boto-prom: no-such-command-boto-prom: command not found.\n"
